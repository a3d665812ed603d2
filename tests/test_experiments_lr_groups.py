"""Lesson 4 experiments: the group table, the LR table of a preview, and the head-multiplier runs."""
import numpy as np
import pytest
import torch
from foreign_models import TinyResNet
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from workbench import YoloSchedule, build_model, param_groups
from workbench.experiments import lr_groups as L
from workbench.experiments.recipe import Target
from workbench.optim import make_optimizer

RECIPE = L.HEAD_LR_RECIPE.replace(epochs=2, batch_size=4)


def tiny(n_per_class: int) -> Target:
    return Target(n_per_class, val_per_class=2)


def random_source(seed: int = 123) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(nc=10)


# ----------------------------------------------------------------------------------------------- the groups
def test_group_table_lists_every_parameter_once_with_its_groups_settings():
    model = build_model(nc=3)
    groups = param_groups(model, 0.01, weight_decay=5e-4, lr_mult={"head": 10})
    table = L.group_table(groups)
    assert [r.name for r in table.rows] == [g["name"] for g in groups]
    assert [r.members for r in table.rows] == [tuple(g["names"]) for g in groups]
    members = [n for r in table.rows for n in r.members]
    assert sorted(members) == sorted(n for n, _ in model.named_parameters())
    assert sum(r.params for r in table.rows) == sum(p.numel() for p in model.parameters())
    assert table["weight/head"].lr == pytest.approx(10 * table["weight"].lr)
    assert {r.tag: r.weight_decay for r in table.rows} == {"weight": 5e-4, "norm": 0.0, "bias": 0.0}
    text = str(table)
    assert "6 groups" in text and "layers.0.conv.weight" in text and "(+22)" in text
    with pytest.raises(KeyError, match="the groups are"):
        table["nope"]


def test_group_table_of_an_optimizer_a_resnet_and_groups_made_elsewhere(tiny_resnet):
    opt = make_optimizer(tiny_resnet, "sgd", lr=0.01, lr_mult={"head": 5})
    table = L.group_table(opt)
    assert table["weight/head"].members == ("fc.weight",) and table["bias/head"].members == ("fc.bias",)
    assert table["weight/head"].lr == pytest.approx(0.05)
    plain = torch.optim.SGD([{"params": list(tiny_resnet.parameters()), "lr": 0.1}])
    row = L.group_table(plain).rows[0]
    assert row.name == "0" and row.members[:2] == ("#0", "#1") and row.tensors == len(list(tiny_resnet.parameters()))
    with pytest.raises(ValueError, match="no groups"):
        L.group_table([])


@settings(max_examples=15, deadline=None)
@given(head=st.floats(1, 20), layer=st.integers(0, 9))
def test_group_table_partitions_the_model_for_any_multiplier(head, layer):
    model = build_model(nc=3)
    for mult in ({"head": head}, {layer: head}):
        table = L.group_table(param_groups(model, 0.01, lr_mult=mult))
        members = [n for r in table.rows for n in r.members]
        assert len(members) == len(set(members)) == len(list(model.parameters()))


# ----------------------------------------------------------------------------------------------- the curves
GOLDEN = [(0, 0.1, 0.0, 0.8), (150, 0.0549505, 0.0049505, 0.8685), (300, 0.009703, 0.009703, 0.937)]


def test_lr_table_reads_the_yolov5_golden_values():
    preview = YoloSchedule("yolov5").preview(param_groups(build_model(nc=3), 0.01), nb=100, epochs=100)
    table = L.lr_table(preview, [ni for ni, *_ in GOLDEN])
    for k, (_, bias, other, momentum) in enumerate(GOLDEN):
        assert table.lr["bias"][k] == pytest.approx(bias, abs=1e-9)
        assert table.lr["weight"][k] == table.lr["norm"][k] == pytest.approx(other, abs=1e-9)
        assert table.momentum[k] == pytest.approx(momentum, abs=1e-8)
    assert L.lr_table(preview).iterations == (0, 150, 300, 9999)
    assert "300 (warmup ends)" in str(L.lr_table(preview))


