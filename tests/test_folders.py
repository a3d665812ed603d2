"""Folder data sets: YOLO detection folders and class folders written, read back, letterboxed, trained on."""
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from unchanged import files_state

from workbench import build_model, data, fit, scenes
from workbench.folders import PAD_VALUE, load_class_folder, load_yolo_folder, write_class_folder, write_yolo_folder

PIXEL = 0.5 / 255 + 1e-6  # PNG stores 8 bits: a value moves by at most half a step


@pytest.fixture(scope="module")
def detection():
    train, val = data.split(scenes.shape_scenes(8, classes=3, size=64, objects=(1, 3), seed=3), 0.25)
    return {"train": train, "val": val}


@pytest.fixture(scope="module")
def classification():
    train, val = data.split(data.shapes(4, classes=3, size=16, seed=1), 0.25)
    return {"train": train, "val": val}


def test_yolo_folder_has_ultralytics_layout(tmp_path, detection):
    yaml_file = write_yolo_folder(detection, tmp_path / "d")
    spec = yaml.safe_load(yaml_file.read_text())
    assert spec == {"path": str((tmp_path / "d").resolve()), "train": "images/train", "val": "images/val",
                    "names": {0: "circle", 1: "square", 2: "triangle"}}
    for split, ds in detection.items():
        images = sorted((tmp_path / "d" / "images" / split).iterdir())
        labels = sorted((tmp_path / "d" / "labels" / split).iterdir())
        assert [p.suffix for p in images] == [".png"] * len(ds) and [p.stem for p in labels] == [p.stem for p in images]
        with Image.open(images[0]) as image:
            assert (image.format, image.size, image.mode) == ("PNG", (64, 64), "RGB")
        lines = labels[0].read_text().splitlines()
        assert len(lines) == len(ds.objects(0))
        cls, x1, y1, x2, y2 = ds.objects(0)[0].tolist()
        assert lines[0].split() == [str(int(cls)), f"{(x1 + x2) / 128:.6f}", f"{(y1 + y2) / 128:.6f}",
                                    f"{(x2 - x1) / 64:.6f}", f"{(y2 - y1) / 64:.6f}"]


@pytest.mark.parametrize("split", ["train", "val"])
def test_yolo_round_trip_gives_the_same_images_boxes_and_labels(tmp_path, detection, split):
    write_yolo_folder(detection, tmp_path / "d")
    loaded, original = load_yolo_folder(tmp_path / "d", split, size=64), detection[split]
    assert isinstance(loaded, scenes.DetectionSet) and loaded.classes == original.classes
    assert (loaded.x - original.x).abs().max() <= PIXEL
    for i in range(len(original)):
        got, want = loaded.objects(i), original.objects(i)
        assert torch.equal(got[:, 0], want[:, 0])
        torch.testing.assert_close(got[:, 1:], want[:, 1:], atol=1e-3, rtol=0)


def test_yolo_round_trip_at_another_size_scales_the_boxes(tmp_path, detection):
    write_yolo_folder(detection, tmp_path / "d")
    loaded = load_yolo_folder(tmp_path / "d" / "data.yaml", "train", size=128)
    assert loaded.x.shape[-2:] == (128, 128)
    for i in range(len(loaded)):
        want = detection["train"].objects(i) * torch.tensor([1.0, 2, 2, 2, 2])
        torch.testing.assert_close(loaded.objects(i), want, atol=2e-3, rtol=0)


def _wide_image(file, size=(100, 50), box=(20, 10, 60, 30), colour=(200, 30, 40)):
    image = Image.new("RGB", size, (0, 0, 0))
    image.paste(colour, box)
    image.save(file)


def _yolo_by_hand(root, spec_text="path: .\ntrain: images/train\nnames: [a, b]\n"):
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text(spec_text)
    return root


def test_letterbox_keeps_aspect_pads_grey_and_moves_the_boxes(tmp_path):
    root = _yolo_by_hand(tmp_path)
    _wide_image(root / "images" / "train" / "wide.png")
    (root / "labels" / "train" / "wide.txt").write_text("1 0.4 0.4 0.4 0.4\n")  # pixels (20, 10) to (60, 30)
    loaded = load_yolo_folder(root, size=64)
    ratio, top = 64 / 100, 16  # 100x50 -> 64x32, (64 - 32) / 2 rows of padding above and below
    want = torch.tensor([[1.0, 20 * ratio, 10 * ratio + top, 60 * ratio, 30 * ratio + top]])
    torch.testing.assert_close(loaded.objects(0), want)
    x = loaded.x[0]
    grey = torch.full((3, 16, 64), PAD_VALUE / 255)
    assert torch.equal(x[:, :16], grey) and torch.equal(x[:, 48:], grey)
    inside = x[:, int(want[0, 2]) + 2, int(want[0, 1]) + 2]
    torch.testing.assert_close(inside, torch.tensor([200, 30, 40]) / 255, atol=1 / 255, rtol=0)
    assert float(x[:, 16:48].max()) > 0.5 and float(x[:, 16:48, :5].abs().max()) == 0.0  # the image, black outside


