"""Panels driven with no browser: set a control's ``.value`` or ``.click()`` a button, and the figures follow."""
import copy
import json

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from foreign_models import TinyResNet
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from workbench import History, YoloSchedule, build_model, data, fit, freeze, panels, param_groups, plots, transfer
from workbench.experiments import own_model
from workbench.freezing import set_freeze_depth
from workbench.layers import numbered_layers
from workbench.monitor import snapshot
from workbench.panels import (
    ComparePanel,
    FreezeDepthPreview,
    FreezePanel,
    Throttle,
    TrainPanel,
    TransferPanel,
    WarmupPanel,
    parse_layer_map,
    refresh_figure,
)
from workbench.runs import setup_run


def _bars(figure):
    return {t.name: list(t.x) for t in figure.data if t.type == "bar"}


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def tiny_data():
    """3 classes, 8 images each at 16x16: train 18 / val 6."""
    return data.split(data.shapes(8, classes=3, size=16, seed=0), 0.25, seed=0)


# ------------------------------------------------------------------------------------------ shared machinery
def test_refresh_figure_updates_in_place_and_replaces_when_the_traces_change():
    widget = go.FigureWidget(go.Figure(go.Scatter(y=[1, 2], marker=dict(color="red")), dict(title="a")))
    trace = widget.data[0]
    refresh_figure(widget, go.Figure(go.Scatter(y=[3, 4, 5]), dict(title="b", xaxis_title="x")))
    assert widget.data[0] is trace and list(trace.y) == [3, 4, 5] and trace.marker.color is None
    assert widget.layout.title.text == "b" and widget.layout.xaxis.title.text == "x"
    refresh_figure(widget, go.Figure([go.Bar(y=[1]), go.Heatmap(z=[[1]])], dict(title="c")))
    assert [t.type for t in widget.data] == ["bar", "heatmap"] and widget.layout.xaxis.title.text is None


_colour = st.fixed_dictionaries({"color": st.sampled_from(["red", "blue"])})
_trace = st.fixed_dictionaries(
    {"type": st.sampled_from(["scatter", "bar"]), "y": st.lists(st.floats(-5, 5), max_size=4)},
    optional={"name": st.sampled_from(["a", "b"]), "marker": _colour, "showlegend": st.booleans()})
_layout = st.fixed_dictionaries({}, optional={
    "title": st.fixed_dictionaries({"text": st.sampled_from(["t", "u"])}),
    "xaxis": st.fixed_dictionaries({"type": st.sampled_from(["log", "linear"])}),
    "height": st.sampled_from([300, 400])})
_figure = st.tuples(st.lists(_trace, max_size=3), _layout)


def _pruned(value):
    """Without empty dicts (an unset and an emptied property draw the same)."""
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v != {}}
    return value


def _plain(fig) -> tuple[list, dict]:
    data = fig.to_dict()
    layout = {k: v for k, v in data["layout"].items() if k != "template"}
    return [_pruned({k: v for k, v in t.items() if k != "uid"}) for t in data["data"]], _pruned(layout)


@settings(max_examples=15, deadline=None)
@given(st.lists(_figure, min_size=2, max_size=4))
def test_refresh_figure_shows_exactly_the_last_figure(figures):
    widget = go.FigureWidget(go.Figure(*figures[0]))
    for traces, layout in figures[1:]:
        fig = go.Figure(traces, layout)
        refresh_figure(widget, fig)
        assert _plain(widget) == _plain(fig)
        assert _plain(go.Figure(widget._widget_data, widget._widget_layout)) == _plain(fig)  # what a new view draws


def test_throttle_bounds_the_redraw_rate():
    now = [0.0]
    throttle = Throttle(per_second=4, clock=lambda: now[0])
    ready = []
    for _ in range(100):  # 100 callbacks over one second
        ready.append(throttle.ready())
        now[0] += 0.01
    assert sum(ready) == 4 and ready[0]
    with pytest.raises(ValueError):
        Throttle(per_second=0)


# ------------------------------------------------------------------------------------------ freeze
def test_freeze_depth_preview_keeps_its_widgets_for_the_first_notebook():
    preview = FreezeDepthPreview(build_model(nc=3))
    assert preview.depth.description == "freeze depth" and preview.summary.value.startswith("depth=0: ")
    preview.depth.value = 5
    assert preview.summary.value.startswith("depth=5: layers 0-4 frozen")
    assert preview.table.value.count(">frozen<") == 5
    assert panels.depth_summary(preview.model, 9).startswith("depth=9: layers 0-8 frozen")


