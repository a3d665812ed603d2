"""Ultralytics and YOLOv5 checkpoints read as inert data: weights, class names, metadata; nothing from the file runs.

The Ultralytics files are written the way Ultralytics writes them (``BaseTrainer.save_model``'s
dict, and the released form after ``strip_optimizer``) from models built from its YAMLs; they
need ``ultralytics.nn.tasks`` (skipped without it; CI sets ``WB_REQUIRE_ULTRALYTICS=1`` to fail
instead). The YOLOv5 file and the hostile pickles need nothing but torch.
"""
import copy
import json
import os
import pickle
import subprocess
import sys
import types
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import workbench as wb
from workbench.checkpoints import CheckpointError, inspect_checkpoint, load_weights, read_metadata
from workbench.yolo_checkpoints import InertRecord, UnsafeGlobal, kind_of_global, read_yolo_checkpoint, unpickle_inert

ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "cat", 1: "dog", 2: "bird"}
MODELS = {"detect": ("DetectionModel", "yolov8n.yaml"), "classify": ("ClassificationModel", "yolov8n-cls.yaml")}



@pytest.fixture(scope="module")
def yolo_models(tasks):
    """yolov8n (detect) and yolov8n-cls (classify) at 3 classes, built from Ultralytics' YAMLs (no download)."""
    torch.manual_seed(0)
    built = {}
    for task, (cls, yaml) in MODELS.items():
        model = getattr(tasks, cls)(yaml, nc=3, verbose=False)
        for m in model.modules():  # BatchNorm statistics away from their defaults, so the test sees them read
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.num_batches_tracked.fill_(7)
        built[task] = model.eval()
    return built


def ultralytics_checkpoint(model: nn.Module) -> dict:
    """The dict ``BaseTrainer.save_model`` writes (Ultralytics 8.4): the EMA model in half precision, ``model=None``."""
    from ultralytics import __version__
    from ultralytics.cfg import get_cfg
    from ultralytics.utils.torch_utils import convert_optimizer_state_dict_to_fp16

    args = get_cfg(overrides={"model": "yolov8n.yaml", "epochs": 3, "lr0": 0.02, "imgsz": 64})
    model = copy.deepcopy(model)
    model.args, model.names, model.nc = args, dict(NAMES), 3  # as the trainer sets them
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return {"epoch": 2, "best_fitness": 0.25, "model": None, "ema": copy.deepcopy(model).half(), "updates": 30,
            "optimizer": convert_optimizer_state_dict_to_fp16(copy.deepcopy(optimizer.state_dict())),
            "scaler": {}, "train_args": vars(args), "train_metrics": {"metrics/mAP50(B)": 0.1, "fitness": 0.25},
            "train_results": {"epoch": [1, 2]}, "date": datetime.now().astimezone().isoformat(),
            "version": __version__, "license": "AGPL-3.0 (https://ultralytics.com/license)",
            "docs": "https://docs.ultralytics.com"}


@pytest.fixture(scope="module")
def yolo_files(yolo_models, tmp_path_factory):
    """``{(task, form): path}``: ``last`` as training writes it, ``best`` after ``strip_optimizer`` (as released)."""
    from ultralytics.utils.torch_utils import strip_optimizer

    folder, files = tmp_path_factory.mktemp("yolo"), {}
    for task, model in yolo_models.items():
        files[task, "last"] = folder / f"{task}_last.pt"
        torch.save(ultralytics_checkpoint(model), files[task, "last"])
        files[task, "best"] = folder / f"{task}_best.pt"
        strip_optimizer(files[task, "last"], files[task, "best"])  # our own file: Ultralytics' loader may run it
    return files


