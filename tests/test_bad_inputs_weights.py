"""Bad inputs to transfer, suggest_layer_map and the checkpoint functions; malicious pickles for every file reader."""
import copy
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from foreign_models import TinyResNet
from torch import nn
from unchanged import case, files_state, model_state, run_case, same

import workbench as wb
from workbench import checkpoints
from workbench.checkpoints import CheckpointError, inspect_checkpoint, load_weights, read_metadata, save_weights
from workbench.panels import TransferPanel
from workbench.transfer import suggest_layer_map, transfer


def _ultralytics_layout(model: nn.Module) -> dict:
    return {k.replace("layers.", "model.", 1): v for k, v in model.state_dict().items()}


def _ok_numpy_layer_map(e):
    report = transfer(e["source"], e["model"], layer_map={np.int64(9): np.int64(9)})
    assert report.layer_map == {9: 9} and report.n_transferred == 156


def _ok_ultralytics_layout(e):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "0/158" warning: the layout is recognised
        report = transfer(e["ultra"], e["model"])
    assert report.n_transferred == 156 and report.layout == "source layout: Ultralytics (model.{i} → layers.{i})"


TRANSFER = [
    case("error", "transfer", "source-int", lambda e: transfer(5, e["model"]), ValueError, "source"),
    case("error", "transfer", "source-list", lambda e: transfer([1, 2], e["model"]), ValueError, "source"),
    case("error", "transfer", "source-dict-of-strings", lambda e: transfer({"a": "b"}, e["model"]), ValueError,
         "source"),
    case("error", "transfer", "source-missing-file", lambda e: transfer(e["folder"] / "nope.pt", e["model"]),
         FileNotFoundError, "nope.pt"),
    case("error", "transfer", "source-folder", lambda e: transfer(e["folder"], e["model"]), IsADirectoryError,
         "folder"),
    case("error", "transfer", "source-garbage-file", lambda e: transfer(e["folder"] / "garbage.bin", e["model"]),
         CheckpointError, "garbage.bin"),
    case("error", "transfer", "model-none", lambda e: transfer(e["source"], None), ValueError, "model"),
    case("error", "transfer", "model-state-dict", lambda e: transfer(e["source"], e["source"].state_dict()),
         ValueError, "model"),
    case("error", "transfer", "dry_run-string", lambda e: transfer(e["source"], e["model"], dry_run="yes"),
         ValueError, "dry_run"),
    case("error", "transfer", "layer_map-list", lambda e: transfer(e["source"], e["model"], layer_map=[1, 2]),
         ValueError, ("layer_map", "suggest_layer_map")),
    case("error", "transfer", "layer_map-word-key", lambda e: transfer(e["source"], e["model"], layer_map={"a": 1}),
         ValueError, "layer_map"),
    case("error", "transfer", "layer_map-negative", lambda e: transfer(e["source"], e["model"], layer_map={-1: 1}),
         ValueError, "layer_map"),
    case("error", "transfer", "layer_map-float", lambda e: transfer(e["source"], e["model"], layer_map={1.5: 1}),
         ValueError, "layer_map"),
    case("error", "transfer", "layer_map-unknown-layer",
         lambda e: transfer(e["source"], e["model"], layer_map={99: 0}), ValueError, ("layer_map", "99")),
    case("error", "transfer", "layer_map-collision",
         lambda e: transfer(e["source"], e["model"], layer_map={1: 0, 2: 0}), ValueError, "layer_map"),
    case("error", "transfer", "class_names-string", lambda e: transfer(e["source"], e["model"], class_names="ab"),
         ValueError, "class_names"),
    case("error", "transfer", "class_names-duplicate-source",
         lambda e: transfer(e["source"], e["model"], class_names=(["a"] * 10, ["a", "b", "c"])), ValueError,
         ("source class name", "'a'")),
    case("error", "transfer", "class_names-wrong-count",
         lambda e: transfer(e["source"], e["model"], class_names=(list("abc"), list("abc"))), ValueError,
         ("source_names", "3 names")),
    case("error", "transfer", "class_names-target-count",
         lambda e: transfer(e["source"], e["model"], class_names=(list("abcdefghij"), list("ab"))), ValueError,
         "target_names"),
    case("ok", "transfer", "ultralytics-layout-lined-up", _ok_ultralytics_layout),
    case("warn", "transfer", "foreign-model-0-of-N", lambda e: transfer(e["resnet"], e["model"]), UserWarning,
         ("0/158", "suggest_layer_map")),
    case("warn", "transfer", "unknown-layout-0-of-N",
         lambda e: transfer({k.replace("layers.", "backbone.", 1): v for k, v in e["source"].state_dict().items()},
                            e["model"]), UserWarning, ("0/158", "layer_map")),
    case("warn", "transfer", "empty-source-0-of-N", lambda e: transfer({}, e["model"]), UserWarning,
         ("0/158", "no tensors")),
    case("ok", "transfer", "numpy-layer-map", _ok_numpy_layer_map),
    case("error", "suggest_layer_map", "model-none", lambda e: suggest_layer_map(e["source"], None), ValueError,
         "model"),
    case("error", "suggest_layer_map", "source-int", lambda e: suggest_layer_map(3, e["model"]), ValueError, "source"),
    case("error", "suggest_layer_map", "source-missing-file",
         lambda e: suggest_layer_map(e["folder"] / "nope.safetensors", e["model"]), FileNotFoundError, "nope"),
]