def test_freeze_panel_freezes_a_copy_and_redraws_the_map():
    model = build_model(nc=3)
    before = snapshot(model)
    panel = FreezePanel(model, steps=0)
    assert _bars(panel.figure)["trainable"] == list(range(10))
    panel.depth.value = 4
    reference = copy.deepcopy(model)
    report = set_freeze_depth(reference, 4)
    assert _bars(panel.figure)["frozen"] == [0, 1, 2, 3]
    assert panel.report.trainable == report.trainable and f"trainable {report.trainable:,} of" in panel.summary.value
    assert [p.requires_grad for p in panel.model.parameters()] == [p.requires_grad for p in reference.parameters()]
    assert all(p.requires_grad for p in model.parameters()) and _same_tensors(snapshot(model), before)
    panel.bn.value = "affine"
    assert _bars(panel.figure)["partly frozen"] == [0, 1, 2, 3] and set(panel.figure.data[-1].text) == {"affine"}
    assert panel.timing.value.startswith("step time: not measured")


@pytest.mark.parametrize("build, depth, span", [
    (lambda: build_model(nc=3), 9, "layers 0-8 frozen"),
    (lambda: own_model.build(3), 5, "layers 0-4 frozen (1 has no parameters)"),  # lesson 6's model: a ReLU at 2
    (lambda: TinyResNet(), 3, "layers 0-2 frozen"),
])
def test_freeze_panel_title_and_summary_name_the_same_frozen_layers(build, depth, span):
    model = build()
    panel = FreezePanel(model, depth=depth, steps=0)
    title = panel.figure.layout.title.text
    assert title.startswith(span + " · ") and f": {span}, " in panel.summary.value
    layers = numbered_layers(model)
    with_params = [i for i in range(depth) if sum(p.numel() for p in layers[i].module.parameters())]
    frozen = [i for i, layer in enumerate(numbered_layers(panel.model))
              if any(not p.requires_grad for p in layer.module.parameters())]
    assert frozen == with_params  # what the span names is what requires_grad says
    panel.bn.value = "affine"
    if depth == 9:
        assert panel.figure.layout.title.text.startswith("layers 0-8 frozen (9 of them partly) · ")
        assert ": layers 0-8 frozen (9 of them partly), " in panel.summary.value


def test_freeze_panel_times_a_step_on_a_foreign_model_without_changing_it():
    model = TinyResNet()
    panel = FreezePanel(model, steps=1, batch=2, inplace=True)
    start = snapshot(model)
    panel.depth.value = 4
    assert panel.step_seconds > 0 and "ms" in panel.timing.value and "nothing frozen" in panel.timing.value
    assert _same_tensors(snapshot(model), start)  # timing restores weights and BatchNorm statistics
    assert all(p.grad is None for p in model.parameters())
    assert not any(p.requires_grad for p in model.layer1.parameters())  # inplace: the user's model is frozen
    with pytest.raises(ValueError, match="example="):
        FreezePanel(nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 2)), steps=1)
    FreezePanel(nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 2)), steps=1,
                example=(torch.randn(3, 4), torch.tensor([0, 1, 1])))


# ------------------------------------------------------------------------------------------ transfer
def test_transfer_panel_follows_the_class_count_and_names():
    source = build_model(nc=10)
    panel = TransferPanel(source, target_nc=3, source_names=data.SOURCE_CLASSES)
    assert panel.report.headline == transfer(source, build_model(nc=3), dry_run=True).headline
    mismatch = next(t for t in panel.figure.data if (t.name or "").startswith("shape_mismatch"))
    assert mismatch.name == "shape_mismatch (2)"
    panel.target_nc.value = 10
    assert panel.report.n_transferred == panel.report.n_items
    assert not any((t.name or "").startswith("shape_mismatch") for t in panel.figure.data)
    panel.target_nc.value = 3
    panel.target_names.value = "triangle, ring, tee"
    assert panel.report.counts["partial"] == 2 and any(t.name == "partial (2)" for t in panel.figure.data)
    assert "source: 10 classes" in panel.counts.value and "target: 3 classes" in panel.counts.value
    shown = [t.name for t in panel.figure.data]
    panel.target_names.value = "triangle, ring"  # two names for three classes: explained, nothing redrawn
    assert "lists 2 names" in panel.message.value and [t.name for t in panel.figure.data] == shown
    panel.match_names.value = False
    assert panel.message.value == "" and panel.report.counts["partial"] == 0
    model, report = panel.transferred_model()
    assert not report.dry_run and torch.equal(model.layers[0].conv.weight, source.layers[0].conv.weight)


