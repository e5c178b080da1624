"""Test-set evaluation, as the paper reports it, computed with the ``stats`` package.

The paper: "The ROC curve was generated and AUC was calculated ... For the
triple classification ... generating an ROC curve for each binary-class
combination and then reporting the average of the AUCs. Ninety-five percent
confidence intervals (CI) were calculated for AUC values using bootstrapping
methods. DeLong test was used to evaluate the statistical significance when
comparing differences of AUCs." and "Using previously reported radiologists'
overall sensitivity 86.9% as a reference threshold ... a specificity of 87%".

Two bootstrap CIs are reported for every binary AUC: resampling images (what
the paper's figures most likely used) and resampling whole patients (about
four images per patient are correlated, so the image-level interval is too
narrow); ``report.md`` names which is which.
"""
from __future__ import annotations

import numpy as np

import stats

RADIOLOGIST_SENSITIVITY = 0.869  # Lehman et al. via the paper, the operating point it quotes


def binary_metrics(y, score, patient_id, n_boot=2000, seed=0):
    """AUC, DeLong CI, image- and patient-level bootstrap CIs, specificity at 86.9% sensitivity."""
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=np.float64)
    auc, d_lo, d_hi = stats.delong_ci(y, score)
    _, b_lo, b_hi = stats.bootstrap_ci(y, score, n_boot=n_boot, seed=seed)
    _, p_lo, p_hi = stats.bootstrap_ci(y, score, n_boot=n_boot, seed=seed, groups=np.asarray(patient_id))
    op = stats.specificity_at_sensitivity(y, score, RADIOLOGIST_SENSITIVITY)
    fpr, tpr, _ = stats.roc_curve(y, score)
    return {"auc": float(auc), "ci95_delong": [float(d_lo), float(d_hi)],
            "ci95_bootstrap": [float(b_lo), float(b_hi)],
            "ci95_bootstrap_patient": [float(p_lo), float(p_hi)],
            "specificity_at_0.869": float(op.specificity),
            "operating_point": {"threshold": float(op.threshold), "sensitivity": float(op.sensitivity),
                                "specificity": float(op.specificity)},
            "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()}}


def scenario_auc(y, proba):
    """The headline AUC of a scenario: binary AUC of P(class 1), or the triple's Hand & Till mean."""
    y = np.asarray(y).astype(int)
    if proba.shape[1] == 2:
        return float(stats.auc(y, proba[:, 1]))
    return float(stats.multiclass_auc(y, proba, average="ovo").auc)


def operating_threshold(y, score):
    """Score threshold of the best-specificity operating point with sensitivity >= 86.9%."""
    return float(stats.specificity_at_sensitivity(np.asarray(y).astype(int), np.asarray(score, np.float64),
                                                  RADIOLOGIST_SENSITIVITY).threshold)


def triple_metrics(y, proba, class_names):
    """Hand & Till mean of the pairwise AUCs (the paper's triple-class figure) and each pair's ROC.

    For the pair (i, j) the plotted curve is class j (positive) against class i
    scored by P(j) on the images of those two classes.
    """
    y = np.asarray(y).astype(int)
    proba = np.asarray(proba, dtype=np.float64)
    m = stats.multiclass_auc(y, proba, average="ovo")
    pairs, rocs = {}, {}
    for (i, j), value in m.pairwise.items():
        key = f"{class_names[i]} vs {class_names[j]}"
        pairs[key] = float(value)
        keep = np.isin(y, (i, j))
        fpr, tpr, _ = stats.roc_curve((y[keep] == j).astype(int), proba[keep, j])
        rocs[key] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return {"auc": float(m.auc), "pairwise_auc": pairs, "roc_pairs": rocs,
            "ci95_delong": None, "ci95_bootstrap": None, "ci95_bootstrap_patient": None}


def compare_paired(y, score_new, score_baseline):
    """Paired two-sided DeLong test of two models' AUCs on the same test images."""
    r = stats.delong_test(np.asarray(y).astype(int), np.asarray(score_new, np.float64),
                          np.asarray(score_baseline, np.float64))
    return {"auc": float(r.auc_a), "baseline_auc": float(r.auc_b), "z": float(r.z), "p_delong": float(r.p_value)}


def interval_cancer_detection(p_malignant, threshold):
    """Share of interval-cancer (false-negative) images that a model calls malignant.

    Two rules, both reported: the model's own decision (P(malignant) >= 0.5,
    i.e. the argmax of a two-class softmax) and the threshold that gives 86.9%
    sensitivity on the test set (``threshold``).
    """
    p = np.asarray(p_malignant, dtype=np.float64)
    if p.size == 0:
        return None
    return {"n_images": int(p.size), "share_called_malignant_at_0.5": float(np.mean(p >= 0.5)),
            "threshold_at_0.869_sensitivity": float(threshold),
            "share_called_malignant_at_0.869_threshold": float(np.mean(p >= threshold))}
