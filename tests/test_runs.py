"""Runs side by side without widgets: same seed, same start, options per run, stop, any model."""
import threading

import pytest
import torch
from foreign_models import TinyResNet

from workbench import build_model, fit
from workbench.freezing import frozen_by_workbench
from workbench.runs import RUNS, Run, default_build, lesson_run, paired_runs, run_all, setup_run


def test_every_run_starts_from_the_same_seed_and_its_own_options_win(small_shapes):
    train, val = small_shapes
    runs = [Run("a", lambda: TinyResNet(3)), Run("b", lambda: TinyResNet(3)),
            Run("one epoch", lambda: TinyResNet(3), {"epochs": 1})]
    models = {}
    histories = run_all(runs, train, val, seed=3, epochs=2, batch_size=12, models=models)
    assert list(histories) == ["a", "b", "one epoch"] and set(models) == set(histories)
    assert histories["a"].loss == histories["b"].loss and len(histories["a"].loss) == 6
    assert histories["one epoch"].loss == histories["a"].loss[:3]
    torch.manual_seed(3)
    alone = fit(TinyResNet(3), train, val, epochs=2, batch_size=12, seed=3, progress=False)
    assert alone.loss == histories["a"].loss  # run_all adds nothing to a plain fit


def test_a_set_stop_ends_the_current_run_and_skips_the_rest(small_shapes):
    train, val = small_shapes
    stop, seen = threading.Event(), []

    def callback(name, history):
        seen.append(name)
        stop.set()

    runs = [Run(name, lambda: TinyResNet(3)) for name in ("first", "second")]
    histories = run_all(runs, train, val, epochs=3, batch_size=12, callback=callback, stop=stop)
    assert list(histories) == ["first"] and seen == ["first"]
    assert histories["first"].step == 1 and histories["first"].status != "completed"


def test_lesson_runs_on_a_foreign_model():
    torch.manual_seed(7)
    source = TinyResNet(10)
    build = lambda nc: TinyResNet(nc)  # noqa: E731
    pretrained, _ = setup_run("pretrained", source, build, 3, seed=0)
    scratch, _ = setup_run("scratch", source, build, 3, seed=0)
    assert torch.equal(pretrained.conv1.weight, source.conv1.weight)
    assert not torch.equal(scratch.conv1.weight, source.conv1.weight)
    assert lesson_run("staged", source, build, 3, depth=5, unfreeze_at=2).options == {"freeze": {0: 5, 2: 0}}
    with pytest.raises(ValueError, match=r"unknown run 'partial'; choose from \['pretrained'"):
        lesson_run("partial", source, build, 3)
    with pytest.raises(ValueError, match="pass build="):
        default_build(source)
    assert RUNS == ("pretrained", "scratch", "frozen", "staged")


def test_paired_runs_freeze_the_frozen_run_only(small_shapes):
    train, val = small_shapes
    source, models = build_model(nc=10), {}
    histories = paired_runs(train, val, source=source, build=lambda nc: build_model(nc=nc),
                            runs=("pretrained", "frozen"), depth=9, epochs=1, batch_size=12, models=models)
    assert set(histories) == {"pretrained", "frozen"} and all(h.status == "completed" for h in histories.values())
    assert frozen_by_workbench(models["frozen"], "layers.0.conv.weight")
    assert not frozen_by_workbench(models["pretrained"], "layers.0.conv.weight")
    assert torch.equal(models["frozen"].layers[0].conv.weight, source.layers[0].conv.weight)
