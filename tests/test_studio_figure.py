"""The studio's figure, each part against a reference computed here from the History, the ledger and the model."""
import math

import numpy as np
import pytest
import torch

from workbench import build_model, data, transfer
from workbench.monitor import snapshot, weight_drift
from workbench.optim import make_optimizer
from workbench.plots.curves import coinciding_curves
from workbench.plots.studio import (
    depth_changes,
    history_until,
    layer_rows,
    layer_transfer_status,
    studio_figure,
)
from workbench.schedules import YoloSchedule
from workbench.training import Batches, History, fit


@pytest.fixture(scope="module")
def run():
    """A fine-tune from a workbench source: layers 0..8 frozen for 5 steps, then all trainable, clipped at 1."""
    torch.manual_seed(0)
    source, model = build_model(nc=10), build_model(nc=3)
    report = transfer(source, model)
    train, val = data.split(data.shapes(12, classes=3, seed=0), 0.25, seed=0)
    optimizer = make_optimizer(model, "sgd", lr=0.01, lr_mult={"head": 10})
    schedule = YoloSchedule("ultralytics", warmup_epochs=1)
    nb = len(Batches(train, 8))
    preview = schedule.preview(optimizer, nb, 3)
    start = snapshot(model)
    history = fit(model, train, val, epochs=3, batch_size=8, optimizer=optimizer, schedule=schedule, clip=1.0,
                  freeze=lambda epoch, step: 9 if step < 5 else 0, progress=False)
    return dict(model=model, report=report, history=history, preview=preview, drift=weight_drift(model, start))


def _trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


def grid(heatmap) -> dict[tuple[int, int], float | None]:
    """The heatmap's cells as {(row, step): log10 norm or None for a gap}."""
    return {(int(r), int(x)): (None if np.isnan(z) else float(z)) for x, r, z in zip(heatmap.x, heatmap.y, heatmap.z)}


def labels_of(fig, trace) -> list[str]:
    """The row labels a trace's y positions point at."""
    ticks = dict(zip(fig.layout.yaxis.tickvals, fig.layout.yaxis.ticktext))
    if not fig.layout.yaxis.showticklabels:
        axis = fig.layout.yaxis2
        ticks = dict(zip(axis.tickvals, axis.ticktext))
    return [ticks[int(y)] for y in trace.y]


def _figure(run, **kw):
    options = dict(report=run["report"], depth=0, preview=run["preview"], drift=run["drift"]) | kw
    return studio_figure(layer_rows(run["model"]), run["history"], **options)


def test_heatmap_is_log10_of_the_layer_norms_with_frozen_cells_blank(run):
    history = run["history"]
    fig = _figure(run)
    heatmap = next(t for t in fig.data if t.type == "heatmap")
    rows = layer_rows(run["model"])
    assert list(fig.layout.yaxis4.ticktext) == [r.label for r in rows]  # the transfer column names the rows
    cells = grid(heatmap)
    assert len(cells) == len(heatmap.z) == len(rows) * history.step
    for k, row in enumerate(rows):
        column = history.layer_names.index(row.name)
        for step, norms in enumerate(history.layer_grad_norms):
            frozen = row.index < history.depth[step]
            expected = None if frozen or norms[column] == 0 else math.log10(norms[column])
            got = cells[(k, step + 1)]
            assert (got is None and expected is None) or got == pytest.approx(expected), (row.label, step)
    assert all(cells[(0, s)] is None for s in range(1, 6)) and all(cells[(0, s)] is not None
                                                                   for s in range(6, history.step + 1))


def test_frozen_rows_are_labelled_and_the_frozen_column_shows_the_batchnorm_policy(run):
    fig = _figure(run, depth=4, bn="affine")
    assert labels_of(fig, _trace(fig, "frozen rows")) == ["0 Conv", "1 Conv", "2 C2f", "3 Conv"]
    frozen = _trace(fig, "frozen")
    assert labels_of(fig, frozen) == ["0 Conv", "1 Conv", "2 C2f", "3 Conv"] and list(frozen.text) == ["affine"] * 4
    assert len(_trace(fig, "trainable").y) == 6


