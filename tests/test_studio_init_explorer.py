"""The initialisation explorer: every curve against signal_propagation and the model's own forward pass."""
import pytest
import torch
from foreign_models import TinyResNet

from workbench import build_model, data
from workbench.monitor import ActivationStats
from workbench.panels import InitExplorer, as_is_signal
from workbench.stability import signal_propagation


@pytest.fixture(scope="module")
def x():
    return data.shapes(2, seed=0).x


def _curves(panel):
    return {t.name: (t.x.tolist(), t.y.tolist()) for t in panel.figure.data}


def test_scheme_curves_equal_signal_propagation(x):
    model = build_model(nc=3)
    panel = InitExplorer(model, x, schemes=("kaiming", "normal"), batchnorm=False, pretrained=False)
    for scheme in ("kaiming", "normal"):
        rows = signal_propagation(model, x, scheme, False, seed=0)
        assert _curves(panel)[scheme] == ([float(r.index) for r in rows], pytest.approx([r.std for r in rows]))
    assert _curves(panel)["normal"][1][-2] < _curves(panel)["kaiming"][1][-2] / 100  # fades fastest without BN
    panel.batchnorm.value = True
    for scheme in ("kaiming", "normal"):
        assert all(0.1 < std < 2 for std in _curves(panel)[scheme][1][1:-1])  # BatchNorm holds it steady


def test_pretrained_curve_is_the_models_own_forward_pass_and_leaves_the_model_alone(x):
    torch.manual_seed(0)
    model = build_model(nc=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    panel = InitExplorer(model, x, schemes=(), batchnorm=True, pretrained=True)
    probe = build_model(nc=10)
    probe.load_state_dict(before)
    probe.train()
    with torch.no_grad(), ActivationStats(probe) as stats:
        probe(x)
    assert _curves(panel)["pretrained"][1] == pytest.approx([r.std for r in stats.rows])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_controls_redraw_and_state_round_trips(x):
    model = build_model(nc=3)
    panel = InitExplorer(model, x, schemes=("kaiming",), batchnorm=False, pretrained=True, hide=["pretrained"])
    assert set(_curves(panel)) == {"kaiming", "pretrained"} and "without BatchNorm" in panel.figure.layout.title.text
    panel.batchnorm.value = True
    assert "with BatchNorm" in panel.figure.layout.title.text
    assert _curves(panel)["pretrained"][1] == pytest.approx([r.std for r in as_is_signal(model, x, True)])
    panel.schemes.value = ("zero", "xavier")
    assert set(_curves(panel)) == {"zero", "xavier", "pretrained"}
    again = InitExplorer.from_state(panel.state(), model, x)
    assert again.state() == panel.state() and again.pretrained.layout.display == "none"


def test_on_a_foreign_resnet(x):
    torch.manual_seed(0)
    panel = InitExplorer(TinyResNet(num_classes=3), x, schemes=("kaiming",), batchnorm=False)
    names = [r.name for r in panel.rows if r.scheme == "kaiming"]
    assert names == ["conv1", "bn1", "layer1", "layer2", "layer3", "avgpool", "fc"]
    assert set(_curves(panel)) == {"kaiming", "pretrained"}


def test_zero_std_is_drawn_below_every_other_and_a_short_axis_has_spaced_ticks(x):
    panel = InitExplorer(build_model(nc=3), x, schemes=("normal", "zero"), batchnorm=False, pretrained=False)
    normal = [r.std for r in panel.rows if r.scheme == "normal"]
    floor = _curves(panel)["zero"][1][0]
    assert _curves(panel)["normal"][1] == pytest.approx(normal, rel=1e-9, abs=0)  # tiny stds drawn as they are
    assert all(v == floor for v in _curves(panel)["zero"][1]) and floor < min(normal) / 9
    assert "std 0 drawn at" in panel.figure.layout.yaxis.title.text
    panel.schemes.value = ("kaiming",)
    panel.batchnorm.value = True  # stds of order one: under two decades, ticks 1-2-5 instead of every digit
    assert panel.figure.layout.yaxis.dtick == "D2" and "std 0" not in panel.figure.layout.yaxis.title.text
