import math

import pytest
import torch
from torch import nn

from workbench import build_model, layer_table, numbered_layers
from workbench.models import BN_EPS, BN_MOMENTUM, Classify, Conv, Detect, init_weights


@pytest.mark.parametrize("nc", [1, 3, 10, 150])
def test_classify_head_width_follows_nc(nc):
    model = build_model("n", "classify", nc=nc)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, nc)
    assert model.layers[-1].linear.out_features == nc


@pytest.mark.parametrize("nc", [1, 3, 10, 80, 150])
def test_detect_class_branch_width_follows_ultralytics_rule(nc):
    model = build_model("n", "detect", nc=nc)
    head = model.layers[-1]
    assert isinstance(head, Detect)
    c0 = head.cv3[0][0].conv.in_channels  # channels of the P3 input
    assert head.cv3[0][0].conv.out_channels == max(c0, min(nc, 100))
    assert [branch[-1].out_channels for branch in head.cv3] == [nc] * 3
    outputs = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(1, 64 + nc, 8, 8), (1, 64 + nc, 4, 4), (1, 64 + nc, 2, 2)]


@pytest.mark.parametrize("reg_max, box_width, box_outputs", [(16, 64, 64), (1, 16, 4)])
def test_detect_box_branch_follows_ultralytics_rule(reg_max, box_width, box_outputs):
    """c2 = max(16, ch[0] // 4, 4 * reg_max): Ultralytics' DFL head at 16, the light head at 1."""
    head = build_model("n", "detect", nc=3, reg_max=reg_max).layers[-1]
    assert head.reg_max == reg_max and head.cv2[0][0].conv.out_channels == box_width
    assert [branch[-1].out_channels for branch in head.cv2] == [box_outputs] * 3
    dfl = [k for k in head.state_dict() if k.startswith("dfl.")]
    assert dfl == (["dfl.conv.weight"] if reg_max > 1 else [])
    if reg_max > 1:
        assert head.dfl.conv.weight.flatten().tolist() == list(range(16)) and not head.dfl.conv.weight.requires_grad
        init_weights(head, "kaiming")  # the bins are fixed values, not learnt: every scheme keeps them
        assert head.dfl.conv.weight.flatten().tolist() == list(range(16))


