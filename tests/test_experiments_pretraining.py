"""Lesson 1 experiments: the weights tour, the target data knobs, pretrained-vs-scratch comparisons, the panel."""
import json

import pytest
import torch
from foreign_models import TinyResNet
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.optim.swa_utils import update_bn

import workbench as wb
from workbench import History, build_model
from workbench.experiments import pretraining as P
from workbench.experiments.recipe import Recipe, Target
from workbench.metrics import evaluate
from workbench.panels import TargetPanel
from workbench.training import Batches

TINY = Recipe(epochs=1, batch_size=4)


def random_source(seed: int = 123) -> nn.Module:
    """A 10-class source whose weights differ from any target built under the experiments' seed 0."""
    torch.manual_seed(seed)
    return build_model(nc=10)


# ----------------------------------------------------------------------------------------------- the weights
def test_describe_weights_counts_parameters_and_buffers_like_the_state_dict():
    model = wb.pretrained("shapes_n")
    summary = P.describe_weights(model)
    state = model.state_dict()
    assert summary.n_items == len(state) == 158
    assert summary.n_parameters == len(list(model.parameters()))
    assert summary.n_buffers == len(list(model.buffers()))
    assert summary.n_num_batches_tracked == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert summary.parameter_values == sum(p.numel() for p in model.parameters())
    assert summary.buffer_values == sum(b.numel() for b in model.buffers())
    names = [e.name for e in summary.entries]
    assert names == list(state)[:6]
    kinds = {e.name.rsplit(".", 1)[1]: e.kind for e in summary.entries}
    assert kinds == {"weight": "parameter", "bias": "parameter", "running_mean": "buffer", "running_var": "buffer",
                     "num_batches_tracked": "buffer"}
    nbt = next(e for e in summary.entries if e.name.endswith("num_batches_tracked"))
    assert nbt.shape == () and nbt.values == (state["layers.0.bn.num_batches_tracked"].item(),) and nbt.values[0] > 0
    mean = next(e for e in summary.entries if e.name.endswith("running_mean"))
    assert mean.values == tuple(state["layers.0.bn.running_mean"][:4].tolist())
    assert summary.metadata["classes"] == list(wb.data.SOURCE_CLASSES)
    text = str(summary)
    assert "158 state_dict entries" in text and "num_batches_tracked" in text and "source_val_accuracy" in text


def test_describe_weights_on_a_model_the_workbench_did_not_define(tiny_resnet):
    summary = P.describe_weights(tiny_resnet, entries=["bn1.running_var", "fc.bias"], values=2)
    assert [(e.name, e.kind, e.shape) for e in summary.entries] == [("bn1.running_var", "buffer", (8,)),
                                                                     ("fc.bias", "parameter", (10,))]
    assert summary.n_items == len(tiny_resnet.state_dict()) and summary.metadata == {}
    with pytest.raises(ValueError, match="no state_dict entries named"):
        P.describe_weights(tiny_resnet, entries=["nope"])


# ----------------------------------------------------------------------------------------------- the data
def test_target_data_shapes_keeps_the_validation_set_fixed_across_target_sizes():
    train_a, val_a = P.target_data(3)
    train_b, val_b = P.target_data(7)
    assert (len(train_a), len(train_b), len(val_a)) == (12, 28, 4 * P.VAL_PER_CLASS)
    assert train_a.classes == P.TARGET_CLASSES
    assert torch.equal(val_a.x, val_b.x) and torch.equal(val_a.y, val_b.y)
    far, _ = P.target_data(3, gap=0.8)
    assert far.x.mean() > train_a.x.mean()  # brighter, textured backgrounds


def test_target_data_digits_never_shares_an_image_between_train_and_val():
    train, val = P.target_data(20, domain="digits", val_per_class=10)
    assert (len(train), len(val), train.nc) == (200, 100, 10)
    assert torch.bincount(train.y).tolist() == [20] * 10 and torch.bincount(val.y).tolist() == [10] * 10
    flat_train, flat_val = train.x.flatten(1), val.x.flatten(1)
    assert not (torch.cdist(flat_val, flat_train) == 0).any()
    _, val_small = P.target_data(5, domain="digits", val_per_class=10)
    assert torch.equal(val.x, val_small.x)


def test_target_data_rejects_an_unknown_domain():
    with pytest.raises(ValueError, match=r"choose one of \['shapes', 'digits'\]"):
        P.target_data(5, domain="photos")


