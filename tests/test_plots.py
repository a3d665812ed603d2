"""Plots are pure: a report or History in, a figure out whose data is exactly the numbers that went in."""
import json
import math

import numpy as np
import pytest
import torch
from foreign_models import TinyResNet
from matplotlib.figure import Figure as MplFigure
from torch import nn

from workbench import History, YoloSchedule, bn_drift, build_model, fit, freeze, param_groups, plots, transfer
from workbench.freezing import bn_snapshot, set_freeze_depth
from workbench.layers import numbered_layers
from workbench.monitor import snapshot, weight_drift
from workbench.stability import signal_propagation


def _tiles(fig):
    return [t for t in fig.data if t.type == "bar"]


# ------------------------------------------------------------------------------------------ transfer map
def test_transfer_map_has_one_tile_per_ledger_row_coloured_by_status():
    report = transfer(build_model(nc=10), build_model(nc=3), dry_run=True)
    fig = plots.transfer_map(report)
    tiles = _tiles(fig)
    assert sum(len(t.x) for t in tiles) == len(report.rows)
    assert {t.name for t in tiles} == {f"{s} ({n})" for s, n in report.counts.items()}
    mismatch = next(t for t in tiles if t.name.startswith("shape_mismatch"))
    assert set(mismatch.x) == {9}  # only the class layer of the head
    assert any("(3, 1280)" in text and "(10, 1280)" in text for text in mismatch.hovertext)
    for summary in report.by_layer():  # each column is as tall as the layer has entries, no tile overlaps
        bases = sorted(b for t in tiles for x, b in zip(t.x, t.base) if x == summary.index)
        assert bases == list(range(summary.items))
    assert report.headline in fig.layout.title.text


def test_transfer_map_on_a_foreign_model_with_unused_and_partial_entries():
    source, target = TinyResNet(10), TinyResNet(3)
    names = (list("abcdefghij"), list("cax"))
    report = transfer(source, target, dry_run=True, class_names=names)
    tiles = {t.name.split(" ")[0]: t for t in _tiles(plots.transfer_map(report))}
    assert set(tiles) == {"transferred", "partial"}
    assert len(tiles["partial"].x) == 2 and "2/3 class rows copied by name" in tiles["partial"].hovertext[0]
    shifted = transfer({**source.state_dict(), "extra.weight": torch.ones(2)}, TinyResNet(3), dry_run=True)
    unused = {t.name.split(" ")[0]: t for t in _tiles(plots.transfer_map(shifted))}["unused"]
    assert unused.marker.pattern.shape == "/" and "not used" in unused.hovertext[0]


# ------------------------------------------------------------------------------------------ freeze map
def test_freeze_map_reads_requires_grad_and_the_bn_policy():
    model = build_model(nc=3)
    freeze(model, depth=4, bn="affine")
    fig = plots.freeze_map(model)
    by_state = {t.name: t for t in _tiles(fig)}
    assert list(by_state["partly frozen"].x) == [0, 1, 2, 3]  # BatchNorm gamma/beta stay trainable
    assert list(by_state["trainable"].x) == list(range(4, 10)) and len(by_state["frozen"].x) == 0
    badges = fig.data[-1]
    assert list(badges.x) == [0, 1, 2, 3] and set(badges.text) == {"affine"}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert f"trainable {trainable:,} of" in fig.layout.title.text


def test_freeze_map_heights_are_linear_and_print_each_layers_count():
    model = build_model(nc=3)
    report = freeze(model, depth=9)
    fig = plots.freeze_map(model)
    assert fig.layout.yaxis.type in (None, "linear") and fig.layout.yaxis.range[0] == 0
    counts = {layer.index: sum(p.numel() for p in layer.module.parameters()) for layer in numbered_layers(model)}
    drawn = {int(x): (int(y), text) for t in _tiles(fig) for x, y, text in zip(t.x, t.y, t.text)}
    assert {i: y for i, (y, _) in drawn.items()} == counts
    assert drawn[0][1] == str(counts[0]) and counts[0] < 1000  # the first layer: a few hundred, printed in full
    assert drawn[8][1] == f"{counts[8] / 1000:.0f}k"
    assert fig.layout.yaxis.range[1] >= max(counts.values())  # the tallest bar fits: a true scale from 0
    assert fig.layout.title.text.startswith(f"layers 0-8 frozen · trainable {report.trainable:,} of")
    assert {t.width for t in _tiles(fig)} == {0.8}  # the same width whatever the spacing of a state's layers


