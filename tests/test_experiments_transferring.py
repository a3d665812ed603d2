"""Lesson 2 experiments: the item count decomposed, the ledger verified on tensors, class rows, layer maps, channels."""
import pytest
import torch
from foreign_models import TinyResNet
from torch import nn

import workbench as wb
from workbench import build_model, transfer
from workbench.experiments import transferring as T
from workbench.experiments.recipe import Recipe, Target


def fresh_copy(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def source():
    return wb.pretrained("shapes_n")


# ----------------------------------------------------------------------------------------------- the count
def test_count_items_decomposes_the_headline_by_kind_and_stage(source):
    target = build_model(nc=4)
    count = T.count_items(transfer(source, target), target)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in target.modules())
    n_conv = sum(isinstance(m, nn.Conv2d) for m in target.modules())
    kinds = {kind: (what, dict(c)) for kind, what, c in count.by_kind}
    assert kinds["Conv2d.weight"] == ("parameter", {"transferred": n_conv})
    for buffer in ("running_mean", "running_var", "num_batches_tracked"):
        assert kinds[f"BatchNorm2d.{buffer}"] == ("buffer", {"transferred": n_bn})
    assert kinds["Linear.weight"] == ("parameter", {"shape_mismatch": 1})
    assert kinds["Linear.bias"] == ("parameter", {"shape_mismatch": 1})
    assert (count.transferred, count.items) == (156, 158) == (5 * n_bn + n_conv, len(target.state_dict()))
    assert count.equation().startswith("156/158 = 26 Conv2d.weight + 26 BatchNorm2d.weight")
    stages = {stage: dict(c) for stage, c in count.by_stage}
    assert stages == {"backbone": {"transferred": 150}, "head": {"transferred": 6, "shape_mismatch": 2}}
    assert "by kind of entry" in str(count) and "shape_mismatch" in str(count)


def test_count_items_on_a_model_the_workbench_did_not_define():
    torch.manual_seed(0)
    target = TinyResNet(num_classes=3)
    count = T.count_items(transfer(TinyResNet(num_classes=10), target), target)
    kinds = {kind: dict(c) for kind, _, c in count.by_kind}
    n_conv = sum(isinstance(m, nn.Conv2d) for m in target.modules())
    assert kinds["Linear.weight"] == {"shape_mismatch": 1} and kinds["Conv2d.weight"] == {"transferred": n_conv}
    assert count.items == len(target.state_dict())


def test_entry_kind_names_the_owning_module():
    owners = T._owner_types(build_model(nc=3))
    assert T.entry_kind("layers.2.m.0.cv1.bn.running_var", owners) == "BatchNorm2d.running_var"
    assert T.entry_kind("layers.9.linear.bias", owners) == "Linear.bias"


# ----------------------------------------------------------------------------------------------- verification
def test_verify_finds_source_values_where_copied_and_fresh_values_elsewhere(source):
    torch.manual_seed(0)
    target = build_model(nc=4)
    fresh = fresh_copy(target)
    report = transfer(source, target)
    check = T.verify(report, source, fresh, target)
    assert check.ok and (check.from_source, check.kept_fresh, check.rows_copied) == (156, 2, 0)
    assert torch.equal(target.layers[9].linear.weight, fresh["layers.9.linear.weight"])  # the head stays fresh


def test_verify_counts_class_rows_copied_by_name(source):
    torch.manual_seed(0)
    target = build_model(nc=4)
    fresh = fresh_copy(target)
    report = transfer(source, target, class_names=(source.pretrained_info["classes"], T.TARGET_CLASSES))
    check = T.verify(report, source, fresh, target)
    assert check.ok and check.rows_copied == 2 * 2  # two shared classes, a weight row and a bias value each
    assert torch.equal(target.layers[9].linear.weight[0], source.layers[9].linear.weight[2])  # triangle
    assert torch.equal(target.layers[9].linear.weight[2], fresh["layers.9.linear.weight"][2])  # halfdisk: fresh