# ----------------------------------------------------------------------------------------------- the runs
def test_bn_reestimated_accuracy_matches_update_bn_and_leaves_the_model_alone(small_shapes):
    train, val = small_shapes
    torch.manual_seed(0)
    model = build_model(nc=3)
    wb.fit(model, train, val, epochs=1, batch_size=12, progress=False, device="cpu")
    update_bn(Batches(train, 12, shuffle=False), model)
    reference = evaluate(model, [(val.x, val.y)])["accuracy"]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert P.bn_reestimated_accuracy(model, train, val, batch_size=12) == reference
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_compare_runs_both_starts_on_the_same_data_and_steps():
    source = random_source()
    result = P.compare(Target(2), TINY, source=source)
    assert result.pretrained.history.step == result.scratch.history.step == 2
    assert result.n_train == 8 and result.classes == P.TARGET_CLASSES
    assert result.pretrained.history.loss != result.scratch.history.loss  # different starting weights
    assert result.advantage == pytest.approx(result.pretrained.accuracy - result.scratch.accuracy)
    assert result.pretrained.accuracy == result.pretrained.history.val["accuracy"][-1]
    for line in ("pretrained", "scratch", "advantage of pretrained"):
        assert line in str(result)
    assert set(result.histories()) == {"pretrained", "scratch"}


def test_compare_is_reproducible_for_a_seed():
    source = random_source()
    a, b = (P.compare(Target(2), TINY, source=source, seed=3) for _ in range(2))
    assert a.pretrained.history.loss == b.pretrained.history.loss
    assert a.scratch.history.loss == b.scratch.history.loss
    assert (a.pretrained.accuracy_bn, a.scratch.accuracy_bn) == (b.pretrained.accuracy_bn, b.scratch.accuracy_bn)


def test_compare_on_a_model_the_workbench_did_not_define():
    torch.manual_seed(0)
    source = TinyResNet(num_classes=10)
    result = P.compare(Target(2, domain="digits"), TINY, source=source, build=lambda nc: TinyResNet(num_classes=nc))
    assert result.classes == wb.data.DIGITS and result.pretrained.history.status == "completed"
    assert 0.0 <= result.scratch.accuracy_bn <= 1.0


def test_the_pretrained_run_starts_from_the_source_weights():
    source = random_source()
    result = P.compare(Target(2), Recipe(epochs=1, batch_size=8), source=source)
    # the first step's loss is computed before any update: from the source's weights and a fresh head
    torch.manual_seed(0)
    twin = build_model(nc=4)
    wb.transfer(source, twin)
    twin.train()
    x = P.target_data(2)[0].x
    expected = torch.nn.functional.cross_entropy(twin(x), P.target_data(2)[0].y).item()
    assert result.pretrained.history.loss[0] == pytest.approx(expected, rel=1e-5)


def test_run_measures():
    history = History(loss=[1.0, 3.0], grad_norm=[2.0, 20.0, 4.0], clip_coef=[1.0, 0.5, 1.0, 0.25],
                      val={"accuracy": [0.2, 0.95, 0.9]})
    run = P.Run("scratch", history, 0.9, 0.95)
    assert (run.mean_loss, run.median_grad_norm, run.clipped) == (2.0, 4.0, 0.5)
    assert run.epochs_to(0.9) == 2 and run.epochs_to(0.99) is None


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=3, unique=True),
       st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=1, max_size=2, unique=True))
def test_grid_is_every_combination(sizes, gaps):
    settings_ = P.grid(sizes, gap=gaps, domain=("shapes", "digits"))
    assert len(settings_) == 2 * len(sizes) * len(gaps)
    assert len(set(settings_)) == len(settings_)
    expected = {(d, n, g) for d in ("shapes", "digits") for n in sizes for g in gaps}
    assert {(t.domain, t.n_per_class, t.gap) for t in settings_} == expected


def test_sweep_collects_one_comparison_per_setting():
    source = random_source()
    result = P.sweep(P.grid((2,), domain=("shapes", "digits")), TINY, source=source)
    assert [r.domain for r in result.results] == ["shapes", "digits"]
    assert result.find(domain="digits").n_train == 20
    with pytest.raises(ValueError, match="results match"):
        result.find(n_per_class=2)
    assert "validation accuracy" in str(result)
    fig = result.figure()
    assert len(fig.data) == 4 and list(fig.data[0].x) == [r.knobs() for r in result.results]
    with pytest.raises(ValueError, match="at least one target"):
        P.sweep([])


