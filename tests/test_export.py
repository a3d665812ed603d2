"""export_ultralytics: weights under Ultralytics' names, as safetensors that Ultralytics' own models load.

The tests that load the file into Ultralytics skip without it; CI runs this file with
``PYTHONPATH=build/ultralytics`` and ``WB_REQUIRE_ULTRALYTICS=1`` (fail instead of skip).
"""
import pytest
import torch
from foreign_models import TinyResNet
from safetensors.torch import load_file

import workbench as wb
from workbench.checkpoints import load_weights, read_metadata
from workbench.detection import decode, detect_head

NAMES = ["circle", "square", "triangle"]


def trained_looking(model):
    """Random weights and BatchNorm statistics, so that equal outputs mean every entry arrived."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and ".dfl." not in name:  # the DFL's bin values are fixed, not learnt
                tensor.copy_(torch.rand_like(tensor) + 0.5 if name.endswith("running_var") else
                             torch.randn_like(tensor) * 0.2)
    return model.eval()


def load_into_ultralytics(tasks, path):
    """The recipe of workbench/export.py's docstring, line for line."""
    meta = read_metadata(path)
    model_class = tasks.ClassificationModel if meta["task"] == "classify" else tasks.DetectionModel
    yolo = model_class(meta["yaml"], ch=meta["ch"], nc=meta["nc"], verbose=False)
    yolo.load_state_dict(load_file(path), strict=True)
    for module in yolo.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = meta["bn_eps"]
    if "names" in meta:
        yolo.names = dict(enumerate(meta["names"]))
    return yolo.eval()


def test_the_file_holds_every_entry_under_ultralytics_names_and_the_metadata(tmp_path):
    model = trained_looking(wb.build_model("n", "classify", nc=3))
    path = wb.export_ultralytics(model, tmp_path / "cls.safetensors", names=NAMES)
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    saved, state = load_file(path), model.state_dict()
    assert sorted(saved) == sorted("model." + k[len("layers."):] for k in state)
    assert all(torch.equal(saved["model." + k[len("layers."):]], v) for k, v in state.items())
    meta = read_metadata(path)
    assert {k: meta[k] for k in ("nc", "names", "task", "scale", "ch", "yaml", "bn_eps")} == {
        "nc": 3, "names": NAMES, "task": "classify", "scale": "n", "ch": 3, "yaml": "yolov8n-cls.yaml", "bn_eps": 1e-3}


def test_the_exported_file_transfers_back_whole(tmp_path):
    model = trained_looking(wb.build_model("n", "classify", nc=3))
    path = wb.export_ultralytics(model, tmp_path / "cls.safetensors")
    fresh = wb.build_model("n", "classify", nc=3)
    report = wb.transfer(path, fresh)
    assert report.headline == "Transferred 158/158 items from pretrained weights"
    assert report.layout == "source layout: Ultralytics (model.{i} → layers.{i})"
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert "names" not in read_metadata(path)  # none given, none known


