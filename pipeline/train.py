"""Training: the paper's SGD on minibatches of 50, with prefetching, logging, checkpoints and resume.

The paper: "batch size of 50 for stochastic gradient descent, a weight decay of
0.001, and a momentum of 0.9 ... started with 0.001 and dropped the rate by a
factor of 10 every 2,500 iterations"; images "mean subtracting" before entering
the network.

Reproducibility contract: the minibatch of iteration t is a pure function of
(seed, t) -- the concatenation of per-epoch permutations -- and dropout masks
come from the model's counter-based stream, so a run killed at any point and
resumed from its last checkpoint ends with the same weights as an
uninterrupted run.
"""
from __future__ import annotations

import csv
import math
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np

from alexnet_np import SoftmaxCrossEntropy, to_network_input, to_numpy
from alexnet_np.weights import load_checkpoint, save_checkpoint
from data_prep.fileio import write_csv_atomic

LOG_FIELDS = ("iteration", "loss", "accuracy", "lr", "images_per_s", "data_wait_s", "elapsed_s")


#: The divergence rule: a minibatch's mean cross-entropy above this many times ln(classes) (693 for
#: two classes), or NaN/inf. A loss of 1000 ln(C) means the average image's true class got a
#: probability of C^-1000: the logits have blown up. Such a run can come back to small losses (a
#: loss of 1e27 that fell back to 0.7 was seen) while its network has collapsed to one answer, so
#: the first exploded minibatch stops it. The margin is wide because healthy runs start high: the
#: demo's He-initialized network reached 46 at its second step (2026-11-30) before settling at 0.7.
EXPLODED_LOSS = 1000.0


class TrainingDiverged(RuntimeError):
    """The loss exploded (see :data:`EXPLODED_LOSS`) or became NaN/inf; the last good checkpoint is kept."""


def batch_indices(n: int, batch_size: int, seed: int, iteration: int) -> np.ndarray:
    """Positions (into the training list) of the minibatch for ``iteration``.

    The sample order is perm_0 ++ perm_1 ++ ... with perm_e a permutation of
    range(n) drawn from (seed, e); batch t takes positions [t*B, (t+1)*B).
    """
    start = iteration * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(perm[offset:offset + batch_size - len(out)])
    return np.asarray(out)


def random_shift(gray, shift, rng):
    """Translate each image by its own random (dy, dx) in [-shift, shift]^2, repeating edge pixels
    (augmentation; one vectorized gather for the whole batch)."""
    n, h, w = gray.shape
    padded = np.pad(gray, ((0, 0), (shift, shift), (shift, shift)), mode="edge")
    dy, dx = rng.integers(0, 2 * shift + 1, (2, n))
    rows = (np.arange(h)[None, :] + dy[:, None])[:, :, None]
    cols = (np.arange(w)[None, :] + dx[:, None])[:, None, :]
    return padded[np.arange(n)[:, None, None], rows, cols]


class BatchStream:
    """Minibatches for iterations [start, stop), made ready ahead of time by a background thread.

    The thread reads the images (from an HDF5 dataset or an array, with sorted
    indices as HDF5 requires), replicates gray to 3 channels, subtracts the
    mean and moves the batch to the compute device, while the main thread runs
    the previous step. NumPy, h5py and CuPy release the GIL in that work, so
    the two overlap; ``wait_s`` is the time the training loop spent blocked.
    """

    def __init__(self, images, indices, labels, batch_size, seed, mean, scale, xp, start, stop, prefetch=3,
                 flip=False, shift=0):
        self.images, self.indices, self.labels = images, np.asarray(indices), np.asarray(labels)
        self.batch_size, self.seed, self.mean, self.scale, self.xp = batch_size, seed, mean, scale, xp
        self.flip, self.shift = flip, int(shift)
        self.queue = queue.Queue(maxsize=prefetch)
        self.wait_s = 0.0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._work, args=(start, stop), daemon=True)
        self.thread.start()

    def _make(self, iteration):
        pos = batch_indices(len(self.indices), self.batch_size, self.seed, iteration)
        rows = self.indices[pos]
        order = np.argsort(rows, kind="stable")
        uniq, inverse = np.unique(rows[order], return_inverse=True)
        gray = np.asarray(self.images[uniq])[inverse]  # HDF5 wants increasing, unique indices
        gray = gray[np.argsort(order, kind="stable")]
        rng = np.random.default_rng([self.seed, iteration, 1])
        if self.flip:  # up-down mirror of a random half (breasts are oriented left, so never left-right)
            mirror = rng.random(len(gray)) < 0.5
            gray[mirror] = gray[mirror, ::-1]
        if self.shift:
            gray = random_shift(gray, self.shift, rng)
        x = to_network_input(gray, self.mean, self.scale)
        return x, self.xp.asarray(self.labels[pos])

    def _work(self, start, stop):
        try:
            for it in range(start, stop):
                item = self._make(it)
                while not self._stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # surface loader errors in the training loop
            self.queue.put(e)

    def get(self):
        t0 = time.perf_counter()
        item = self.queue.get()
        self.wait_s += time.perf_counter() - t0
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self._stop.set()
        self.thread.join(timeout=5)