def as_stored(model: nn.Module) -> dict:
    """The model's state_dict as a half-precision file holds it, read back as float32."""
    return {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("form", ["last", "best"])
@pytest.mark.parametrize("task", list(MODELS))
def test_ultralytics_checkpoint_gives_its_state_dict_names_and_metadata(yolo_models, yolo_files, task, form):
    from ultralytics import __version__

    path, reference = yolo_files[task, form], as_stored(yolo_models[task])
    state = load_weights(path)
    assert list(state) == list(reference) and list(state)[0] == "model.0.conv.weight"
    for key, tensor in reference.items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key
    meta = read_metadata(path)
    assert meta["names"] == list(NAMES.values()) and meta["nc"] == 3 and meta["task"] == task
    assert meta["model_class"] == f"ultralytics.nn.tasks.{MODELS[task][0]}" and meta["stored_dtype"] == ["float16"]
    assert meta["version"] == __version__ and datetime.fromisoformat(meta["date"]).year >= 2024
    assert meta["train_args"]["lr0"] == 0.02 and meta["train_args"]["epochs"] == 3
    assert meta["yaml"]["nc"] == 3 and meta["weights_from"] == ("ema" if form == "last" else "model")
    info = inspect_checkpoint(path)
    assert info.safe and f"ultralytics.nn.tasks.{MODELS[task][0]}" in info.inert
    assert info.tensors == len(reference) and info.metadata["names"] == meta["names"]


def test_the_models_are_inert_records_not_modules(yolo_files):
    ckpt = unpickle_inert(yolo_files["detect", "last"])
    ema = ckpt["ema"]
    assert isinstance(ema, InertRecord) and not isinstance(ema, nn.Module)
    assert ema.qualname == "ultralytics.nn.tasks.DetectionModel" and repr(ema).startswith("<inert ")
    assert ema.attributes["args"].qualname == "ultralytics.utils.IterableSimpleNamespace"
    assert ckpt["model"] is None and ckpt["optimizer"]["state"] == {}


@pytest.mark.parametrize("task", list(MODELS))
def test_the_weights_rebuild_the_same_ultralytics_model(tasks, yolo_models, yolo_files, task):
    """Loaded strictly into a fresh model from the same YAML: the saved model's forward pass (at float16 values)."""
    cls, yaml = MODELS[task]
    fresh = getattr(tasks, cls)(yaml, nc=3, verbose=False).eval()
    fresh.load_state_dict(load_weights(yolo_files[task, "best"]), strict=True)
    reference = copy.deepcopy(yolo_models[task]).half().float().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        got, want = fresh(x), reference(x)
    torch.testing.assert_close(got[0] if isinstance(got, tuple) else got, want[0] if isinstance(want, tuple) else want)


def test_transfer_takes_an_ultralytics_file_by_path(tasks, yolo_models, yolo_files):
    target = tasks.DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    report = wb.transfer(yolo_files["detect", "best"], target)
    n = len(yolo_models["detect"].state_dict())
    assert report.headline == f"Transferred {n}/{n} items from pretrained weights"
    first = "model.0.conv.weight"
    assert torch.equal(target.state_dict()[first], as_stored(yolo_models["detect"])[first])


BLOCKER = """
import importlib.abc, json, sys
class Blocker(importlib.abc.MetaPathFinder):
    tried = []
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ultralytics", "models", "utils"):
            self.tried.append(name)
            raise ImportError(name + " is not importable here")
sys.meta_path.insert(0, Blocker())
from workbench.checkpoints import load_weights, read_metadata
state, meta = load_weights(sys.argv[1]), read_metadata(sys.argv[1])
print(json.dumps({"entries": len(state), "names": meta["names"], "tried": Blocker.tried,
                  "ultralytics_loaded": "ultralytics" in sys.modules}))
"""


def test_reading_needs_no_ultralytics(yolo_models, yolo_files):
    """In a process where ``ultralytics`` cannot be imported, the file reads, and no import was even tried."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", BLOCKER, str(yolo_files["detect", "best"])], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"entries": len(yolo_models["detect"].state_dict()), "names": list(NAMES.values()), "tried": [],
                   "ultralytics_loaded": False}


# ----------------------------------------------------------------------------------------------- hostile files
class Payload:
    """Unpickling this calls ``function(*args)``, which creates the marker file: a test passes only if it never runs."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker: Path) -> dict:
    """``{global the pickle names: payload}``; each would create ``marker``."""
    found = {f"{os.system.__module__}.system": Payload(os.system, f"touch '{marker}'"),
             "builtins.eval": Payload(eval, f"open({str(marker)!r}, 'w')"),
             f"{open.__module__}.open": Payload(open, str(marker), "w"),
             "subprocess.call": Payload(subprocess.call, ["touch", str(marker)])}
    return found


def hide(ckpt: dict, where: str, payload: Payload) -> dict:
    if where == "train_args":
        ckpt["train_args"] = {**ckpt["train_args"], "project": payload}
    else:  # an attribute of a module deep in the model
        ckpt["ema"].model[2].cv1.conv.note = payload
    return ckpt


@pytest.mark.parametrize("where", ["train_args", "module attribute"])
def test_a_payload_inside_an_ultralytics_file_is_refused_and_never_runs(yolo_models, tmp_path, where):
    marker = tmp_path / "pwned.txt"
    target = wb.build_model("n", task="detect", nc=3)
    before = copy.deepcopy(target.state_dict())
    for name, payload in payloads(marker).items():
        path = tmp_path / "evil.pt"
        torch.save(hide(ultralytics_checkpoint(yolo_models["detect"]), where, payload), path)
        for read in (load_weights, read_metadata, lambda p: wb.transfer(p, target)):
            with pytest.raises(CheckpointError, match="needs code to load") as err:
                read(path)
            assert name in str(err.value) and str(path) in str(err.value) and "nothing from it ran" in str(err.value)
        with pytest.raises(UnsafeGlobal) as err:
            read_yolo_checkpoint(path)
        assert err.value.name == name
        info = inspect_checkpoint(path)
        assert not info.safe and name in info.needs_code and "refused" in str(info)
        assert not marker.exists(), name
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


# ------------------------------------------------------------------------------------------------------ YOLOv5
def yolov5_modules(marker: Path) -> dict[str, types.ModuleType]:
    """Stand-ins for YOLOv5's ``models.common``, ``models.yolo`` and ``utils.downloads``, importable while saving."""
    modules = {name: types.ModuleType(name) for name in ("models", "models.common", "models.yolo", "utils",
                                                         "utils.downloads")}

    class Conv(nn.Module):
        def __init__(self, c1, c2, k=3, s=2):
            super().__init__()
            self.conv, self.bn, self.act = nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU()

    class Detect(nn.Module):
        def __init__(self, nc, ch):
            super().__init__()
            self.nc, self.no, self.nl, self.na = nc, nc + 5, len(ch), 3
            self.grid, self.anchor_grid = [torch.empty(0)] * self.nl, [torch.empty(0)] * self.nl
            self.register_buffer("anchors", torch.rand(self.nl, self.na, 2))
            self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
            self.stride = torch.tensor([8.0, 16.0])

    class Model(nn.Module):
        def __init__(self, nc=3):
            super().__init__()
            self.yaml = {"nc": nc, "depth_multiple": 0.33, "width_multiple": 0.25}
            self.model = nn.Sequential(Conv(3, 8), Conv(8, 16), Detect(nc, (8, 16)))
            self.names, self.stride = ["car", "bus", "bike"], torch.tensor([8.0, 16.0])

    def attempt_download(path):
        Path(path).touch()

    for function, module in ((Conv, "models.common"), (Detect, "models.yolo"), (Model, "models.yolo"),
                             (attempt_download, "utils.downloads")):
        function.__module__, function.__qualname__ = module, function.__name__
        setattr(modules[module], function.__name__, function)
    return modules


def test_a_yolov5_checkpoint_reads_without_its_repository(tmp_path, monkeypatch):
    marker, path = tmp_path / "downloaded.txt", tmp_path / "yolov5.pt"
    modules = yolov5_modules(marker)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    torch.manual_seed(0)
    model = modules["models.yolo"].Model(nc=3)
    reference = as_stored(model)
    torch.save({"epoch": -1, "best_fitness": np.float64(0.61), "model": copy.deepcopy(model).half(), "ema": None,
                "updates": None, "optimizer": None, "opt": {"weights": "yolov5s.pt", "epochs": 3, "imgsz": 640},
                "git": None, "date": "2024-05-01T10:00:00", "wandb_id": Payload(modules["utils.downloads"]
                                                                                .attempt_download, str(marker))}, path)
    monkeypatch.undo()  # the repository's packages are gone, as on a machine that never cloned it
    assert "models.yolo" not in sys.modules and "utils.downloads" not in sys.modules
    state, meta = load_weights(path), read_metadata(path)
    assert list(state) == list(reference) and all(torch.equal(state[k], v) for k, v in reference.items())
    assert "model.2.anchors" in state and meta["names"] == ["car", "bus", "bike"] and meta["nc"] == 3
    assert meta["model_class"] == "models.yolo.Model" and meta["task"] == "detect" and meta["best_fitness"] == 0.61
    assert meta["train_args"]["epochs"] == 3 and meta["stride"] == [8.0, 16.0]
    assert meta["wandb_id"] == "<utils.downloads.attempt_download>"  # the file's own function: a record, not called
    assert not marker.exists() and "models.yolo" not in sys.modules


# --------------------------------------------------------------------------------------------- the allow-list
@pytest.mark.parametrize("name, kind", [
    ("torch._utils._rebuild_tensor_v2", "allowed"), ("torch._utils._rebuild_parameter", "allowed"),
    ("collections.OrderedDict", "allowed"), ("torch.HalfStorage", "allowed"), ("torch.float16", "allowed"),
    ("__builtin__.set", "allowed"), ("numpy._core.multiarray.scalar", "allowed"),
    ("ultralytics.nn.tasks.DetectionModel", "record"), ("models.yolo.Model", "record"),
    ("utils.general.anything", "record"), ("torch.nn.modules.conv.Conv2d", "record"), ("torch.nn.SiLU", "record"),
    ("posix.system", None), ("builtins.eval", None), ("builtins.getattr", None), ("subprocess.Popen", None),
    ("torch.load", None), ("torch.nn.functional.relu", None), ("torch.nn.modules.module.Module.__init__", None),
    ("numpy.load", None), ("pathlib.Path", None), ("torch._utils._rebuild_parameter_with_state", None)])
def test_what_the_reader_allows(name, kind):
    assert kind_of_global(name) == kind


def test_a_pickle_cannot_change_an_allowed_function(tmp_path):
    """``BUILD`` on an allowed global (here: set torch's ``_rebuild_tensor_v2.__defaults__``) is refused."""
    path, defaults = tmp_path / "tamper.pt", torch._utils._rebuild_tensor_v2.__defaults__
    data = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__X\x01\x00\x00\x00x"
            b"\x85s\x86b.")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
    with pytest.raises(pickle.UnpicklingError, match="tries to change _rebuild_tensor_v2"):
        unpickle_inert(path)
    assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults
    with pytest.raises(CheckpointError):
        load_weights(path)
