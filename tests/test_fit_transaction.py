"""A step is a transaction: each fault leaves the model (and optimiser) exactly as after the last finite step."""
import copy

import pytest
import torch

from workbench import build_model, fit
from workbench.freezing import bn_policy, freeze
from workbench.training import Optim

OPTIONS = dict(epochs=2, batch_size=12, progress=False, seed=0)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(model, kept):
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())


def _forward_is_finite(model, x):
    model.eval()
    with torch.no_grad():
        return bool(torch.isfinite(model(x)).all())


def _keep_after(step, model, kept):
    """A callback that keeps the model's and the optimiser's state after ``step``, then lets ``fault`` act."""
    def callback(history):
        if history.step == step and "model" not in kept:
            kept["model"] = _state(model)
            kept["optimizer"] = copy.deepcopy(history.run.optimizer.state_dict())
            kept["fault"](history)
    return callback


def _assert_optimizer_state(optimizer, kept_state):
    now = optimizer.state_dict()
    assert now["state"].keys() == kept_state["state"].keys()
    for k, entry in kept_state["state"].items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(now["state"][k][name]), torch.as_tensor(value)), name


def _set_in_groups(key, value):
    def fault(history):
        for group in history.run.optimizer.param_groups:
            group[key] = value
    return fault


@pytest.mark.parametrize("optimizer, fault, kind", [
    ("sgd", _set_in_groups("weight_decay", float("nan")), "weights"),   # NaN weights written by the step
    ("sgd", _set_in_groups("lr", 1e30), "weights"),                     # finite weights whose squares overflow
    ("adamw", _set_in_groups("lr", 1e30), "weights"),
    ("adamw", _set_in_groups("weight_decay", float("inf")), "weights"),
])
def test_a_step_that_writes_bad_weights_is_undone_with_the_optimizer_state(small_shapes, optimizer, fault, kind):
    train, _ = small_shapes
    torch.manual_seed(0)
    model, kept = build_model(nc=3), {"fault": fault}
    history = fit(model, train, optimizer=optimizer, lr=0.01, callback=_keep_after(2, model, kept), **OPTIONS)
    assert history.status == "non_finite" and history.step == 2
    assert history.non_finite.kind == kind and history.non_finite.parameter is not None
    assert "step 3" in history.events[-1][1] and "weights of step 2" in history.events[-1][1]
    _assert_same(model, kept["model"])
    _assert_optimizer_state(history.run.optimizer, kept["optimizer"])
    assert _forward_is_finite(model, train.x[:4])


def test_bad_settings_from_the_first_step(small_shapes):
    """NaN weight decay is refused up front; lr=1e30 fails its first step and keeps the starting weights."""
    train, _ = small_shapes
    model = build_model(nc=3)
    start = _state(model)
    with pytest.raises(ValueError, match="weight_decay"):
        fit(model, train, optimizer=Optim("sgd", weight_decay=float("nan")), **OPTIONS)
    history = fit(model, train, optimizer="sgd", lr=1e30, **OPTIONS)
    assert history.status == "non_finite" and history.step == 0 and history.non_finite.kind == "weights"
    assert "starting weights" in history.events[-1][1]
    _assert_same(model, start)
    assert _forward_is_finite(model, train.x[:4])


def test_a_loss_function_that_raises_mid_run(small_shapes):
    train, _ = small_shapes
    torch.manual_seed(0)
    model, kept, calls = build_model(nc=3), {"fault": lambda h: None}, {"n": 0}

    def loss_fn(outputs, targets):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("the loss broke")
        return torch.nn.functional.cross_entropy(outputs, targets)

    with pytest.raises(RuntimeError, match="the loss broke") as caught:
        fit(model, train, loss_fn=loss_fn, callback=_keep_after(2, model, kept), **OPTIONS)
    history = caught.value.history
    assert history.status == "failed" and history.step == 2
    assert any("step 3" in note and "weights of step 2" in note for note in caught.value.__notes__)
    _assert_same(model, kept["model"])  # the forward pass of step 3 moved BatchNorm statistics: put back
    _assert_optimizer_state(history.run.optimizer, kept["optimizer"])
    assert _forward_is_finite(model, train.x[:4])


