"""Lesson 3 experiments: full vs frozen vs staged from one pretrained start, and the BatchNorm policies."""
import pytest
import torch
from foreign_models import TinyResNet
from torch import nn

from workbench import build_model, freeze
from workbench.experiments import freezing_runs as F
from workbench.experiments.recipe import Recipe, Target
from workbench.freezing import BN_POLICIES
from workbench.layers import numbered_layers
from workbench.runs import setup_run

RECIPE = F.FREEZING_RECIPE.replace(epochs=2, batch_size=4)
TINY = dict(recipe=RECIPE, unfreeze_at=1, timing_steps=1)


def tiny(n_per_class: int) -> Target:
    return F.FREEZING_TARGET.replace(n_per_class=n_per_class, val_per_class=2)


def random_source(seed: int = 123) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(nc=10)


@pytest.fixture(scope="module")
def tiny_comparison():
    return F.compare_freezing(tiny(3), depth=9, source=random_source(), **TINY)


def test_the_three_runs_start_alike_and_train_what_their_schedules_say(tiny_comparison):
    result = tiny_comparison
    assert [r.name for r in result.runs] == ["full", "frozen", "staged"]
    start, _ = setup_run("pretrained", random_source(), lambda nc: build_model(nc=nc), 4, depth=9, seed=0)
    reference = freeze(start, depth=9)  # the library's own count of what depth 9 leaves trainable
    assert result["frozen"].trainable == result["staged"].trainable == reference.trainable
    assert result["full"].trainable == result["full"].total == reference.total
    assert dict(result["staged"].freeze) == {0: 9, 1: 0} and dict(result["frozen"].freeze) == {0: 9}
    assert result["staged"].history.freeze_depth == {0: 9, 1: 0}
    assert result["frozen"].history.freeze_depth == {0: 9, 1: 9}
    assert all(r.history.step == 2 * 3 for r in result.runs)  # 12 images in batches of 4, two epochs
    assert result["frozen"].backbone_drift == 0.0  # nothing in layers 0-8 moved
    assert result["full"].backbone_drift > 0 and result["staged"].backbone_drift > 0
    assert result.best in ("full", "frozen", "staged")
    assert result.histories()["staged"] is result["staged"].history


def test_training_time_is_steps_times_the_measured_step_time_of_the_depth_in_force(tiny_comparison):
    result = tiny_comparison
    full, frozen, staged = (dict(result[n].step_ms) for n in ("full", "frozen", "staged"))
    assert set(full) == {0} and set(frozen) == {9} and set(staged) == {0, 9}
    assert staged[0] == full[0] and staged[9] == frozen[9]
    nb = 3
    assert result["full"].train_seconds == pytest.approx(2 * nb * full[0] / 1000)
    assert result["staged"].train_seconds == pytest.approx(nb * (staged[9] + staged[0]) / 1000)


def test_same_seed_same_curves():
    a = F.compare_freezing(tiny(2), runs=["frozen"], source=random_source(), **TINY)
    b = F.compare_freezing(tiny(2), runs=["frozen"], source=random_source(), **TINY)
    assert a["frozen"].history.loss == b["frozen"].history.loss and a["frozen"].curve == b["frozen"].curve


def test_text_and_html_name_every_run(tiny_comparison):
    text = str(tiny_comparison)
    assert all(name in text for name in ("full", "frozen", "staged", "layers 0-8 frozen", "from epoch 1"))
    assert "<pre>" in tiny_comparison._repr_html_()
    with pytest.raises(KeyError, match="the runs are"):
        tiny_comparison["nope"]