def test_lr_traces_equal_the_preview_and_the_record(run):
    fig, history, preview = _figure(run), run["history"], run["preview"]
    for name in preview.lr:
        ahead = [t for t in fig.data if t.name.startswith(f"lr {name} ") and t.name.endswith("preview")
                 or t.name == f"lr {name} preview"]
        assert len(ahead) == 1 and ahead[0].line.dash == "dash"
        np.testing.assert_allclose(ahead[0].y, preview.lr[name])
        recorded = [t for t in fig.data if t.legendgroup == f"lr {name}" and t.line.dash is None]
        np.testing.assert_allclose(recorded[0].y, history.lr[name])
    assert list(history.lr["weight"]) == pytest.approx(list(history.lr["norm"]))  # the same curve ...
    weight = _trace(fig, "lr weight (= norm)")
    norm = _trace(fig, "lr norm (= weight)")
    assert weight.line.width > norm.line.width  # ... drawn widest first, so both stay visible
    now = fig.layout.shapes[0]
    assert (now.x0, now.xref) == (history.step, "x7")


def test_lr_and_gradient_axes_are_logarithmic_with_one_label_a_decade(run):
    fig, history = _figure(run), run["history"]
    positive = [v for values in history.lr.values() for v in values if v > 0]
    assert max(positive) / min(positive) > 10  # the case: weight and norm near 0 on a linear axis next to the bias
    lr_axis = fig.layout.yaxis7
    assert lr_axis.type == "log" and lr_axis.dtick == 1 and "0 not shown" in lr_axis.title.text
    assert all(t.yaxis == "y7" for t in fig.data if (t.legendgroup or "").startswith("lr "))
    gradient_axis = fig.layout.yaxis5
    assert gradient_axis.type == "log" and gradient_axis.dtick == 1  # labels at powers of ten only, no minor labels
    assert _trace(fig, "total |g|").yaxis == "y5"


def test_coinciding_groups():
    curves = {"a": np.array([1.0, 2.0]), "b": np.array([1.0, 2.0]), "c": np.array([1.0, 3.0])}
    assert coinciding_curves(curves) == [["a", "b"], ["c"]]


def test_timeline_marks_every_recorded_change(run):
    history = run["history"]
    fig = _figure(run)
    changes = [k + 1 for k in range(history.step) if k == 0 or history.depth[k] != history.depth[k - 1]]
    assert changes == [1, 6]
    marks = _trace(fig, "depth changes")
    assert list(marks.x) == changes and list(marks.y) == [9, 0] and list(marks.text) == ["9", "9→0"]
    assert list(_trace(fig, "freeze depth").y) == history.depth
    assert depth_changes(history) == [(1, 9, None), (6, 0, 9)]
    assert [e for e in history.events if "freeze depth" in e[1]] == [(0, "step 1 (epoch 1): freeze depth 9"),
                                                                     (5, "step 6 (epoch 2): freeze depth 0 (was 9)")]
    texts = [text for _, text in history.events if "freeze depth" in text]
    assert [int(text.split()[1]) for text in texts] == changes  # the text counts steps as the timeline does


def test_norm_panel_has_the_total_norm_the_clip_line_and_the_coefficient(run):
    history, fig = run["history"], _figure(run)
    assert list(_trace(fig, "total |g|").y) == pytest.approx(history.grad_norm)
    assert list(_trace(fig, "clip coefficient").y) == pytest.approx(history.clip_coef)
    clip = [s for s in fig.layout.shapes if s.yref == "y5"]
    assert len(clip) == 1 and clip[0].y0 == history.clip == 1.0
    assert min(history.clip_coef) < 1  # this run clips, so the line is not decoration