def test_verify_reports_a_tensor_that_does_not_match_its_ledger_row(source):
    torch.manual_seed(0)
    target = build_model(nc=4)
    fresh = fresh_copy(target)
    report = transfer(source, target)
    with torch.no_grad():
        target.layers[3].bn.running_mean.add_(1.0)
        target.layers[9].linear.bias.add_(1.0)
    check = T.verify(report, source, fresh, target)
    assert check.problems == ("layers.3.bn.running_mean (transferred)", "layers.9.linear.bias (shape_mismatch)")
    assert "does NOT match" in str(check)


def test_verify_accepts_an_adapted_first_conv(source):
    target = build_model(nc=10, ch=1)
    fresh = fresh_copy(target)
    check = T.verify(transfer(source, target), source, fresh, target)
    assert check.ok and check.from_source == 158


# ----------------------------------------------------------------------------------------------- class rows
@pytest.mark.parametrize("seed", range(5))
def test_head_start_copied_rows_classify_the_shared_classes_before_training(source, seed):
    result = T.head_start(source, n_per_class=10, seed=seed)
    assert result.shared == ("triangle", "ring") and result.n_images == 20
    assert result.row_map == (("triangle", 0, 2), ("ring", 1, 3))
    assert result.accuracy_by_name >= 0.9 > result.accuracy_plain
    assert "class rows copied by name" in str(result) and "mean of 8 initialisations" in str(result)


def test_head_start_refuses_a_count_of_fresh_heads_that_is_not_a_positive_integer(source):
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="fresh_heads"):
            T.head_start(source, n_per_class=2, fresh_heads=bad)


def test_head_start_needs_a_shared_class_and_names(source):
    with pytest.raises(ValueError, match="no target class is also a source class"):
        T.head_start(source, ["halfdisk", "tee"], n_per_class=2)
    with pytest.raises(ValueError, match="source_names"):
        T.head_start(build_model(nc=10), n_per_class=2)


# ----------------------------------------------------------------------------------------------- layer maps
def test_shifted_model_moves_every_later_layer_one_index_up():
    base = build_model(nc=4)
    for block, kind in (("residual", "Bottleneck"), ("conv", "Conv")):
        model = T.shifted_model(3, block=block, nc=4)
        assert len(model.layers) == len(base.layers) + 1 and type(model.layers[3]).__name__ == kind
        assert [type(m).__name__ for m in model.layers[4:]] == [type(m).__name__ for m in base.layers[3:]]
        assert [m.i for m in model.layers] == list(range(len(model.layers)))
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="insert_at must be between 1 and 9"):
        T.shifted_model(0)
    with pytest.raises(ValueError, match=r"choose one of \['residual', 'conv'\]"):
        T.shifted_model(1, block="attention")


def test_the_residual_block_starts_as_the_identity():
    model = T.shifted_model(2, nc=4)
    block = model.layers[2]
    x = torch.randn(2, block.cv1.conv.in_channels, 8, 8)
    assert torch.equal(block(x), x)
    block.eval()
    assert torch.equal(block(x), x)


def test_a_layer_map_restores_what_name_matching_drops(source):
    model = T.shifted_model(1, nc=10)
    effect = T.layer_map_effect(source, model)
    assert effect.before.headline == "Transferred 6/170 items from pretrained weights"  # layer 0 only
    assert {i: j for i, j in effect.layer_map.items() if i != j} == {i: i + 1 for i in range(1, 10)}
    assert effect.after.headline == "Transferred 158/170 items from pretrained weights"
    assert effect.after.counts["missing_in_source"] == 12  # only the inserted block is new
    fresh = fresh_copy(model)
    report = transfer(source, model, layer_map=effect.layer_map)
    assert T.verify(report, source, fresh, model).ok
    model.eval(), source.eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))  # the mapped model computes what the source computes
    source.train()
    assert "with the layer map" in str(effect)


def test_the_conv_block_counts_one_shared_zero_d_buffer(source):
    effect = T.layer_map_effect(source, T.shifted_model(1, block="conv", nc=10))
    assert effect.before.headline == "Transferred 7/164 items from pretrained weights"
    assert effect.before.where("transferred")[-1].name == "layers.1.bn.num_batches_tracked"


