"""The offline ImageNet stand-in (pipeline/standin.py): the fractal generator is a pure function of
(seed, category, index); a tiny pretraining learns the categories; its conv-only weights file loads
the way run.py --pretrained loads converted ImageNet weights, and run.py fine-tunes from it."""
import json

import h5py
import numpy as np
import pytest

from alexnet_np import AlexNet, load_weights
from alexnet_np.weights import weights_info
import run
from pipeline import standin
from test_pipeline import MINI, _run

SIZE = 67  # the smallest input the caffe trunk takes: the tests stay fast


def test_categories_and_images_are_a_function_of_seed_category_and_index():
    cats = standin.make_categories(3, seed=7)
    again = standin.make_categories(3, seed=7)
    assert all(np.array_equal(getattr(cats, k), getattr(again, k)) for k in ("A", "t", "prob"))
    labels, index = np.array([0, 1, 2, 1]), np.array([0, 0, 0, 5])
    batch = standin.generate(cats, labels, index, SIZE)
    # one image at a time, in reverse order: the same pixels
    alone = np.stack([standin.generate(cats, labels[i:i + 1], index[i:i + 1], SIZE)[0] for i in (3, 2, 1, 0)])
    assert np.array_equal(batch, alone[::-1])
    assert batch.dtype == np.uint8 and batch.shape == (4, SIZE, SIZE)
    assert not np.array_equal(batch[1], batch[3])  # image 5 of category 1 is another rendering than image 0
    other = standin.make_categories(3, seed=8)
    assert not np.allclose(other.A, cats.A)
    assert not np.array_equal(standin.generate(other, labels, index, SIZE), batch)


def test_categories_are_contractive_and_fill_the_image():
    cats = standin.make_categories(6, seed=0)
    norms = np.linalg.norm(cats.A, ord=2, axis=(2, 3))
    assert norms.max() <= standin.MAX_NORM + 1e-9  # times the 1.2 perturbation still < 1: a bounded attractor
    assert np.allclose(cats.prob.sum(axis=1), 1.0) and ((cats.prob > 0).sum(axis=1) >= 2).all()
    keys = standin.image_keys(0, np.arange(6), np.full(6, standin.SCREEN_INDEX))
    plain = standin.render(cats.A, cats.t, cats.prob, keys, 64, vary=False)
    assert ((plain > 0).mean(axis=(1, 2)) >= standin.MIN_FILL).all()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny pretraining: 2 categories, a miniature AlexNet at 67 px; returns (config, result)."""
    folder = tmp_path_factory.mktemp("standin")
    cfg = standin.StandinConfig(out=str(folder / "standin.h5"), classes=2, images_per_class=60,
                                test_per_class=30, iters=80, lr=0.01, input_scale=1 / 64, input_size=SIZE,
                                widths=list(MINI),
                                work_dir=str(folder / "work"), checkpoint_every=40, progress=False)
    return cfg, standin.pretrain(cfg, log=lambda *a: None)


def test_tiny_pretraining_learns_the_categories(tiny):
    cfg, result = tiny
    # 60 held-out images, chance 0.5: >= 0.75 has probability < 1e-4 by chance, so images
    # paired with the wrong labels (or labels the net cannot see) fail this
    assert result.accuracy >= 0.75, result
    info = weights_info(cfg.out)
    assert info["pretrain_accuracy"] == pytest.approx(result.accuracy)
    assert info["seed"] == 0 and info["iterations"] == 80 and info["train_s"] > 0 and info["generate_s"] > 0
    recorded = json.loads(info["standin"])
    assert recorded["classes"] == 2 and recorded["images_per_class"] == 60 and recorded["lr"] == 0.01
    with h5py.File(cfg.out, "r") as f:
        assert sorted(f) == list(standin.CONV_LAYERS)  # conv layers only


def test_the_file_loads_as_run_py_pretrained_loads_it(tiny):
    """pipeline/study.py's rule: the same input size replaces fc8 only; a conv-only file leaves fc6..fc8
    as initialized, and its conv layers are the pretraining's, to be fed (x - mean) * input_scale."""
    cfg, _ = tiny
    info = weights_info(cfg.out)
    assert info["variant"] == "caffe" and info["input_size"] == SIZE and info["input_scale"] == cfg.input_scale
    fresh = AlexNet(2, input_size=SIZE, widths=MINI, init="he", seed=3)
    net = AlexNet(2, input_size=SIZE, widths=MINI, init="he", seed=3)
    load_weights(net, cfg.out, exclude=("fc8",))
    for name in ("fc6", "fc7", "fc8"):
        assert np.array_equal(net.params[f"{name}.weight"], fresh.params[f"{name}.weight"])
    trained = AlexNet(2, input_size=SIZE, widths=MINI, init="he", seed=3)
    load_weights(trained, f"{cfg.work_dir}/checkpoint.h5")  # the pretraining's own last state
    for name in standin.CONV_LAYERS:
        assert np.array_equal(net.params[f"{name}.weight"], trained.params[f"{name}.weight"])
        assert not np.array_equal(net.params[f"{name}.weight"], fresh.params[f"{name}.weight"])
    with h5py.File(f"{cfg.work_dir}/train_images.h5", "r") as f:
        assert info["mean"][0] == pytest.approx(float(np.mean(f["images"][()])))
    small = AlexNet(2, input_size=SIZE + 32, widths=MINI)  # another input size: conv layers transfer alone
    load_weights(small, cfg.out, exclude=("fc6", "fc7", "fc8"))
    assert np.array_equal(small.params["conv3.weight"], net.params["conv3.weight"])


