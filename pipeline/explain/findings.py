"""The ground truth an explanation is measured against: each test image's findings in the stored
image's pixels, as the build carried them from the original image through the orientation flip, the
breast crop and the resize (data_prep.load_findings): the synthetic cohorts' findings, or a public
set's lesion outlines, boxes and circles that its adapter wrote beside the manifest."""
from __future__ import annotations

import data_prep

from ..data import ImageSet
from ..scenarios import LABEL_NAMES


def ground_truth(name: str, files: dict) -> list:
    """Per image of the image set ``name`` ("ffdm", "ddsm" or "combined", the two stacked in that
    order, as pipeline.data.image_set stacks their images), its data_prep.StoredFinding records."""
    parts = ("ffdm", "ddsm") if name == "combined" else (name,)
    return [findings for part in parts for findings in data_prep.load_findings(files[part])]


def findings_for(truth: list, ds: ImageSet, idx):
    """(scored, incidental): per image of ``idx``, its findings whose role is the image's own label
    (malignant on a malignant image, recalled_benign on a recalled-benign one), and the others
    (incidental lymph nodes and vascular calcifications, a benign finding beside a cancer), which
    are not scored: a maximum on them is a miss, and their area is not part of the chance level.
    (None, None) when the set has no findings at all."""
    if not any(truth):
        return None, None
    scored, incidental = [], []
    for i in idx:
        label = LABEL_NAMES[ds.labels[i]]
        scored.append([f for f in truth[i] if f.role == label])
        incidental.append([f for f in truth[i] if f.role != label])
    return scored, incidental