def test_layer_map_runs_fine_tunes_both_on_the_same_data():
    torch.manual_seed(1)
    source = build_model(nc=10)
    runs = T.layer_map_runs(Target(2), Recipe(epochs=1, batch_size=8), source=source)
    assert list(runs.reports) == ["by name", "layer map"]
    assert [r.n_transferred for r in runs.reports.values()] == [6, 156]
    assert all(h.step == 1 for h in runs.histories.values())
    assert "weights matched" in str(runs)
    # the first loss is computed before any update: from the shifted model under seed 0, with the mapped weights
    train = Target(2).data(0)[0]
    torch.manual_seed(0)
    twin = T.shifted_model(1, nc=4)
    wb.transfer(source, twin, layer_map=wb.suggest_layer_map(source, twin))
    expected = torch.nn.functional.cross_entropy(twin.train()(train.x), train.y).item()
    assert runs.histories["layer map"].loss[0] == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------------------------- channels
def test_a_summed_first_conv_computes_what_the_source_computes_on_grey_images(source):
    result = T.adapt_channels(source, n_per_class=2)
    assert result.report.counts["adapted"] == 1 and result.report.n_transferred == 157
    assert result.max_difference < 1e-4 and result.n_images == 20
    assert source.training  # the source's mode is left as it was
    with pytest.raises(ValueError, match="workbench model"):
        T.adapt_channels(TinyResNet())


# ----------------------------------------------------------------------------------------------- detectors
def test_branch_counts_split_a_detect_head_into_box_and_class_branches():
    target = build_model("n", "detect", nc=3)
    report = transfer(build_model("n", "detect", nc=10), target, dry_run=True)
    groups = T.branch_counts(report, 22)
    assert report.headline == "Transferred 349/355 items from pretrained weights"
    assert dict(groups["cv2"]) == {"transferred": len(target.layers[22].cv2.state_dict())}
    assert dict(groups["dfl"]) == {"transferred": 1}  # the fixed bin values of Ultralytics' DFL head
    assert dict(groups["cv3"]) == {"transferred": 36, "shape_mismatch": 6} and report.counts["shape_mismatch"] == 6
    assert sorted(r.name for r in report.where("shape_mismatch")) == sorted(
        f"layers.22.cv3.{i}.2.{t}" for i in range(3) for t in ("weight", "bias"))
    with pytest.raises(ValueError, match="22"):
        T.branch_counts(report, 99)


def test_branch_counts_on_a_model_the_workbench_did_not_define():
    report = transfer(TinyResNet(num_classes=10), TinyResNet(num_classes=3), dry_run=True)
    fc = [i for i, prefix, _, _ in report.layers if prefix == "fc"][0]
    block = [i for i, prefix, _, _ in report.layers if prefix == "layer2"][0]
    fc_counts = {part: dict(c) for part, c in T.branch_counts(report, fc).items()}
    assert fc_counts == {"weight": {"shape_mismatch": 1}, "bias": {"shape_mismatch": 1}}
    assert set(T.branch_counts(report, block)) >= {"conv1", "bn1"}


def test_detector_runs_transfer_then_fine_tune_both_on_the_same_scenes():
    source = build_model("n", "detect", nc=10, reg_max=1)  # the light head, as the shipped detector's
    runs = T.detector_runs(recipe=T.DETECTOR_RECIPE.replace(epochs=1), source=source,
                           source_names=wb.data.SOURCE_CLASSES, n_scenes=4, val_scenes=2)
    assert runs.epochs == 1 and runs.n_scenes == 4 and runs.steps == 1 and "(1 steps)" in str(runs)
    # 354 items: the targets were built with the source's light head (a DFL target would have 355, cv2 mismatched)
    assert runs.report.n_transferred == 348 and runs.report.counts["partial"] == 6  # circle rows, by name
    assert set(runs.mAP50) == {"pretrained", "scratch"} and all(0 <= v <= 1 for v in runs.mAP50.values())
    assert "348/354" in str(runs) and "scratch" in runs._repr_html_()