class Shifted(nn.Sequential):
    """conv, conv, linear head; ``insert=True`` adds a 1x1 conv at index 1 (the indices after it shift)."""

    def __init__(self, nc: int, insert: bool = False):
        extra = [nn.Conv2d(8, 8, 1)] if insert else []
        super().__init__(nn.Conv2d(3, 8, 3), *extra, nn.Conv2d(8, 16, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, nc))


def test_transfer_panel_suggests_and_applies_a_layer_map_on_foreign_models():
    source = Shifted(10)
    panel = TransferPanel(source, lambda nc: Shifted(nc, insert=True), target_nc=10, source_names="")
    assert panel.report.n_transferred == 2  # only the first conv keeps its name and shape
    panel.suggest.click()
    assert parse_layer_map(panel.layer_map.value) == {1: 2, 4: 5}
    assert panel.report.n_transferred == len(source.state_dict()) and panel.report.layer_map == {1: 2, 4: 5}
    panel.layer_map.value = "1 to 2"
    assert "cannot read" in panel.message.value and panel.report.layer_map == {1: 2, 4: 5}
    with pytest.raises(ValueError, match="pass build="):
        TransferPanel(source)


# ------------------------------------------------------------------------------------------ warmup
def test_warmup_panel_scrubs_every_group_and_matches_the_schedule():
    model = build_model(nc=3)
    panel = WarmupPanel(model, epochs=4, nb=50, profile="yolov5")
    assert panel.at() == {name: (pytest.approx(0.1 if name == "bias" else 0.0), pytest.approx(0.8))
                          for name in ("weight", "norm", "bias")}
    panel.iteration.value = 75
    schedule = YoloSchedule("yolov5")
    for name, (lr, momentum) in panel.at().items():
        tag = name.split("/")[0]
        assert lr == pytest.approx(schedule.lr_at(75, 0.01, tag, 50, 4))
        assert momentum == pytest.approx(schedule.momentum_at(75, 50, 4))
    assert panel.figure.layout.shapes[-1].x0 == 75 and "iteration 75" in panel.table.value
    assert panel.figure.layout.shapes[0].x1 == 150  # yolov5: max(round(3 * 50), 100)
    panel.head_mult.value = 10
    names = [t.name for t in panel.figure.data if t.showlegend]
    assert names == ["weight = norm", "bias", "weight/head = norm/head", "bias/head"]
    curves = {g: np.array(t.y) for t in panel.figure.data if t.meta["value"] == "lr" for g in t.meta["groups"]}
    np.testing.assert_allclose(curves["weight/head"], 10 * curves["weight"])
    panel.profile.value = "ultralytics"
    assert panel.figure.layout.shapes[0].x1 == 150 and panel.preview.warmup == 150
    panel.warmup_epochs.value = 1.0
    assert panel.figure.layout.shapes[0].x1 == 50


@pytest.mark.parametrize("profile, last_warming", [("yolov5", 150), ("ultralytics", 149)])
def test_warmup_panel_names_the_phase_by_the_profile_rule(profile, last_warming):
    """yolov5 warms while ni <= nw, ultralytics (8.4.103-8.4.182) while ni < nw: the readout says which."""
    panel = WarmupPanel(build_model(nc=3), epochs=10, nb=50, profile=profile)
    assert panel.preview.warmup == 150
    panel.iteration.value = last_warming
    assert "warming up" in panel.table.value
    panel.iteration.value = last_warming + 1
    assert "after warmup" in panel.table.value


def test_warmup_panel_explains_a_run_too_short_for_yolov5_and_overlays_a_history(small_shapes):
    panel = WarmupPanel(build_model(nc=3), epochs=4, nb=50)
    lines = [list(t.y) for t in panel.figure.data]
    panel.nb.value = 10  # 40 iterations, but yolov5 warms up for at least 100
    assert "profile='ultralytics'" in panel.message.value and [list(t.y) for t in panel.figure.data] == lines
    panel.profile.value = "ultralytics"
    assert panel.message.value == "" and panel.iteration.max == 39
    train, _ = small_shapes
    torch.manual_seed(0)
    model = build_model(nc=3)
    groups = param_groups(model, 0.01)
    history = fit(model, train, epochs=2, batch_size=12, progress=False, schedule=YoloSchedule("ultralytics"),
                  optimizer=torch.optim.SGD(groups, lr=0.01, momentum=0.9))
    overlay = WarmupPanel(model, epochs=2, nb=3, profile="ultralytics", history=history)
    lr = {(g, t.meta["kind"]): t for t in overlay.figure.data if t.meta["value"] == "lr" for g in t.meta["groups"]}
    np.testing.assert_allclose(lr[("bias", "recorded")].y, lr[("bias", "preview")].y)


