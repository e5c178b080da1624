"""Multi-class AUC (the paper's triple classification: negative vs
recalled-benign vs malignant, reported as the average of the binary AUCs)."""

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ._ranks import auc_of
from ._validate import as_finite_array, as_labels, check_choice, check_same_length


@dataclass(frozen=True)
class MulticlassAUC:
    """``auc`` is the average selected by ``average``.  Both families are exposed:
    ``pairwise[(i, j)]`` (i < j) is Hand & Till's A(i, j) and ``one_vs_rest[k]``
    is the AUC of class k against all other classes."""

    auc: float
    average: str
    pairwise: dict
    one_vs_rest: dict


def multiclass_auc(y_true, proba, average="ovo"):
    """Multi-class AUC as a mean of binary AUCs.

    ``y_true`` holds class labels 0..K-1 (K >= 2, every class present; in the
    paper 0 = negative, 1 = recalled-benign, 2 = malignant) and ``proba`` is an
    (n, K) array whose column k scores class k (higher = more likely k; rows
    need not sum to 1).

    average="ovo" (Hand & Till 2001, Mach. Learn. 45:171): for each pair i < j,
    on the cases of classes i and j only,

        A(i, j) = ( AUC(class i vs j, proba[:, i]) + AUC(class j vs i, proba[:, j]) ) / 2,

    and M = (2 / (K (K - 1))) * sum_{i<j} A(i, j), the unweighted mean over the
    K(K-1)/2 pairs.  Same as sklearn ``roc_auc_score(multi_class="ovo")``.

    average="ovr": the unweighted mean over k of AUC(class k vs the rest,
    proba[:, k]); same as sklearn ``roc_auc_score(multi_class="ovr",
    average="macro")``.

    Paper: "For the triple classification ... generating an ROC curve for each
    binary-class combination and then reporting the average of the AUCs"
    (e.g. "average AUC of 0.66" on FFDM) -> ``average="ovo"``.

    Returns a ``MulticlassAUC`` with ``.auc``, ``.pairwise`` and ``.one_vs_rest``.
    """
    check_choice(average, "average", ("ovo", "ovr"))
    proba = as_finite_array(proba, "proba", ndim=2)
    n_classes = proba.shape[1]
    if n_classes < 2:
        raise ValueError(f"proba must have one column per class (at least 2), got {n_classes}")
    labels = as_labels(y_true, "y_true", allowed=np.arange(n_classes))
    check_same_length("y_true", len(labels), "proba", len(proba))
    missing = np.setdiff1d(np.arange(n_classes), labels)
    if missing.size:
        raise ValueError(
            f"y_true has no case of class(es) {missing.tolist()}, but proba has {n_classes} "
            "columns; every class needs at least one case"
        )

    one_vs_rest = {k: auc_of(labels == k, proba[:, k]) for k in range(n_classes)}
    pairwise = {}
    for i, j in combinations(range(n_classes), 2):
        both = (labels == i) | (labels == j)
        is_i = labels[both] == i
        pairwise[(i, j)] = (auc_of(is_i, proba[both, i]) + auc_of(~is_i, proba[both, j])) / 2.0
    chosen = pairwise if average == "ovo" else one_vs_rest
    return MulticlassAUC(float(np.mean(list(chosen.values()))), average, pairwise, one_vs_rest)
