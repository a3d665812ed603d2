"""The one-line freeze summaries name the frozen span and its parameterless layers, counted right."""
import pytest
import torch
from foreign_models import TinyResNet as ForeignResNet

from workbench import freeze
from workbench.experiments.tiny_resnet import TinyResNet
from workbench.freezing import set_freeze_depth
from workbench.layers import numbered_layers
from workbench.panels import FreezePanel
from workbench.plots.layers import freeze_map, freeze_rows, frozen_span


def _expected_span(model, depth):
    """Reference: layers 0..depth-1, and how many of them hold no parameter."""
    empty = sum(not list(layer.module.parameters()) for layer in numbered_layers(model)[:depth])
    note = "" if not empty else f" ({empty} {'has' if empty == 1 else 'have'} no parameters)"
    return f"layers 0-{depth - 1} frozen{note}"


@pytest.mark.parametrize("depth", [5, 6, 7])
def test_span_counts_trailing_parameterless_layers(depth):
    torch.manual_seed(0)
    model = TinyResNet(num_classes=3)  # conv1, bn1, relu, layer1..3, avgpool, fc
    set_freeze_depth(model, depth)
    expected = _expected_span(model, depth)
    assert frozen_span(freeze_rows(model), depth) == expected
    assert freeze_map(model, depth=depth).layout.title.text.startswith(expected + " · ")
    assert FreezePanel(model, depth=depth, steps=0).summary.value.split(": ", 1)[1].startswith(expected + ",")


def test_spans_of_depth_6_and_7_differ():
    model = TinyResNet(num_classes=3)
    texts = [frozen_span(freeze_rows((set_freeze_depth(model, d), model)[1]), d) for d in (6, 7)]
    assert texts == ["layers 0-5 frozen (1 has no parameters)", "layers 0-6 frozen (2 have no parameters)"]


def test_span_on_a_foreign_model_without_parameterless_layers():
    model = ForeignResNet()
    set_freeze_depth(model, 3)
    assert frozen_span(freeze_rows(model), 3) == _expected_span(model, 3) == "layers 0-2 frozen"


def test_report_names_selected_layers_without_parameters():
    model = TinyResNet(num_classes=3)
    report = freeze(model, depth=5)
    layers = numbered_layers(model)
    with_params = [layer.index for layer in layers[:5] if list(layer.module.parameters())]
    empty = [layer.index for layer in layers[:5] if not list(layer.module.parameters())]
    assert empty == [2]
    assert f"in {len(with_params)} layers (layer 2 has no parameters);" in report.summary()


def test_report_counts_one_layer_and_one_tensor_in_the_singular():
    model = TinyResNet(num_classes=3)
    summary = freeze(model, layers=[0]).summary()
    assert "froze 1 tensor (" in summary and "in 1 layer;" in summary