def test_freeze_map_of_a_model_with_parameterless_layers_names_them_without_a_legend_entry():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    freeze(model, depth=3)
    fig = plots.freeze_map(model)
    empty = {t.name: t for t in _tiles(fig)}["no parameters"]
    assert list(empty.x) == [1, 3] and list(empty.text) == ["0", "0"] and not empty.showlegend
    assert fig.layout.title.text.startswith("layers 0-2 frozen (1 has no parameters) · ")


@pytest.mark.parametrize("count, text", [(0, "0"), (999, "999"), (1000, "1.0k"), (18_560, "18.6k"),
                                         (460_288, "460k"), (1_442_131, "1.4M")])
def test_compact_counts(count, text):
    assert plots.layers.compact(count) == text


def test_freeze_map_from_a_report_matches_the_model_and_works_on_foreign_models():
    model = TinyResNet()
    report = set_freeze_depth(model, 3, bn="eval")
    from_model, from_report = plots.freeze_map(model), plots.freeze_map(report)
    for a, b in zip(_tiles(from_model), _tiles(from_report)):
        assert a.name == b.name and list(a.x) == list(b.x) and list(a.y) == list(b.y)
    frozen = {t.name: list(t.x) for t in _tiles(from_model)}["frozen"]
    assert frozen == [0, 1, 2]
    sizes = [sum(p.numel() for p in m.parameters()) for m in model.children()]
    assert list(_tiles(from_model)[0].y) == sizes[:3]
    with pytest.raises(ValueError, match="model or a FreezeReport"):
        plots.freeze_map("layers")


# ------------------------------------------------------------------------------------------ LR curves
def test_lr_curves_overlay_the_preview_on_what_training_applied(small_shapes):
    train, val = small_shapes
    torch.manual_seed(0)
    model = build_model(nc=3)
    schedule = YoloSchedule("ultralytics", warmup_epochs=1)
    groups = param_groups(model, 0.01, lr_mult={"head": 10})
    preview = schedule.preview(groups, nb=3, epochs=3)
    history = fit(model, train, val, epochs=3, batch_size=12, progress=False, schedule=schedule,
                  optimizer=torch.optim.SGD(groups, lr=0.01, momentum=0.9))
    fig = plots.lr_curves(preview, history, at=4)
    lr = {(g, t.meta["kind"]): t for t in fig.data if t.meta["value"] == "lr" for g in t.meta["groups"]}
    for group in preview.lr:
        drawn, recorded = lr[(group, "preview")], lr[(group, "recorded")]
        np.testing.assert_allclose(drawn.y, preview.lr[group])
        np.testing.assert_allclose(recorded.y, history.lr[group])
        np.testing.assert_allclose(recorded.y, drawn.y, rtol=1e-12)  # what was applied is what was predicted
        assert drawn.line.width > recorded.line.width and drawn.opacity < 1  # the record shows inside the band
    momentum = [t for t in fig.data if t.meta["value"] == "momentum"]  # SGD: every group shares one momentum
    assert [(sorted(t.meta["groups"]), t.meta["kind"]) for t in momentum] == [(sorted(preview.lr), "preview"),
                                                                               (sorted(preview.lr), "recorded")]
    np.testing.assert_allclose(momentum[1].y, history.momentum["weight"])
    assert fig.layout.shapes[0].x1 == preview.warmup and fig.layout.shapes[-1].x0 == 4
    assert any("preview" in a.text and "recorded" in a.text for a in fig.layout.annotations)  # the key, said once
    with pytest.raises(ValueError, match="preview"):
        plots.lr_curves()


def _coinciding_reference(curves: dict) -> list[list[str]]:
    """Groups with exactly equal curves, computed pairwise."""
    classes = []
    for name, y in curves.items():
        for c in classes:
            if len(curves[c[0]]) == len(y) and np.array_equal(curves[c[0]], y):
                c.append(name)
                break
        else:
            classes.append([name])
    return classes