def test_class_count_change_touches_only_the_class_branch():
    a, b = build_model("n", "detect", nc=10), build_model("n", "detect", nc=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    differing = {k for k in sa if sa[k].shape != sb[k].shape}
    assert differing == {f"layers.22.cv3.{i}.2.{p}" for i in range(3) for p in ("weight", "bias")}


def test_state_dict_keys_are_numbered_layers_with_stages():
    model = build_model("n", "detect", nc=5)
    layers = numbered_layers(model)
    assert [layer.index for layer in layers] == list(range(23))
    assert all(k.split(".")[0] == "layers" and k.split(".")[1].isdigit() for k in model.state_dict())
    stages = [layer.stage for layer in layers]
    assert stages[:10] == ["backbone"] * 10 and stages[10:22] == ["neck"] * 12 and stages[22] == "head"
    assert [layer.stage for layer in numbered_layers(build_model())][-1] == "head"


def test_conv_uses_yolo_batchnorm_settings():
    bn = build_model().layers[0].bn
    assert (bn.eps, bn.momentum) == (BN_EPS, BN_MOMENTUM) == (1e-3, 0.03)
    assert isinstance(build_model().layers[0], Conv) and isinstance(build_model().layers[-1], Classify)


def test_s_scale_is_wider_than_n():
    n, s = build_model("n"), build_model("s")
    assert s.layers[0].conv.out_channels == 2 * n.layers[0].conv.out_channels == 32
    assert layer_table(s).params > 3 * layer_table(n).params


@pytest.mark.parametrize("task", ["classify", "detect"])
def test_layer_table_counts_equal_numel(task):
    model = build_model("n", task, nc=7)
    model.layers[0].conv.weight.requires_grad_(False)
    table = layer_table(model)
    assert table.params == sum(p.numel() for p in model.parameters())
    assert table.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert table[0].params - table[0].trainable == model.layers[0].conv.weight.numel()
    assert "total" in str(table) and "<table>" in table._repr_html_()


def test_layer_table_on_a_foreign_model(tiny_resnet):
    table = layer_table(tiny_resnet)
    assert [r.name for r in table] == ["conv1", "bn1", "layer1", "layer2", "layer3", "avgpool", "fc"]
    assert table[-1].stage == "head" and table[0].stage == "backbone"
    assert table.params == sum(p.numel() for p in tiny_resnet.parameters())


class YamlBuilt(nn.Module):
    """A model laid out as Ultralytics builds one: ``model`` (a Sequential) and the ``yaml`` dict it came from."""

    def __init__(self, n_backbone: int, n_head: int, yaml: dict | None = None):
        super().__init__()
        self.model = nn.Sequential(*[nn.Conv2d(4, 4, 1) for _ in range(n_backbone + n_head)])
        self.yaml = yaml if yaml is not None else {
            "nc": 3, "backbone": [[-1, 1, "Conv", [4]]] * n_backbone, "head": [[-1, 1, "C2f", [4]]] * n_head}


def test_stages_of_a_yaml_built_model_come_from_its_backbone_and_head_lists():
    """Backbone from the ``backbone`` list; the ``head`` list is neck, but its last layer is the head."""
    stages = [layer.stage for layer in numbered_layers(YamlBuilt(7, 5))]
    assert stages == ["backbone"] * 7 + ["neck"] * 4 + ["head"]
    table = layer_table(YamlBuilt(3, 1))
    assert [r.stage for r in table] == ["backbone"] * 3 + ["head"] and [r.name for r in table][0] == "model.0"


@pytest.mark.parametrize("yaml", [None, {"backbone": [[-1, 1, "Conv", [4]]] * 2}, {"backbone": [], "head": []},
                                  {"backbone": [[-1, 1, "Conv", [4]]] * 5, "head": [[-1, 1, "Detect", [3]]]}])
def test_a_yaml_that_does_not_describe_the_layers_leaves_the_default(yaml):
    """No yaml, no head list, or lists whose length is not the number of layers: last layer head, the rest backbone."""
    model = YamlBuilt(3, 1, yaml)
    if yaml is None:
        del model.yaml
    assert [layer.stage for layer in numbered_layers(model)] == ["backbone"] * 3 + ["head"]


def _conv_weights(model):
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("scheme, expected_std", [
    ("kaiming", lambda fi, fo: math.sqrt(2 / fi)),
    ("xavier", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    ("normal", lambda fi, fo: 0.01),
])
def test_init_scheme_std_matches_its_formula(scheme, expected_std):
    torch.manual_seed(0)
    model = init_weights(build_model("s"), scheme)
    checked = 0
    for w in _conv_weights(model):
        if w.numel() < 20_000:
            continue
        fan_in = w[0].numel()
        fan_out = w.shape[0] * w[0][0].numel()
        assert w.std().item() == pytest.approx(expected_std(fan_in, fan_out), rel=0.05)
        assert abs(w.mean().item()) < 0.1 * w.std().item()
        checked += 1
    assert checked > 10


def test_default_and_zero_schemes():
    torch.manual_seed(0)
    model = init_weights(build_model(), "zero")
    assert all((w == 0).all() for w in _conv_weights(model))
    init_weights(model, "default")  # PyTorch default: kaiming_uniform(a=sqrt(5)) -> bound 1/sqrt(fan_in)
    w = model.layers[8].cv2.conv.weight
    bound = 1 / math.sqrt(w[0].numel())
    assert w.abs().max().item() <= bound and w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    bn = model.layers[3].bn
    assert (bn.weight == 1).all() and (bn.bias == 0).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": "x"}, "choose one of"),
    ({"task": "segment"}, "choose one of"),
    ({"nc": 0}, "nc must be"),
    ({"ch": 0}, "ch must be"),
])
def test_bad_build_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)


def test_unknown_init_scheme_leaves_model_unchanged():
    model = build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="kaiming"):
        init_weights(model, "he")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_one_channel_model():
    assert build_model(ch=1)(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
