import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from workbench import build_model, data, fit
from workbench.monitor import (
    ActivationStats,
    GradientMonitor,
    clip_coefficient,
    layer_grad_norms,
    locate_non_finite,
    snapshot,
    weight_drift,
)
from workbench.stability import scratch_run, signal_propagation, without_batchnorm


def _ours():
    torch.manual_seed(0)
    return build_model(nc=3)


def _backward(model, seed=0, scale=1.0):
    torch.manual_seed(seed)
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 3, (6,))
    model.zero_grad(set_to_none=True)
    (scale * nn.functional.cross_entropy(model(x)[:, :3], y)).backward()


def _reference_norms(model, layer_of) -> dict[str, float]:
    """Per layer, the square root of the sum of squared parameter-gradient norms, one parameter at a time."""
    sums = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            sums[layer_of(name)] = sums.get(layer_of(name), 0.0) + p.grad.double().norm().item() ** 2
    return {k: math.sqrt(v) for k, v in sums.items()}


MODELS = {
    "ours": (_ours, lambda name: ".".join(name.split(".")[:2])),
    "resnet": (None, lambda name: name.split(".")[0]),
}


@pytest.fixture(params=sorted(MODELS))
def model_and_layer_of(request, tiny_resnet):
    make, layer_of = MODELS[request.param]
    return (make() if make else tiny_resnet), layer_of


def test_layer_norms_equal_a_per_parameter_reference(model_and_layer_of):
    model, layer_of = model_and_layer_of
    _backward(model)
    monitor = GradientMonitor(model)
    total = monitor.measure()
    reference = _reference_norms(model, layer_of)
    assert monitor.layer_names == list(reference)
    assert monitor.layer_norms[0].tolist() == pytest.approx(list(reference.values()), rel=1e-5)
    assert layer_grad_norms(model) == pytest.approx(reference, rel=1e-5)
    expected_total = nn.utils.clip_grad_norm_(model.parameters(), math.inf)  # inf: measures, scales nothing
    assert total.item() == pytest.approx(expected_total.item(), rel=1e-6)


def test_norms_are_copied_in_batches_and_on_demand(tiny_resnet):
    monitor = GradientMonitor(tiny_resnet, every=4)
    for step in range(6):
        _backward(tiny_resnet, seed=step)
        monitor.measure()
        assert len(monitor.log) == (4 if step >= 3 else 0)
    assert monitor.layer_norms.shape == (6, len(monitor.layer_names))  # reading flushes the rest
    assert len(monitor.totals) == 6
    with pytest.raises(ValueError, match="every"):
        GradientMonitor(tiny_resnet, every=0)


def test_frozen_layers_read_zero_and_root_parameters_get_their_own_row():
    model = _ours()
    model.scale_param = nn.Parameter(torch.ones(3))  # registered on the root, outside every numbered layer
    for p in model.layers[0].parameters():
        p.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    (model(torch.randn(4, 3, 32, 32)) * model.scale_param).sum().backward()
    monitor = GradientMonitor(model)
    total = monitor.measure()
    norms = dict(zip(monitor.layer_names, monitor.layer_norms[0].tolist(), strict=True))
    assert norms["layers.0"] == 0.0 and norms["(other)"] == pytest.approx(model.scale_param.grad.norm().item())
    assert total.item() == pytest.approx(nn.utils.clip_grad_norm_(model.parameters(), math.inf).item(), rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(max_norm=st.floats(0.01, 100.0), scale=st.floats(0.01, 100.0))
def test_clip_matches_clip_grad_norm(max_norm, scale):
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2))
    b = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2))
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 5)
    for m in (a, b):
        (scale * m(x).pow(2).sum()).backward()
    before = [p.grad.clone() for p in a.parameters()]
    monitor = GradientMonitor(a)
    total = monitor.measure()
    monitor.clip(max_norm, total)
    expected_total = nn.utils.clip_grad_norm_(b.parameters(), max_norm)
    assert total.item() == pytest.approx(expected_total.item(), rel=1e-6)
    for pa, pb, g in zip(a.parameters(), b.parameters(), before, strict=True):
        torch.testing.assert_close(pa.grad, pb.grad)
        coef = clip_coefficient(total.item(), max_norm)
        torch.testing.assert_close(pa.grad, g * coef, rtol=1e-5, atol=1e-7)
    assert clip_coefficient(total.item(), None) == 1.0


