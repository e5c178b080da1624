"""model.h5 (pipeline/modelfile.py) and `run.py predict` (pipeline/predict.py): a trained model
scores new images exactly as its training run scored its test images."""
import csv
import shutil

from pathlib import Path

import h5py
import numpy as np
import pytest

import data_prep
import run
from alexnet_np import AlexNet, backend, load_weights, save_weights
from pipeline import modelfile
from pipeline.predict import scored_batches
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
    net, card = modelfile.load_model(out / JOB / "model.h5")
    with h5py.File(out / JOB / "predictions.h5", "r") as f:
        idx, saved = f["test/index"][()], f["test/proba"][()]
    images = data_prep.load_dataset(built)["images"][idx]
    proba = modelfile.score(net, card, images, batch_size=8)
    np.testing.assert_array_equal(proba, saved)
    # what makes that possible is in the card, not in the code's defaults
    assert card.scenario == "malignant-vs-negative" and card.class_names == ("negative", "malignant")
    assert card.positive_class == 1 and card.score_name == "P(malignant)"
    assert card.mean.shape == (67, 67) and card.input_scale == pytest.approx(1 / 512)
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
    """load_weights reads model.h5 as a weights file (the same parameters load_model gives), so tools
    for weights, and the incremental fine-tuning, keep working."""
    out, _ = trained
    a, _ = modelfile.load_model(out / JOB / "model.h5")
    b = AlexNet(2, input_size=67, widths=MINI, seed=5)
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
    weights_only = tmp_path / "weights.h5"
    save_weights(modelfile.load_model(good)[0], weights_only)
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