def read_log(path):
    """The rows of a training log (train_log.csv) as dicts of strings; [] when there is none."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _rewrite_log(path, rows):
    write_csv_atomic(path, LOG_FIELDS, [[r[k] for k in LOG_FIELDS] for r in rows])


def train(net, opt, images, indices, labels, *, iters, batch_size, seed, mean, scale, checkpoint_path,
          log_path, checkpoint_every=100, resume=True, progress=True, desc="train", class_weights=None,
          flip=False, shift=0, on_checkpoint=None):
    """Run SGD until ``opt.iteration == iters``; returns the per-iteration log rows.

    * ``images``: (N, S, S) uint8 array or HDF5 dataset; ``indices``/``labels``: the
      training images and their network classes; network input = (image - mean) * scale.
    * ``flip``, ``shift``: augmentation (the paper used none): mirror a random half of each batch
      up-down; translate each image by up to ``shift`` pixels.
    * With ``resume`` and an existing checkpoint, weights, momentum, iteration and
      the dropout stream are restored and training continues from there; the log
      is cut back to the checkpoint's iteration so it has no duplicated rows.
    * A checkpoint is written atomically every ``checkpoint_every`` iterations and
      at the end; ``on_checkpoint(iteration)``, when given, runs just before each (the
      cross-validation folds score their validation images there). It must leave the
      network's parameters alone: the weights are those of an uninterrupted run either way. An exploded loss (:data:`EXPLODED_LOSS`) or a NaN/inf one raises
      :class:`TrainingDiverged` and keeps the last good checkpoint on disk.
    """
    checkpoint_path, log_path = Path(checkpoint_path), Path(log_path)
    if resume and checkpoint_path.exists():
        load_checkpoint(checkpoint_path, net, opt)
        rows = [r for r in read_log(log_path) if int(r["iteration"]) < opt.iteration]
    else:
        rows = []
    _rewrite_log(log_path, rows)
    start = opt.iteration
    if start >= iters:
        return rows
    lossf = SoftmaxCrossEntropy(class_weights)
    limit = EXPLODED_LOSS * math.log(net.num_classes)
    stream = BatchStream(images, indices, labels, batch_size, seed, mean, scale, net.xp, start, iters,
                         flip=flip, shift=shift)
    bar = _progress(progress, iters, start, desc)
    t_begin = time.perf_counter()
    last_good = start if checkpoint_path.exists() else None
    log = open(log_path, "a", newline="")
    writer = csv.DictWriter(log, fieldnames=LOG_FIELDS, lineterminator="\n")
    try:
        for it in range(start, iters):
            t0 = time.perf_counter()
            wait0 = stream.wait_s
            x, y = stream.get()
            logits = net.forward(x, train=True)
            loss, dlogits = lossf(logits, y)
            loss = float(loss)
            if not math.isfinite(loss) or loss > limit:
                where = (f"the last good checkpoint is {checkpoint_path} (iteration {last_good})"
                         if last_good is not None else "no checkpoint had been written yet")
                raise TrainingDiverged(
                    f"{desc}: the training loss became {loss:.4g} at iteration {it} (lr {opt.lr:g}; the run stops "
                    f"above {limit:.3g} = {EXPLODED_LOSS:g} ln {net.num_classes}); {where}. "
                    + ("Try a smaller --lr." if it > start else "The untrained network's logits are already huge: "
                       "check --input-scale and --init."))
            acc = float(to_numpy((logits.argmax(axis=1) == y).mean()))
            lr = opt.lr
            net.backward(dlogits)
            opt.step()
            dt = time.perf_counter() - t0
            row = {"iteration": it, "loss": f"{loss:.6f}", "accuracy": f"{acc:.4f}", "lr": f"{lr:.3g}",
                   "images_per_s": f"{batch_size / dt:.2f}", "data_wait_s": f"{stream.wait_s - wait0:.4f}",
                   "elapsed_s": f"{time.perf_counter() - t_begin:.2f}"}
            rows.append(row)
            writer.writerow(row)
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}", lr=f"{lr:.0e}",
                                img_s=f"{batch_size / dt:.0f}", refresh=False)
                bar.update(1)
            if opt.iteration % checkpoint_every == 0 or opt.iteration == iters:
                log.flush()
                if on_checkpoint is not None:
                    on_checkpoint(opt.iteration)
                save_checkpoint(checkpoint_path, net, opt)
                last_good = opt.iteration
    finally:
        log.close()
        stream.close()
        if bar is not None:
            bar.close()
    bad = [k for k, p in net.params.items() if not bool(net.xp.isfinite(p).all())]
    if bad:  # the last update can overflow after a finite loss
        raise TrainingDiverged(f"{desc}: parameters {bad} became NaN/inf by iteration {iters}; try a smaller --lr")
    return rows


def _progress(enabled, total, initial, desc):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True, leave=True)


def predict(net, images, indices, mean, scale, batch_size=100):
    """Class probabilities (host array) for ``images[indices]`` in test mode."""
    out = []
    indices = np.asarray(indices)
    for s in range(0, len(indices), batch_size):
        rows = indices[s:s + batch_size]
        order = np.argsort(rows)
        gray = np.empty((len(rows),) + tuple(images.shape[1:]), dtype=np.uint8)
        gray[order] = np.asarray(images[rows[order]])
        x = to_network_input(gray, mean, scale)
        out.append(net.predict_proba(x, batch_size=batch_size))
    return np.concatenate(out) if out else np.zeros((0, net.num_classes), np.float32)
