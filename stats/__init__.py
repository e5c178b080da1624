"""ROC/AUC statistics for the reproduction of Aboutalib et al., Clin Cancer Res 2018.

The paper reports every result as an AUC with a 95% bootstrap CI, compares
AUCs with DeLong's test (two-sided), averages the pairwise AUCs for the
triple-class task, and quotes the specificity at the radiologists' 86.9%
sensitivity.  This package computes all of these with NumPy and SciPy only.

Conventions: positive class = label 1; a higher score means "more likely
positive"; an AUC below 0.5 is reported as is (the direction is never
flipped).  Bad input raises ``ValueError`` with what was wrong and what was
expected.  Command line for auditors: ``python -m stats --help``.
"""

from ._bootstrap import bootstrap_ci, bootstrap_test
from ._delong import delong_ci, delong_test, delong_test_unpaired, delong_variance
from ._multiclass import multiclass_auc
from ._roc import auc, roc_curve, sensitivity_at_specificity, specificity_at_sensitivity

__all__ = [
    "auc",
    "roc_curve",
    "delong_variance",
    "delong_ci",
    "delong_test",
    "delong_test_unpaired",
    "bootstrap_ci",
    "bootstrap_test",
    "multiclass_auc",
    "specificity_at_sensitivity",
    "sensitivity_at_specificity",
]