def test_first_non_finite_gradient_is_named(model_and_layer_of):
    model, layer_of = model_and_layer_of
    _backward(model)
    names = [n for n, _ in model.named_parameters()]
    bad = names[len(names) // 2]
    dict(model.named_parameters())[bad].grad[0] = float("nan")
    monitor = GradientMonitor(model)
    assert not math.isfinite(monitor.measure().item())
    assert monitor.first_non_finite() == (layer_of(bad), bad)


def test_drift_is_zero_at_start_and_grows_with_training(small_shapes, tiny_resnet):
    train, _ = small_shapes
    for model in (_ours(), tiny_resnet):
        start = snapshot(model)
        assert set(weight_drift(model, start).values()) == {0.0}
        drifts = []
        fit(model, train, epochs=2, batch_size=12, lr=3e-3, optimizer="adamw", progress=False,
            callback=lambda h, m=model, s=start, d=drifts: d.append(sum(weight_drift(m, s).values())))
        assert drifts[0] > 0 and drifts[-1] > drifts[0]
        assert all(v > 0 for v in weight_drift(model, start).values())
        assert set(weight_drift(model, copy.deepcopy(model)).values()) == {0.0}  # a model as the start


def test_drift_against_another_model_raises_and_changes_nothing(tiny_resnet):
    model = _ours()
    before = snapshot(model)
    with pytest.raises(ValueError, match="snapshot"):
        weight_drift(model, snapshot(tiny_resnet))
    other = build_model(nc=5)
    with pytest.raises(ValueError, match="different model"):
        weight_drift(model, snapshot(other))
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_activation_hooks_are_removed_and_never_stack(tiny_resnet):
    model, x = tiny_resnet, torch.randn(4, 3, 32, 32)
    stats = ActivationStats(model)
    with stats:
        model(x)
        first = _hook_count(model)
    assert first == len(stats.layers) and _hook_count(model) == 0
    with stats:
        with stats:  # re-entering (a re-run cell) replaces the hooks rather than adding more
            assert _hook_count(model) == first
            model(x)
    assert _hook_count(model) == 0
    assert [r.name for r in stats.rows] == ["conv1", "bn1", "layer1", "layer2", "layer3", "avgpool", "fc"]
    with pytest.raises(RuntimeError), ActivationStats(model):
        raise RuntimeError("a failing cell")
    assert _hook_count(model) == 0


def test_signal_propagation_with_and_without_batchnorm(tiny_resnet):
    model, x = _ours(), data.shapes(8, classes=3).x
    before = snapshot(model)
    rows = signal_propagation(model, x, batchnorm=(True, False))
    assert _hook_count(model) == 0 and all(torch.equal(before[k], v) for k, v in snapshot(model).items())
    std = {}
    for r in rows:
        std.setdefault((r.scheme, r.batchnorm), []).append(r.std)
    assert len(std) == 10 and all(len(v) == 10 for v in std.values())
    assert set(std["zero", True]) == {0.0} and set(std["zero", False]) == {0.0}
    for scheme in ("default", "kaiming", "xavier"):  # BatchNorm keeps the signal alive at every depth
        assert min(std[scheme, True][:-1]) > 0.3
    assert std["default", False][8] < 1e-3 * std["default", False][0]  # without it, the signal vanishes
    assert std["kaiming", False][8] > 100 * std["default", False][8]  # Kaiming keeps far more of it
    resnet_rows = signal_propagation(lambda: tiny_resnet, x, "kaiming", batchnorm=False)
    assert [r.name for r in resnet_rows] == ["conv1", "bn1", "layer1", "layer2", "layer3", "avgpool", "fc"]
    with pytest.raises(ValueError, match="kaiming"):
        signal_propagation(model, x, "he")


def test_signal_propagation_as_is_measures_the_models_own_weights():
    torch.manual_seed(0)
    model, x = _ours(), data.shapes(4, classes=3).x
    rows = signal_propagation(model, x, ("kaiming",), (True, False), as_is="mine")
    assert [(r.scheme, r.batchnorm) for r in rows[::10]] == [("kaiming", True), ("mine", True), ("kaiming", False),
                                                             ("mine", False)]
    for bn in (True, False):  # the model's own forward pass (training mode), no re-initialisation
        probe = copy.deepcopy(model) if bn else without_batchnorm(model)
        probe.train()
        with torch.no_grad(), ActivationStats(probe) as stats:
            probe(x)
        assert [r.std for r in rows if r.scheme == "mine" and r.batchnorm == bn] == [r.std for r in stats.rows]
    with pytest.raises(ValueError, match="as_is"):
        signal_propagation(model, x, (), as_is="kaiming")


def test_without_batchnorm_returns_a_copy(tiny_resnet):
    plain = without_batchnorm(tiny_resnet)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in tiny_resnet.modules())
    assert torch.equal(plain.conv1.weight, tiny_resnet.conv1.weight)
    assert plain.conv1.weight is not tiny_resnet.conv1.weight