# ----------------------------------------------------------------------------- run.py predict
def _test_rows(trained):
    """The job's test images as manifest rows (absolute paths), their saved probabilities and pixels."""
    out, built = trained
    with h5py.File(out / JOB / "predictions.h5", "r") as f:
        idx, saved = f["test/index"][()], f["test/proba"][()]
    ds = data_prep.load_dataset(built)
    by_line = {r["line"]: r for r in data_prep.read_manifest(built.parent / "manifest.csv")}
    rows = [dict(by_line[int(line)], image_path=by_line[int(line)]["path"]) for line in ds["manifest_line"]]
    return [rows[i] for i in idx], saved, ds["images"][idx], rows, set(idx.tolist())


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _predict(capsys, *argv):
    code = run.main(["predict", *map(str, argv), "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_on_a_manifest_reproduces_the_run_and_skips_a_corrupt_file(trained, tmp_path, capsys):
    """A manifest of 8 recalled-benign images (outside the scenario), a corrupt DICOM and the job's test
    images: the test images' probabilities equal predictions.h5 bit for bit (same preprocessing, same
    batches of 8 as the run, one worker); the corrupt file is listed and skipped; the benign images are
    scored but left out of the AUC; per breast = mean over its images, per patient = max over breasts."""
    out, _ = trained
    test_rows, saved, _, all_rows, test_idx = _test_rows(trained)
    benign = [r for i, r in enumerate(all_rows) if r["label"] == "recalled_benign" and i not in test_idx][:8]
    assert len(benign) == 8
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 50)
    bad = dict(test_rows[0], image_path=str(junk), patient_id="junk", exam_id="junk")
    manifest = data_prep.write_manifest(benign + [bad] + test_rows, tmp_path / "manifest.csv")
    code, stdout, _ = _predict(capsys, out / JOB / "model.h5", manifest, "--out", tmp_path / "s.csv",
                               "--workers", "1", "--batch-size", "8", "--n-boot", "50")
    assert code == 0
    scores = _read_csv(tmp_path / "s.csv")
    assert len(scores) == len(benign) + len(test_rows)
    got = np.array([[float(r["p_negative"]), float(r["p_malignant"])] for r in scores[8:]], np.float32)
    np.testing.assert_array_equal(got, saved)
    assert [r["image_path"] for r in scores[8:]] == [r["path"] for r in test_rows]
    assert all(r["score"] == r["p_malignant"] for r in scores)
    errors = _read_csv(tmp_path / "s.errors.csv")
    assert [e["image_path"] for e in errors] == [str(junk)] and errors[0]["reason"]
    assert "1 unreadable" in stdout and f"AUC over {len(test_rows)} images" in stdout
    assert "8 scored images with labels outside the scenario left out" in stdout and "DeLong 95% CI" in stdout
    # per breast: the mean of its images' scores; per patient: the max over their breasts
    breasts = _read_csv(tmp_path / "s_breast.csv")
    patients = {r["patient_id"]: r for r in _read_csv(tmp_path / "s_patient.csv")}
    for b in breasts:
        mine = [float(r["score"]) for r in scores if (r["patient_id"], r["laterality"]) == (b["patient_id"], b["laterality"])]
        assert int(b["n_images"]) == len(mine) and float(b["score"]) == pytest.approx(np.mean(mine), rel=1e-6)
    for pid, p in patients.items():
        mine = [float(b["score"]) for b in breasts if b["patient_id"] == pid]
        assert float(p["score"]) == pytest.approx(max(mine), rel=1e-6) and int(p["n_breasts"]) == len(mine)
    assert len(patients) == len({r["patient_id"] for r in benign + test_rows})


def test_scored_batches_see_the_built_pixels(trained):
    """The preprocessing predict applies from the model's card gives exactly the training dataset's pixels."""
    out, _ = trained
    test_rows, _, pixels, _, _ = _test_rows(trained)
    net, card = modelfile.load_model(out / JOB / "model.h5")
    from pipeline.predict import InputImage
    images = [InputImage(r["path"], r["patient_id"], r["laterality"], r["view"], r["label"]) for r in test_rows[:6]]
    batches = list(scored_batches(net, card, images, batch_size=4, workers=1, progress=False))
    assert [len(b.index) for b in batches] == [4, 2]
    np.testing.assert_array_equal(np.concatenate([b.gray for b in batches]), pixels[:6])


def test_predict_on_files_and_a_folder(trained, tmp_path, capsys):
    """A folder (searched recursively, with an unreadable PNG) and a file that is also inside it
    (scored once), 2 worker processes, batches of 2: the DICOM tags give laterality and view, and
    the probabilities match the run's to float32 rounding (other batches)."""
    out, _ = trained
    test_rows, saved, _, _, _ = _test_rows(trained)
    folder = tmp_path / "images" / "deeper"
    folder.mkdir(parents=True)
    for r in test_rows[:3]:
        shutil.copy(r["path"], folder / f"{r['patient_id']}_{r['laterality']}_{r['view']}.dcm")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    one = sorted(folder.glob("*.dcm"))[0]
    code, stdout, _ = _predict(capsys, out / JOB / "model.h5", tmp_path / "images", one,
                               "--out", tmp_path / "out" / "scores.csv", "--workers", "2", "--batch-size", "2",
                               "--explain", tmp_path / "maps")
    assert code == 0
    scores = {Path(r["image_path"]).name: r for r in _read_csv(tmp_path / "out" / "scores.csv")}
    assert len(scores) == 3 and "label" not in next(iter(scores.values()))
    for r, p in zip(test_rows[:3], saved[:3]):
        row = scores[f"{r['patient_id']}_{r['laterality']}_{r['view']}.dcm"]
        assert (row["laterality"], row["view"]) == (r["laterality"], r["view"])
        np.testing.assert_allclose([float(row["p_negative"]), float(row["p_malignant"])], p, rtol=0, atol=1e-5)
    assert [Path(e["image_path"]).name for e in _read_csv(tmp_path / "out" / "scores.errors.csv")] == ["broken.png"]
    assert not (tmp_path / "out" / "scores_breast.csv").exists() and "AUC" not in stdout
    # --explain: one Grad-CAM overlay per scored image, named by its input position and file stem
    overlays = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert len(overlays) == 3 and all(name.endswith("_gradcam.png") for name in overlays)
    assert {name.split("_", 1)[1].rsplit("_gradcam", 1)[0] for name in overlays} == {Path(n).stem for n in scores}
    assert "3 Grad-CAM overlays" in stdout


@pytest.mark.parametrize("case", ["missing input", "out is an input", "batch size 0", "weights only",
                                  "empty folder", "bad manifest", "explain into a file", "out in /proc",
                                  "out under a file", "run folder as model", "non-finite weights"])
def test_predict_refuses_bad_arguments_with_one_line(trained, tmp_path, capsys, case):
    out, _ = trained
    model = out / JOB / "model.h5"
    image = _test_rows(trained)[0][0]["path"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("image_path,patient_id\nx.dcm,p1\n")
    save_weights(modelfile.load_model(model)[0], tmp_path / "weights.h5")
    (tmp_path / "afile").write_text("a file, not a folder")
    nan_model = tmp_path / "nan_model.h5"
    shutil.copy(model, nan_model)
    with h5py.File(nan_model, "a") as f:
        f["conv3/weight"][0, 0, 0, 0] = np.nan
    argv, expect = {
        "missing input": ([model, tmp_path / "nope.dcm", "--out", tmp_path / "s.csv"], "nope.dcm: no such file"),
        "out is an input": ([model, image, "--out", image], "would overwrite an input"),
        "batch size 0": ([model, image, "--out", tmp_path / "s.csv", "--batch-size", "0"], "--batch-size"),
        "weights only": ([tmp_path / "weights.h5", image, "--out", tmp_path / "s.csv"], "not a model file"),
        "empty folder": ([model, tmp_path / "empty", "--out", tmp_path / "s.csv"], "no .dcm"),
        "bad manifest": ([model, tmp_path / "bad.csv", "--out", tmp_path / "s.csv"], "column 'exam_id'"),
        "explain into a file": ([model, image, "--out", tmp_path / "s.csv", "--explain", tmp_path / "bad.csv"],
                                "--explain"),
        # output paths are checked before any image is read (they used to fail after scoring them all)
        "out in /proc": ([model, image, "--out", "/proc/x.csv"], "--out /proc/x.csv: cannot write into /proc"),
        "out under a file": ([model, image, "--out", tmp_path / "afile" / "s.csv"], "is a file, not a folder"),
        "run folder as model": ([out, image, "--out", tmp_path / "s.csv"], f"model file {out} is a folder"),
        "non-finite weights": ([nan_model, image, "--out", tmp_path / "s.csv"], "non-finite (NaN or inf) values in conv3.weight"),
    }[case]
    code, stdout, stderr = _predict(capsys, *argv)
    assert code == 2 and stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr
    assert expect in stderr
    assert not (tmp_path / "s.csv").exists() and stdout == ""


@pytest.mark.skipif(backend._import_cupy() is None, reason="CuPy with a CUDA GPU is not available: "
                    "run.py predict --device gpu is checked on a GPU machine (bash bench/gpu_session.sh)")
def test_predict_on_the_gpu_matches_the_cpu(trained, tmp_path, capsys):
    out, _ = trained
    test_rows, saved, _, _, _ = _test_rows(trained)
    manifest = data_prep.write_manifest(test_rows, tmp_path / "manifest.csv")
    try:
        code = run.main(["predict", str(out / JOB / "model.h5"), str(manifest), "--out", str(tmp_path / "g.csv"),
                         "--device", "gpu", "--no-progress", "--n-boot", "50"])
    finally:
        backend.set_backend("numpy")
    assert code == 0
    got = np.array([[float(r["p_negative"]), float(r["p_malignant"])] for r in _read_csv(tmp_path / "g.csv")])
    np.testing.assert_allclose(got, saved, rtol=0, atol=1e-4)


def test_a_rerun_replaces_the_previous_tables(trained, tmp_path, capsys):
    """A rerun with the same --out on plain files (no manifest) must not leave the previous run's
    per-breast and per-patient tables beside the new scores, as if they were this run's."""
    out, _ = trained
    test_rows = _test_rows(trained)[0][:4]
    manifest = data_prep.write_manifest(test_rows, tmp_path / "manifest.csv")
    model = out / JOB / "model.h5"
    assert _predict(capsys, model, manifest, "--out", tmp_path / "s.csv", "--n-boot", "20")[0] == 0
    assert (tmp_path / "s_breast.csv").exists() and (tmp_path / "s_patient.csv").exists()
    assert _predict(capsys, model, test_rows[0]["path"], "--out", tmp_path / "s.csv")[0] == 0
    assert len(_read_csv(tmp_path / "s.csv")) == 1
    assert not (tmp_path / "s_breast.csv").exists() and not (tmp_path / "s_patient.csv").exists()


def test_a_triple_model_on_a_labelled_manifest_reports_its_auc(tmp_path_factory, capsys):
    """The triple scenario's AUC (the mean of the pairwise AUCs) on a labelled manifest: it used to
    crash after the CSVs were written."""
    tmp = tmp_path_factory.mktemp("triple") / "t"
    tmp.mkdir()
    run_dir, _ = _run(tmp, "--scenario", "triple", "--test-fraction", "0.25")
    built = sorted((tmp.parent / "cache" / "synthetic").glob("ffdm-*/dataset_67.h5"))[0]
    rows = data_prep.read_manifest(built.parent / "manifest.csv")[:40]
    manifest = data_prep.write_manifest([dict(r, image_path=r["path"]) for r in rows], tmp / "m.csv")
    code, stdout, stderr = _predict(capsys, run_dir / "jobs/ffdm/triple/tf0.25/main/model.h5", manifest,
                                    "--out", tmp / "s.csv", "--n-boot", "20")
    assert code == 0, stderr
    line = next(l for l in stdout.splitlines() if l.startswith("AUC over"))
    assert "(mean of the pairwise AUCs; no CI)" in line
    auc = float(line.split(": ")[1].split(" ")[0])
    scores = _read_csv(tmp / "s.csv")
    y = np.array([data_prep.LABEL_CODES[r["label"]] for r in scores])
    proba = np.array([[float(r[f"p_{n}"]) for n in ("negative", "recalled-benign", "malignant")] for r in scores])
    from stats import multiclass_auc
    assert auc == pytest.approx(multiclass_auc(y, proba, average="ovo").auc, abs=5e-4)


def test_resume_without_out_says_what_is_missing(capsys):
    assert run.main(["--resume", "--preset", "tiny", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --resume: expected --out FOLDER, the folder of the run to continue"
