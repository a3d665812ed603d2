"""Lesson 7 experiments: an Ultralytics checkpoint opened safely, its ledger, a YOLO folder, fine-tuning, export."""
import pytest
import torch
from ultralytics_log import load_messages

import workbench as wb
from workbench.checkpoints import CheckpointError, inspect_checkpoint, read_metadata
from workbench.experiments import own_yolo
from workbench.manifests import manifest_model
from workbench.scenes import shape_scenes
from workbench.yolo_checkpoints import UnsafeGlobal, read_yolo_checkpoint

TINY = own_yolo.FolderTarget(n_scenes=6, val_scenes=4)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return own_yolo.own_yolo(TINY, own_yolo.OWN_YOLO_RECIPE.replace(epochs=1), seed=3,
                             folder=tmp_path_factory.mktemp("own_yolo"))


def test_checkpoint_path_is_yours_or_the_shipped_one(tmp_path):
    assert own_yolo.checkpoint_path() == wb.checkpoints.pretrained_path("shapes_yolov8n")
    mine = tmp_path / "best.pt"
    mine.write_bytes(b"")
    assert own_yolo.checkpoint_path(str(mine)) == mine
    with pytest.raises(FileNotFoundError, match="MY_CHECKPOINT"):
        own_yolo.checkpoint_path(tmp_path / "missing.pt")


def test_the_hostile_file_is_refused_with_its_global_named_and_nothing_runs(tmp_path):
    path, marker = own_yolo.write_hostile_checkpoint(tmp_path)
    name = f"{open.__module__}.open"
    with pytest.raises(UnsafeGlobal) as err:
        read_yolo_checkpoint(path)
    assert err.value.name == name
    for read in (wb.load_weights, read_metadata, lambda p: wb.transfer(p, wb.build_model("n", "detect", nc=3))):
        with pytest.raises(CheckpointError, match="nothing from it ran"):
            read(path)
    info = inspect_checkpoint(path)
    assert not info.safe and info.needs_code == (name,) and "torch.nn.modules.conv.Conv2d" in info.inert
    assert not marker.exists()


@pytest.mark.parametrize("name, ours, theirs", [("yolo11n", 448, 493), ("yolov8n", 319, 349)])
def test_the_mismatches_are_the_class_branch_and_8_4_rebuilds_its_hidden_convs(name, ours, theirs):
    report = wb.transfer(manifest_model(name), manifest_model(name, nc=3), dry_run=True)
    parts = own_yolo.class_branch(report)
    assert report.n_transferred == ours and not parts["elsewhere"]
    assert len(parts["last conv"]) == 6  # weight and bias of the last conv of 3 levels
    assert all(r.shape[0] == 3 and r.source_shape[0] == 80 for r in parts["last conv"])
    assert all(64 in r.shape and 80 in r.source_shape for r in parts["hidden"])  # c3 = max(ch0, min(nc, 100))
    assert own_yolo.ultralytics_84_count(report) == theirs


def test_ultralytics_8_4_prints_that_count_for_yolov8n(tasks):
    source, target = (tasks.DetectionModel("yolov8n.yaml", nc=nc, verbose=False) for nc in (80, 3))
    messages = load_messages(target, source)
    report = wb.transfer(manifest_model("yolov8n"), manifest_model("yolov8n", nc=3), dry_run=True)
    count = own_yolo.ultralytics_84_count(report)
    assert f"Transferred {count}/355 items from pretrained weights" in messages


def test_the_folder_round_trip_keeps_the_scenes(tmp_path):
    data_yaml = TINY.write(tmp_path / "d", seed=0)
    train, val = TINY.load(data_yaml)
    original = shape_scenes(TINY.n_scenes, list(TINY.classes), seed=1)
    assert (len(train), len(val), train.classes) == (6, 4, TINY.classes)
    assert (train.x - original.x).abs().max() <= 0.5 / 255 + 1e-6  # PNG keeps 8 bits
    for i in range(len(train)):
        torch.testing.assert_close(train.objects(i), original.objects(i), atol=1e-3, rtol=0)  # labels: 6 decimals


def test_own_yolo_fine_tunes_from_the_checkpoint_and_exports(result):
    assert result.report.headline == "Transferred 349/355 items from pretrained weights"
    assert [r.note for r in result.report.where("partial")] == ["1/3 class rows copied by name"] * 6
    assert result.source_names == tuple(wb.data.SOURCE_CLASSES) and result.epochs == 1
    assert sorted(result.mAP50) == ["pretrained", "scratch"] and all(0 <= v <= 1 for v in result.mAP50.values())
    assert result.histories["pretrained"].step == result.histories["scratch"].step == 1  # 6 scenes, batch 8
    assert result.data_yaml.name == "data.yaml" and (result.data_yaml.parent / "labels" / "val").is_dir()
    meta = read_metadata(result.exported)
    assert meta["names"] == list(TINY.classes) and meta["yaml"] == "yolov8n.yaml" and meta["nc"] == 3
    exported = wb.load_weights(result.exported)
    for key, value in result.models["pretrained"].state_dict().items():
        assert torch.equal(exported["model." + key.removeprefix("layers.")], value), key
    assert "Transferred 349/355" in str(result) and "val mAP50" in str(result)


def test_own_yolo_is_reproducible(result, tmp_path):
    again = own_yolo.own_yolo(TINY, own_yolo.OWN_YOLO_RECIPE.replace(epochs=1), seed=3, folder=tmp_path)
    assert again.mAP50 == result.mAP50
    assert again.histories["pretrained"].loss == result.histories["pretrained"].loss