def test_an_existing_file_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "old.safetensors"
    path.write_bytes(b"the user's file")
    model = wb.build_model("n", "classify", nc=3)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        wb.export_ultralytics(model, path)
    assert path.read_bytes() == b"the user's file"
    wb.export_ultralytics(model, path, overwrite=True)
    assert read_metadata(path)["nc"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.safetensors"]  # no temporary file left


@pytest.mark.parametrize("make, kwargs, error, match", [
    (lambda: TinyResNet(), {}, ValueError, "save_weights"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(2, 2)), {}, ValueError, "numbered list of layers"),
    (lambda: wb.build_model("n", "classify", nc=3), {"names": ["a", "b"]}, ValueError, "2 names but the model has 3"),
    (lambda: wb.build_model("n", "classify", nc=3), {"names": "abc"}, ValueError, "list of class names"),
    (lambda: wb.build_model("n", "classify", nc=3), {"overwrite": "yes"}, ValueError, "overwrite must be"),
    ("meta", {}, ValueError, "shapes only"),
    ("no dfl", {}, ValueError, "no DFL layer"),
])
def test_refusals_name_the_fix_and_write_nothing(tmp_path, make, kwargs, error, match):
    if make == "meta":
        with torch.device("meta"):
            model = wb.build_model("n", "classify", nc=3)
    elif make == "no dfl":  # a detector whose box branch Ultralytics' Detect cannot hold
        model = wb.build_model("n", "classify", nc=3)
        model.task = "detect"
    else:
        model = make()
    with pytest.raises(error, match=match):
        wb.export_ultralytics(model, tmp_path / "out.safetensors", **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.pt", "out.pth", "out"])
def test_only_safetensors_is_written(tmp_path, name):
    with pytest.raises(ValueError, match="safetensors only"):
        wb.export_ultralytics(wb.build_model("n", "classify", nc=3), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        wb.export_ultralytics(wb.build_model("n", "classify", nc=3), tmp_path / "no" / "out.safetensors")


# ----------------------------------------------------------------------------------------- with Ultralytics
@pytest.mark.parametrize("ch", [3, 1])
def test_ultralytics_loads_the_exported_classifier_and_gives_the_same_output(tasks, tmp_path, ch):
    model = trained_looking(wb.build_model("n", "classify", nc=3, ch=ch))
    yolo = load_into_ultralytics(tasks, wb.export_ultralytics(model, tmp_path / "cls.safetensors", names=NAMES))
    assert yolo.names == dict(enumerate(NAMES))
    x = torch.rand(2, ch, 64, 64)
    with torch.no_grad():  # Ultralytics' eval output is the softmax of the class scores
        theirs = yolo(x)
        torch.testing.assert_close(theirs[0] if isinstance(theirs, tuple) else theirs, model(x).softmax(1))
        for module in yolo.modules():  # why the recipe sets bn_eps: a YAML-built classifier keeps torch's 1e-5
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eps = 1e-5
        unset = yolo(x)
        assert not torch.allclose(unset[0] if isinstance(unset, tuple) else unset, model(x).softmax(1))


def test_ultralytics_loads_the_exported_detector_and_gives_the_same_output(tasks, tmp_path):
    model = trained_looking(wb.build_model("n", "detect", nc=3))
    yolo = load_into_ultralytics(tasks, wb.export_ultralytics(model, tmp_path / "det.safetensors", names=NAMES))
    assert read_metadata(tmp_path / "det.safetensors")["yaml"] == "yolov8n.yaml"
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # Ultralytics: (batch, 4 + nc, anchors), xywh boxes in pixels and class probabilities
        theirs = yolo.eval()(x)[0]
        boxes, logits, _, _ = decode(model.eval()(x), detect_head(model).stride.tolist(), reg_max=16)
    xywh, scores = theirs.transpose(1, 2).split((4, theirs.shape[1] - 4), -1)
    xyxy = torch.cat([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], -1)
    torch.testing.assert_close(boxes, xyxy, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(logits.sigmoid(), scores, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("yaml, task", [("yolov8n-cls.yaml", "classify"), ("yolov8n.yaml", "detect"),
                                        ("yolo11n.yaml", "detect")])
def test_an_ultralytics_model_exports_under_its_own_names_and_loads_back(tasks, tmp_path, yaml, task):
    model_class = tasks.ClassificationModel if task == "classify" else tasks.DetectionModel
    source = trained_looking(model_class(yaml, nc=3, verbose=False))
    path = wb.export_ultralytics(source, tmp_path / "u.safetensors")
    assert list(load_weights(path)) == list(source.state_dict())  # the names and their order kept
    meta = read_metadata(path)
    assert (meta["task"], meta["scale"], meta["nc"], meta["ch"], meta["yaml"]) == (task, "n", 3, 3, yaml)
    assert meta["bn_eps"] == (1e-5 if task == "classify" else 1e-3)  # as Ultralytics builds each from its YAML
    assert "names" not in meta  # Ultralytics' placeholders {0: '0', ...} are no names
    again = load_into_ultralytics(tasks, path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], source(x)[0], rtol=0, atol=0)