@pytest.mark.parametrize("profile, mult", [("yolov5", None), ("ultralytics", {"head": 10}), ("ultralytics", None)])
def test_lr_curves_keep_coinciding_groups_visible_and_name_them_once(profile, mult):
    model = build_model(nc=3)
    preview = YoloSchedule(profile).preview(param_groups(model, 0.01, lr_mult=mult), nb=40, epochs=5)
    fig = plots.lr_curves(preview)
    classes = _coinciding_reference({g: np.asarray(v) for g, v in preview.lr.items()})
    assert any(len(c) > 1 for c in classes)  # weight and norm share a curve: the case this is about
    assert [t.name for t in fig.data if t.showlegend] == [" = ".join(c) for c in classes]  # one entry per curve
    lr = [t for t in fig.data if t.meta["value"] == "lr"]
    assert [t.meta["groups"] for t in lr] == classes  # one line per curve: nothing drawn under another colour
    assert len({t.line.color for t in lr}) == len(classes)  # the legend swatch is the line's own colour
    for t, c in zip(lr, classes):
        assert t.name == t.legendgroup == " = ".join(c) and t.name in t.hovertemplate
        for g in c:
            np.testing.assert_array_equal(t.y, preview.lr[g])
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.dtick == 1  # rates of 1e-5 and 0.1 both show
    low = min(v for ys in preview.lr.values() for v in ys if v > 0)
    assert low < 0.02 * max(max(ys) for ys in preview.lr.values())  # the case: small rates, flat on a linear axis
    if min(min(ys) for ys in preview.lr.values()) <= 0:
        assert "0 not shown" in fig.layout.yaxis.title.text  # a log axis leaves out the warmup's rate 0



def test_lr_curves_give_every_line_its_own_colour_with_many_groups():
    from workbench.optim import make_optimizer

    optimizer = make_optimizer(build_model(nc=3), "sgd", lr=0.01, layer_decay=0.5)  # three groups per layer
    preview = YoloSchedule("ultralytics", warmup_epochs=1).preview(optimizer, nb=5, epochs=4)
    classes = _coinciding_reference({g: np.asarray(v) for g, v in preview.lr.items()})
    assert len(classes) > 10  # more lines than the first palette's ten colours
    lr = [t for t in plots.lr_curves(preview).data if t.meta["value"] == "lr"]
    assert [t.meta["groups"] for t in lr] == classes
    assert len({t.line.color for t in lr}) == len(classes)  # no legend swatch stands for two lines

# ------------------------------------------------------------------------------------------ gradients
def _run_with_frozen_stem(small_shapes, **options):
    train, _ = small_shapes
    torch.manual_seed(0)
    model = build_model(nc=3)
    freeze(model, depth=2)
    return fit(model, train, epochs=2, batch_size=12, progress=False, **options)


def test_grad_heatmap_is_log10_of_the_recorded_norms_with_frozen_layers_blank(small_shapes):
    history = _run_with_frozen_stem(small_shapes, clip=1.0)
    fig = plots.grad_heatmap(history)
    heat = fig.data[0]
    norms = np.array(history.layer_grad_norms).T
    assert list(heat.y) == history.layer_names and list(heat.x) == list(range(1, history.step + 1))
    z = np.array(heat.z, dtype=float)
    assert np.isnan(z[:2]).all()  # layers 0 and 1 are frozen: no gradient
    json.dumps(heat.z, allow_nan=False)  # gaps are None: a live figure's JSON has no NaN
    np.testing.assert_allclose(z[2:], np.log10(norms[2:]))
    np.testing.assert_allclose(fig.data[1].y, history.grad_norm)
    clipped = [c < 1 for c in history.clip_coef]
    assert any(clipped) and len(fig.data[2].x) == sum(clipped)
    assert fig.layout.shapes[0].y0 == 1.0 == plots.clip_value(history)
    assert plots.grad_heatmap(history, clip=None).layout.shapes == ()


def test_comparison_heatmaps_share_one_colour_scale_and_one_norm_axis(small_shapes):
    calm = _run_with_frozen_stem(small_shapes, clip=1.0)
    train, _ = small_shapes
    torch.manual_seed(0)
    wild = fit(build_model(nc=3), train, epochs=1, batch_size=12, progress=False, optimizer="sgd", lr=0.5, clip=None)
    runs = {"calm": calm, "wild": wild}
    scale = plots.shared_scale(runs)
    cells = np.array([v for h in runs.values() for step in h.layer_grad_norms for v in step])
    totals = np.array([g for h in runs.values() for g in h.grad_norm])
    assert scale["zrange"] == pytest.approx((np.log10(cells[cells > 0].min()), np.log10(cells.max())))
    assert scale["norm_range"] == pytest.approx((np.log10(totals.min()) - 0.1, np.log10(totals.max()) + 0.1))
    figures = [plots.grad_heatmap(h, **scale) for h in runs.values()]
    for fig in figures:  # the same colour for the same norm in both figures, the same total-norm axis
        assert (fig.data[0].zmin, fig.data[0].zmax) == pytest.approx(scale["zrange"])
        assert tuple(fig.layout.yaxis2.range) == pytest.approx(scale["norm_range"])
        spans_two_decades = scale["norm_range"][1] - scale["norm_range"][0] >= 2
        assert fig.layout.yaxis2.dtick == (1 if spans_two_decades else "D2")  # labels never crowd
    assert plots.grad_heatmap(calm).data[0].zmin is None  # alone: its own scale
    assert plots.shared_scale([calm]) == plots.shared_scale({"calm": calm})
    with pytest.raises(ValueError, match="gradient norms"):
        plots.shared_scale([History()])


