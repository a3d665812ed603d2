"""The Studio panel: sources, the slider steering a running fit, replay, state, and models from elsewhere."""
import time

import numpy as np
import pytest
import torch
from foreign_models import TinyResNet
from torch import nn

from workbench import build_model
from workbench.checkpoints import save_weights
from workbench.experiments.pretraining import target_data
from workbench.panels import Studio

CLASSES = ("triangle", "ring", "halfdisk")  # the target task of notebook 00: one shape the source knew, two new


def _heatmap(studio):
    return next(t for t in studio.figure.data if t.type == "heatmap")


def _rows(studio) -> list[list[float | None]]:
    """The heatmap as rows of cells in step order, ``None`` for a gap."""
    heatmap = _heatmap(studio)
    found: dict[int, list] = {}
    for _, r, z in sorted(zip(heatmap.x, heatmap.y, heatmap.z)):
        found.setdefault(int(r), []).append(None if np.isnan(z) else float(z))
    return [found.get(k, []) for k in range(len(studio.rows))]


def _labels(studio, trace) -> list[str]:
    axis = studio.figure.layout.yaxis4 if studio.report is not None else studio.figure.layout.yaxis2
    ticks = dict(zip(axis.tickvals, axis.ticktext))
    return [ticks[int(y)] for y in trace.y]


def _trace(studio, name):
    return next(t for t in studio.figure.data if t.name == name)


def steer_at(studio, step: int, depth: int) -> None:
    """Move the slider as a learner would, from inside the run, once ``step`` steps are done."""
    original = studio._step

    def step_and_steer(history):
        if history.step == step:
            studio.depth.value = depth
        original(history)

    studio._step = step_and_steer


def test_the_slider_steers_a_running_fit(small_shapes):
    train, val = small_shapes
    studio = Studio(build_model(nc=10), train, val, depth=9, epochs=3, batch_size=8, redraw_per_second=1000)
    steer_at(studio, 4, 0)
    history = studio.run(wait=True)
    assert history.depth == [9] * 4 + [0] * (history.step - 4)
    assert any("freeze depth 0 (was 9)" in e for _, e in history.events)
    assert all(p.requires_grad for p in studio.model.parameters())
    first = _rows(studio)[0]
    assert all(v is None for v in first[:4]) and all(v is not None for v in first[4:])
    marks = _trace(studio, "depth changes")
    assert list(marks.x) == [1, 5] and list(marks.text) == ["9", "9→0"]


def test_before_training_the_slider_previews_what_will_be_frozen(small_shapes):
    train, val = small_shapes
    studio = Studio(build_model(nc=10), train, val, epochs=2, batch_size=8)
    studio.depth.value = 6
    frozen = [n for n, p in studio.model.named_parameters() if not p.requires_grad]
    assert frozen and all(int(n.split(".")[1]) < 6 for n in frozen)
    assert len(_trace(studio, "frozen").y) == 6 and list(_trace(studio, "slider depth (ahead)").y) == [6, 6]
    assert "depth 6" in studio.status.value


def test_sources_shipped_checkpoint_model_and_scratch(tmp_path, small_shapes):
    train, val = small_shapes
    shipped = Studio("shapes_n", train, val, epochs=1)
    assert shipped.report is not None and "shipped weights 'shapes_n'" in shipped.source_text
    assert any(t.name == "transferred" and len(t.y) == 9 for t in shipped.figure.data)
    path = tmp_path / "source.safetensors"
    save_weights(build_model(nc=10), path)
    from_file = Studio(str(path), train, val, epochs=1)
    assert from_file.report.n_transferred == shipped.report.n_transferred
    scratch = Studio(None, train, val, epochs=1)
    assert scratch.report is None and scratch.model.nc == 3
    assert not any(t.name == "transferred" for t in scratch.figure.data)
    with pytest.raises(ValueError, match="source="):
        Studio("no/such/file.pt", train, val)


def test_state_round_trip_hide_and_reset(small_shapes):
    train, val = small_shapes
    studio = Studio(build_model(nc=10), train, val, depth=3, bn="affine", lr0=0.02, epochs=2, batch_size=8,
                    hide=["bn", "lr0"])
    state = studio.state()
    again = Studio.from_state(state, build_model(nc=10), train, val)
    assert again.state() == state and again.bn.layout.display == "none" and again.bn.value == "affine"
    before = {k: v.clone() for k, v in studio.model.state_dict().items()}
    studio.run(wait=True)
    assert studio.bn.disabled and not studio.depth.disabled  # the slider keeps steering; the rest is fixed
    assert studio.reset() and studio.history is None and not studio.bn.disabled
    assert all(torch.equal(before[k], v) for k, v in studio.model.state_dict().items())