@settings(max_examples=20, deadline=None)
@given(iterations=st.lists(st.integers(0, 49), min_size=1, max_size=5))
def test_lr_table_equals_the_preview_at_any_iteration(iterations):
    preview = YoloSchedule("ultralytics").preview(param_groups(build_model(nc=3), 0.01), nb=10, epochs=5)
    table = L.lr_table(preview, iterations)
    for name, values in table.lr.items():
        np.testing.assert_allclose(values, preview.lr[name][iterations], rtol=0, atol=1e-10)
    np.testing.assert_allclose(table.momentum, preview.momentum["bias"][iterations], rtol=0, atol=1e-10)


def test_lr_table_refuses_iterations_outside_the_run():
    preview = YoloSchedule("ultralytics").preview(param_groups(build_model(nc=3), 0.01), nb=10, epochs=5)
    with pytest.raises(ValueError, match="iterations must be in 0..49"):
        L.lr_table(preview, [50])


# ----------------------------------------------------------------------------------------------- the head multiplier
@pytest.fixture(scope="module")
def head_runs():
    return L.compare_head_lr(tiny(3), RECIPE, head_mults=(1, 10), source=random_source())


def test_recorded_lr_and_momentum_are_the_preview(head_runs):
    for run in head_runs.runs:
        assert run.lr_error == 0.0 and run.momentum_error == 0.0
        assert set(run.history.lr) == set(run.preview.lr) == {r.name for r in run.groups.rows}
        for name, recorded in run.history.lr.items():
            np.testing.assert_array_equal(recorded, run.preview.lr[name][:run.history.step])


def test_head_multiplier_sets_the_head_groups_and_sgd_warms_the_biases(head_runs):
    one, ten = head_runs[1], head_runs[10]
    assert [r.name for r in one.groups.rows] == ["weight", "norm", "bias"]
    assert ten.groups["weight/head"].lr == pytest.approx(10 * ten.groups["weight"].lr) == pytest.approx(0.01)
    nw = ten.preview.warmup
    assert nw == 3  # ultralytics profile: one warmup epoch of 3 batches
    assert ten.preview.lr["bias"][0] == ten.preview.lr["bias/head"][0] == 0.1
    assert ten.preview.lr["weight"][0] == ten.preview.lr["weight/head"][0] == 0.0
    assert ten.preview.momentum["weight"][0] == 0.8
    after = ten.preview.lr["weight/head"][nw] / ten.preview.lr["weight"][nw]
    assert after == pytest.approx(10)
    assert ten.head_drift > 0 and one.head_drift > 0
    assert ten.accuracy == ten.curve[-1] and ten.mean_accuracy == pytest.approx(sum(ten.curve) / len(ten.curve))
    assert set(head_runs.histories()) == {"head x1", "head x10"}
    assert "head x10" in str(head_runs) and "<pre>" in head_runs._repr_html_()
    with pytest.raises(KeyError, match="the runs have"):
        head_runs[3]


def test_adamw_gets_no_bias_warmup_and_same_seed_same_curve():
    a = L.compare_head_lr(tiny(2), RECIPE.replace(optimizer="adamw"), head_mults=(10,), source=random_source())
    b = L.compare_head_lr(tiny(2), RECIPE.replace(optimizer="adamw"), head_mults=(10,), source=random_source())
    assert a[10].preview.lr["bias"][0] == 0.0  # Ultralytics sets warmup_bias_lr=0 for AdamW
    assert a[10].lr_error == 0.0 and a[10].history.loss == b[10].history.loss


def test_on_a_model_the_workbench_did_not_define():
    torch.manual_seed(5)
    result = L.compare_head_lr(tiny(2), RECIPE, head_mults=(1, 10), source=TinyResNet(num_classes=10),
                               build=lambda nc: TinyResNet(num_classes=nc))
    assert result[10].groups["weight/head"].members == ("fc.weight",)
    assert result[10].lr_error == 0.0 and result[1].lr_error == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(head_mults=()), "at least one multiplier"),
    (dict(recipe=RECIPE.replace(optimizer="adam")), "optimizer must be 'sgd' or 'adamw'"),
    (dict(recipe=RECIPE.replace(lr=None)), "recipe.lr must be set"),
    (dict(head_mults=(0,)), "multiplier for 'head'"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        L.compare_head_lr(tiny(2), **{"recipe": RECIPE, **kwargs}, source=random_source())


def test_a_yolov5_schedule_too_long_for_the_run_is_refused_before_training():
    with pytest.raises(ValueError, match="profile='ultralytics'"):
        L.compare_head_lr(tiny(2), RECIPE.replace(schedule=YoloSchedule("yolov5")), source=random_source())