def _failing_save_file(tensors, filename, metadata=None):
    with open(filename, "wb") as f:
        f.write(b"half a file")
    raise OSError(28, "No space left on device", filename)


def _failing_torch_save(obj, filename, *args, **kwargs):
    with open(filename, "wb") as f:
        f.write(b"PK\x03\x04 half")
    raise RuntimeError(f"[enforce fail at inline_container.cc] . unexpected pos 64 vs 0 writing {filename}")


def _save_with(e, name, target, replacement):
    e["monkeypatch"].setattr(*target, replacement)
    return save_weights(e["model"], e["folder"] / name)


SAVE = [
    case("error", "save_weights", "source-string", lambda e: save_weights("model", e["folder"] / "w.safetensors"),
         ValueError, "save_weights"),
    case("error", "save_weights", "source-dict-of-lists",
         lambda e: save_weights({"w": [1.0]}, e["folder"] / "w.safetensors"), ValueError, "state_dict"),
    case("error", "save_weights", "path-missing-folder",
         lambda e: save_weights(e["model"], e["folder"] / "nodir" / "w.safetensors"), FileNotFoundError,
         ("nodir/w.safetensors", "mkdir")),
    case("error", "save_weights", "path-missing-folder-pt",
         lambda e: save_weights(e["model"], e["folder"] / "nodir" / "w.pt"), FileNotFoundError, "nodir/w.pt"),
    case("error", "save_weights", "path-is-folder", lambda e: save_weights(e["model"], e["folder"]), IsADirectoryError,
         "folder"),
    case("error", "save_weights", "path-int", lambda e: save_weights(e["model"], 7), ValueError, "path"),
    case("error", "save_weights", "metadata-list", lambda e: save_weights(e["model"], e["folder"] / "good.safetensors",
                                                                           metadata=[1]), ValueError, "metadata"),
    case("error", "save_weights", "metadata-not-json",
         lambda e: save_weights(e["model"], e["folder"] / "good.safetensors", metadata={"when": object()}),
         ValueError, ("metadata['when']", "JSON")),
    case("error", "save_weights", "metadata-nan",
         lambda e: save_weights(e["model"], e["folder"] / "good.safetensors", metadata={"acc": float("nan")}),
         ValueError, "metadata['acc']"),
    case("error", "save_weights", "metadata-tensor",
         lambda e: save_weights(e["model"], e["folder"] / "good.pt", metadata={"acc": torch.ones(1)}),
         ValueError, ("metadata['acc']", "tolist")),
    case("error", "save_weights", "metadata-reserved-key",
         lambda e: save_weights(e["model"], e["folder"] / "good.safetensors", metadata={"__state_dict_order__": 1}),
         ValueError, "metadata key"),
    case("error", "save_weights", "dtype-int", lambda e: save_weights(e["model"], e["folder"] / "good.safetensors",
                                                                       dtype=torch.int32), ValueError, "dtype"),
    case("error", "save_weights", "dtype-string", lambda e: save_weights(e["model"], e["folder"] / "good.safetensors",
                                                                          dtype="float16"), ValueError, "dtype"),
    case("error", "save_weights", "disk-full-safetensors",
         lambda e: _save_with(e, "good.safetensors", (checkpoints, "save_file"), _failing_save_file), OSError,
         ("good.safetensors (OSError", "unchanged")),
    case("error", "save_weights", "write-fails-pt",
         lambda e: _save_with(e, "good.pt", (torch, "save"), _failing_torch_save), OSError,
         ("good.pt (RuntimeError", "writing", "unchanged")),
]

READ = [
    case("error", f"{fn.__name__}", f"{name}", lambda e, fn=fn, name=name: fn(e["folder"] / name), error, words)
    for fn in (load_weights, read_metadata, inspect_checkpoint)
    for name, error, words in (
        ("nope.safetensors", FileNotFoundError, ("nope.safetensors", "pretrained_path")),
        ("empty.bin", CheckpointError, ("empty.bin", "empty")),
        ("garbage.bin", CheckpointError, "garbage.bin"),
        ("truncated.safetensors", CheckpointError, ("truncated.safetensors", "truncated")),
        ("truncated.pt", CheckpointError, ("truncated.pt", "truncated")),
    )
] + [
    case("error", "load_weights", "no-state-dict", lambda e: load_weights(e["folder"] / "list.pt"), CheckpointError,
         ("list.pt", "no state_dict")),
    case("error", "load_weights", "path-int", lambda e: load_weights(3), ValueError, "path"),
    case("error", "read_metadata", "path-none", lambda e: read_metadata(None), ValueError, "path"),
    case("error", "inspect_checkpoint", "path-folder", lambda e: inspect_checkpoint(e["folder"]), IsADirectoryError,
         "folder"),
    case("error", "pretrained", "name-unknown", lambda e: wb.checkpoints.pretrained("nope"), ValueError,
         ("'nope'", "shapes_n")),
    case("error", "pretrained", "name-int", lambda e: wb.checkpoints.pretrained(3), ValueError, ("3", "shapes_n")),
    case("error", "pretrained_path", "name-unknown", lambda e: wb.checkpoints.pretrained_path("yolov8n"), ValueError,
         "yolov8n"),
]