def test_a_tall_image_is_letterboxed_with_its_short_side_rounded_up(tmp_path):
    root = _yolo_by_hand(tmp_path)
    Image.new("RGB", (37, 91), (0, 200, 0)).save(root / "images" / "train" / "tall.png")
    (root / "labels" / "train" / "tall.txt").write_bytes(b"\xef\xbb\xbf1 0.5 0.5 0.3 0.7\r\n")  # BOM, CRLF
    loaded = load_yolo_folder(root, size=64)
    width, left = math.ceil(37 * 64 / 91), 18  # 27 columns, round((64 - 27) / 2 - 0.1) to the left
    want = [1.0, 0.35 * width + left, 0.15 * 64, 0.65 * width + left, 0.85 * 64]  # Ultralytics: 27.45 9.6 35.55 54.4
    torch.testing.assert_close(loaded.objects(0), torch.tensor([want]))
    grey = (loaded.x[0] * 255).round().eq(PAD_VALUE).all(0)
    assert grey[:, :left].all() and grey[:, left + width:].all() and not grey[:, left:left + width].any()


def test_exif_rotation_is_applied_before_letterboxing(tmp_path):
    root = _yolo_by_hand(tmp_path)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: 100x50 stored, 50x100 seen
    Image.new("RGB", (100, 50), (255, 255, 255)).save(root / "images" / "train" / "r.jpg", exif=exif)
    (root / "labels" / "train" / "r.txt").write_text("")
    x = load_yolo_folder(root, size=64).x[0]
    grey = torch.full((3, 64, 16), PAD_VALUE / 255)
    assert torch.equal(x[:, :, :16], grey) and torch.equal(x[:, :, 48:], grey)
    assert float(x[:, :, 20:44].min()) > 0.9  # a portrait image, padded left and right


def test_names_as_list_relative_path_and_background_images(tmp_path):
    root = _yolo_by_hand(tmp_path / "d", "train: images/train\nnames: [cat, dog]\n")  # no path: the YAML's folder
    for name in ("a", "b"):
        _wide_image(root / "images" / "train" / f"{name}.png")
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n\n1 0.25 0.5 0.1 0.1\n")
    loaded = load_yolo_folder(root, size=32, missing_labels="background")
    assert loaded.classes == ("cat", "dog") and loaded.y.shape == (2, 2, 5)
    assert loaded.objects(0)[:, 0].tolist() == [0.0, 1.0] and len(loaded.objects(1)) == 0
    (root / "data.yaml").write_text("train: images/train\nnames: {'1': dog, '0': cat}\n")  # keys as strings
    assert load_yolo_folder(root, size=32, missing_labels="background").classes == ("cat", "dog")
    (root / "data.yaml").write_text("train: images/train\nnc: 2\n")
    (root / "labels" / "train" / "b.txt").write_text("")  # empty: no objects
    assert load_yolo_folder(root, size=32).classes == ("class_0", "class_1")


def test_class_folder_round_trip(tmp_path, classification):
    folder = write_class_folder(classification, tmp_path / "c")
    assert sorted(p.name for p in folder.iterdir()) == ["train", "val"]
    assert sorted(p.name for p in (folder / "val").iterdir()) == ["circle", "square", "triangle"]
    for split, original in classification.items():
        loaded = load_class_folder(folder, split, size=16)
        assert loaded.classes == original.classes and type(loaded) is data.ImageSet
        order = torch.argsort(original.y, stable=True)  # written and read back class by class
        assert torch.equal(loaded.y, original.y[order])
        assert (loaded.x - original.x[order]).abs().max() <= PIXEL


