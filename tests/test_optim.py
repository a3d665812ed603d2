"""Parameter groups: tags, completeness, multipliers by stage and layer, layer decay, fastai slices."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from workbench import build_model, param_groups
from workbench.layers import numbered_layers
from workbench.optim import make_optimizer


class TinyViT(nn.Module):
    """Not ours either: LayerNorm, GroupNorm, a root-level token and a tied output layer."""

    def __init__(self, dim: int = 16, classes: int = 5):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, 4), nn.GroupNorm(4, dim))
        self.blocks = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.embed = nn.Embedding(classes, dim)
        self.head = nn.Linear(dim, classes, bias=False)
        self.head.weight = self.embed.weight  # tied: one tensor, two owners

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1)
        return self.head(self.blocks(x)[:, 0])


def ultralytics_split(model: nn.Module) -> dict[str, set[str]]:
    """Ultralytics' build_optimizer rule: BatchNorm-like modules' weights, names containing 'bias', the rest."""
    norms = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)
    split = {"weight": set(), "norm": set(), "bias": set()}
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            split["bias" if "bias" in full else "norm" if isinstance(module, norms) else "weight"].add(full)
    return split


def by_tag(groups) -> dict[str, set[str]]:
    out = {"weight": set(), "norm": set(), "bias": set()}
    for g in groups:
        out[g["tag"]].update(g["names"])
    return out


def assert_complete(model, groups):
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}
    assert len({g["name"] for g in groups}) == len(groups), "group names must be unique"
    for g in groups:
        assert len(g["names"]) == len(g["params"]) and g["tag"] in ("weight", "norm", "bias")
        assert g["weight_decay"] == (5e-4 if g["tag"] == "weight" else 0.0)
        named = dict(model.named_parameters(remove_duplicate=False))
        assert all(named[n] is p for n, p in zip(g["names"], g["params"], strict=True))


@pytest.mark.parametrize("task", ["classify", "detect"])
def test_our_models_split_as_ultralytics_does(task):
    model = build_model("n", task, nc=10)
    groups = param_groups(model, 0.01, 5e-4)
    assert [g["tag"] for g in groups] == [g["name"] for g in groups] == ["weight", "norm", "bias"]
    assert_complete(model, groups)
    assert by_tag(groups) == ultralytics_split(model)


def test_group_sizes_of_the_n_models():
    sizes = {}
    for task in ("classify", "detect"):
        groups = param_groups(build_model("n", task, nc=10), 0.01)
        sizes[task] = {g["tag"]: (len(g["params"]), sum(p.numel() for p in g["params"])) for g in groups}
    assert sizes["classify"] == {"weight": (27, 1444272), "norm": (26, 3408), "bias": (27, 3418)}
    # 3,012,798 parameters, as Ultralytics' yolov8n at 10 classes; the DFL bins (16, frozen) sit among the weights
    assert sizes["detect"] == {"weight": (64, 3002176), "norm": (57, 5200), "bias": (63, 5422)}
    light = param_groups(build_model("n", "detect", nc=10, reg_max=1), 0.01)
    assert {g["tag"]: (len(g["params"]), sum(p.numel() for p in g["params"])) for g in light} == {
        "weight": (63, 2692848), "norm": (57, 4912), "bias": (63, 4954)}


def test_a_resnet_the_workbench_did_not_define(tiny_resnet):
    groups = param_groups(tiny_resnet, 0.1, 5e-4)
    assert_complete(tiny_resnet, groups)
    tags = by_tag(groups)
    assert tags == ultralytics_split(tiny_resnet)
    assert tags["weight"] == {n for n, p in tiny_resnet.named_parameters() if p.ndim > 1}  # conv and fc weights
    assert tags["bias"] == {n for n in tiny_resnet.state_dict() if n.endswith(".bias")}  # fc's and BatchNorm's
    assert "layer2.down.1.weight" in tags["norm"] and "fc.bias" in tags["bias"]


def test_layer_norm_group_norm_and_tied_weights():
    model = TinyViT()
    groups = param_groups(model, 0.01, 5e-4)
    assert_complete(model, groups)
    tags = by_tag(groups)
    assert tags["norm"] == {"stem.1.weight", "blocks.0.weight", "blocks.2.weight"}
    assert tags["bias"] == {"stem.0.bias", "stem.1.bias", "blocks.0.bias", "blocks.1.bias", "blocks.2.bias"}
    assert "cls_token" in tags["weight"] and "embed.weight" in tags["weight"]  # the tied head weight, once


def test_frozen_parameters_stay_in_their_groups():
    model = build_model(nc=3)
    for p in model.layers[0].parameters():
        p.requires_grad_(False)
    groups = param_groups(model, 0.01)
    assert_complete(model, groups)
    assert "layers.0.conv.weight" in groups[0]["names"] and "layers.0.bn.weight" in groups[1]["names"]


def test_torch_applies_each_groups_lr():
    model = build_model(nc=3)
    opt = torch.optim.SGD(param_groups(model, 0.01, 0.0, lr_mult={"head": 10}), lr=0.01)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for g in opt.param_groups:
        for n, p in zip(g["names"], g["params"], strict=True):
            expected = 0.1 if n.startswith("layers.9.") else 0.01
            torch.testing.assert_close(before[n] - p.detach(), torch.full_like(p, expected))


def test_stage_multiplier_names_groups_and_keeps_tags():
    model = build_model("n", "detect", nc=4)
    groups = param_groups(model, 0.01, lr_mult={"head": 10})
    assert [g["name"] for g in groups] == ["weight", "norm", "bias", "weight/head", "norm/head", "bias/head"]
    assert [g["tag"] for g in groups] == ["weight", "norm", "bias"] * 2
    assert_complete(model, groups)
    for g in groups:
        head = g["name"].endswith("/head")
        assert all(n.startswith("layers.22.") == head for n in g["names"])
        assert g["lr"] == pytest.approx(0.1 if head else 0.01) and g["lr_mult"] == pytest.approx(10 if head else 1)


def test_multiplier_on_a_model_we_did_not_define(tiny_resnet):
    groups = param_groups(tiny_resnet, 0.01, lr_mult={"head": 5, "backbone": 0.5})
    assert {g["name"]: g["lr"] for g in groups} == {
        "weight/backbone": 0.005, "norm/backbone": 0.005, "bias/backbone": 0.005, "weight/head": 0.05,
        "bias/head": 0.05}
    assert set(groups[-1]["names"]) == {"fc.bias"} and set(groups[-2]["names"]) == {"fc.weight"}


def test_layer_index_multiplier():
    model = build_model(nc=3)
    groups = param_groups(model, 0.01, lr_mult={8: 3, 9: 10})
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["weight"] == 0.01 and lrs["weight/layer8"] == pytest.approx(0.03) and lrs["bias/layer9"] == 0.1
    assert_complete(model, groups)


def test_layer_decay_is_timm_scale():
    model = build_model("n", "detect", nc=2)
    n = len(numbered_layers(model))
    groups = param_groups(model, 0.01, layer_decay=0.75)
    assert_complete(model, groups)
    for g in groups:
        i = int(g["name"].split("/layer")[1])
        assert all(name.startswith(f"layers.{i}.") for name in g["names"])
        assert g["lr"] == pytest.approx(0.01 * 0.75 ** (n - 1 - i), rel=1e-12)
    assert max(g["lr"] for g in groups) == pytest.approx(0.01)


def test_layer_decay_times_stage_multiplier(tiny_resnet):
    groups = param_groups(tiny_resnet, 0.01, lr_mult={"head": 10}, layer_decay=0.5)
    lrs = {g["name"]: g["lr"] for g in groups}
    n = len(numbered_layers(tiny_resnet))  # conv1, bn1, layer1..3, avgpool, fc
    assert lrs["weight/layer6"] == pytest.approx(0.1) and lrs["weight/layer0"] == pytest.approx(0.01 * 0.5 ** (n - 1))


def test_fastai_slice_is_geometric_across_stages():
    model = build_model("n", "detect", nc=2)
    lrs = {g["name"]: g["lr"] for g in param_groups(model, slice(1e-5, 1e-3))}
    np.testing.assert_allclose([lrs["weight/backbone"], lrs["weight/neck"], lrs["weight/head"]],
                               np.geomspace(1e-5, 1e-3, 3), rtol=1e-12)
    lrs = {g["name"]: g["lr"] for g in param_groups(model, slice(1e-3))}  # fastai: hi/10 except the last
    assert lrs["weight/backbone"] == lrs["weight/neck"] == pytest.approx(1e-4) and lrs["weight/head"] == 1e-3


def test_fastai_slice_on_a_resnet(tiny_resnet):
    groups = param_groups(tiny_resnet, slice(1e-4, 1e-2))
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"weight/backbone": 1e-4, "norm/backbone": 1e-4, "bias/backbone": 1e-4,
                   "weight/head": 1e-2, "bias/head": 1e-2}


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=0.0), "lr must be"),
    (dict(lr=-0.01), "lr must be"),
    (dict(lr=math.nan), "lr must be"),
    (dict(lr=0.01, lr_mult={"neck": 10}), "stages are \\['backbone', 'head'\\]"),
    (dict(lr=0.01, lr_mult={12: 10}), "layers 0..9"),
    (dict(lr=0.01, lr_mult={"head": 0}), "multiplier"),
    (dict(lr=0.01, lr_mult={"head": 2, 3: 2}), "not both"),
    (dict(lr=0.01, layer_decay=1.5), "layer_decay"),
    (dict(lr=slice(0.0, 1e-3)), "lower lr"),
    (dict(lr=slice(1e-5, 1e-3, 2)), "no step"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(kwargs, message):
    model = build_model(nc=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        param_groups(model, **kwargs)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert flags == [p.requires_grad for p in model.parameters()]


def test_make_optimizer_passes_multipliers_and_keeps_its_defaults():
    model = build_model(nc=3)
    opt = make_optimizer(model, "sgd", lr=0.01, lr_mult={"head": 10})
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    assert {g["name"]: g["lr"] for g in opt.param_groups}["bias/head"] == 0.1
    auto = make_optimizer(model, "auto", iterations=100, nc=3)
    assert isinstance(auto, torch.optim.AdamW) and auto.param_groups[0]["lr"] == round(0.002 * 5 / 7, 6)
    assert auto.param_groups[0]["betas"] == (0.9, 0.999)


MODELS = {"ours": build_model("n", "detect", nc=2), "vit": TinyViT()}


@settings(max_examples=30, deadline=None)
@given(which=st.sampled_from(sorted(MODELS)), mults=st.dictionaries(st.integers(0, 3), st.floats(0.1, 10), max_size=3),
       decay=st.one_of(st.none(), st.floats(0.1, 1.0)))
def test_every_parameter_in_exactly_one_group_with_its_own_lr(which, mults, decay):
    model = MODELS[which]
    groups = param_groups(model, 0.01, lr_mult=mults, layer_decay=decay)
    assert_complete(model, groups)
    n = len(numbered_layers(model))
    for g in groups:
        label = g["name"].partition("/")[2]
        expected = 0.01  # parameters outside the numbered layers (the ViT's cls_token) keep the base lr
        if label:
            i = int(label.removeprefix("layer"))
            expected *= mults.get(i, 1.0) * (decay ** (n - 1 - i) if decay else 1.0)
            assert all(name.startswith(numbered_layers(model)[i].name + ".") for name in g["names"])
        assert g["lr"] == pytest.approx(expected, rel=1e-12)
