"""Folder data sets against Ultralytics' own readers: the same folder gives the same classes, boxes and letterbox.

Needs ``ultralytics`` (skipped without it; CI sets ``WB_REQUIRE_ULTRALYTICS=1`` to fail instead).
The folders are written by the workbench's writers, plus images of other shapes and an
EXIF-rotated JPEG added by hand, then read by Ultralytics' ``check_det_dataset`` and
``YOLODataset`` (no augmentation, square images); class folders by ``check_cls_dataset``
(its ``ClassificationDataset`` needs torchvision's compiled ops, which do not load beside the
CPU torch).
"""
import numpy as np
import pytest
import torch
from PIL import Image

from workbench import data, scenes
from workbench.folders import PAD_VALUE, load_class_folder, load_yolo_folder, write_class_folder, write_yolo_folder

SIZE = 64


@pytest.fixture(scope="module")
def ultralytics_data(tasks):
    from ultralytics.data import dataset, utils

    return dataset, utils


@pytest.fixture(scope="module")
def yolo_folder(tmp_path_factory):
    train, val = data.split(scenes.shape_scenes(6, classes=3, size=SIZE, seed=0), 0.5)
    yaml_file = write_yolo_folder({"train": train, "val": val}, tmp_path_factory.mktemp("u") / "d")
    images, labels = yaml_file.parent / "images" / "train", yaml_file.parent / "labels" / "train"
    Image.new("RGB", (100, 50), (200, 0, 0)).save(images / "wide.png")
    (labels / "wide.txt").write_text("1 0.4 0.4 0.4 0.4\n")
    Image.new("RGB", (37, 91), (0, 200, 0)).save(images / "tall.png")
    (labels / "tall.txt").write_text("2 0.5 0.5 0.3 0.7\n0 0.2 0.1 0.1 0.1\n")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 120 x 40, shown 40 x 120
    Image.new("RGB", (120, 40), (0, 0, 220)).save(images / "turned.jpg", exif=exif)
    (labels / "turned.txt").write_text("0 0.5 0.25 0.5 0.3\n")
    return yaml_file


def test_ultralytics_reads_the_written_yaml(ultralytics_data, yolo_folder):
    spec = ultralytics_data[1].check_det_dataset(str(yolo_folder), autodownload=False)
    assert spec["names"] == {0: "circle", 1: "square", 2: "triangle"} and spec["nc"] == 3
    assert spec["train"] == str(yolo_folder.parent / "images" / "train")
    assert spec["val"] == str(yolo_folder.parent / "images" / "val")


def test_letterboxed_images_and_boxes_match_ultralytics_dataset(ultralytics_data, yolo_folder):
    dataset, utils = ultralytics_data
    from ultralytics.cfg import get_cfg

    spec = utils.check_det_dataset(str(yolo_folder), autodownload=False)
    mine = load_yolo_folder(yolo_folder, size=SIZE)  # read before Ultralytics writes its label cache
    theirs = dataset.YOLODataset(img_path=spec["train"], imgsz=SIZE, augment=False, hyp=get_cfg(), rect=False,
                                 batch_size=4, stride=32, pad=0.0, data=spec, task="detect")
    assert len(theirs) == len(mine) == 6
    for i in range(len(theirs)):
        sample = theirs[i]
        xywh = sample["bboxes"] * SIZE
        xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        want = torch.cat([sample["cls"].float(), xyxy], 1)
        torch.testing.assert_close(mine.objects(i), want, atol=1e-3, rtol=0, msg=sample["im_file"])
        their_pad = (sample["img"] == PAD_VALUE).all(0)
        my_pad = (mine.x[i] * 255).round().eq(PAD_VALUE).all(0)
        assert torch.equal(my_pad, their_pad), f"{sample['im_file']}: the padding differs"
        if sample["ori_shape"] == (SIZE, SIZE):  # not resized: the same pixels
            assert torch.equal((mine.x[i] * 255).round().to(torch.uint8), sample["img"])


def test_written_labels_pass_ultralytics_checks(ultralytics_data, yolo_folder):
    utils = ultralytics_data[1]
    folder = yolo_folder.parent
    for image in sorted((folder / "images" / "val").iterdir()):
        label = folder / "labels" / "val" / f"{image.stem}.txt"
        result = utils.verify_image_label((str(image), str(label), "", False, 3, 0, 0, False))
        _, boxes, shape, _, _, missing, found, empty, corrupt, message = result
        assert (missing, found, corrupt, message) == (0, 1, 0, ""), message
        written = np.loadtxt(label, dtype=np.float32, ndmin=2)
        np.testing.assert_array_equal(boxes, written)


def test_class_folder_classes_match_ultralytics(ultralytics_data, tmp_path):
    train, val = data.split(data.shapes(3, classes=["tee", "ring", "circle"], size=16), 0.34)
    folder = write_class_folder({"train": train, "val": val}, tmp_path / "c")
    spec = ultralytics_data[1].check_cls_dataset(str(folder))
    assert (spec["train"], spec["val"]) == (folder.resolve() / "train", folder.resolve() / "val")
    assert tuple(spec["names"].values()) == load_class_folder(folder, "val", size=16).classes
    assert list(spec["names"]) == [0, 1, 2] and spec["nc"] == 3
