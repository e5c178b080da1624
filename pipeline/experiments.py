"""The paper's four experiments and the data each one reads.

The paper: "(i) FFDM only, (ii) DDSM only, (iii) FFDM and DDSM combined ... and (iv) incremental
transfer learning: ImageNet -> DDSM -> FFDM". All four test on held-out patients; the incremental
model is compared with the FFDM-only model on the same FFDM test images (Fig. 4).

=============  ===================  ===============================================
experiment     trains and tests on  datasets it needs
=============  ===================  ===============================================
``ffdm``       ``ffdm``             ffdm
``ddsm``       ``ddsm``             ddsm
``combined``   ``combined``         ffdm and ddsm (stacked, patients kept apart)
``incremental``  ``ffdm``           ffdm (fine-tuning, test), ddsm (its pretraining stage)
=============  ===================  ===============================================
"""
from __future__ import annotations

EXPERIMENTS = ("ffdm", "ddsm", "combined", "incremental")
DATASETS = ("ffdm", "ddsm")

#: The scenarios of the paper's false-negative (interval cancer) analysis, and the experiments it runs
#: in: the interval cancers are FFDM patients, so every experiment that tests on FFDM images ("The
#: CNN models trained by other strategies (i.e., experiments iii and iv ...) also achieved similar
#: performance").
FN_SCENARIOS = ("malignant-vs-negative", "malignant-vs-benign")
FN_EXPERIMENTS = ("ffdm", "combined", "incremental")

#: The image set each experiment trains its reported model on and tests it on.
EXPERIMENT_DATA = {"ffdm": "ffdm", "ddsm": "ddsm", "combined": "combined", "incremental": "ffdm"}


def experiment_data(experiment: str) -> str:
    """The image set (``ffdm``, ``ddsm`` or ``combined``) that ``experiment`` trains and tests on."""
    return EXPERIMENT_DATA[experiment]


def needed_datasets(experiments) -> list[str]:
    """The datasets a list of experiments reads, in :data:`DATASETS` order: ``ffdm`` and ``ddsm``
    each read their own, ``combined`` and ``incremental`` read both."""
    need = set()
    for e in experiments:
        need |= {e} if e in DATASETS else set(DATASETS)
    return [d for d in DATASETS if d in need]
