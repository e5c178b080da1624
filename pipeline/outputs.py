"""The run folder's files besides the models and the report: config.json, environment.json,
provenance.json, results.json and the per-image predictions.csv files. Each is written once,
atomically (a reader sees the old file or the new one, never half of one)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from data_prep.fileio import atomic_output, write_csv_atomic

from .jobs import PREDICTIONS, read_predictions
from .scenarios import LABEL_NAMES, scenario_labels


def json_default(o):
    """JSON for what the records hold besides plain Python: NumPy scalars and arrays, paths."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


def write_json_atomic(path, obj):
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=json_default)


def as_json(obj):
    """``obj`` as it reads back from a JSON file (tuples become lists, NumPy numbers plain ones)."""
    return json.loads(json.dumps(obj, default=json_default))


def results_json(records, cohorts, cfg, env: dict, timings: dict, prov: dict) -> dict:
    """results.json's content (its schema is in docs/study.md): one entry per ModelResult, with its
    headline ``auc`` beside the nested parts, each dataset's attrition, and the provenance."""
    return {"runs": [dict(auc=r.auc, **asdict(r)) for r in records],
            "cohorts": [dict(asdict(a), skipped_share=a.skipped_share) for a in cohorts], "config": cfg.to_dict(),
            "provenance": prov, "environment": env, "timings": timings}


PREDICTION_COLUMNS = ("experiment", "scenario", "test_fraction", "model", "image_index", "image_path", "patient_id",
                      "dataset_label", "interval_cancer", "y_true", "score")


def write_predictions_csvs(out: Path, cells):
    """predictions.csv: one row per test image of every reported model; predictions_interval.csv: the
    interval cancers the main models scored (false-negative analysis, holdout mode). ``cells``:
    (ModelResult, CellPlan) pairs.

    ``y_true`` is the image's class in the scenario (binary: 1 = the positive class, 0 = the other;
    triple: 0/1/2 in the scenario's class order), ``score`` the positive class's probability (binary
    scenarios; empty for the triple one), ``p0..pK`` every class's probability. For one binary model,
    ``python -m stats predictions.csv --label-col y_true --score-col score --group-col patient_id``
    recomputes its AUC and CIs.
    """
    rows = {"test": [], "interval": []}
    width = 0
    for rec, plan in cells:
        ds, scenario = plan.main.data, plan.scenario
        for split, pred in read_predictions(Path(out) / "jobs" / rec.job / PREDICTIONS).items():
            width = max(width, pred.proba.shape[1])
            y_true = scenario_labels(scenario, ds.labels[pred.index])
            for i, y, p in zip(pred.index, y_true, pred.proba):
                rows[split].append([rec.experiment, rec.scenario, rec.test_fraction, rec.job, int(i), ds.image_path[i],
                                    ds.patient_id[i], LABEL_NAMES[ds.labels[i]], int(ds.interval_cancer[i]), int(y),
                                    f"{p[1]:.6f}" if scenario.binary else ""] + [f"{v:.6f}" for v in p])
    header = list(PREDICTION_COLUMNS) + [f"p{k}" for k in range(width)]
    write_csv_atomic(Path(out) / "predictions.csv", header, rows["test"])
    if rows["interval"]:
        write_csv_atomic(Path(out) / "predictions_interval.csv", header, rows["interval"])