def test_run_py_fine_tunes_from_the_stand_in(tiny, tmp_path):
    cfg, _ = tiny
    # --pretrained alone: the input scale comes from the file (the stand-in records the one it trained with)
    out, _ = _run(tmp_path, "--scenario", "malignant-vs-negative", "--test-fraction", "0.25",
                  "--pretrained", cfg.out, "--experiment", "ffdm", "incremental")
    with h5py.File(out / "jobs/ffdm/malignant-vs-negative/tf0.25/main/predictions.h5", "r") as f:
        job = json.loads(f.attrs["job"])
    assert job["pretrained"] == cfg.out
    assert job["mean_pixel"] == pytest.approx(weights_info(cfg.out)["mean"][0], rel=1e-5)
    assert json.loads((out / "config.json").read_text())["input_scale"] == cfg.input_scale
    # the report's departures say what the stand-in is, and that it is not ImageNet
    report = (out / "report.md").read_text()
    assert "NOT on ImageNet" in report and "FractalDB-style" in report
    # the incremental experiment has the paper's three stages: stand-in -> DDSM-like -> FFDM-like
    jobs = out / "jobs/incremental/malignant-vs-negative"
    with h5py.File(jobs / "ddsm-pretrain/predictions.h5", "r") as f:
        stage1 = json.loads(f.attrs["job"])
    with h5py.File(jobs / "tf0.25/main/predictions.h5", "r") as f:
        stage2 = json.loads(f.attrs["job"])
    assert stage1["pretrained"] == cfg.out and not stage1["init_weights"]
    assert stage2["init_weights"] == str(jobs / "ddsm-pretrain/model.h5")
    assert "stand-in" in json.loads((out / "results.json").read_text())["runs"][-1]["incremental"]["pretrained_on"]


@pytest.mark.parametrize("argv, needle", [
    (["--classes", "1"], "--classes 1: expected an integer >= 2"),
    (["--input-size", "20"], "--input-size 20: input_size=20 is too small"),
    (["--lr", "0"], "--lr 0.0: expected a positive number"),
])
def test_command_line_errors_are_one_line(tmp_path, capsys, argv, needle):
    assert run.main(["standin", "--out", str(tmp_path / "w.h5"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1
    assert not (tmp_path / "w.h5").exists() and not (tmp_path / "w.h5.work").exists()