def test_a_forward_pass_that_raises_at_step_k_names_the_layer(small_shapes):
    train, _ = small_shapes
    torch.manual_seed(0)
    model, kept, calls = build_model(nc=3), {"fault": lambda h: None}, {"n": 0}

    def fail_on_fourth(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 4:
            raise ValueError("layer 4 broke")

    handle = model.layers[4].register_forward_hook(fail_on_fourth)
    with pytest.raises(ValueError, match="layer 4 broke") as caught:
        fit(model, train, callback=_keep_after(3, model, kept), **OPTIONS)
    handle.remove()
    assert caught.value.history.step == 3
    assert any("in layer layers.4" in note and "weights of step 3" in note for note in caught.value.__notes__)
    _assert_same(model, kept["model"])
    assert _forward_is_finite(model, train.x[:4])


def test_non_finite_gradients_keep_weights_and_optimizer_state(small_shapes):
    train, _ = small_shapes
    torch.manual_seed(0)
    model, kept, calls = build_model(nc=3), {"fault": lambda h: None}, {"n": 0}

    def poison(grad):
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == 3 else grad

    handle = model.layers[2].cv1.conv.weight.register_hook(poison)
    history = fit(model, train, optimizer="adamw", callback=_keep_after(2, model, kept), **OPTIONS)
    handle.remove()
    assert history.status == "non_finite" and history.step == 2 and history.non_finite.kind == "gradient"
    assert history.non_finite.layer == "layers.2"
    _assert_same(model, kept["model"])
    _assert_optimizer_state(history.run.optimizer, kept["optimizer"])
    assert _forward_is_finite(model, train.x[:4])


def test_requires_grad_and_batchnorm_policies_come_back(small_shapes):
    train, _ = small_shapes
    torch.manual_seed(0)
    model, calls = build_model(nc=3), {"n": 0}
    flags = [p.requires_grad for p in model.parameters()]
    policies = [bn_policy(m) for m in model.modules()]

    def loss_fn(outputs, targets):
        calls["n"] += 1
        if calls["n"] == 2:
            freeze(model, depth=3, bn="frozen")  # changes flags and policies inside the step, then fails
            return outputs.sum() * float("nan")
        return torch.nn.functional.cross_entropy(outputs, targets)

    history = fit(model, train, loss_fn=loss_fn, **OPTIONS)
    assert history.status == "non_finite" and history.step == 1
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [bn_policy(m) for m in model.modules()] == policies
    model.train()
    assert all(m.training for m in model.modules())


class _InterruptedSGD(torch.optim.SGD):
    """An SGD whose third step is interrupted after it wrote the weights (a second Ctrl-C inside step)."""

    calls = 0

    def step(self, closure=None):
        super().step(closure)
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt


def test_an_interrupt_inside_the_optimizer_step_keeps_weights_and_history_in_step(small_shapes):
    train, _ = small_shapes
    torch.manual_seed(0)
    model, kept = build_model(nc=3), {"fault": lambda h: None}
    optimizer = _InterruptedSGD(model.parameters(), lr=0.01, momentum=0.9)
    history = fit(model, train, optimizer=optimizer, callback=_keep_after(2, model, kept), **OPTIONS)
    assert history.status == "interrupted" and history.step == 2
    _assert_same(model, kept["model"])
    _assert_optimizer_state(optimizer, kept["optimizer"])
    assert len(history.layer_grad_norms) == 2


def test_the_transaction_costs_little_per_step():
    """The snapshot is refilled in place: no new tensors after the optimiser state exists."""
    from workbench.step import Snapshot
    model = build_model(nc=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    snapshot = Snapshot(model, optimizer)
    params = list(model.parameters())
    snapshot.save_update(params)
    copies = [id(t) for t in snapshot.buffer_copies + list(snapshot.param_copies.values()) + snapshot._state_copies]
    optimizer.step()
    snapshot.save()
    snapshot.save_update(params)
    assert copies == [id(t) for t in snapshot.buffer_copies + list(snapshot.param_copies.values())
                      + snapshot._state_copies]


def test_a_frozen_layer_is_not_copied(small_shapes):
    """Only what the optimiser is about to write is kept: frozen parameters get no gradient, no copy."""
    from workbench.step import Snapshot
    train, _ = small_shapes
    model = build_model(nc=3)
    freeze(model, depth=9)
    kept = []
    original = Snapshot.save_update

    def spy(self, params):
        kept.append(len(params))
        return original(self, params)

    Snapshot.save_update = spy
    try:
        fit(model, train, **OPTIONS)
    finally:
        Snapshot.save_update = original
    trainable = sum(p.requires_grad for p in model.parameters())
    assert kept == [trainable] * 6 and trainable < len(list(model.parameters())) // 4