def test_fit_records_layer_norms_and_clip_coefficients(small_shapes, tiny_resnet):
    train, _ = small_shapes
    for model in (_ours(), tiny_resnet):
        history = fit(model, train, epochs=2, batch_size=12, clip=1.0, progress=False)
        assert len(history.layer_grad_norms) == len(history.clip_coef) == history.step == 6
        assert history.layer_names == GradientMonitor(model).layer_names
        for row, total, coef in zip(history.layer_grad_norms, history.grad_norm, history.clip_coef, strict=True):
            assert math.sqrt(sum(v * v for v in row)) == pytest.approx(total, rel=1e-5)
            assert coef == pytest.approx(min(1.0, 1.0 / (total + 1e-6)))
    unclipped = fit(_ours(), train, epochs=1, batch_size=12, clip=None, progress=False)
    assert unclipped.clip_coef == [1.0] * 3


def test_non_finite_gradient_stops_restores_and_names_the_layer(small_shapes):
    train, _ = small_shapes
    model, kept, calls = _ours(), {}, {"n": 0}
    weight = model.layers[3].conv.weight

    def poison(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 3 else grad

    handle = weight.register_hook(poison)
    history = fit(model, train, epochs=2, batch_size=12, progress=False,
                  callback=lambda h: kept.update(snapshot(model)))
    handle.remove()
    assert history.status == "non_finite" and history.step == 2
    found = history.non_finite
    assert (found.step, found.kind, found.layer, found.parameter) == (3, "gradient", "layers.3", "layers.3.conv.weight")
    assert "layers.3" in history.events[-1][1]
    assert all(torch.equal(v, kept[k]) for k, v in snapshot(model).items())
    assert len(history.layer_grad_norms) == len(history.grad_norm) == 2  # the bad step is in non_finite only


def test_non_finite_loss_from_bad_data_names_the_first_layer(small_shapes):
    train, _ = small_shapes
    x = train.x.clone()
    x[30, 0, 5, 5] = float("nan")  # one bad pixel; unshuffled, it is in the third batch of 12
    bad = data.ImageSet(x, train.y, train.classes)
    model, kept = _ours(), {}
    history = fit(model, torch.utils.data.DataLoader(bad, batch_size=12), epochs=1, progress=False,
                  callback=lambda h: kept.update(snapshot(model)))
    assert history.status == "non_finite" and history.step == 2
    assert (history.non_finite.kind, history.non_finite.layer) == ("loss", "layers.0")
    assert all(torch.equal(v, kept[k]) for k, v in snapshot(model).items())


def test_locate_non_finite_names_a_parameter_or_an_output():
    model, x = _ours(), torch.randn(2, 3, 32, 32)
    assert locate_non_finite(model, x) == (None, None)
    with torch.no_grad():
        model.layers[4].cv1.conv.weight.fill_(3e38)  # finite, but its outputs overflow
    assert locate_non_finite(model, x) == ("layers.4", None)
    with torch.no_grad():
        model.layers[2].cv2.conv.weight[0, 0, 0, 0] = float("inf")
    assert locate_non_finite(model, x) == ("layers.2", "layers.2.cv2.conv.weight")


def test_interrupted_then_resumed_gives_the_same_curve(small_shapes, tiny_resnet):
    train, val = small_shapes
    start = {k: v.clone() for k, v in tiny_resnet.state_dict().items()}
    full = fit(tiny_resnet, train, val, epochs=3, batch_size=12, progress=False)
    tiny_resnet.load_state_dict(start)
    seen = {}

    def interrupt_after_four(history):
        seen.update(snapshot(tiny_resnet))
        if history.step == 4:
            raise KeyboardInterrupt

    history = fit(tiny_resnet, train, val, epochs=3, batch_size=12, progress=False, callback=interrupt_after_four)
    assert history.status == "interrupted" and history.step == 4 and len(history.layer_grad_norms) == 4
    assert all(torch.equal(v, seen[k]) for k, v in snapshot(tiny_resnet).items())
    history = fit(tiny_resnet, train, val, epochs=3, batch_size=12, progress=False, history=history)
    assert history.status == "completed"
    assert history.loss == pytest.approx(full.loss, rel=1e-5)
    assert history.grad_norm == pytest.approx(full.grad_norm, rel=1e-5)
    assert torch.tensor(history.layer_grad_norms) == pytest.approx(torch.tensor(full.layer_grad_norms), rel=1e-5)


def test_the_lesson_run_explodes_without_remedies_and_learns_with_them():
    train = data.shapes(24, classes=3, seed=0)
    _, fragile = scratch_run(False, train, epochs=10, progress=False)
    _, stable = scratch_run(True, train, epochs=10, progress=False)
    assert fragile.status == "non_finite" and fragile.non_finite.step <= 30
    assert fragile.non_finite.layer is not None
    assert stable.status == "completed" and stable.step == 50
    assert all(math.isfinite(v) for v in stable.loss + stable.grad_norm)
    first, last = sum(stable.loss[:5]) / 5, sum(stable.loss[-5:]) / 5
    assert last < 0.5 * first and last < math.log(3) / 2  # well below chance (ln 3)
