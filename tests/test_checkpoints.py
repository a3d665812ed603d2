"""Safe checkpoints: round trips, metadata, refusal of pickles that need code, corrupt files."""
import os
import pickle
import zipfile

import pytest
import torch
from torch import nn

import workbench as wb
from workbench.checkpoints import CheckpointError, inspect_checkpoint, load_weights, read_metadata, save_weights

OPEN = f"{open.__module__}.{open.__qualname__}"  # what the payload's pickle references ("io.open")


class Payload:
    """Unpickling this would create a file: the test proves it is never unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2)).eval()


@pytest.fixture
def model():
    m = tiny()
    m(torch.zeros(1, 3, 6, 6))  # materialise the lazy layer
    return m


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt", "w.pth", "noext"])
def test_round_trip_is_exact_including_buffers(tmp_path, model, name):
    path = save_weights(model, tmp_path / name, metadata={"classes": ["a", "b"], "accuracy": 0.5})
    loaded = load_weights(path)
    reference = model.state_dict()
    assert list(loaded) == list(reference)
    for key, tensor in reference.items():
        assert torch.equal(loaded[key], tensor), key
    assert loaded["1.num_batches_tracked"].ndim == 0
    assert read_metadata(path) == {"classes": ["a", "b"], "accuracy": 0.5}


def test_float16_halves_floats_and_keeps_integer_buffers(tmp_path, model):
    path = save_weights(model, tmp_path / "h.safetensors", dtype=torch.float16)
    loaded = load_weights(path)
    assert loaded["0.weight"].dtype == torch.float16
    assert loaded["1.num_batches_tracked"].dtype == torch.int64
    torch.testing.assert_close(loaded["0.weight"].float(), model.state_dict()["0.weight"], atol=1e-3, rtol=1e-3)


def test_tied_weights_are_saved(tmp_path):
    a = nn.Linear(3, 3)
    shared = {"a.weight": a.weight.data, "b.weight": a.weight.data}
    loaded = load_weights(save_weights(shared, tmp_path / "tied.safetensors"))
    assert torch.equal(loaded["a.weight"], loaded["b.weight"])


def test_nested_pt_checkpoints_are_unwrapped(tmp_path, model):
    path = tmp_path / "nested.pt"
    torch.save({"epoch": 3, "model_state_dict": model.state_dict()}, path)
    assert set(load_weights(path)) == set(model.state_dict())


def test_pickle_that_needs_code_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned.txt"
    for path in (tmp_path / "evil.pt", tmp_path / "evil_legacy.pt", tmp_path / "evil.pkl"):
        if path.name == "evil.pt":
            torch.save({"weight": torch.ones(2), "payload": Payload(marker)}, path)
        elif path.name == "evil_legacy.pt":
            torch.save({"weight": torch.ones(2), "payload": Payload(marker)}, path,
                       _use_new_zipfile_serialization=False)
        else:
            path.write_bytes(pickle.dumps({"payload": Payload(marker)}, protocol=2))
        info = inspect_checkpoint(path)
        assert OPEN in info.globals and OPEN in info.needs_code and not info.safe
        with pytest.raises(CheckpointError, match="needs code to load") as err:
            load_weights(path)
        assert OPEN in str(err.value) and "nothing from it ran" in str(err.value)
        assert "weights_only=False" not in str(err.value)  # no advice to unpickle it anyway
        with pytest.raises(ValueError):
            wb.transfer(path, nn.Linear(2, 1))
        assert not marker.exists()


def test_whole_module_checkpoint_is_read_as_inert_data(tmp_path, model):
    path = tmp_path / "module.pt"
    torch.save({"model": model, "epoch": -1}, path)
    info = inspect_checkpoint(path)
    assert info.safe and "torch.nn.modules.container.Sequential" in info.inert
    assert info.tensors == len(model.state_dict()) and info.metadata["weights_from"] == "model"
    loaded = load_weights(path)
    assert list(loaded) == list(model.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    assert read_metadata(path)["epoch"] == -1


def test_inspect_lists_globals_of_a_plain_state_dict_as_safe(tmp_path, model):
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    info = inspect_checkpoint(path)
    assert info.safe and "torch._utils._rebuild_tensor_v2" in info.globals
    assert "collections.OrderedDict" in info.globals
    st = inspect_checkpoint(save_weights(model, tmp_path / "w.safetensors", metadata={"seed": 1}))
    assert st.format == "safetensors" and st.tensors == len(model.state_dict()) and st.metadata == {"seed": 1}
    assert "safe to load" in str(st)


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt"])
def test_truncated_file_gets_a_clear_error(tmp_path, model, name):
    path = save_weights(model, tmp_path / name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_weights(path)


def test_garbage_and_empty_files_get_a_clear_error(tmp_path):
    for content in (b"", b"hello, not a checkpoint"):
        path = tmp_path / "bad.bin"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match="not a checkpoint"):
            load_weights(path)
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "missing.safetensors")


def test_corrupt_zip_member_is_reported(tmp_path, model):
    path = save_weights(model, tmp_path / "w.pt")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    with zipfile.ZipFile(tmp_path / "broken.pt", "w") as out:
        out.writestr(names[0], b"\x80\x02garbage")
    with pytest.raises(CheckpointError):
        load_weights(tmp_path / "broken.pt")


def test_save_rejects_what_is_not_a_state_dict(tmp_path):
    with pytest.raises(ValueError, match="state_dict"):
        save_weights({"a": 1}, tmp_path / "x.safetensors")
    assert not os.path.exists(tmp_path / "x.safetensors")


def test_a_safetensors_header_length_starting_with_the_pickle_byte_is_still_safetensors(tmp_path):
    """A header of 0x..80 bytes begins with 0x80, a pickle's first byte; the metadata must still be read."""
    path = tmp_path / "w.safetensors"
    for pad in range(256):
        save_weights({"w": torch.ones(2)}, path, metadata={"note": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert read_metadata(path)["note"] == "x" * pad and load_weights(path)["w"].tolist() == [1.0, 1.0]
    assert inspect_checkpoint(path).format == "safetensors"
