"""HDF5 weights and checkpoints: exact round trip, exclude, named errors, atomic writes, exact resume."""
import os

import h5py
import numpy as np
import pytest

from alexnet_np import (SGD, AlexNet, SoftmaxCrossEntropy, load_checkpoint, load_weights,
                        save_checkpoint, save_weights, to_numpy)

MINI = (4, 6, 6, 6, 4, 8, 8)  # AlexNet in miniature: same layers, small widths


def same(a, b):
    """Bitwise equality of two arrays on either backend."""
    return np.array_equal(to_numpy(a), to_numpy(b))


def small_net(seed=0, num_classes=3, input_size=67, widths=MINI):
    return AlexNet(num_classes, input_size=input_size, widths=widths, seed=seed)  # dropout 0.5


def test_round_trip_is_exact_with_attributes(tmp_path):
    a, b = small_net(seed=0), small_net(seed=1)
    path = tmp_path / "w.h5"
    save_weights(a, path, channel_order="BGR", mean=(104.5, 117.25, 123.0), source="unit test")
    attrs = load_weights(b, path)
    for key in a.params:
        assert same(a.params[key], b.params[key]), key
    assert attrs == {"format": "alexnet_np-weights", "format_version": 1, "variant": "caffe",
                     "input_size": 67, "channel_order": "BGR", "mean": (104.5, 117.25, 123.0),
                     "source": "unit test"}
    with h5py.File(path, "r") as f:  # the documented layout
        assert f["conv2/weight"].shape == (6, 2, 5, 5) and f["conv2/weight"].dtype == np.float32
        assert f["fc8/bias"].shape == (3,)


def test_exclude_keeps_layer_as_initialized(tmp_path):
    path = tmp_path / "w.h5"
    save_weights(small_net(seed=0, num_classes=5), path)
    b = small_net(seed=1, num_classes=2)  # a new task: other number of classes
    fc8_before = {k: b.params[k].copy() for k in ("fc8.weight", "fc8.bias")}
    with pytest.raises(ValueError, match=r"fc8.weight.*\(5, 8\).*\(2, 8\).*exclude=\('fc8',\)"):
        load_weights(b, path)
    load_weights(b, path, exclude=("fc8",))
    ref = small_net(seed=0, num_classes=5)
    for key in b.params:
        expected = fc8_before[key] if key.startswith("fc8") else ref.params[key]
        assert same(b.params[key], expected), key
    with pytest.raises(KeyError, match="fc9"):
        load_weights(b, path, exclude=("fc9",))


def test_shape_mismatch_names_layer_and_both_shapes_and_loads_nothing(tmp_path):
    path = tmp_path / "w.h5"
    save_weights(small_net(widths=(4, 6, 6, 6, 4, 8, 8)), path)
    b = small_net(seed=1, widths=(4, 6, 6, 6, 4, 16, 8))
    before = {k: v.copy() for k, v in b.params.items()}
    with pytest.raises(ValueError, match=r"fc6.weight: .*w.h5 has shape \(8, 4\).*model has \(16, 4\)"):
        load_weights(b, path)
    for key in b.params:  # conv1..conv5 were fine, yet nothing was loaded
        assert same(b.params[key], before[key]), key


def test_missing_layer_is_a_named_key_error(tmp_path):
    path = tmp_path / "w.h5"
    save_weights(small_net(), path)
    with h5py.File(path, "a") as f:
        del f["fc7"]
    with pytest.raises(KeyError, match=r"has no fc7/weight.*\(8, 8\)"):
        load_weights(small_net(seed=1), path)
    load_weights(small_net(seed=1), path, exclude=("fc7",))


def test_fc6_at_another_input_size_explains_why(tmp_path):
    path = tmp_path / "w.h5"
    save_weights(small_net(input_size=99), path)
    b = small_net(seed=1, input_size=67)
    with pytest.raises(ValueError) as err:
        load_weights(b, path)
    msg = str(err.value)
    assert "fc6.weight" in msg and "input_size 99" in msg and "input_size 67" in msg
    assert "pool5" in msg and "exclude=('fc6', 'fc7', 'fc8')" in msg and "input_size=99" in msg
    load_weights(b, path, exclude=("fc6", "fc7", "fc8"))
    assert same(b.params["conv5.weight"], small_net(input_size=99).params["conv5.weight"])