def test_replay_scrubs_every_view_and_replays_the_depth_changes(small_shapes):
    train, val = small_shapes
    studio = Studio(build_model(nc=10), train, val, depth=9, epochs=3, batch_size=8)
    steer_at(studio, 3, 2)
    history = studio.run(wait=True)
    assert studio.frame.max == studio.replay.max == history.step
    studio.frame.value = 2
    assert sorted(set(_heatmap(studio).x)) == [1, 2]
    assert list(_trace(studio, "freeze depth").y) == [9, 9] and len(_trace(studio, "train loss").y) == 2
    assert len(_trace(studio, "frozen").y) == 9  # the frozen column shows the depth of that step
    studio.frame.value = 5
    assert list(_trace(studio, "depth changes").text) == ["9", "9→2"] and len(_trace(studio, "frozen").y) == 2


def test_redraws_are_bounded_in_rate(small_shapes):
    train, val = small_shapes
    studio = Studio(build_model(nc=10), train, val, epochs=10, batch_size=4, redraw_per_second=2)
    studio.redraws = 0
    started = time.perf_counter()
    history = studio.run(wait=True)
    seconds = time.perf_counter() - started
    assert studio.redraws <= 2 * seconds + 2 < history.step  # at most twice a second, and once at the end


def test_continue_after_a_finished_run_with_more_epochs(small_shapes):
    train, val = small_shapes
    studio = Studio(build_model(nc=10), train, val, depth=9, epochs=2, batch_size=8)
    first = studio.run(wait=True).step
    assert not studio.start()  # finished: nothing to do until epochs is raised
    studio.depth.value, studio.epochs.value = 0, 4
    history = studio.run(wait=True)
    assert history.epochs_done == 4 and history.depth == [9] * first + [0] * (history.step - first)


def test_a_torchvision_like_resnet_as_the_model(small_shapes):
    train, val = small_shapes
    torch.manual_seed(0)
    studio = Studio(TinyResNet(num_classes=3), train, val, depth=3, epochs=2, batch_size=8)
    assert studio.report is None  # trained as it is: no transfer column
    assert [r.label for r in studio.rows] == ["0 Conv2d", "1 BatchNorm2d", "2 Block", "3 Block", "4 Block",
                                              "5 AdaptiveAvgPool2d", "6 Linear"]
    history = studio.run(wait=True)
    assert history.status == "completed" and set(history.depth) == {3}
    z = _rows(studio)
    assert all(v is None for row in z[:3] for v in row) and all(v is not None for v in z[3])
    assert all(v is None for v in z[5]) and len(z[5]) == history.step  # pooling: no parameters, no gradient


def test_a_resnet_source_transfers_into_a_resnet(small_shapes):
    train, val = small_shapes
    torch.manual_seed(1)
    source, model = TinyResNet(num_classes=10), TinyResNet(num_classes=3)
    studio = Studio(source, train, val, model=model, epochs=1, batch_size=8)
    assert studio.report.where("shape_mismatch") and studio.model is model
    statuses = {t.name: _labels(studio, t) for t in studio.figure.data if t.xaxis == "x4" and len(t.y)}
    assert statuses == {"transferred": ["0 Conv2d", "1 BatchNorm2d", "2 Block", "3 Block", "4 Block"],
                        "re-initialised": ["6 Linear"]}
    assert torch.equal(model.conv1.weight, source.conv1.weight)


class OwnNet(nn.Module):
    """A user's own module: features and a classifier, nothing the workbench defined."""

    def __init__(self, nc=3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8, nc)

    def forward(self, x):
        return self.classifier(self.features(x))


def test_a_users_own_module(small_shapes):
    train, val = small_shapes
    studio = Studio(None, train, val, model=OwnNet(), depth=1, epochs=1, batch_size=8)
    assert [r.label for r in studio.rows] == ["0 Sequential", "1 Linear"] and studio.report is None
    history = studio.run(wait=True)
    z = _rows(studio)
    assert history.status == "completed" and all(v is None for v in z[0]) and all(v is not None for v in z[1])


def test_a_dataloader_of_your_own(small_shapes):
    train, _ = small_shapes
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train.x, train.y), batch_size=9)
    studio = Studio(None, loader, model=OwnNet(), epochs=2)
    history = studio.run(wait=True)
    assert history.status == "completed" and history.step == 2 * len(loader)
    assert studio.preview is not None and len(studio.preview.lr["weight"]) == history.step
    assert 0 < studio.images_per_second() and "images/s" in studio.badge.value


@pytest.mark.parametrize("seed", range(5))
def test_notebook_00_fine_tune_ends_well_above_chance(seed):
    """Notebook 00's run: shipped weights, head only for 3 epochs, then the slider to 0 for 3 more."""
    train, val = target_data(20, classes=CLASSES, seed=seed)
    studio = Studio("shapes_n", train, val, depth=9, epochs=3, seed=seed)
    studio.run(wait=True)
    studio.depth.value, studio.epochs.value = 0, 6
    history = studio.run(wait=True)
    assert history.status == "completed" and history.depth[0] == 9 and history.depth[-1] == 0
    assert history.val["accuracy"][-1] >= 0.8, history.val["accuracy"]  # chance is 1/3
    assert max(studio.drift().values()) < 0.1  # measured up to 0.023: fine-tuning adjusts, it does not replace