def test_warmup_panel_whose_first_settings_are_invalid_shows_the_error_then_the_curves():
    model = build_model(nc=3)
    panel = WarmupPanel(model, epochs=2, nb=10, profile="yolov5")  # 20 iterations, yolov5 warms up for 100
    assert panel.preview is None and panel.figure is not None and len(panel.figure.data) == 0
    assert "at least 101 iterations" in panel.message.value and "no preview yet" in panel.message.value
    panel.profile.value = "ultralytics"
    reference = plots.lr_curves(YoloSchedule("ultralytics").preview(param_groups(model, 0.01), nb=10, epochs=2), at=0)
    assert panel.message.value == "" and len(panel.figure.data) == len(reference.data)
    for drawn, expected in zip(panel.figure.data, reference.data):
        assert drawn.meta == expected.meta
        np.testing.assert_array_equal(drawn.y, expected.y)
    panel.iteration.value = 15
    assert "(epoch 2 of 2, batch 6 of 10)" in panel.table.value  # counted from 1: iteration 15 = 16th step
    assert panel.figure.layout.shapes[-1].x0 == 15


# ------------------------------------------------------------------------------------------ training
def test_train_panel_runs_draws_and_stops_between_steps(tiny_data):
    train, val = tiny_data
    torch.manual_seed(0)
    model = build_model(nc=3)
    reference = copy.deepcopy(model)
    full = fit(reference, train, val, epochs=2, batch_size=6, seed=0, progress=False)

    panel = TrainPanel(model, train, val, epochs=2, batch_size=6, redraw_per_second=1000)
    step = panel._step

    def stop_at_four(history):
        step(history)
        if history.step == 4:
            panel.stop()
            assert panel.start() is False  # Start while running starts nothing

    panel._step = stop_at_four
    history = panel.run(wait=True)
    assert history.status == "interrupted" and history.step == 4 and "interrupted" in panel.status.value
    assert list(panel.figure.data[0].y) == history.loss and panel.batch_size.disabled
    panel._step = step
    history = panel.run(wait=True)  # Start again continues the same run
    assert history.status == "completed" and history.loss == full.loss and history.val == full.val
    assert list(panel.figure.data[0].y) == full.loss
    lr = panel.figure.data[1:-1]  # one LR line per set of groups on the same curve, named by all of them
    drawn = {g: t for t in lr for g in t.name.removeprefix("lr ").split(" = ")}
    assert sorted(drawn) == sorted(history.lr)
    for g, t in drawn.items():
        np.testing.assert_array_equal(t.y, history.lr[g])
    assert all(not np.array_equal(a.y, b.y) for a in lr for b in lr if a is not b)  # nothing drawn under another
    assert panel.start() is False and "raise epochs" in panel.status.value
    heat = panel.figure.data[-1]
    assert heat.type == "heatmap" and np.array(heat.z, dtype=float).shape == (len(history.layer_names), 6)
    assert _same_tensors(snapshot(model), snapshot(reference))
    panel.reset_button.click()
    assert panel.history is None and len(panel.figure.data[0].y) == 0
    assert not _same_tensors(snapshot(model), snapshot(reference))


def test_train_panel_redraws_at_a_bounded_rate_and_reports_errors(tiny_data):
    train, val = tiny_data
    panel = TrainPanel(TinyResNet(3), train, epochs=3, batch_size=6, redraw_per_second=0.001)
    panel.start_button.click()
    panel.join()
    assert panel.history.status == "completed" and panel.redraws == 2  # the first step and the end
    broken = TrainPanel(build_model(nc=2), train, epochs=1, batch_size=6)
    with pytest.raises(ValueError, match="nc=3"):
        broken.run(wait=True)
    assert "training failed" in broken.status.value


