"""model.h5 (pipeline/modelfile.py) and `run.py predict` (pipeline/predict.py): a trained model
scores new images exactly as its training run scored its test images."""
import csv
import json
import shutil

import h5py
import numpy as np
import pytest

import data_prep
from alexnet_np import AlexNet, backend, load_weights, save_weights
from pipeline import modelfile
from test_pipeline import MINI, _run

JOB = "jobs/ffdm/malignant-vs-negative/tf0.25/main"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run.py job (30 synthetic patients, miniature AlexNet at 67 px, 4 iterations), shared by
    the tests of this module: its folder, and the built dataset it was trained on."""
    tmp = tmp_path_factory.mktemp("predict") / "t"
    tmp.mkdir()
    out, _ = _run(tmp, "--scenario", "malignant-vs-negative", "--test-fraction", "0.25")
    built = sorted((tmp.parent / "cache" / "synthetic").glob("ffdm-*/dataset_67.h5"))
    assert len(built) == 1
    return out, built[0]


def test_model_file_scores_the_test_images_exactly_as_the_run(trained):
    """Reload model.h5 and score the job's test images: bit-identical to predictions.h5 (same code path,
    same batch size 8 as the run, so the same float32 arithmetic in the same order)."""
    out, built = trained
    net, card = modelfile.load_model(out / JOB / "model.h5", device="cpu")
    with h5py.File(out / JOB / "predictions.h5", "r") as f:
        idx, saved = f["test/index"][()], f["test/proba"][()]
    images = data_prep.load_dataset(built)["images"][idx]
    proba = modelfile.score(net, card, images, batch_size=8)
    np.testing.assert_array_equal(proba, saved)
    # what makes that possible is in the card, not in the code's defaults
    assert card.scenario == "malignant-vs-negative" and card.class_names == ("negative", "malignant")
    assert card.positive_class == 1 and card.score_name == "P(malignant)"
    assert card.mean.shape == (67, 67) and card.input_scale == pytest.approx(1 / 64)
    assert card.widths == MINI and card.input_size == 67 and card.variant == "caffe"
    attrs = data_prep.load_dataset(built)["attrs"]
    assert vars(card.preprocessing) == {"size": 67, "aspect": attrs["aspect"], "equalize": attrs["equalize"],
                                        "threshold_fraction": attrs["threshold_fraction"]}
    assert card.training_data["datasets"]["ffdm"]["fingerprint"] == attrs["fingerprint"]
    assert len(card.training_data["train_sha256"]) == 64 and card.training["iters"] == 4
    assert card.environment["numpy"] == np.__version__ and card.git_dirty in ("yes", "no")
    assert len(card.git_commit) == 40  # the tests run from a checkout
    # the mean image is the per-pixel one: a scalar mean (what weights.h5 keeps) scores differently
    flat = modelfile.ModelCard(**{**vars(card), "mean": np.full(3, card.mean.mean(), np.float32)})
    assert not np.array_equal(modelfile.score(net, flat, images, batch_size=8), saved)


def test_model_file_is_still_a_weights_file(trained):
    """load_weights reads model.h5 like weights.h5 (same parameters), so tools for weights keep working."""
    out, _ = trained
    a = AlexNet(2, input_size=67, widths=MINI)
    b = AlexNet(2, input_size=67, widths=MINI, seed=5)
    load_weights(a, out / JOB / "weights.h5")
    info = load_weights(b, out / JOB / "model.h5")
    assert info["format"] == "alexnet_np-weights"
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])


def test_foreign_corrupt_and_newer_model_files_are_refused(trained, tmp_path):
    out, _ = trained
    good = out / JOB / "model.h5"
    with pytest.raises(modelfile.ModelFileError, match="does not exist"):
        modelfile.load_model(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(modelfile.ModelFileError, match=r"junk\.h5 is not an HDF5 file"):
        modelfile.load_model(junk)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(modelfile.ModelFileError, match="truncated.h5"):
        modelfile.load_model(truncated)
    weights_only = out / JOB / "weights.h5"
    with pytest.raises(modelfile.ModelFileError, match="alexnet_np weights file, not a model file"):
        modelfile.load_model(weights_only)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(modelfile.ModelFileError, match="another kind"):
        modelfile.load_model(other)
    newer = tmp_path / "newer.h5"
    shutil.copy(good, newer)
    with h5py.File(newer, "a") as f:
        f["model"].attrs["format_version"] = modelfile.FORMAT_VERSION + 1
    with pytest.raises(modelfile.ModelFileError, match=f"format_version {modelfile.FORMAT_VERSION + 1}"):
        modelfile.load_model(newer)
    damaged = tmp_path / "damaged.h5"
    shutil.copy(good, damaged)
    with h5py.File(damaged, "a") as f:
        del f["model"].attrs["preprocessing"]
        del f["fc8"]
    with pytest.raises(modelfile.ModelFileError, match="damaged model file.*preprocessing"):
        modelfile.load_model(damaged)
