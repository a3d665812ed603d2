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


# ---------------------------------------------------------------------- the shipped Ultralytics-format detector
BLOCKER = """
import importlib.abc, json, sys
class Blocker(importlib.abc.MetaPathFinder):
    tried = []
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ultralytics":
            self.tried.append(name)
            raise ImportError(name + " is not importable here")
sys.meta_path.insert(0, Blocker())
import workbench as wb
from workbench.checkpoints import pretrained_path, read_metadata
path = pretrained_path("shapes_yolov8n")
state, meta, info = wb.load_weights(path), read_metadata(path), wb.inspect_checkpoint(path)
print(json.dumps({"entries": len(state), "first": next(iter(state)), "meta": meta, "safe": info.safe,
                  "inert": info.inert, "tried": Blocker.tried, "loaded": "ultralytics" in sys.modules}))
"""


@pytest.fixture(scope="module")
def yolo_file_read_without_ultralytics():
    """What a process in which ``ultralytics`` cannot be imported reads from the shipped .pt."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", BLOCKER], env=env, capture_output=True, text=True, timeout=300,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_shipped_yolo_file_reads_safely_without_ultralytics(yolo_file_read_without_ultralytics):
    out = yolo_file_read_without_ultralytics
    assert out["tried"] == [] and not out["loaded"] and out["safe"]
    assert out["entries"] == 355 and out["first"] == "model.0.conv.weight"
    assert "ultralytics.nn.tasks.DetectionModel" in out["inert"]
    meta = out["meta"]
    assert meta["names"] == list(wb.data.SOURCE_CLASSES) and meta["nc"] == 10 and meta["task"] == "detect"
    assert meta["model_class"] == "ultralytics.nn.tasks.DetectionModel" and meta["weights_from"] == "model"
    assert meta["stored_dtype"] == ["float16"] and meta["epoch"] == -1 and meta["version"].startswith("8.4.")
    assert meta["updates"] is None and meta["best_fitness"] is None  # as strip_optimizer leaves them
    for key, value in pretrain.ultralytics_args("shapes_yolov8n").items():  # the recipe, in Ultralytics' words
        assert meta["train_args"][key] == value, key
    assert meta["train_args"]["model"] == "yolov8n.yaml" and meta["yaml"]["scale"] == "n"


def test_shipped_yolo_file_is_small_and_reaches_its_recorded_map():
    path = pretrained_path("shapes_yolov8n")
    assert path.suffix == ".pt" and path.stat().st_size < 7_000_000
    model = wb.pretrained("shapes_yolov8n")
    info = model.pretrained_info
    assert (model.task, model.nc, model.layers[-1].reg_max) == ("detect", 10, 16)
    assert info["classes"] == list(wb.data.SOURCE_CLASSES)
    recorded = info["train_metrics"]["metrics/mAP50(B)"]
    measured = pretrain.source_map(model, pretrain.YOLO_RECIPE)
    assert measured["mAP50"] == pytest.approx(recorded, abs=0.01) and recorded >= 0.9
    report = wb.transfer(path, wb.build_model("n", "detect", nc=3))
    assert report.headline == "Transferred 349/355 items from pretrained weights" and report.layout


def test_shipped_yolo_file_rebuilds_the_same_ultralytics_model(tasks):
    """Ultralytics' DetectionModel from yolov8n.yaml loads the file strictly and gives the workbench model's output."""
    yolo = tasks.DetectionModel("yolov8n.yaml", nc=10, verbose=False).eval()
    yolo.load_state_dict(wb.load_weights(pretrained_path("shapes_yolov8n")), strict=True)
    model = wb.pretrained("shapes_yolov8n").eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs, ours = yolo(x), model(x)
    from workbench.detection import decode, detect_head

    boxes, logits, _, _ = decode(ours, detect_head(model).stride.tolist(), reg_max=16)
    xywh, scores = theirs[0].transpose(1, 2).split((4, theirs[0].shape[1] - 4), -1)
    xyxy = torch.cat([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], -1)
    torch.testing.assert_close(boxes, xyxy, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(logits.sigmoid(), scores, atol=1e-5, rtol=1e-5)


def test_ultralytics_accepts_the_recipe_as_train_arguments(tasks):
    from ultralytics.cfg import get_cfg

    args = vars(get_cfg(overrides=pretrain.ultralytics_args("shapes_yolov8n")))
    assert args["epochs"] == pretrain.YOLO_RECIPE["epochs"] and args["mosaic"] == 0.0 and args["lrf"] == 1.0


def test_the_yolo_recipe_is_written_by_its_tool_not_by_the_command_line(capsys):
    with pytest.raises(SystemExit):
        pretrain.main(["--name", "shapes_yolov8n"])
    assert "tools/make_yolo_checkpoint.py" in capsys.readouterr().err
    with pytest.raises(ValueError, match="reg_max=16"):
        pretrain.ultralytics_args("shapes_detect_n")


def test_ultralytics_own_loader_reads_the_shipped_file(tasks):
    """Ultralytics' ``load_checkpoint`` (our own file: its loader may unpickle it) and its opt-in allow-list load."""
    path = str(pretrained_path("shapes_yolov8n"))
    model, ckpt = tasks.load_checkpoint(path)
    assert isinstance(model, tasks.DetectionModel) and model.names == dict(enumerate(wb.data.SOURCE_CLASSES))
    assert ckpt["train_args"]["epochs"] == pretrain.YOLO_RECIPE["epochs"] and ckpt["epoch"] == -1
    safe, _ = tasks.torch_safe_load(path, safe_only=True)  # weights_only=True with Ultralytics' own allow-list
    assert isinstance(safe["model"], tasks.DetectionModel)


def test_the_file_reads_the_same_after_ultralytics_allows_its_classes(tasks):
    """Ultralytics' opt-in safe load registers its classes with torch's weights_only for the whole process; the
    workbench still reads the file as inert data (never as objects torch built)."""
    path = pretrained_path("shapes_yolov8n")
    tasks.torch_safe_load(str(path), safe_only=True)
    meta = read_metadata(path)
    assert meta["names"] == list(wb.data.SOURCE_CLASSES)
    assert meta["model_class"] == "ultralytics.nn.tasks.DetectionModel"
    assert len(wb.load_weights(path)) == 355 and wb.inspect_checkpoint(path).tensors == 355


def test_the_tool_writes_an_ultralytics_file_that_rebuilds_the_detector(tasks, tmp_path, capsys):
    """tools/make_yolo_checkpoint.py on a few scenes: Ultralytics' trainer dict, strip_optimizer, its own check."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "make_yolo_checkpoint", Path(__file__).resolve().parents[1] / "tools" / "make_yolo_checkpoint.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tool.main(["--out", str(tmp_path / "tiny.pt"), "--epochs", "1", "--n-scenes", "8", "--val-scenes", "4",
                     "--quiet"])
    meta = read_metadata(out)
    args = meta["train_args"]
    assert args["epochs"] == 1 and args["data"].startswith("workbench.scenes.shape_scenes(8 ")
    assert meta["names"] == list(wb.data.SOURCE_CLASSES) and meta["epoch"] == -1 and meta["weights_from"] == "model"
    assert len(wb.load_weights(out)) == 355 and "wrote" in capsys.readouterr().out
    model, _ = tasks.load_checkpoint(str(out))
    assert model.names == dict(enumerate(wb.data.SOURCE_CLASSES))