def test_class_folder_sorts_classes_resizes_and_skips_other_files(tmp_path):
    for split in ("train", "val"):
        for name, colour in (("zebra", (255, 255, 255)), ("ant", (0, 0, 255))):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (40, 20), colour).save(tmp_path / split / name / "one.jpg")
            Image.new("L", (10, 30), 128).save(tmp_path / split / name / "two.PNG")
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    loaded = load_class_folder(tmp_path, size=8)
    assert loaded.classes == ("ant", "zebra") and loaded.y.tolist() == [0, 0, 1, 1]
    assert loaded.x.shape == (4, 3, 8, 8)
    torch.testing.assert_close(loaded.x[0, :, 4, 4], torch.tensor([0.0, 0.0, 1.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(loaded.x[1], torch.full((3, 8, 8), 128 / 255))


def test_a_yaml_with_a_python_tag_is_refused_and_nothing_runs(tmp_path):
    root = _yolo_by_hand(tmp_path / "d")
    marker = tmp_path / "ran"
    (root / "data.yaml").write_text(f"train: images/train\nnames: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ValueError, match="safe_load") as info:
        load_yolo_folder(root)
    assert str(root / "data.yaml") in str(info.value) and not marker.exists()


def test_a_failed_write_leaves_nothing_behind(tmp_path, detection, monkeypatch):
    from workbench import folder_writers

    calls = []

    def failing_save(x, file):
        calls.append(file)
        if len(calls) == 3:
            raise OSError("disk full")
        Image.new("RGB", (2, 2)).save(file)

    monkeypatch.setattr(folder_writers, "_save_png", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_yolo_folder(detection, tmp_path / "d")
    assert list(tmp_path.iterdir()) == []


def test_fit_trains_on_a_loaded_detection_folder(tmp_path, detection):
    write_yolo_folder(detection, tmp_path / "d")
    train, val = (load_yolo_folder(tmp_path / "d", split, size=64) for split in ("train", "val"))
    history = fit(build_model(task="detect", nc=train.nc), train, val, epochs=2, batch_size=3, progress=False)
    assert history.status == "completed" and history.step == 4 and all(map(math.isfinite, history.loss))
    assert len(history.val["mAP50"]) == 2 and all(0 <= m <= 1 for m in history.val["mAP50"])  # on the val split


def test_fit_trains_on_a_loaded_class_folder(tmp_path, classification):
    folder = write_class_folder(classification, tmp_path / "c")
    train, val = (load_class_folder(folder, split, size=32) for split in ("train", "val"))
    history = fit(build_model(nc=train.nc), train, val, epochs=2, batch_size=4, progress=False)
    assert len(train) == 9  # batches of 4 and 5 (a last batch of one joins the one before)
    assert history.status == "completed" and history.step == 4 and all(map(math.isfinite, history.loss))
    assert len(next(iter(history.val.values()))) == 2


def test_loaded_data_is_plain_tensors_fit_batches_unchanged(tmp_path, detection):
    write_yolo_folder(detection, tmp_path / "d")
    loaded = load_yolo_folder(tmp_path / "d", size=64)
    assert loaded.x.dtype == torch.float32 and loaded.y.dtype == torch.float32
    assert loaded.x.shape[1:] == (3, 64, 64) and float(loaded.x.min()) >= 0 and float(loaded.x.max()) <= 1
    assert np.isin(loaded.y[..., 0].unique().numpy(), [-1, 0, 1, 2]).all()


class _RunsOnLoad:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_readers_open_no_pickle_such_as_ultralytics_label_caches(tmp_path, detection, classification):
    marker = tmp_path / "ran"
    payload = pickle.dumps(_RunsOnLoad(marker))
    write_yolo_folder(detection, tmp_path / "d")
    (tmp_path / "d" / "labels" / "train.cache").write_bytes(payload)  # where Ultralytics keeps its pickled cache
    (tmp_path / "d" / "images" / "train" / "cache.npy").write_bytes(payload)
    write_class_folder(classification, tmp_path / "c")
    (tmp_path / "c" / "train" / "circle" / "x.pkl").write_bytes(payload)
    assert len(load_yolo_folder(tmp_path / "d", size=64)) == len(detection["train"])
    assert len(load_class_folder(tmp_path / "c", size=16)) == len(classification["train"])
    assert not marker.exists()


def test_reading_changes_no_file(tmp_path, detection, classification):
    write_yolo_folder(detection, tmp_path / "d")
    write_class_folder(classification, tmp_path / "c")
    before = files_state(tmp_path)
    load_yolo_folder(tmp_path / "d", "val", size=64)
    load_class_folder(tmp_path / "c", "val", size=16)
    assert files_state(tmp_path) == before