def test_loss_plot_is_log_scaled_and_marks_where_the_run_stopped(small_shapes):
    train, _ = small_shapes
    torch.manual_seed(0)
    blown = fit(build_model(nc=3), train, epochs=3, batch_size=12, progress=False, optimizer="sgd", lr=1e6, clip=None)
    assert blown.non_finite is not None
    fig = plots.loss_plot(blown)
    assert fig.layout.yaxis.type == "log" and list(fig.data[0].y) == blown.loss
    assert list(fig.data[0].x) == list(range(1, len(blown.loss) + 1))
    assert fig.layout.shapes[0].x0 == blown.non_finite.step
    assert f"step {blown.non_finite.step}" in fig.layout.annotations[0].text
    calm = _run_with_frozen_stem(small_shapes, clip=1.0)
    assert plots.loss_plot(calm).layout.shapes == ()
    with pytest.raises(ValueError, match="recorded steps"):
        plots.loss_plot(History())


def test_long_runs_are_binned_keeping_the_largest_norm():
    rng = np.random.default_rng(0)
    norms = rng.uniform(0.1, 10, (7, 2))
    history = History(loss=[1.0] * 7, epoch=[0] * 7, layer_names=["a", "b"], layer_grad_norms=norms.tolist())
    steps, z, names = plots.grad_matrix(history, max_columns=3)
    bins = np.array_split(np.arange(7), 3)
    assert steps == [int(b[-1]) + 1 for b in bins] and names == ["a", "b"]
    np.testing.assert_allclose(np.array(z), np.log10(np.stack([norms[b].max(0) for b in bins])).T)


def test_training_dashboard_shows_loss_lr_and_heatmap(small_shapes):
    history = _run_with_frozen_stem(small_shapes, schedule=YoloSchedule("ultralytics", warmup_epochs=1))
    fig = plots.training_dashboard(history)
    classes = _coinciding_reference({g: np.asarray(v) for g, v in history.lr.items()})
    assert any(len(c) > 1 for c in classes) and len(classes) > 1  # weight and norm share a curve, bias does not
    assert [t.type for t in fig.data] == ["scatter"] * (1 + len(classes)) + ["heatmap"]
    assert list(fig.data[0].y) == history.loss
    lr = fig.data[1:-1]
    assert [t.name for t in lr] == ["lr " + " = ".join(c) for c in classes]  # the legend names every group once
    assert len({t.line.color for t in lr}) == len(classes)
    for t, c in zip(lr, classes):
        assert list(t.meta["groups"]) == c
        for g in c:
            np.testing.assert_array_equal(t.y, history.lr[g])
    assert np.array(fig.data[-1].z, dtype=float).shape == (len(history.layer_names), history.step)
    empty = plots.training_dashboard(History())
    assert len(empty.data[0].y) == 0


# ------------------------------------------------------------------------------------------ drift
def test_drift_bars_show_weight_drift_per_run(small_shapes):
    train, _ = small_shapes
    runs = {}
    for name, depth in (("full", 0), ("frozen", 9)):
        torch.manual_seed(0)
        model = build_model(nc=3)
        start = snapshot(model)
        if depth:
            freeze(model, depth=depth)
        fit(model, train, epochs=1, batch_size=12, progress=False)
        runs[name] = weight_drift(model, start)
    fig = plots.drift_bars(runs)
    assert [t.name for t in fig.data] == ["full", "frozen"]
    frozen = dict(zip(fig.data[1].x, fig.data[1].y))
    assert frozen == runs["frozen"] and all(frozen[f"layers.{i}"] == 0 for i in range(9))
    assert fig.data[0].y[0] > 0
    single = plots.drift_bars(runs["full"])
    assert list(single.data[0].y) == list(runs["full"].values())
    with pytest.raises(ValueError, match="mixes"):
        plots.drift_bars({"a": {"x": 1.0}, "b": 2.0})


def test_bn_drift_bars_plot_mean_shift_and_variance_change():
    model = TinyResNet()
    start = bn_snapshot(model)
    model.train()(torch.randn(8, 3, 16, 16) + 2)
    drift = bn_drift(model, start)
    fig = plots.bn_drift_bars({"train mode": drift})
    assert list(fig.data[0].x) == [r.name for r in drift]
    assert list(fig.data[0].y) == [r.mean_shift for r in drift] and list(fig.data[1].y) == [r.var_change for r in drift]
    assert fig.data[1].yaxis == "y2"


