"""Lesson 5 experiments: signal propagation summary, the fragile run and its remedies, scratch vs pretrained."""
import copy
import math
import statistics

import pytest
import torch
from foreign_models import TinyResNet
from torch import nn

from workbench import build_model, pretrained, transfer
from workbench.experiments import scratch
from workbench.experiments.recipe import Recipe
from workbench.stability import HIGH_LR, STABLE_CLIP, signal_propagation


@pytest.fixture(scope="module")
def tiny():
    """9 training and 3 validation images of the lesson's three shapes."""
    return scratch.lesson_data(4)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_lesson_data_is_the_small_three_shape_task():
    train, val = scratch.lesson_data()
    assert (len(train), len(val)) == (72, 24)
    assert train.classes == val.classes == ("circle", "square", "triangle")
    again, _ = scratch.lesson_data()
    assert torch.equal(train.x, again.x), "same seed, same images"


@pytest.mark.parametrize("seed", range(5))
def test_init_signal_summarises_signal_propagation(seed):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    summary = scratch.init_signal(x, schemes=["kaiming", "normal", "zero"])
    reference = signal_propagation(build_model(nc=3), x, ["kaiming", "normal", "zero"], (True, False))
    assert list(summary.rows) == reference
    table = {(scheme, bn): (first, last, before) for scheme, bn, first, last, before in summary.table}
    assert len(table) == 6
    kaiming = [r.std for r in reference if r.scheme == "kaiming" and not r.batchnorm]
    assert table[("kaiming", False)] == (kaiming[0], kaiming[-1], kaiming[-2])
    assert str(summary).splitlines()[0].split("  ")[0] == "init" and "std before the head" in str(summary)
    assert summary.std("zero", True) == summary.std("zero", False) == 0.0
    # without BatchNorm a std of 0.01 per weight loses the signal; BatchNorm re-scales every layer
    assert summary.std("normal", False) < 1e-6 < 0.1 < summary.std("normal", True) < 2
    assert "kaiming" in str(summary) and "<table>" in summary._repr_html_() and repr(summary) == str(summary)


def test_init_signal_works_on_a_model_the_workbench_did_not_define(tiny_resnet):
    before = copy.deepcopy(tiny_resnet.state_dict())
    summary = scratch.init_signal(torch.rand(4, 3, 16, 16), tiny_resnet, schemes=["xavier"])
    names = [r.name for r in summary.rows if not r.batchnorm]
    assert names[:3] == ["conv1", "bn1", "layer1"] and names[-1] == "fc"
    assert all(not r.batchnorm or r.std > 0 for r in summary.rows)
    assert all(torch.equal(v, tiny_resnet.state_dict()[k]) for k, v in before.items()), "the model is copied"
    with pytest.raises(ValueError, match="no rows"):
        summary.std("kaiming", True)


@pytest.mark.parametrize("remedy", scratch.REMEDIES)
def test_remedy_setup_applies_exactly_one_remedy(remedy):
    model, options = scratch.remedy_setup(remedy)
    assert options["optimizer"] == "sgd" and "seed" not in options
    assert options["lr"] == (scratch.LOWER_LR if remedy == "lower_lr" else HIGH_LR)
    assert options["clip"] == (STABLE_CLIP if remedy in ("clip", "all") else None)
    assert (options["schedule"] is not None) == (remedy in ("warmup", "all"))
    assert has_batchnorm(model) == (remedy in ("batchnorm", "all"))
    fragile, _ = scratch.remedy_setup("none")
    assert torch.equal(model.layers[0].conv.weight, fragile.layers[0].conv.weight), "every variant starts alike"
    std = model.layers[0].conv.weight.std().item()
    assert abs(std - math.sqrt(2 / (3 * 3 * 3))) < 0.05, "Kaiming normal: std sqrt(2 / fan_in)"


def test_remedy_setup_rejects_an_unknown_remedy():
    with pytest.raises(ValueError, match="choose one of"):
        scratch.remedy_setup("dropout")


def test_remedies_table_reads_each_run(tiny):
    train, _ = tiny
    recipe = scratch.REMEDY_RECIPE.replace(epochs=3, batch_size=4, lr=100.0)
    table = scratch.remedies(train, recipe=recipe, which=["none", "all"])
    none, fixed = table.row("none"), table.row("all")
    history = table.histories["none"]
    assert none.status == history.status == "non_finite"
    assert (none.stopped_at, none.layer) == (history.non_finite.step, history.non_finite.layer)
    assert none.layer is not None and none.steps == history.step
    assert fixed.status == "completed" and fixed.stopped_at is None
    run = table.histories["all"]
    assert fixed.first_loss == pytest.approx(statistics.fmean(
        loss for loss, epoch in zip(run.loss, run.epoch) if epoch == 0))
    assert fixed.last_loss == pytest.approx(statistics.fmean(
        loss for loss, epoch in zip(run.loss, run.epoch) if epoch == 2))
    assert fixed.max_grad_norm == max(run.grad_norm)
    text = str(table)
    assert text.splitlines()[0].startswith("remedy") and "non_finite" in text and "<td>all</td>" in table._repr_html_()
    with pytest.raises(ValueError, match="no run"):
        table.row("warmup")


def test_remedies_rejects_an_unknown_remedy_before_training(tiny):
    with pytest.raises(ValueError, match="choose from"):
        scratch.remedies(tiny[0], which=["none", "more data"])


def test_scratch_vs_pretrained_starts_one_run_from_the_source(tiny):
    train, val = tiny
    source = pretrained("shapes_n")
    result = scratch.scratch_vs_pretrained(train, val, Recipe(epochs=1, batch_size=4), source=source, longer=2)
    assert [r.run for r in result.rows] == ["pretrained", "scratch", "scratch x2"]
    assert [r.epochs for r in result.rows] == [1, 1, 2]
    assert result.row("scratch x2").steps == 2 * result.row("scratch").steps
    for row in result.rows:
        history = result.histories[row.run]
        assert row.first_val_accuracy == history.val["accuracy"][0]
        assert row.clipped == sum(c < 1 for c in history.clip_coef) / history.step
        assert row.early_grad_norm == statistics.median(
            g for g, e in zip(history.grad_norm, history.epoch) if e == 0)
    # the pretrained run's first loss is the loss of the transferred model on fit's first batch
    torch.manual_seed(0)
    reference = build_model(nc=3)
    transfer(source, reference)
    reference.train()
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:4]
    x, y = train.x[order], train.y[order]
    first = nn.functional.cross_entropy(reference(x), y).item()
    assert result.histories["pretrained"].loss[0] == pytest.approx(first, rel=1e-5)
    assert "pretrained" in str(result) and "<caption>" in result._repr_html_()


def test_scratch_vs_pretrained_on_your_own_model(tiny):
    train, val = tiny
    source = TinyResNet(num_classes=10).state_dict()
    result = scratch.scratch_vs_pretrained(train, val, source=source, build=lambda nc: TinyResNet(num_classes=nc),
                                           recipe=Recipe(epochs=1, batch_size=4))
    assert [r.run for r in result.rows] == ["pretrained", "scratch"]
    assert result.histories["scratch"].layer_names[-1] == "fc"
    with pytest.raises(ValueError, match="longer"):
        scratch.scratch_vs_pretrained(train, val, longer=-1)
