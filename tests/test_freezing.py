import copy
import fnmatch
import threading

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import workbench as wb
from workbench import bn_drift, build_model, fit, freeze, unfreeze
from workbench.freezing import (
    BN_POLICIES,
    FreezeReport,
    bn_policy,
    bn_snapshot,
    check_schedule,
    depth_at,
    set_freeze_depth,
)
from workbench.layers import layer_index_of, numbered_layers
from workbench.optim import make_optimizer
from workbench.training import Freeze


class Block(nn.Module):
    def __init__(self, c1: int, c2: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c1, c2, 3, stride, 1, bias=False), nn.BatchNorm2d(c2)
        self.conv2, self.bn2 = nn.Conv2d(c2, c2, 3, 1, 1, bias=False), nn.BatchNorm2d(c2)
        self.down = None if stride == 1 and c1 == c2 else nn.Sequential(
            nn.Conv2d(c1, c2, 1, stride, bias=False), nn.BatchNorm2d(c2))

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNetLike(nn.Module):
    """A torchvision-style ResNet in miniature, written here: conv1, bn1, layer1..3, avgpool, fc."""

    def __init__(self, num_classes: int = 3, width: int = 8):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        self.layer1, self.layer2 = Block(width, width), Block(width, 2 * width, 2)
        self.layer3 = Block(2 * width, 4 * width, 2)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(self.avgpool(x).flatten(1))

HEAD = {"yolo": 9, "resnet": 6}  # index of the head layer: depth HEAD freezes everything before it


