"""The paper's six classification scenarios and its class balancing (Table 1).

Dataset labels: 0 = negative, 1 = recalled-benign, 2 = malignant (data_prep's coding).

Five binary scenarios and one triple scenario:

    malignant-vs-rest      malignant  vs  recalled-benign + negative
    malignant-vs-negative  malignant  vs  negative
    malignant-vs-benign    malignant  vs  recalled-benign
    negative-vs-benign     recalled-benign  vs  negative   (positive = recalled-benign)
    benign-vs-rest         recalled-benign  vs  malignant + negative
    triple                 negative vs recalled-benign vs malignant

In a binary scenario the network's class 1 is the *positive* group (the one
named first; for negative-vs-benign it is recalled-benign, the class the study
wants to recognise), and the score fed to ROC analysis is P(class 1).

Balancing (Table 1: "Both the total number of images in the scenario as well as the images
per category are displayed"): each scenario class gets the same number n of images, and a merged
class draws equally from its members, e.g. malignant-vs-rest takes n malignant, n/2 negative and
n/2 recalled-benign images. n is the smallest number of images among the dataset labels the
scenario uses, as Table 1's counts imply: "Others" lists the same 867 FFDM images per category for
all five scenarios but negative-vs-benign, benign-vs-rest included (the malignant count), although
benign-vs-rest could draw 1,520 per class from its members (1,520 recalled-benign; 760 negative +
760 malignant). Balancing is applied separately to the training and the test side of a
patient-level split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_prep import LABEL_CODES, LABELS

from .errors import UserError

#: data_prep's label names, in code order (0 negative, 1 recalled_benign, 2 malignant)
LABEL_NAMES = LABELS
NEGATIVE, BENIGN, MALIGNANT = (LABEL_CODES[name] for name in ("negative", "recalled_benign", "malignant"))


@dataclass(frozen=True)
class Scenario:
    name: str
    classes: tuple  # one tuple of dataset labels per network class, in network-class order
    class_names: tuple
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def labels_used(self):
        return tuple(sorted({lab for group in self.classes for lab in group}))


SCENARIOS = {s.name: s for s in (
    Scenario("malignant-vs-rest", ((NEGATIVE, BENIGN), (MALIGNANT,)), ("negative+benign", "malignant"),
             "malignant vs recalled-benign + negative"),
    Scenario("malignant-vs-negative", ((NEGATIVE,), (MALIGNANT,)), ("negative", "malignant"),
             "malignant vs negative"),
    Scenario("malignant-vs-benign", ((BENIGN,), (MALIGNANT,)), ("recalled-benign", "malignant"),
             "malignant vs recalled-benign"),
    Scenario("negative-vs-benign", ((NEGATIVE,), (BENIGN,)), ("negative", "recalled-benign"),
             "negative vs recalled-benign"),
    Scenario("benign-vs-rest", ((NEGATIVE, MALIGNANT), (BENIGN,)), ("negative+malignant", "recalled-benign"),
             "recalled-benign vs malignant + negative"),
    Scenario("triple", ((NEGATIVE,), (BENIGN,), (MALIGNANT,)), ("negative", "recalled-benign", "malignant"),
             "malignant vs negative vs recalled-benign"),
)}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}") from None


def scenario_labels(scenario: Scenario, labels):
    """Map dataset labels to network classes: (class index array, -1 where the image is not used)."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, -1, dtype=np.int64)
    for cls, group in enumerate(scenario.classes):
        out[np.isin(labels, group)] = cls
    return out


class ScenarioDataError(UserError):
    """The images cannot supply one of a scenario's classes (e.g. a user's data set without malignant
    images, or a test side without them): a problem of the data, reported to the user as such."""


def balance(scenario: Scenario, labels, indices, rng, per_class=None, source=""):
    """Pick an equal number of images per scenario class from ``indices`` (image indices).

    n per class = min over the dataset labels the scenario uses of their image counts (Table 1's
    "images per category"; see the module's docstring); a class made of several dataset labels
    draws n / (its members) from each (remainders go to the first members). ``per_class`` caps n.
    Returns (selected indices sorted, their network-class labels). Raises
    :class:`ScenarioDataError`, naming ``source`` (which images), when a class has none.
    """
    labels = np.asarray(labels)
    indices = np.asarray(indices)
    pools = {lab: rng.permutation(indices[labels[indices] == lab]) for lab in scenario.labels_used()}
    capacity = min(len(pool) for pool in pools.values())
    n = capacity if per_class is None else min(int(per_class), capacity)
    if n == 0:
        counts = {LABEL_NAMES[lab]: len(p) for lab, p in pools.items()}
        raise ScenarioDataError(f"scenario {scenario.name}: a class has no images to draw from in {source or 'the data'} "
                                f"({', '.join(f'{k} {v}' for k, v in counts.items())}); expected images of every "
                                f"class of {scenario.description}, or another --scenario")
    chosen, classes = [], []
    for cls, group in enumerate(scenario.classes):
        shares = [n // len(group) + (1 if j < n % len(group) else 0) for j in range(len(group))]
        for lab, k in zip(group, shares):
            chosen.append(pools[lab][:k])
            classes.append(np.full(k, cls, dtype=np.int64))
    chosen, classes = np.concatenate(chosen), np.concatenate(classes)
    order = np.argsort(chosen)
    return chosen[order], classes[order]