# ------------------------------------------------------------------------------------------ signal, runs
def test_signal_plot_draws_every_scheme_with_and_without_batchnorm():
    x = torch.randn(4, 3, 16, 16)
    rows = signal_propagation(TinyResNet(), x, ("kaiming", "zero"))
    fig = plots.signal_plot(rows)
    assert isinstance(fig, MplFigure) and len(fig.axes) == 2
    for ax, bn in zip(fig.axes, (True, False)):
        assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == \
            ["kaiming", "zero"]
        kaiming, zero = ax.get_lines()[0], ax.get_lines()[1]
        assert list(kaiming.get_ydata()) == [r.std for r in rows if r.batchnorm == bn and r.scheme == "kaiming"]
        floor = min(r.std for r in rows if r.std > 0) / 10  # std 0 is drawn below every non-zero std
        assert ax.get_yscale() == "log" and all(0 < y <= floor for y in zero.get_ydata())
    with pytest.raises(ValueError):
        plots.signal_plot([])


def test_signal_plot_gives_each_scheme_its_own_marker_and_dash():
    x = torch.randn(4, 3, 16, 16)
    rows = signal_propagation(TinyResNet(), x)  # every scheme: with BatchNorm they sit in one band near 1
    schemes = list(dict.fromkeys(r.scheme for r in rows))
    assert len(schemes) >= 4
    fig = plots.signal_plot(rows)
    styles = []
    for ax in fig.axes:
        lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert [line.get_label() for line in lines] == schemes
        mine = [(line.get_marker(), line.get_linestyle()) for line in lines]
        assert len(set(mine)) == len(schemes)  # coinciding curves stay apart by marker and dash
        assert all(line.get_markerfacecolor() == "none" for line in lines)  # hollow: a marker beneath shows
        styles.append(mine)
    assert styles[0] == styles[1]  # a scheme looks the same in both panels


def test_compare_runs_overlays_loss_and_accuracy_with_smoothing():
    a = History(loss=[4.0, 2.0, 0.0, 2.0], epoch=[0, 0, 1, 1], val={"accuracy": [0.5, 0.75]})
    b = History(loss=[1.0, 1.0], epoch=[0, 0], val={"accuracy": [0.25]})
    fig = plots.compare_runs({"pretrained": a, "scratch": b}, smooth=2)
    assert [t.name for t in fig.data] == ["pretrained", "pretrained", "scratch", "scratch"]
    assert list(fig.data[0].y) == [4.0, 3.0, 1.0, 1.0]  # trailing mean of 2
    assert list(fig.data[1].y) == [0.5, 0.75] and fig.data[1].xaxis == "x2"
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color
    assert fig.data[0].line.width == fig.data[2].line.width  # nothing shared: every run drawn alike
    with pytest.raises(ValueError):
        plots.compare_runs({})


def test_compare_runs_keep_runs_that_share_points_visible():
    frozen = History(loss=[2.0, 1.5, 1.2, 1.0], epoch=[0, 0, 1, 1], val={"accuracy": [0.6, 0.7]})
    staged = History(loss=[2.0, 1.5, 1.4, 0.9], epoch=[0, 0, 1, 1], val={"accuracy": [0.6, 0.8]})  # same epoch 1
    full = History(loss=[2.2, 1.6, 1.1, 0.8], epoch=[0, 0, 1, 1], val={"accuracy": [0.5, 0.9]})
    fig = plots.compare_runs({"full": full, "frozen": frozen, "staged": staged})
    widths = [t.line.width for t in fig.data[::2]]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == 3  # the later, thinner, on top
    sizes = [t.marker.size for t in fig.data[1::2]]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 3
    expected = {name: sum(a == b for a, b in zip(h.loss, frozen.loss)) for name, h in (("staged", staged),)}
    assert f"same as staged at {expected['staged']} of 4 steps" in fig.data[2].hovertemplate  # frozen's loss
    assert "same as frozen at 1 of 2 epochs" in fig.data[5].hovertemplate  # staged's accuracy
    assert "same as" not in fig.data[0].hovertemplate  # full shares nothing


def test_figures_serialise_to_json():
    model = nn.Sequential(nn.Linear(2, 2))
    report = transfer(model, nn.Sequential(nn.Linear(2, 2)), dry_run=True)
    for fig in (plots.transfer_map(report), plots.freeze_map(model), plots.training_dashboard(History())):
        assert fig.to_json()
    assert math.isclose(plots.clip_value(History(grad_norm=[20.0], clip_coef=[10.0 / (20.0 + 1e-6)])), 10.0)
