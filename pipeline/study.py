"""The study's grid: experiments x scenarios x test fractions, each a training job with its evaluation.

The paper's four experiments (all test sets are held-out patients):

* ``ffdm``        train and test on FFDM;
* ``ddsm``        train and test on DDSM;
* ``combined``    FFDM and DDSM mixed for training and for testing;
* ``incremental`` pretrain on DDSM (after ImageNet when weights are given), then fine-tune and
                  test on FFDM; compared with the ``ffdm`` model on the same FFDM test images by
                  a paired DeLong test (Fig. 4).

Every training run is a *job* with its own folder (checkpoint, training log,
final weights, predictions). A job whose predictions exist is never run again,
and a job with a checkpoint continues from it, so ``--resume`` after a crash or
Ctrl-C loses at most ``checkpoint_every`` iterations of one job.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

import data_prep
from alexnet_np import SGD, AlexNet, load_weights, save_weights
from alexnet_np.weights import fold_input_std, weights_info

from . import evaluate
from .data import ImageSet, split_holdout, training_mean
from .scenarios import MALIGNANT, balance, get_scenario
from .train import predict, train

EXPERIMENTS = ("ffdm", "ddsm", "combined", "incremental")
FN_SCENARIOS = ("malignant-vs-negative", "malignant-vs-benign")  # the paper's false-negative analysis


@dataclass
class Job:
    """One training run: what to train on, what to predict, where to keep its files."""

    key: str                      # folder under <out>/jobs, e.g. "ffdm/malignant-vs-negative/tf0.05/main"
    data: ImageSet
    scenario: object
    train_idx: np.ndarray
    train_y: np.ndarray
    eval_sets: dict               # name -> (image indices, network-class labels or None)
    iters: int
    init_weights: str | None = None   # start from these weights (incremental fine-tuning)
    notes: dict = field(default_factory=dict)


def _rng(cfg, *parts):
    """A generator seeded by the run seed and the names of what it is for (stable across runs)."""
    return np.random.default_rng([cfg.seed] + [zlib.crc32(str(p).encode()) for p in parts])


def _interval_patients(ds: ImageSet):
    return np.unique(ds.patient_id[ds.interval_cancer == 1])


def _select(cfg, ds, scenario, idx, exclude_patients, *tag):
    idx = np.asarray(idx)
    if len(exclude_patients):
        idx = idx[~np.isin(ds.patient_id[idx], exclude_patients)]
    return balance(scenario, ds.labels, idx, _rng(cfg, *tag))


def _write_h5_atomic(path, fill):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class Study:
    """Runs jobs for a configuration (see run.py for every option) and collects result records."""

    def __init__(self, cfg, datasets: dict, out: Path, log=print):
        self.cfg, self.datasets, self.out, self.log = cfg, datasets, Path(out), log
        self.records = []

    # ------------------------------------------------------------------ one job
    def run_job(self, job: Job):
        """Train (or resume, or skip when done) one job; returns {eval set: (idx, y, proba)}."""
        cfg = self.cfg
        folder = self.out / "jobs" / job.key
        folder.mkdir(parents=True, exist_ok=True)
        pred_path = folder / "predictions.h5"
        if pred_path.exists():
            return self._read_predictions(pred_path)
        net = AlexNet(job.scenario.num_classes, variant=cfg.variant, input_size=cfg.input_size,
                      init=cfg.init, dropout=cfg.dropout, seed=cfg.seed, widths=cfg.widths)
        new_layers = ()
        if job.init_weights:
            load_weights(net, job.init_weights)
            mean = training_mean(job.data, job.train_idx)
        elif cfg.pretrained:
            info = weights_info(cfg.pretrained)  # its variant was checked by pipeline.config.check_inputs
            # fc6's input follows from the input size: at another size only conv1..conv5 transfer
            new_layers = ("fc8",) if int(info["input_size"]) == cfg.input_size else ("fc6", "fc7", "fc8")
            load_weights(net, cfg.pretrained, exclude=new_layers)
            if "std" in info:  # torchvision weights expect inputs divided by 255 * std
                fold_input_std(net, info["std"])
            mean = np.asarray(info["mean"], dtype=np.float32)  # per channel, from the weights file
        else:
            mean = training_mean(job.data, job.train_idx)
        opt = SGD(net, base_lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                  gamma=cfg.gamma, stepsize=cfg.lr_step, new_layers=new_layers)
        train(net, opt, job.data.images, job.train_idx, job.train_y, iters=job.iters,
              batch_size=cfg.batch_size, seed=cfg.seed, mean=mean, scale=cfg.input_scale,
              checkpoint_path=folder / "checkpoint.h5", log_path=folder / "train_log.csv",
              checkpoint_every=cfg.checkpoint_every, resume=True, progress=cfg.progress,
              desc=job.key, flip=cfg.augment_flip, shift=cfg.augment_shift)
        save_weights(net, folder / "weights.h5", mean=(float(np.mean(mean)),) * 3,
                     source=f"trained by run.py job {job.key} (input mean: the training images' mean image)")
        # Scoring in training-sized batches reuses the memory the training steps used (the fast
        # CPU kernels recycle outputs by shape); batches of another size would hold a second set.
        results = {name: (idx, y, predict(net, job.data.images, idx, mean, cfg.input_scale, cfg.batch_size))
                   for name, (idx, y) in job.eval_sets.items()}
        info = dict(job.notes, key=job.key, iters=job.iters, n_train=int(len(job.train_idx)),
                    mean_pixel=float(np.mean(mean)), init_weights=job.init_weights,
                    pretrained=str(cfg.pretrained) if cfg.pretrained else None)

        def fill(f):
            f.attrs["job"] = json.dumps(info)
            for name, (idx, y, proba) in results.items():
                g = f.create_group(name)
                g["index"] = np.asarray(idx)
                g["label"] = np.asarray(y if y is not None else np.full(len(idx), -1))
                g["proba"] = proba
        _write_h5_atomic(pred_path, fill)
        (folder / "checkpoint.h5").unlink(missing_ok=True)  # weights.h5 + predictions are the result
        return results

    @staticmethod
    def _read_predictions(path):
        with h5py.File(path, "r") as f:
            return {name: (g["index"][()], g["label"][()], g["proba"][()]) for name, g in f.items()}

    # ------------------------------------------------------------------ experiments
    def dataset_for(self, experiment):
        if experiment == "combined":
            if "combined" not in self.datasets:
                self.datasets["combined"] = ImageSet.concat("combined", [self.datasets["ffdm"],
                                                                         self.datasets["ddsm"]])
            return self.datasets["combined"]
        return self.datasets["ffdm" if experiment == "incremental" else experiment]

    def run(self, scenario_name, experiment, test_fraction):
        """Train and evaluate one (scenario, experiment, test fraction); returns its result record."""
        cfg = self.cfg
        scenario = get_scenario(scenario_name)
        base = "ffdm" if experiment == "incremental" else experiment
        ds = self.dataset_for(experiment)
        train_side, test_side = split_holdout(ds, test_fraction, cfg.seed)
        tag = f"tf{test_fraction:g}"
        fn = cfg.fn_analysis if (base == "ffdm" and scenario.name in FN_SCENARIOS) else "off"
        interval = _interval_patients(ds) if fn != "off" else np.array([], dtype=str)
        held_out = interval if fn == "holdout" else np.array([], dtype=str)
        tr_idx, tr_y = _select(cfg, ds, scenario, train_side, held_out, base, scenario.name, tag, "train")
        te_idx, te_y = _select(cfg, ds, scenario, test_side, held_out, base, scenario.name, tag, "test")
        data_prep.check_no_patient_leakage(ds.patient_id, tr_idx, te_idx)
        interval_idx = np.flatnonzero(np.isin(ds.patient_id, interval) & (ds.labels == MALIGNANT))
        evals = {"test": (te_idx, te_y)}
        if fn == "holdout" and len(interval_idx):
            evals["interval"] = (interval_idx, None)
        main = Job(f"{base}/{scenario.name}/{tag}/main", ds, scenario, tr_idx, tr_y, evals, cfg.iters,
                   notes={"experiment": base})
        if experiment == "incremental":
            return self._incremental(scenario, main, test_fraction)
        self.log(f"[{experiment} | {scenario.name} | test {test_fraction:g}] "
                 f"train {len(tr_idx)} images, test {len(te_idx)} images")
        preds = self.run_job(main)
        record = self._record(scenario, experiment, test_fraction, main, preds["test"])
        if cfg.cv >= 2:
            record.update(self._cross_validate(scenario, main))
        if fn == "holdout" and "interval" in preds:
            record["false_negative_analysis"] = self._fn_record(scenario, preds, "holdout",
                                                                record["operating_point"]["threshold"])
        elif fn == "separate" and len(interval_idx):
            tr2, y2 = _select(cfg, ds, scenario, train_side, interval, base, scenario.name, tag, "fn-train")
            te2, yt2 = _select(cfg, ds, scenario, test_side, interval, base, scenario.name, tag, "fn-test")
            job = Job(f"{base}/{scenario.name}/{tag}/fn", ds, scenario, tr2, y2,
                      {"test": (te2, yt2), "interval": (interval_idx, None)}, cfg.iters)
            p = self.run_job(job)
            threshold = evaluate.operating_threshold(p["test"][1], p["test"][2][:, 1])
            record["false_negative_analysis"] = self._fn_record(scenario, p, "separate", threshold)
        self.records.append(record)
        return record

    def _record(self, scenario, experiment, test_fraction, job, test_pred):
        idx, y, proba = test_pred
        ds = job.data
        rec = {"scenario": scenario.name, "experiment": experiment, "test_fraction": test_fraction,
               "n_train": int(len(job.train_idx)), "n_test": int(len(idx)),
               "n_train_per_class": np.bincount(job.train_y, minlength=scenario.num_classes).tolist(),
               "n_test_per_class": np.bincount(y, minlength=scenario.num_classes).tolist(),
               "n_test_patients": int(len(np.unique(ds.patient_id[idx]))), "job": job.key,
               # filled by _cross_validate when CV runs; null says it did not
               "cv_folds": 0, "cv_auc": [], "cv_auc_mean": None, "cv_auc_sd": None}
        if scenario.binary:
            rec.update(evaluate.binary_metrics(y, proba[:, 1], ds.patient_id[idx], self.cfg.n_boot, self.cfg.seed))
        else:
            rec.update(evaluate.triple_metrics(y, proba, scenario.class_names))
        return rec

    def _cross_validate(self, scenario, main: Job):
        """6-fold CV inside the training set (the paper's "internal validation"): each fold trains on
        five sixths of the training patients and is scored on the sixth. It estimates how stable
        training is; it selects nothing -- the reported model is the one trained on all of it."""
        ds = main.data
        folds = data_prep.kfold_split(ds.patient_id[main.train_idx], ds.labels[main.train_idx],
                                      k=self.cfg.cv, seed=self.cfg.seed)
        aucs = []
        for k, (tr, va) in enumerate(folds, 1):
            job = Job(main.key.replace("/main", f"/cv{k}"), ds, scenario, main.train_idx[tr], main.train_y[tr],
                      {"val": (main.train_idx[va], main.train_y[va])}, main.iters)
            _, y, proba = self.run_job(job)["val"]
            aucs.append(evaluate.scenario_auc(y, proba))
        return {"cv_folds": len(aucs), "cv_auc": aucs, "cv_auc_mean": float(np.mean(aucs)),
                "cv_auc_sd": float(np.std(aucs, ddof=1))}

    def _fn_record(self, scenario, preds, mode, threshold):
        p_malignant = preds["interval"][2][:, 1]
        out = evaluate.interval_cancer_detection(p_malignant, threshold)
        out.update(mode=mode, n_patients=int(len(np.unique(self.datasets["ffdm"].patient_id[preds["interval"][0]]))))
        return out

    def _incremental(self, scenario, main: Job, test_fraction):
        """ImageNet (if given) -> DDSM -> FFDM, versus the FFDM-only model on the same test images."""
        cfg = self.cfg
        ddsm = self.datasets["ddsm"]
        tag = f"tf{test_fraction:g}"
        pre_idx, pre_y = balance(scenario, ddsm.labels, np.arange(len(ddsm)), _rng(cfg, "ddsm-pretrain", scenario.name))
        stage1 = Job(f"incremental/{scenario.name}/ddsm-pretrain", ddsm, scenario, pre_idx, pre_y, {},
                     cfg.pretrain_iters, notes={"stage": "DDSM pretraining"})
        self.log(f"[incremental | {scenario.name}] stage 1: pretrain on {len(pre_idx)} DDSM images")
        self.run_job(stage1)
        stage2 = Job(f"incremental/{scenario.name}/{tag}/main", main.data, scenario, main.train_idx, main.train_y,
                     main.eval_sets, cfg.iters, init_weights=str(self.out / "jobs" / stage1.key / "weights.h5"),
                     notes={"stage": "FFDM fine-tuning"})
        self.log(f"[incremental | {scenario.name} | test {test_fraction:g}] stage 2: fine-tune on "
                 f"{len(main.train_idx)} FFDM images; baseline: the ffdm experiment's model")
        inc = self.run_job(stage2)["test"]
        base = self.run_job(main)["test"]
        if not np.array_equal(inc[0], base[0]):
            raise RuntimeError("incremental and baseline models were not tested on the same images")
        record = self._record(scenario, "incremental", test_fraction, stage2, inc)
        record["baseline_job"] = main.key
        if scenario.binary:
            cmp = evaluate.compare_paired(inc[1], inc[2][:, 1], base[2][:, 1])
            record.update(baseline_auc=cmp["baseline_auc"], p_delong=cmp["p_delong"], z_delong=cmp["z"])
        else:
            record.update(baseline_auc=evaluate.scenario_auc(base[1], base[2]), p_delong=None)
        record["pretrained_on"] = ("ImageNet weights " + str(cfg.pretrained) + " then DDSM") if cfg.pretrained \
            else "DDSM only (no ImageNet weights were given)"
        self.records.append(record)
        return record