def test_compare_panel_runs_pretrained_scratch_frozen_staged_on_the_same_seed(tiny_data):
    train, val = tiny_data
    torch.manual_seed(1)
    source = TinyResNet(10)
    panel = ComparePanel(train, val, source=source, build=lambda nc: TinyResNet(nc), epochs=2, batch_size=9,
                         runs=("pretrained", "scratch", "frozen", "staged"), depth=5, unfreeze_at=1)
    histories = panel.run(wait=True)
    assert list(histories) == ["pretrained", "scratch", "frozen", "staged"]
    assert all(h.status == "completed" and h.step == 4 for h in histories.values())
    assert [t.name for t in panel.figure.data] == [n for n in histories for _ in (1, 2)]
    assert list(panel.figure.data[2].y) == histories["scratch"].loss
    model, options = setup_run("scratch", source, lambda nc: TinyResNet(nc), 3, depth=5, seed=0)
    assert fit(model, train, val, epochs=2, batch_size=9, progress=False).loss == histories["scratch"].loss
    frozen = panel.models["frozen"]
    for layer in numbered_layers(frozen)[:5]:  # frozen throughout: still the source's weights
        for name, p in layer.module.named_parameters():
            assert torch.equal(p, source.get_submodule(layer.name).get_parameter(name))
    assert histories["staged"].freeze_depth == {0: 5, 1: 0} and histories["frozen"].freeze_depth == {0: 5, 1: 5}
    assert histories["pretrained"].loss[0] != histories["scratch"].loss[0]
    assert "<td>staged</td><td>completed</td>" in panel.table.value


# ------------------------------------------------------------------------------------------ lesson state
def _builders(tiny_data):
    train, val = tiny_data
    source = TinyResNet(10)
    return {
        FreezePanel: ((build_model(nc=3),), {"steps": 0}, {"depth": 6, "bn": "frozen"}),
        TransferPanel: ((build_model(nc=10),), {}, {"target_nc": 4, "target_names": "circle, a, b, c"}),
        WarmupPanel: ((), {}, {"lr0": 0.001, "head_mult": 5.0, "iteration": 10, "profile": "ultralytics"}),
        TrainPanel: ((TinyResNet(3), train, val), {}, {"epochs": 5}),
        ComparePanel: ((train, val), {"source": source, "build": lambda nc: TinyResNet(nc)},
                       {"runs": ("scratch", "staged"), "depth": 2}),
    }


def test_state_round_trips_through_json_and_hides_controls(tiny_data):
    for cls, (args, extra, values) in _builders(tiny_data).items():
        panel = cls(*args, seed=3, **extra, **values)
        state = json.loads(json.dumps(panel.state()))
        assert state["panel"] == cls.__name__ and state["seed"] == 3 and set(state["controls"]) == set(cls.CONTROLS)
        hidden = list(cls.CONTROLS[:2])
        again = cls.from_state({**state, "hide": hidden}, *args, **extra)
        assert again.state()["controls"] == state["controls"] and again.seed == 3
        for name, value in values.items():
            assert getattr(again, name).value == value
        assert [getattr(again, n).layout.display for n in cls.CONTROLS] == \
            ["none" if n in hidden else None for n in cls.CONTROLS]
        assert again.state()["hide"] == hidden
        with pytest.raises(ValueError, match="controls are"):
            again.hide(["nope"])
    with pytest.raises(ValueError, match="unknown controls"):
        WarmupPanel.from_state({"panel": "WarmupPanel", "controls": {"depth": 3}})
    with pytest.raises(ValueError, match="belongs to FreezePanel"):
        WarmupPanel.from_state({"panel": "FreezePanel", "controls": {}})


def test_buttons_can_be_hidden_for_a_locked_down_exercise(tiny_data):
    train, val = tiny_data
    panel = TrainPanel(TinyResNet(3), train, hide=["reset_button", "batch_size"])
    assert panel.reset_button.layout.display == "none" and panel.batch_size.layout.display == "none"
    assert panel.start_button.layout.display is None
    assert TrainPanel.from_state(panel.state(), TinyResNet(3), train).hidden == ["reset_button", "batch_size"]
    freeze(panel.model, depth=1)  # a panel holds no hidden state of its own beyond its controls
    assert panel.state()["controls"] == {"epochs": 3, "batch_size": 16}


def test_panels_are_exported_from_the_package():
    assert History is not None
    from workbench import panels as exported
    from workbench import plots
    assert exported.FreezePanel is FreezePanel and callable(plots.transfer_map)