# ----------------------------------------------------------------------------------------------- the panel
def test_target_panel_knobs_make_the_data_for_the_next_run():
    panel = TargetPanel(Target(3), TINY, source=random_source())
    assert len(panel.compare.train) == 12 and panel.compare.runs.value == P.STARTS
    panel.gap.value = 0.5
    assert panel.compare.train.x.mean() > P.target_data(3)[0].x.mean()
    panel.domain.value = "digits"
    assert panel.compare.train.nc == 10 and "30 training images" in panel.about.value
    state = panel.state()
    assert state["controls"] == {"domain": "digits", "n_per_class": 3, "gap": 0.5}
    again = TargetPanel.from_state(json.dumps(state), Target(3), TINY, source=random_source())
    assert torch.equal(again.compare.train.x, panel.compare.train.x)
    histories = panel.compare.run()
    assert set(histories) == set(P.STARTS) and all(h.status == "completed" for h in histories.values())
    train, val = panel.compare.train, panel.compare.val
    for name, model in panel.compare.models.items():  # the panel shows the BN-re-estimated number the lesson reads
        expected = P.bn_reestimated_accuracy(model, train, val, 4)
        assert panel.compare.accuracy_bn[name] == expected
        assert f"{expected:.3f}" in panel.compare.table.value
    assert "BatchNorm re-estimated" in panel.compare.table.value


def test_compare_records_both_accuracies_after_every_epoch():
    result = P.compare(Target(2), Recipe(epochs=2, batch_size=4), source=random_source())
    for run in (result.pretrained, result.scratch):
        assert len(run.curve) == len(run.curve_bn) == 2 and run.curve_bn[-1] == run.accuracy_bn
        assert run.epochs_to(0.0, bn_reestimated=True) == 1
    fig = result.figure()
    by_panel = {(t.name, t.xaxis or "x"): list(t.y) for t in fig.data}
    assert by_panel[("scratch", "x2")] == result.scratch.curve
    assert by_panel[("scratch", "x3")] == list(result.scratch.curve_bn)
    assert by_panel[("pretrained", "x")] == result.pretrained.history.loss
    assert fig.layout.yaxis2.range == fig.layout.yaxis3.range == (0, 1.02)  # one scale for the two accuracy panels
    assert "chance 0.25" in fig.layout.annotations[1].text
    # runs lying on each other stay visible: each start has its own marker
    assert fig.data[1].marker.symbol != fig.data[4].marker.symbol


def test_bn_tracker_scores_the_model_as_it_is_at_each_epoch_end():
    from workbench.runs import Run as Start
    from workbench.runs import run_all

    train, val = P.target_data(2, val_per_class=3)
    models = {}
    callback, curves = P.bn_tracker(models, train, val, 4)
    run_all([Start("scratch", lambda: build_model(nc=4))], train, val, models=models, callback=callback, epochs=2,
            batch_size=4, device="cpu")
    assert len(curves["scratch"]) == 2
    assert curves["scratch"][-1] == P.bn_reestimated_accuracy(models["scratch"], train, val, 4)


def test_a_wrong_build_gets_an_error_naming_build():
    with pytest.raises(TypeError, match="build= must be a function nc -> a fresh model"):
        P.compare(Target(2), TINY, source=random_source(), build=3)
    with pytest.raises(TypeError, match=r"build= is called as build\(nc\) with nc=4"):
        P.compare(Target(2), TINY, source=random_source(), build=lambda: build_model(nc=4))
    with pytest.raises(TypeError, match=r"build\(4\) must return an nn.Module"):
        P.compare(Target(2), TINY, source=random_source(), build=lambda nc: "a model")


def test_bn_reestimation_also_works_on_a_model_frozen_with_eval_batchnorm():
    import workbench as wb
    from workbench.experiments.pretraining import bn_reestimated_accuracy, target_data

    train, val = target_data(5, val_per_class=5, seed=0)
    model = wb.build_model(nc=len(train.classes))
    wb.freeze(model, depth=9, bn="eval")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen_bn = model.layers[3].bn
    bn_reestimated_accuracy(model, train, val)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model is untouched
    assert frozen_bn.training is False and not frozen_bn.weight.requires_grad  # and still frozen


def test_bn_reestimation_recomputes_statistics_of_pinned_layers(monkeypatch):
    import workbench as wb
    from workbench.experiments import pretraining

    train, val = pretraining.target_data(5, val_per_class=5, seed=0)
    model = wb.build_model(nc=len(train.classes))
    wb.freeze(model, depth=9, bn="eval")
    seen, evaluate_for_real = {}, pretraining.evaluate

    def spy(model, batches, device):
        seen["mean"] = model.layers[3].bn.running_mean.clone()
        return evaluate_for_real(model, batches, device)

    monkeypatch.setattr(pretraining, "evaluate", spy)
    pretraining.bn_reestimated_accuracy(model, train, val)
    assert seen["mean"].abs().sum() > 0  # statistics were gathered, not left at their reset value 0
