"""Midranks and DeLong's structural components (Sun & Xu 2014), from one sort.

Notation used throughout the package: ``n1`` positives X_1..X_n1, ``n0``
negatives Y_1..Y_n0, and the Mann-Whitney kernel

    psi(x, y) = 1 if x > y,  1/2 if x == y,  0 if x < y.

The AUC is  A = (1 / (n1 n0)) * sum_i sum_j psi(X_i, Y_j)  (ties count 1/2).
"""

import numpy as np


def placement_counts(is_pos, score):
    """Each case's Mann-Whitney wins against the other class, via midranks.

    Sun & Xu (2014, IEEE Signal Process. Lett. 21:1389) write DeLong's
    structural components with midranks: T_Z = midranks among all n cases,
    T_X = midranks among the positives only, T_Y = among the negatives only.
    Then, for positive i and negative j,

        V10_i = (T_Z(X_i) - T_X(X_i)) / n0       = sum_j psi(X_i, Y_j) / n0
        V01_j = 1 - (T_Z(Y_j) - T_Y(Y_j)) / n1   = sum_i psi(X_i, Y_j) / n1

    This returns the numerators ``n0 * V10`` (one per positive, in input order)
    and ``n1 * V01`` (one per negative).  They are multiples of 1/2, hence exact
    in float64, which keeps zero variances exactly zero.

    All three midrankings come from a single O(n log n) sort of the scores: in
    sorted order the cases of one class are already sorted among themselves,
    so their within-class midranks follow from running counts.
    """
    n = len(score)
    n_pos = int(is_pos.sum())
    order = np.argsort(score)
    sorted_score = score[order]
    sorted_pos = is_pos[order]

    # Tie blocks: maximal runs of equal scores, as 0-based [start, end) slices
    # of the sorted order; every case of a block shares the same midranks.
    block_start = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    block_size = np.diff(np.r_[block_start, n])
    pos_in = np.add.reduceat(sorted_pos, block_start, dtype=np.int64)
    pos_before = np.cumsum(pos_in) - pos_in
    neg_in = block_size - pos_in

    # Midranks of a block (1-based, mean of the ranks it spans):
    #   T_Z = start + (size + 1)/2,  T_X = pos_before + (pos_in + 1)/2,
    #   T_Y = neg_before + (neg_in + 1)/2,  with neg_before = start - pos_before, so
    #   T_Z - T_X = neg_before + neg_in/2          (negatives below, ties 1/2)
    #   n1 - (T_Z - T_Y) = n1 - pos_before - pos_in/2   (positives above, ties 1/2)
    # column 0 holds a negative's wins, column 1 a positive's: indexed by the label below
    wins_by_block = np.empty((len(block_start), 2))
    wins_by_block[:, 0] = n_pos - pos_before - 0.5 * pos_in
    wins_by_block[:, 1] = block_start - pos_before + 0.5 * neg_in

    block_of = np.repeat(np.arange(len(block_start)), block_size)
    wins = np.empty(n)
    wins[order] = wins_by_block[block_of, sorted_pos.astype(np.intp)]
    # np.compress: several times faster than boolean indexing on irregular masks.
    return np.compress(is_pos, wins), np.compress(~is_pos, wins)


def auc_from_counts(pos_wins, neg_wins):
    """A = sum_i n0 V10_i / (n1 n0), from the two outputs of placement_counts."""
    return float(pos_wins.sum()) / (len(pos_wins) * len(neg_wins))


def auc_of(is_pos, score):
    """Mann-Whitney AUC of one score vector (see ``placement_counts``)."""
    return auc_from_counts(*placement_counts(is_pos, score))
