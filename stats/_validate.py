"""Input checks shared by every public function.

Each check raises ``ValueError`` with a message that says what was wrong and
what was expected, so that bad input never surfaces as a NaN or as an error
deep inside NumPy.
"""

import math
import numbers

import numpy as np


def _describe(values, limit=5):
    shown = ", ".join(repr(v.item()) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _as_numeric(values, name, ndim):
    array = np.asarray(values)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got an array of shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty; at least one case is needed")
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must hold numbers, got values of dtype {array.dtype} "
            f"(e.g. {_describe(array.ravel())})"
        )
    return array


def as_finite_array(values, name, ndim=1):
    """Return ``values`` as a float64 array of ``ndim`` dimensions with only finite entries."""
    array = np.asarray(_as_numeric(values, name, ndim), dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.all():
        first = np.argwhere(~finite)[0]
        where = int(first[0]) if ndim == 1 else tuple(int(i) for i in first)
        raise ValueError(
            f"{name} contains {int((~finite).sum())} NaN/inf value(s) (first at index {where}); "
            "every entry must be a finite number"
        )
    return array


def as_labels(values, name, allowed):
    """Return ``values`` as an int64 1-D array whose entries all lie in ``allowed``."""
    labels = _as_numeric(values, name, ndim=1)
    known = np.isin(labels, allowed)
    if not known.all():
        raise ValueError(
            f"{name} must contain only the labels {[int(a) for a in allowed]}, "
            f"got also {_describe(np.unique(labels[~known]))}"
        )
    return labels.astype(np.int64)


def check_same_length(first_name, first_length, other_name, other_length):
    if first_length != other_length:
        raise ValueError(
            f"{first_name} has {first_length} entries but {other_name} has {other_length}; "
            "they must have one entry per case"
        )


def check_binary(y_true, *scores, names=("y_score",), label_name="y_true"):
    """Validate binary labels and one or more score vectors for the same cases.

    Labels must be 0 (negative) or 1 (positive) and both classes must occur;
    scores must be finite numbers, one per label.  Returns the labels as a
    boolean "is positive" mask and the scores as float64 arrays.
    """
    is_pos = as_labels(y_true, label_name, allowed=[0, 1]) == 1
    checked = []
    for score, name in zip(scores, names, strict=True):
        score = as_finite_array(score, name)
        check_same_length(label_name, len(is_pos), name, len(score))
        checked.append(score)
    n_pos = int(np.count_nonzero(is_pos))
    if n_pos in (0, len(is_pos)):
        present = 1 if n_pos else 0
        raise ValueError(
            f"{label_name} contains only class {present} ({len(is_pos)} cases); an AUC needs at "
            "least one negative (0) and one positive (1) case"
        )
    return is_pos, checked


def check_level(level):
    """Confidence level: a number strictly between 0 and 1."""
    if (
        isinstance(level, bool)
        or not isinstance(level, numbers.Real)
        or not 0.0 < float(level) < 1.0
    ):
        raise ValueError(
            f"level must be a number strictly between 0 and 1 (e.g. 0.95), got {level!r}"
        )
    return float(level)


def check_n_boot(n_boot, minimum=1):
    """Number of bootstrap replicates: an integer of at least ``minimum``."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < minimum:
        raise ValueError(f"n_boot must be an integer >= {minimum}, got {n_boot!r}")
    return int(n_boot)


def check_fraction(value, name):
    """A rate (sensitivity or specificity) between 0 and 1 inclusive."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise ValueError(f"{name} must be a number between 0 and 1 (e.g. 0.869), got {value!r}")
    return float(value)


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def group_codes(groups, n_cases):
    """Map group ids (e.g. patient ids) to integer codes 0..n_groups-1, one per case."""
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise ValueError(f"groups must be a 1-D array of group ids, got shape {groups.shape}")
    check_same_length("groups", len(groups), "y_true", n_cases)
    if groups.dtype.kind == "f" and np.isnan(groups).any():
        raise ValueError("groups contains NaN; every case needs a group id")
    if groups.dtype.kind == "O" and any(g is None for g in groups):
        raise ValueError("groups contains None; every case needs a group id")
    return np.unique(groups, return_inverse=True)[1].ravel()