CASES = TRANSFER + SAVE + READ


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    source = wb.build_model(nc=10)
    return source, wb.build_model(nc=3), TinyResNet()


@pytest.fixture
def env(models, tmp_path, monkeypatch):
    source, target, resnet = (copy.deepcopy(m) for m in models)
    folder = tmp_path / "folder"
    folder.mkdir()
    save_weights(source, folder / "good.safetensors", metadata={"classes": list("abcdefghij")})
    save_weights(source, folder / "good.pt")
    (folder / "garbage.bin").write_bytes(b"not a checkpoint at all")
    (folder / "empty.bin").write_bytes(b"")
    (folder / "truncated.safetensors").write_bytes((folder / "good.safetensors").read_bytes()[:500])
    (folder / "truncated.pt").write_bytes((folder / "good.pt").read_bytes()[:500])
    torch.save([1, 2], folder / "list.pt")
    past = 1_000_000_000
    for path in folder.iterdir():
        os.utime(path, ns=(past, past))  # an mtime any rewrite would change
    return {"source": source, "model": target, "resnet": resnet, "ultra": _ultralytics_layout(source),
            "folder": folder, "monkeypatch": monkeypatch}


@pytest.mark.parametrize("call, kind, expected, names", CASES)
def test_bad_input(env, call, kind, expected, names):
    run_case(env, call, kind, expected, names)


def test_the_ultralytics_layout_gives_what_the_suggested_layer_map_gives(env):
    by_layout = copy.deepcopy(env["model"])
    assert transfer(env["ultra"], by_layout).n_transferred == 156
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = transfer(env["ultra"], env["model"], layer_map=suggest_layer_map(env["ultra"], env["model"]))
    assert report.n_transferred == 156 and report.headline.endswith("156/158 items from pretrained weights")
    assert all(torch.equal(v, env["model"].state_dict()[k]) for k, v in by_layout.state_dict().items())


def test_a_failed_save_leaves_no_temporary_file_and_a_good_save_keeps_the_mode(env):
    before = files_state(env["folder"])
    with pytest.raises(OSError):
        _save_with(env, "good.safetensors", (checkpoints, "save_file"), _failing_save_file)
    assert files_state(env["folder"]) == before
    env["monkeypatch"].undo()
    path = save_weights(env["model"], env["folder"] / "new.safetensors")
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert sorted(p.name for p in env["folder"].iterdir()) == sorted([*before, "new.safetensors"])


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------------------- malicious pickles
class Payload:
    """Unpickling this creates the marker file: a test passes only if it is never unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _write_evil(path, form: str, marker) -> None:
    payload = {"state_dict": {"w": torch.ones(2)}, "metadata": Payload(marker)}
    if form == "zip":
        torch.save(payload, path)
    elif form == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))


def _panel(path, model):
    return TransferPanel(source=path, build=lambda nc: model)


OPEN = f"{open.__module__}.{open.__qualname__}"  # the global the payload references (io.open)
READERS = {"load_weights": lambda path, model: load_weights(path),
           "read_metadata": lambda path, model: read_metadata(path),
           "transfer": lambda path, model: transfer(path, model),
           "transfer-dry-run": lambda path, model: transfer(path, model, dry_run=True),
           "suggest_layer_map": lambda path, model: suggest_layer_map(path, model),
           "TransferPanel": _panel}
PICKLE_CASES = [pytest.param(reader, form, id=f"{'ok' if reader == 'inspect_checkpoint' else 'error'}-pickle-"
                                                f"{reader}-{form}")  # inspect_checkpoint reports, never loads
                for reader in [*READERS, "inspect_checkpoint"] for form in ("zip", "legacy", "raw")]


@pytest.mark.parametrize("reader, form", PICKLE_CASES)
def test_malicious_pickle_is_refused_and_never_run(tmp_path, models, reader, form):
    marker, path = tmp_path / "pwned.txt", tmp_path / "evil.pt"
    _write_evil(path, form, marker)
    model = copy.deepcopy(models[1])
    before, file_before = model_state(model), path.read_bytes()
    if reader == "inspect_checkpoint":  # reads opcodes only: it reports the payload instead of refusing
        info = inspect_checkpoint(path)
        assert OPEN in info.needs_code and not info.safe
    else:
        with pytest.raises(CheckpointError) as err:
            READERS[reader](path, model)
        message = str(err.value)
        assert "needs code to load" in message and OPEN in message and str(path) in message
        assert "nothing from it ran" in message and "In PyTorch 2.6" not in message  # our words, not torch's
        assert "weights_only=False" not in message  # and no advice to unpickle it anyway
    assert not marker.exists()
    assert same(before, model_state(model)) and path.read_bytes() == file_before
