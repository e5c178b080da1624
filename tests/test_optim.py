"""Caffe SGD: the update formula over several steps (across an lr step), schedule, multipliers, state."""
import numpy as np
import pytest

from alexnet_np import SGD, AlexNet

MINI = (4, 6, 6, 6, 4, 8, 8)


def small_net():
    return AlexNet(2, input_size=67, widths=MINI, init="he", dtype=np.float64)


def test_lr_schedule_is_caffe_step_policy():
    opt = SGD(small_net(), base_lr=0.001, gamma=0.1, stepsize=2500)
    values = {}
    for it in (0, 2499, 2500, 4999, 5000, 7500):
        opt.iteration = it
        values[it] = opt.lr
    assert values[0] == values[2499] == 0.001
    assert values[2500] == pytest.approx(1e-4) and values[4999] == pytest.approx(1e-4)
    assert values[5000] == pytest.approx(1e-5) and values[7500] == pytest.approx(1e-6)


def test_warmup_ramps_the_step_policy_linearly():
    """lr = step policy x min(1, (iteration + 1) / warmup): 1/W of the base lr at the first step,
    the plain step policy from iteration W - 1 on, and no change at all with warmup 0."""
    opt = SGD(small_net(), base_lr=0.008, gamma=0.1, stepsize=800, warmup=100)
    plain = SGD(small_net(), base_lr=0.008, gamma=0.1, stepsize=800)
    for it, factor in ((0, 0.01), (49, 0.5), (98, 0.99), (99, 1.0), (500, 1.0), (800, 1.0)):
        opt.iteration = plain.iteration = it
        assert opt.lr == pytest.approx(plain.lr * factor), it
    assert plain.lr == pytest.approx(0.0008)
    with pytest.raises(ValueError, match="warmup"):
        SGD(small_net(), warmup=-1)


def test_sgd_matches_caffe_formula_across_an_lr_step():
    net = small_net()
    opt = SGD(net, base_lr=0.1, momentum=0.9, weight_decay=0.01, gamma=0.5, stepsize=2)
    rng = np.random.default_rng(0)
    w_ref = {k: v.copy() for k, v in net.params.items()}
    v_ref = {k: np.zeros_like(v) for k, v in net.params.items()}
    for it in range(5):
        lr = 0.1 * 0.5 ** (it // 2)
        for k in net.params:
            net.grads[k] = rng.standard_normal(net.params[k].shape)
            lr_mult, decay_mult = (1.0, 1.0) if k.endswith("weight") else (2.0, 0.0)
            v_ref[k] = 0.9 * v_ref[k] + lr * lr_mult * (net.grads[k] + 0.01 * decay_mult * w_ref[k])
            w_ref[k] = w_ref[k] - v_ref[k]
        assert opt.lr == pytest.approx(lr)
        opt.step()
        for k in net.params:
            np.testing.assert_allclose(net.params[k], w_ref[k], rtol=1e-12, atol=1e-14, err_msg=k)
            np.testing.assert_allclose(opt.velocity[k], v_ref[k], rtol=1e-12, atol=1e-14, err_msg=k)
    assert opt.iteration == 5


def test_new_layer_multiplier_and_bias_defaults():
    opt = SGD(small_net(), new_layers=("fc8",), new_layer_lr_mult=10.0)
    assert opt.mults["conv1.weight"] == (1.0, 1.0)
    assert opt.mults["conv1.bias"] == (2.0, 0.0)
    assert opt.mults["fc8.weight"] == (10.0, 1.0) and opt.mults["fc8.bias"] == (20.0, 0.0)
    with pytest.raises(KeyError, match="fc9"):
        SGD(small_net(), mults={"fc9.weight": (1, 1)})


def test_state_dict_round_trip_resumes_exactly():
    rng = np.random.default_rng(1)
    grads = [{k: rng.standard_normal(v.shape) for k, v in small_net().params.items()} for _ in range(4)]

    def run(net, opt, steps):
        for g in steps:
            net.grads.update(g)
            opt.step()

    a = small_net()
    oa = SGD(a, base_lr=0.05, stepsize=3)
    run(a, oa, grads)
    b = small_net()
    ob = SGD(b, base_lr=0.05, stepsize=3)
    run(b, ob, grads[:2])
    state = ob.state_dict()
    c = small_net()
    for k in c.params:
        c.params[k][...] = b.params[k]
    oc = SGD(c, base_lr=0.05, stepsize=3)
    oc.load_state_dict(state)
    run(c, oc, grads[2:])
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], c.params[k])
    assert oc.iteration == 4


def test_step_without_gradients_and_bad_settings_raise():
    net = small_net()
    with pytest.raises(KeyError, match="backward"):
        SGD(net).step()
    for bad in (dict(base_lr=0), dict(momentum=1.0), dict(weight_decay=-1), dict(stepsize=0)):
        with pytest.raises(ValueError):
            SGD(net, **bad)