def test_wrong_files_give_errors_naming_the_file(tmp_path):
    net = small_net()
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="notes.txt is not an HDF5"):
        load_weights(net, text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["conv1/weight"] = np.zeros((4, 3, 11, 11), np.float32)
    with pytest.raises(ValueError, match="other.h5 .*not an alexnet_np weights file.*'format'"):
        load_weights(net, other)
    newer = tmp_path / "newer.h5"
    save_weights(net, newer)
    with h5py.File(newer, "a") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(ValueError, match="newer.h5 has format_version 2"):
        load_weights(net, newer)
    with pytest.raises(FileNotFoundError, match="absent.h5"):
        load_weights(net, tmp_path / "absent.h5")


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.h5"
    a = small_net(seed=0)
    save_weights(a, path)
    assert os.listdir(tmp_path) == ["w.h5"]  # no temporary file left behind

    calls = []
    real_create = h5py.Group.create_dataset

    def failing_create(self, *args, **kwargs):  # the disk "fills up" after two datasets
        calls.append(args[0])
        if len(calls) > 2:
            raise OSError("simulated failure mid-write")
        return real_create(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing_create)
    with pytest.raises(OSError, match="simulated"):
        save_weights(small_net(seed=1), path)
    with pytest.raises(OSError, match="simulated"):
        save_weights(small_net(seed=1), tmp_path / "new.h5")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["w.h5"]  # no partial new.h5, no temporary files
    b = small_net(seed=2)
    load_weights(b, path)  # the old file is intact
    assert all(same(a.params[k], b.params[k]) for k in a.params)


def _train(model, opt, data_rng, steps):
    """A few SGD steps with dropout on; batches drawn from ``data_rng``."""
    loss_fn = SoftmaxCrossEntropy()
    for _ in range(steps):
        x = data_rng.standard_normal((4, 3, 67, 67)).astype(np.float32)
        y = data_rng.integers(0, model.num_classes, size=4)
        _, dlogits = loss_fn(model.forward(model.xp.asarray(x), train=True), y)
        model.backward(dlogits)
        opt.step()


def _sgd(model):
    return SGD(model, base_lr=0.01, momentum=0.9, weight_decay=0.001, gamma=0.5, stepsize=3,
               new_layers=("fc8",))


def test_checkpoint_resume_is_bit_exact(tmp_path):
    straight = small_net(seed=0)
    opt = _sgd(straight)
    _train(straight, opt, np.random.default_rng(7), 6)

    first = small_net(seed=0)
    opt1 = _sgd(first)
    data_rng = np.random.default_rng(7)
    _train(first, opt1, data_rng, 3)
    path = tmp_path / "ckpt.h5"
    save_checkpoint(path, first, opt1, extra={"data_rng": data_rng.bit_generator.state,
                                              "epoch": 0, "val_auc": [0.5, 0.625]})
    assert os.listdir(tmp_path) == ["ckpt.h5"]
    del first, opt1, data_rng  # the run is "killed"

    resumed = small_net(seed=123)  # a fresh process: other initial weights and dropout RNG
    opt2 = _sgd(resumed)
    extra = load_checkpoint(path, resumed, opt2)
    assert extra["epoch"] == 0 and extra["val_auc"] == [0.5, 0.625]
    assert opt2.iteration == 3
    data_rng = np.random.default_rng()
    data_rng.bit_generator.state = extra["data_rng"]
    _train(resumed, opt2, data_rng, 3)

    assert opt2.iteration == opt.iteration == 6
    for key in straight.params:
        assert same(straight.params[key], resumed.params[key]), key
        assert same(opt.velocity[key], opt2.velocity[key]), key


def test_checkpoint_errors_and_weights_view(tmp_path):
    net = small_net()
    opt = _sgd(net)
    path = tmp_path / "ckpt.h5"
    save_checkpoint(path, net, opt)
    with pytest.raises(ValueError, match="base_lr=0.01.*base_lr=0.001"):
        load_checkpoint(path, small_net(), SGD(small_net(), base_lr=0.001))
    with pytest.raises(ValueError, match="lr_mult"):
        other = small_net()
        load_checkpoint(path, other, SGD(other, base_lr=0.01, momentum=0.9, weight_decay=0.001,
                                         gamma=0.5, stepsize=3))
    with pytest.raises(ValueError, match="warmup=0.*warmup=50"):  # a resumed run keeps its warm-up
        other = small_net()
        load_checkpoint(path, other, SGD(other, base_lr=0.01, momentum=0.9, weight_decay=0.001,
                                         gamma=0.5, stepsize=3, new_layers=("fc8",), warmup=50))
    assert load_checkpoint(path, net, opt) == {}
    with h5py.File(path, "r+") as f:  # a checkpoint written before the warm-up existed: none
        del f["optimizer"].attrs["warmup"]
    assert load_checkpoint(path, net, opt) == {}
    weights_only = tmp_path / "w.h5"
    save_weights(net, weights_only)
    with pytest.raises(ValueError, match="w.h5 holds weights but no training state"):
        load_checkpoint(weights_only, net, opt)
    b = small_net(seed=5)
    load_weights(b, path)  # a checkpoint is also a weights file
    assert all(same(net.params[k], b.params[k]) for k in net.params)


def test_fold_input_std_makes_undivided_inputs_equivalent():
    from alexnet_np.weights import fold_input_std
    net = AlexNet(3, variant="torchvision", input_size=67, widths=(4, 6, 6, 6, 4, 8, 8), init="he",
                  dtype=np.float64)
    std = np.array([0.229, 0.224, 0.225])
    x = np.random.default_rng(0).standard_normal((2, 3, 67, 67)) * 50
    expected = net.forward(x / (255.0 * std)[None, :, None, None], train=False)
    fold_input_std(net, std)
    np.testing.assert_allclose(net.forward(x, train=False), expected, rtol=1e-10)


def test_weights_info_reads_attributes_without_loading(tmp_path):
    from alexnet_np.weights import weights_info
    net = AlexNet(2, input_size=67, widths=(4, 6, 6, 6, 4, 8, 8))
    save_weights(net, tmp_path / "w.h5", mean=(1.0, 2.0, 3.0), source="test")
    info = weights_info(tmp_path / "w.h5")
    assert info["input_size"] == 67 and info["variant"] == "caffe" and tuple(info["mean"]) == (1.0, 2.0, 3.0)