def test_on_a_model_the_workbench_did_not_define():
    torch.manual_seed(5)
    source = TinyResNet(num_classes=10)
    result = F.compare_freezing(tiny(2), depth=5, source=source, build=lambda nc: TinyResNet(num_classes=nc), **TINY)
    frozen = result["frozen"]
    assert frozen.backbone_drift == 0.0 and result["full"].backbone_drift > 0
    model = TinyResNet(num_classes=4)
    head = sum(p.numel() for p in model.fc.parameters())
    assert frozen.trainable == head and result["full"].trainable == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kwargs, message", [
    (dict(runs=["full", "half"]), "unknown runs"),
    (dict(runs=[]), "unknown runs"),
    (dict(unfreeze_at=2, recipe=RECIPE.replace(epochs=2)), "unfreeze_at must be an epoch in 1..1"),
    (dict(unfreeze_at=0), "unfreeze_at must be an epoch"),
    (dict(timing_steps=0), "timing_steps"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        F.compare_freezing(tiny(2), **{**TINY, **kwargs}, source=random_source())


# ----------------------------------------------------------------------------------------------- BatchNorm policies
@pytest.fixture(scope="module")
def policies():
    return F.compare_bn_policies(tiny(2), Recipe(epochs=1, batch_size=4), source=random_source())


def test_only_eval_and_frozen_keep_the_frozen_statistics_and_features(policies):
    assert [r.policy for r in policies.rows] == list(BN_POLICIES)
    model = build_model(nc=4)
    norms = sum(isinstance(m, nn.BatchNorm2d) for layer in numbered_layers(model)[:9] for m in layer.module.modules())
    for row in policies.rows:
        assert row.norms == norms == len(policies.drift[row.policy])
        assert row.reference == F.BN_REFERENCES[row.policy]
    for policy in ("eval", "frozen"):
        assert policies[policy].moved == 0 and policies[policy].mean_shift == 0.0
        assert policies[policy].feature_change == 0.0
    for policy in ("train", "affine"):
        assert policies[policy].moved == norms and policies[policy].mean_shift > 0
        assert policies[policy].feature_change > 0
        assert all(r.updates == 2 for r in policies.drift[policy])  # two training batches, one update each


def test_affine_keeps_gamma_and_beta_of_the_frozen_layers_trainable(policies):
    model = build_model(nc=4)
    affine = sum(p.numel() for layer in numbered_layers(model)[:9] for m in layer.module.modules()
                 if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert policies["affine"].trainable == policies["eval"].trainable + affine
    assert policies["eval"].trainable == policies["train"].trainable == policies["frozen"].trainable


def test_policy_text_and_errors(policies):
    text = str(policies)
    assert "YOLOv5" in text and "timm" in text and "0/25" in text and "25/25" in text
    with pytest.raises(ValueError, match="unknown BatchNorm policies"):
        F.compare_bn_policies(tiny(2), policies=["eval", "sometimes"], source=random_source())
    with pytest.raises(ValueError, match="depth must be in 1..9"):
        F.compare_bn_policies(tiny(2), depth=0, source=random_source())
    with pytest.raises(KeyError):
        policies["sometimes"]


def test_policies_on_a_model_the_workbench_did_not_define():
    torch.manual_seed(5)
    result = F.compare_bn_policies(tiny(2), Recipe(epochs=1, batch_size=4), depth=5, policies=["eval", "train"],
                                   source=TinyResNet(num_classes=10), build=lambda nc: TinyResNet(num_classes=nc))
    assert result["eval"].moved == 0 and result["eval"].feature_change == 0.0
    model = TinyResNet(num_classes=4)
    norms = sum(isinstance(m, nn.BatchNorm2d) for part in (model.bn1, model.layer1, model.layer2, model.layer3)
                for m in part.modules())
    assert result["train"].moved == result["train"].norms == norms == 9


def test_layer_output_is_the_prefix_of_the_network_in_eval_mode():
    torch.manual_seed(0)
    model = build_model(nc=3).train()
    x = torch.rand(2, 3, 32, 32)
    expected = nn.Sequential(*model.layers[:4]).eval()(x)
    model.train()
    torch.testing.assert_close(F.layer_output(model, 3, x), expected, rtol=0, atol=0)
    assert model.training  # the mode is restored
    with pytest.raises(ValueError, match="outside 0..9"):
        F.layer_output(model, 10, x)