def test_transfer_column_and_drift_bars_follow_the_ledger_and_the_weights(run):
    fig, report = _figure(run), run["report"]
    expected = {}
    for s in report.by_layer():
        expected[s.index] = "transferred" if s.transferred == s.items else "partial" if s.transferred else \
            "re-initialised"
    assert layer_transfer_status(report) == expected
    assert expected[9] == "partial" and all(expected[i] == "transferred" for i in range(9))
    assert labels_of(fig, _trace(fig, "partial")) == ["9 Classify"]
    drift = _trace(fig, "weight drift")
    labels = {r.name: r.label for r in layer_rows(run["model"])}
    assert dict(zip(labels_of(fig, drift), drift.x)) == pytest.approx({labels[k]: v for k, v in run["drift"].items()})


def test_without_a_source_the_transfer_column_is_left_out(run):
    fig = _figure(run, report=None)
    assert "xaxis4" not in fig.layout.to_plotly_json()
    assert not any(t.name in ("transferred", "partial", "re-initialised") for t in fig.data)
    assert fig.layout.yaxis2.showticklabels  # the frozen column now carries the layer names


def test_history_until_cuts_the_run_at_a_step(run):
    history = run["history"]
    nb = len(history.loss) // 3
    cut = history_until(history, nb + 1)
    assert cut.loss == history.loss[: nb + 1] and cut.depth == history.depth[: nb + 1]
    assert cut.layer_grad_norms == history.layer_grad_norms[: nb + 1]
    assert cut.val["accuracy"] == history.val["accuracy"][:1] and cut.epochs_done == 1
    assert cut.status == "replay" and history.status == "completed"
    fig = studio_figure(layer_rows(run["model"]), cut, preview=run["preview"])
    assert set(next(t for t in fig.data if t.type == "heatmap").x) == set(range(1, nb + 2))


def test_before_training_the_figure_previews_depth_and_lr():
    model = build_model(nc=3)
    preview = YoloSchedule("ultralytics").preview(make_optimizer(model, "sgd", lr=0.01), 4, 3)
    fig = studio_figure(layer_rows(model), preview=preview, depth=5)
    assert len(_trace(fig, "frozen").y) == 5
    assert list(_trace(fig, "slider depth (ahead)").y) == [5, 5]
    assert fig.layout.xaxis.range[1] == 12.5  # the step axis spans the run ahead
    assert list(_trace(fig, "slider depth (ahead)").x) == [1, 12]


def test_after_a_run_nothing_is_drawn_ahead():
    model = build_model(nc=3)
    names = [r.name for r in layer_rows(model)]
    history = History(loss=[1.0] * 4, epoch=[0, 0, 1, 1], depth=[5] * 4, layer_names=names,
                      layer_grad_norms=[[1.0] * 10] * 4, status="completed")
    ahead = _trace(studio_figure(layer_rows(model), history, depth=5), "slider depth (ahead)")
    assert len(ahead.x) == 0 and ahead.showlegend is False  # no stub past the last step, no legend entry for it


def test_the_first_non_finite_layer_is_marked():
    from workbench import History
    from workbench.monitor import NonFinite

    model = build_model(nc=3)
    rows = layer_rows(model)
    names = [r.name for r in rows]
    history = History(loss=[1.0, 1.0, 1.0], epoch=[0, 0, 0], grad_norm=[1.0, 2.0, 3.0], clip_coef=[1.0] * 3,
                      depth=[0, 0, 0], layer_names=names, layer_grad_norms=[[1.0] * 10] * 3, status="non_finite",
                      non_finite=NonFinite(4, "gradient", float("inf"), "layers.4", "layers.4.cv1.conv.weight"))
    mark = _trace(studio_figure(rows, history), "non-finite")
    assert (list(mark.x), list(mark.y)) == ([4], [4])  # the step that blew up, the row of layers.4
    assert "layers.4" in mark.hovertext[0]
    assert not any(t.name == "non-finite" for t in studio_figure(rows, history_until(history, 2)).data)