def make(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(nc=3) if kind == "yolo" else ResNetLike()


def norms(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


def numbered_index(model, name):
    return layer_index_of(name, numbered_layers(model))


def state(model) -> dict:
    """Everything freeze/unfreeze may touch: requires_grad, BatchNorm modes and policies, tensors."""
    return {"grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "bn": {n: (m.training, bn_policy(m), "train" in m.__dict__, "forward" in m.__dict__)
                   for n, m in norms(model)},
            "tensors": {k: v.clone() for k, v in model.state_dict().items()}}


def same_state(a: dict, b: dict) -> bool:
    return a["grad"] == b["grad"] and a["bn"] == b["bn"] and a["tensors"].keys() == b["tensors"].keys() and all(
        torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"])


def batch(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g)


def train_step(model, optimizer, zero_to_none=True):
    x, y = batch()
    optimizer.zero_grad(set_to_none=zero_to_none)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


# ---------------------------------------------------------------- selection and report

@pytest.mark.parametrize("kind", ["yolo", "resnet"])
def test_depth_freezes_layers_before_it_and_counts_equal_numel_sums(kind):
    model = make(kind)
    depth = HEAD[kind]
    report = freeze(model, depth=depth)
    layers = numbered_layers(model)
    for layer in layers:
        assert all(p.requires_grad == (layer.index >= depth) for p in layer.module.parameters()), layer.name
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert report.tensors == len(frozen)
    assert report.params == sum(p.numel() for p in frozen)
    assert report.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report.total == sum(p.numel() for p in model.parameters())
    assert report.trainable == wb.layer_table(model).trainable
    for row, layer in zip(report.rows, layers, strict=True):
        numel = sum(p.numel() for p in layer.module.parameters())
        assert (row.index, row.name, row.total) == (layer.index, layer.name, numel)
        assert row.params == row.frozen == (numel if layer.index < depth else 0)
    assert sum(r.bn for r in report.rows) == sum(1 for n, _ in norms(model) if numbered_index(model, n) < depth)
    assert isinstance(report, FreezeReport) and "froze" in str(report) and "<table>" in report._repr_html_()


def test_explicit_layers_and_patterns_match_torch_names():
    model = make("yolo")
    report = freeze(model, layers=[1, 3])
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith(("layers.1.", "layers.3."))}
    assert report.selection == "layers=[1, 3]"
    unfreeze(model)
    names = [n for n, _ in model.named_parameters()]
    freeze(model, patterns=["layers.2.*.bn.weight", "linear"])  # a glob, and a substring
    expected = {n for n in names if fnmatch.fnmatchcase(n, "layers.2.*.bn.weight") or "linear" in n}
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == expected


def test_depth_zero_changes_nothing_and_affine_may_freeze_every_layer():
    model = make("resnet")
    assert freeze(model, depth=0).tensors == 0
    report = freeze(model, depth=len(numbered_layers(model)), bn="affine")  # fastai's train_bn: only BN trains
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{m}.{t}" for m, _ in norms(model) for t in ("weight", "bias")}
    assert report.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- frozen means frozen

@pytest.mark.parametrize("kind", ["yolo", "resnet"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_frozen_parameters_get_no_gradient_and_stay_bitwise_equal(kind, optimizer):
    model = make(kind)
    opt = make_optimizer(model, optimizer, lr=0.05, momentum=0.9, weight_decay=0.1)  # decay and momentum on
    train_step(model, opt)  # momentum / Adam state and .grad exist before freezing
    freeze(model, depth=HEAD[kind] - 1, bn="eval")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    for _ in range(3):
        train_step(model, opt, zero_to_none=False)  # zeroed (not None) grads would still be decayed
    params = dict(model.named_parameters())
    assert all(params[n].grad is None and torch.equal(params[n], v) for n, v in frozen.items())
    assert all(not torch.equal(params[n], v) for n, v in trainable.items() if n.endswith("weight"))


def test_unfreeze_mid_run_needs_no_new_optimizer():
    model = make("yolo")
    opt = make_optimizer(model, "sgd", lr=0.05, weight_decay=5e-4)
    freeze(model, depth=9)
    train_step(model, opt)
    first = model.layers[0].conv.weight.detach().clone()
    unfreeze(model)
    train_step(model, opt)
    assert not torch.equal(model.layers[0].conv.weight, first)


# ---------------------------------------------------------------- BatchNorm policies

def run_modes(model):
    """Forward in train mode, evaluate (eval then back), then a training step: what fit does in an epoch."""
    opt = make_optimizer(model, "sgd", lr=0.1, weight_decay=0.0)
    model.train()
    model(batch()[0])
    wb.evaluate(model, [batch()])
    model.eval()
    model.train()
    train_step(model, opt)


@pytest.mark.parametrize("kind", ["yolo", "resnet"])
@pytest.mark.parametrize("policy", BN_POLICIES)
def test_batchnorm_policy_holds_across_train_and_eval(kind, policy):
    model = make(kind)
    keys = list(model.state_dict())
    depth = HEAD[kind]
    freeze(model, depth=depth, bn=policy)
    inside = [(n, m) for n, m in norms(model) if numbered_index(model, n) < depth]
    start, before = bn_snapshot(model), copy.deepcopy(model)
    run_modes(model)
    drift = {r.name: r for r in bn_drift(model, start)}
    old = dict(before.named_modules())
    for name, m in inside:
        stats_moved = drift[name].mean_shift > 0 and drift[name].var_change > 0
        affine_moved = not (torch.equal(m.weight, old[name].weight) and torch.equal(m.bias, old[name].bias))
        assert stats_moved == (policy in ("train", "affine")), name
        assert drift[name].updates == (2 if policy in ("train", "affine") else 0)
        assert affine_moved == (policy == "affine") == m.weight.requires_grad, name
        assert m.training == (policy != "eval")  # the model is in train mode now
    assert list(model.state_dict()) == keys  # checkpoints and transfer see the same entries
    unfreeze(model)
    model.train()
    assert all(m.training and bn_policy(m) is None for _, m in norms(model))
    start = bn_snapshot(model)
    model(batch()[0])
    assert all(r.updates == 1 and r.mean_shift > 0 for r in bn_drift(model, start))


def test_frozen_policy_normalises_with_running_stats_in_train_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    model(torch.randn(16, 3, 32, 32) + 2)  # running stats away from (0, 1)
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)
    reference = copy.deepcopy(model[1]).eval()
    freeze(model, layers=[1], bn="frozen")
    model.train()
    x = torch.randn(8, 4, 30, 30)
    assert model[1].training
    torch.testing.assert_close(model[1](x), reference(x), rtol=0, atol=0)
    assert model[1].num_batches_tracked.item() == reference.num_batches_tracked.item()


def test_bn_drift_matches_its_definition():
    model = make("resnet")
    start = copy.deepcopy(model.state_dict())
    model.train()
    model(batch()[0] * 3 + 1)
    row = next(r for r in bn_drift(model, start) if r.name == "bn1")
    mean0, var0 = start["bn1.running_mean"], start["bn1.running_var"]
    expected_shift = ((model.bn1.running_mean - mean0).pow(2).mean() / (var0 + model.bn1.eps).mean()).sqrt()
    expected_var = torch.linalg.vector_norm(model.bn1.running_var - var0) / torch.linalg.vector_norm(var0)
    assert row.mean_shift == pytest.approx(expected_shift.item(), rel=1e-6)
    assert row.var_change == pytest.approx(expected_var.item(), rel=1e-6)
    assert row.layer == 1 and row.updates == 1
    assert bn_drift(model, model).moved() == []
    with pytest.raises(ValueError, match="bn_snapshot"):
        bn_drift(model, {})


# ---------------------------------------------------------------- hand-frozen parameters

@pytest.mark.parametrize("kind", ["yolo", "resnet"])
def test_parameters_frozen_by_hand_are_never_reenabled(kind):
    model = make(kind)
    names = [n for n, _ in model.named_parameters()]
    by_hand = {names[0], names[-1]}  # one inside the frozen prefix, one in the head
    for n, p in model.named_parameters():
        if n in by_hand:
            p.requires_grad_(False)
    report = freeze(model, depth=3)
    assert names[0] in report.untouched and names[0] not in report.changed
    assert set(unfreeze(model).untouched) == by_hand
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == by_hand
    freeze(model, depth=3)
    set_freeze_depth(model, 0)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == by_hand


def test_deepcopy_keeps_what_the_workbench_froze():
    model = make("yolo")
    freeze(model, depth=9)
    twin = copy.deepcopy(model)
    twin.train()
    assert not twin.layers[0].bn.training and model.layers[0].bn.training is False
    assert unfreeze(twin).tensors == sum(1 for p in model.parameters() if not p.requires_grad)
    assert all(p.requires_grad for p in twin.parameters())
    assert not any(p.requires_grad for p in model.layers[0].parameters())  # the original is untouched


@settings(max_examples=25, deadline=None)
@given(layers=st.sets(st.integers(0, 6), min_size=1, max_size=5), hand=st.sets(st.integers(0, 25), max_size=4),
       policy=st.sampled_from(BN_POLICIES))
def test_freeze_then_unfreeze_restores_the_model_exactly(layers, hand, policy):
    model = make("resnet")
    for k, (_, p) in enumerate(model.named_parameters()):
        if k in hand:
            p.requires_grad_(False)
    model.train()
    before = state(model)
    try:
        freeze(model, layers=sorted(layers), bn=policy)
    except ValueError as error:  # only when nothing would be left to train
        assert "no trainable parameter" in str(error) and same_state(before, state(model))
        return
    unfreeze(model, layers=sorted(layers))
    assert same_state(before, state(model))


# ---------------------------------------------------------------- bad input: ValueError, model unchanged

@pytest.mark.parametrize("kind", ["yolo", "resnet"])
@pytest.mark.parametrize("call, message", [
    (lambda m: freeze(m, depth=99), r"depth must be an integer in 0\.\.\d+"),
    (lambda m: freeze(m, depth=-1), r"depth must be an integer in 0\.\.\d+"),
    (lambda m: freeze(m, depth=True), r"depth must be an integer"),
    (lambda m: freeze(m, layers=[0, 42]), r"unknown layer index 42: .* numbered 0\.\.\d+"),
    (lambda m: freeze(m, layers=[]), r"selects nothing"),
    (lambda m: freeze(m, patterns=["no_such_*"]), r"pattern 'no_such_\*' matches no parameter"),
    (lambda m: freeze(m, depth=2, bn="fixed"), r"choose one of \['eval', 'train', 'affine', 'frozen'\]"),
    (lambda m: freeze(m, depth=2, layers=[1]), r"exactly one of depth=, layers= or patterns="),
    (lambda m: freeze(m), r"exactly one of"),
    (lambda m: freeze(m, depth=len(numbered_layers(m))), r"no trainable parameter"),
    (lambda m: freeze(m, patterns="*"), r"no trainable parameter"),
    (lambda m: freeze(m, depth=3, bn="train"), r"already frozen with bn='eval'"),
    (lambda m: unfreeze(m, layers=[-1]), r"unknown layer index -1"),
    (lambda m: set_freeze_depth(m, len(numbered_layers(m))), r"no trainable parameter"),
])
def test_bad_input_raises_and_leaves_the_model_unchanged(kind, call, message):
    model = make(kind)
    freeze(model, depth=2, bn="eval")  # an existing freeze that must survive the failed call
    before = state(model)
    with pytest.raises(ValueError, match=message):
        call(model)
    assert same_state(before, state(model))


# ---------------------------------------------------------------- staged unfreezing through fit

def test_staged_schedule_switches_at_the_right_epoch_through_fit(small_shapes):
    train, val = small_shapes
    model = make("yolo")
    first_layer = model.layers[0].conv.weight
    seen, weights = [], {}

    def watch(history):
        if history.steps_in_epoch:  # after a step
            seen.append((history.epoch[-1], first_layer.requires_grad, model.layers[0].bn.training))
        else:  # at the end of an epoch
            weights[history.epochs_done] = first_layer.detach().clone()

    start = first_layer.detach().clone()
    history = fit(model, train, val, epochs=3, batch_size=12, optimizer="sgd", lr=0.05, progress=False,
                  callback=watch, freeze={0: 9, 2: 0})
    assert history.status == "completed" and history.freeze_depth == {0: 9, 1: 9, 2: 0}
    assert [d for d in (history.freeze_depth[e] for e in history.epoch)] == [9] * 6 + [0] * 3
    assert seen == [(0, False, False)] * 3 + [(1, False, False)] * 3 + [(2, True, True)] * 3
    assert torch.equal(weights[1], start) and torch.equal(weights[2], start)
    assert not torch.equal(weights[3], start)  # trained in epoch 2 by the optimiser built at the start
    assert [text for _, text in history.events] == ["step 1 (epoch 1): freeze depth 9",
                                                    "step 7 (epoch 3): freeze depth 0 (was 9)"]
    assert history.events[1][0] == 6


def test_staged_schedule_on_a_model_the_workbench_did_not_define(small_shapes):
    train, _ = small_shapes
    model = make("resnet")
    history = fit(model, train, epochs=2, batch_size=12, progress=False, freeze=Freeze({0: 6, 1: 3}, bn="frozen"))
    assert history.freeze_depth == {0: 6, 1: 3}
    layers = numbered_layers(model)
    assert all(p.requires_grad == (layer.index >= 3) for layer in layers for p in layer.module.parameters())
    assert bn_policy(model.bn1) == "frozen" and bn_policy(model.layer3.bn1) is None


def test_schedule_validation(small_shapes):
    train, _ = small_shapes
    model = make("yolo")
    assert check_schedule(model, {3: 0, 0: 9}) == {0: 9, 3: 0}
    assert [depth_at({1: 9, 3: 0}, e) for e in range(5)] == [None, 9, 9, 0, 0]
    for bad, message in [({}, "non-empty dict"), ({-1: 3}, "epochs must be integers >= 0"),
                         ({0: 11}, r"depth must be an integer in 0\.\.10"), ({0: 10}, "no trainable parameter")]:
        with pytest.raises(ValueError, match=message):
            fit(model, train, epochs=1, batch_size=12, progress=False, freeze=bad)
    with pytest.raises(ValueError, match="choose one of"):
        fit(model, train, epochs=1, batch_size=12, progress=False, freeze=Freeze({0: 3}, bn="fixed"))
    partial = torch.optim.SGD([p for n, p in model.named_parameters() if n.startswith("layers.9.")], lr=0.1)
    with pytest.raises(ValueError, match="optimizer does not hold"):
        fit(model, train, epochs=1, batch_size=12, progress=False, optimizer=partial, freeze={0: 9, 1: 0})
    assert all(p.requires_grad for p in model.parameters())


def test_staged_run_interrupted_and_resumed_matches_the_uninterrupted_one(small_shapes):
    train, val = small_shapes
    options = dict(epochs=3, batch_size=12, optimizer="sgd", lr=0.05, progress=False, freeze={0: 9, 2: 0})
    full = fit(make("yolo"), train, val, **options)
    stop = threading.Event()

    def stop_in_epoch_two(history):
        if history.step == 7:
            stop.set()

    model = make("yolo")
    history = fit(model, train, val, callback=stop_in_epoch_two, stop=stop, **options)
    assert history.status == "interrupted" and history.freeze_depth == {0: 9, 1: 9, 2: 0}
    stop.clear()
    history = fit(model, train, val, history=history, **options)
    assert history.status == "completed" and history.freeze_depth == full.freeze_depth
    assert history.loss == pytest.approx(full.loss, rel=1e-5)
    assert [e for e in history.events if "freeze" in e[1]] == full.events
