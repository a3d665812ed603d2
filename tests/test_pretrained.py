"""The shipped weights: they load, they reach their recorded accuracy, and the recipe reproduces."""
import pytest
import torch

import workbench as wb
from workbench import pretrain
from workbench.checkpoints import inspect_checkpoint, pretrained_path, read_metadata

TINY = {"n_per_class": 4, "epochs": 2, "batch_size": 16}


@pytest.fixture(scope="module")
def model():
    return wb.pretrained("shapes_n")


def test_shipped_weights_reach_their_recorded_source_accuracy(model):
    info = model.pretrained_info
    measured = pretrain.source_accuracy(model, info["recipe"])
    assert measured["accuracy"] == pytest.approx(info["source_val_accuracy"], abs=0.005)
    assert info["source_val_accuracy"] >= 0.9


def test_shipped_file_is_small_safe_and_made_by_the_current_recipe():
    path = pretrained_path("shapes_n")
    assert path.stat().st_size < 6_000_000
    checked = inspect_checkpoint(path)
    assert checked.format == "safetensors" and checked.safe and checked.tensors == 158
    info = read_metadata(path)
    assert info["recipe"] == pretrain.RECIPE
    assert info["classes"] == list(wb.data.SOURCE_CLASSES) and info["seed"] == pretrain.RECIPE["seed"]
    assert info["torch_version"] and info["scale"] == "n" and info["task"] == "classify"


def test_pretrained_model_matches_the_file(model):
    stored = wb.load_weights(pretrained_path())
    for key, value in model.state_dict().items():
        assert torch.equal(value, stored[key].to(value.dtype)), key
    assert model.nc == 10 and model.training  # a fresh model, ready for fit or eval()


def test_transfer_into_a_three_class_model():
    report = wb.transfer(pretrained_path(), wb.build_model(nc=3))
    assert str(report).splitlines()[0] == "Transferred 156/158 items from pretrained weights"
    named = wb.transfer(wb.pretrained(), wb.build_model(nc=3),
                        class_names=(wb.data.SOURCE_CLASSES, ["circle", "tee", "ring"]))
    assert [r.note for r in named.where("partial")] == ["2/3 class rows copied by name"] * 2


def test_shipped_detector_reaches_its_recorded_source_map():
    model = wb.pretrained("shapes_detect_n")
    info = model.pretrained_info
    assert info["recipe"] == pretrain.DETECT_RECIPE and info["classes"] == list(wb.data.SOURCE_CLASSES)
    assert (info["task"], model.nc, info["seed"]) == ("detect", 10, 0) and info["torch_version"]
    assert info["reg_max"] == info["recipe"]["reg_max"] == model.layers[-1].reg_max == 1  # the light head, no DFL
    assert inspect_checkpoint(pretrained_path("shapes_detect_n")).tensors == 354
    measured = pretrain.source_map(model, info["recipe"])
    assert measured["mAP50"] == pytest.approx(info["source_val_mAP50"], abs=0.01)
    assert info["source_val_mAP50"] >= 0.8


def test_detect_recipe_trains_a_detector_and_records_its_map():
    model, info = pretrain.pretrain({"n_scenes": 4, "val_scenes": 2, "epochs": 1}, name="shapes_detect_n",
                                    progress=False)
    assert model.task == "detect" and model.nc == 10 and 0.0 <= info["source_val_mAP50"] <= 1.0
    assert info["recipe"]["lr"] == 0.002 and info["recipe"]["n_scenes"] == 4
    assert info["reg_max"] == model.layers[-1].reg_max == 1
    with pytest.raises(ValueError, match="shapes_detect_n"):
        pretrain.pretrain(name="imagenet")


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="shapes_n"):
        wb.pretrained("imagenet")


def test_recipe_is_reproducible():
    first, info = pretrain.pretrain(TINY, progress=False)
    second, _ = pretrain.pretrain(TINY, progress=False)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert info["recipe"] == {**pretrain.RECIPE, **TINY}
    assert set(info) >= {"recipe", "classes", "seed", "source_val_accuracy", "torch_version"}


def test_command_line_writes_weights_with_metadata(tmp_path, capsys):
    out = pretrain.main(["--out", str(tmp_path / "w.safetensors"), "--epochs", "1", "--n-per-class", "3"])
    info = read_metadata(out)
    assert info["recipe"]["epochs"] == 1 and info["recipe"]["n_per_class"] == 3
    assert wb.load_weights(out)["layers.0.conv.weight"].dtype == torch.float16
    assert "source val accuracy" in capsys.readouterr().out
