"""Bad folder data sets and bad arguments to the folder readers and writers: clear errors, files unchanged.

One module-scoped folder holds a good YOLO folder, a good class folder and one broken copy of each
per case (a label, an image, the YAML or a folder spoiled); each case reads or writes there, and
``run_case`` asserts the error, that its message names the file and the fix, and that no file
under the folder changed.
"""
import numpy as np
import pytest
from unchanged import case, run_case

from workbench import data, scenes
from workbench.folders import load_class_folder, load_yolo_folder, write_class_folder, write_yolo_folder


@pytest.fixture(scope="module")
def detection():
    train, val = data.split(scenes.shape_scenes(8, classes=3, size=64, objects=(1, 3), seed=3), 0.25)
    return {"train": train, "val": val}


@pytest.fixture(scope="module")
def classification():
    train, val = data.split(data.shapes(4, classes=3, size=16, seed=1), 0.25)
    return {"train": train, "val": val}


def _label(folder, text, split="train"):
    (sorted((folder / "labels" / split).iterdir())[0]).write_text(text)


def _first_image(folder, split="train"):
    return sorted((folder / "images" / split).iterdir())[0]


YOLO_BREAKS = {
    "class-outside-names": lambda f: _label(f, "0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n"),
    "box-outside": lambda f: _label(f, "1 0.95 0.5 0.3 0.2\n"),
    "box-in-pixels": lambda f: _label(f, "1 32 32 10 10\n"),
    "box-zero-width": lambda f: _label(f, "1 0.5 0.5 0 0.2\n"),
    "line-four-values": lambda f: _label(f, "1 0.5 0.5 0.2\n"),
    "line-polygon": lambda f: _label(f, "1 0.1 0.1 0.2 0.1 0.2 0.2\n"),
    "line-words": lambda f: _label(f, "dog 0.5 0.5 0.2 0.2\n"),
    "line-class-fraction": lambda f: _label(f, "1.5 0.5 0.5 0.2 0.2\n"),
    "line-nan": lambda f: _label(f, "1 nan 0.5 0.2 0.2\n"),
    "no-label-file": lambda f: (sorted((f / "labels" / "train").iterdir())[1]).unlink(),
    "no-labels-folder": lambda f: [p.unlink() for p in (f / "labels" / "val").iterdir()] and
    (f / "labels" / "val").rmdir(),
    "corrupt-image": lambda f: _first_image(f).write_bytes(b"these bytes are not a PNG"),
    "truncated-image": lambda f: _first_image(f).write_bytes(_first_image(f).read_bytes()[:200]),
    "image-empty-file": lambda f: (f / "images" / "train" / "zz.jpg").write_bytes(b""),
    "no-val-folder": lambda f: _remove_split(f, "val"),
    "no-images": lambda f: [p.unlink() for p in (f / "images" / "val").iterdir()],
    "no-yaml": lambda f: (f / "data.yaml").unlink(),
    "yaml-python-tag": lambda f: _yaml(f, "train: images/train\nnames: !!python/object/apply:os.getcwd []\n"),
    "yaml-list": lambda f: _yaml(f, "- images/train\n- images/val\n"),
    "yaml-broken": lambda f: _yaml(f, "train: [images/train\nnames: {0: a\n"),
    "yaml-no-names": lambda f: _yaml(f, "train: images/train\n"),
    "yaml-names-gap": lambda f: _yaml(f, "train: images/train\nnames: {0: a, 2: b, 3: c}\n"),
    "yaml-names-repeat": lambda f: _yaml(f, "train: images/train\nnames: [a, a, b]\n"),
    "yaml-nc-disagrees": lambda f: _yaml(f, "train: images/train\nnc: 4\nnames: [a, b, c]\n"),
    "yaml-path-gone": lambda f: _yaml(f, "path: /no/such/folder\ntrain: images/train\nnames: [a, b, c]\n"),
    "yaml-no-images-part": lambda f: _yaml(f, "train: .\nnames: [a, b, c]\n"),
    "yaml-split-list": lambda f: _yaml(f, "train: [images/train, images/val]\nnames: [a, b, c]\n"),
    "yaml-path-number": lambda f: _yaml(f, "path: 3\ntrain: images/train\nnames: [a, b, c]\n"),
}


def _yaml(folder, text):
    (folder / "data.yaml").write_text(text)


def _remove_split(folder, split):
    for part in ("images", "labels"):
        for p in (folder / part / split).iterdir():
            p.unlink()
        (folder / part / split).rmdir()


def _class_missing_val(folder):
    for p in (folder / "val").rglob("*.png"):
        p.unlink()
    for p in (folder / "val").iterdir():
        p.rmdir()
    (folder / "val").rmdir()


CLASS_BREAKS = {
    "no-val-folder": _class_missing_val,
    "empty-class": lambda f: [p.unlink() for p in (f / "val" / "square").iterdir()],
    "class-only-in-train": lambda f: (f / "train" / "square").rename(f / "train" / "squares"),
    "corrupt-image": lambda f: sorted((f / "train" / "circle").iterdir())[0].write_bytes(b"\x89PNG broken"),
    "no-class-folders": lambda f: _flatten(f / "val"),
}


def _flatten(split_dir):
    for k, image in enumerate(sorted(split_dir.rglob("*.png"))):
        image.rename(split_dir.parent / f"loose{k}.png")
    for folder in split_dir.iterdir():
        folder.rmdir()


@pytest.fixture(scope="module")
def broken(tmp_path_factory, detection, classification):
    root = tmp_path_factory.mktemp("folders")
    write_yolo_folder(detection, root / "yolo")
    write_class_folder(classification, root / "classes")
    (root / "yolo-bad").mkdir()
    (root / "classes-bad").mkdir()
    for name, breaks in YOLO_BREAKS.items():
        write_yolo_folder(detection, root / "yolo-bad" / name)
        breaks(root / "yolo-bad" / name)
    for name, breaks in CLASS_BREAKS.items():
        write_class_folder(classification, root / "classes-bad" / name)
        breaks(root / "classes-bad" / name)
    (root / "taken").mkdir()
    (root / "taken" / "mine.txt").write_text("keep me")
    return root


def _bad(name, split="train", **kw):
    return lambda e: load_yolo_folder(e["root"] / "yolo-bad" / name, split, size=32, **kw)


def _bad_classes(name, split="train", **kw):
    return lambda e: load_class_folder(e["root"] / "classes-bad" / name, split, size=16, **kw)


def _yolo(**kw):
    return lambda e: load_yolo_folder(e["root"] / "yolo", **kw)


def _write_yolo(data_of, path_of, **kw):
    return lambda e: write_yolo_folder(data_of(e), path_of(e), **kw)


def _write_classes(data_of, path_of, **kw):
    return lambda e: write_class_folder(data_of(e), path_of(e), **kw)


def _ok_background(env):
    loaded = load_yolo_folder(env["root"] / "yolo-bad" / "no-label-file", size=32, missing_labels="background")
    assert len(loaded.objects(1)) == 0 and len(loaded.objects(0)) > 0


def _ok_numpy_size(env):
    assert load_yolo_folder(env["root"] / "yolo", size=np.int64(32)).x.shape[-1] == 32


LABELS = "labels/train/000000.txt"
BAD = "yolo-bad/"
LOAD_YOLO = [
    case("error", "load_yolo_folder", "class-outside-names", _bad("class-outside-names"), ValueError,
         (BAD + "class-outside-names/" + LABELS, "line 2", "class 3", "names")),
    case("error", "load_yolo_folder", "box-outside", _bad("box-outside"), ValueError,
         (BAD + "box-outside/" + LABELS, "line 1", "outside the image", "0..1")),
    case("error", "load_yolo_folder", "box-in-pixels", _bad("box-in-pixels"), ValueError,
         (BAD + "box-in-pixels/" + LABELS, "divide pixel values by the image size")),
    case("error", "load_yolo_folder", "box-zero-width", _bad("box-zero-width"), ValueError,
         (BAD + "box-zero-width/" + LABELS, "w and h must be > 0")),
    *[case("error", "load_yolo_folder", name, _bad(name), ValueError, (BAD + name + "/" + LABELS, "class cx cy w h"))
      for name in ("line-four-values", "line-polygon", "line-words", "line-class-fraction", "line-nan")],
    case("error", "load_yolo_folder", "no-label-file", _bad("no-label-file"), FileNotFoundError,
         (BAD + "no-label-file/images/train/000001.png", "labels/train/000001.txt", "missing_labels='background'")),
    case("error", "load_yolo_folder", "no-labels-folder", _bad("no-labels-folder", "val"), FileNotFoundError,
         ("labels/val/000000.txt", "missing_labels")),
    case("ok", "load_yolo_folder", "missing-labels-as-background", _ok_background),
    case("error", "load_yolo_folder", "corrupt-image", _bad("corrupt-image"), ValueError,
         (BAD + "corrupt-image/images/train/000000.png", "not a readable image")),
    case("error", "load_yolo_folder", "truncated-image", _bad("truncated-image"), ValueError,
         (BAD + "truncated-image/images/train/000000.png", "not a readable image")),
    case("error", "load_yolo_folder", "image-empty-file", _bad("image-empty-file"), ValueError,
         (BAD + "image-empty-file/images/train/zz.jpg", "not a readable image")),
    case("error", "load_yolo_folder", "no-val-folder", _bad("no-val-folder", "val"), FileNotFoundError,
         (BAD + "no-val-folder/images/val", "data.yaml")),
    case("error", "load_yolo_folder", "split-not-in-yaml", _bad("box-outside", "test"), ValueError,
         ("data.yaml", "split='test'", "['train', 'val']")),
    case("error", "load_yolo_folder", "no-images", _bad("no-images", "val"), ValueError,
         (BAD + "no-images/images/val", "no images")),
    case("error", "load_yolo_folder", "no-yaml", _bad("no-yaml"), FileNotFoundError,
         (BAD + "no-yaml", "data.yaml")),
    case("error", "load_yolo_folder", "yaml-python-tag", _bad("yaml-python-tag"), ValueError,
         (BAD + "yaml-python-tag/data.yaml", "safe_load")),
    case("error", "load_yolo_folder", "yaml-list", _bad("yaml-list"), ValueError, (BAD + "yaml-list/data.yaml",)),
    case("error", "load_yolo_folder", "yaml-broken", _bad("yaml-broken"), ValueError,
         (BAD + "yaml-broken/data.yaml", "not plain YAML")),
    case("error", "load_yolo_folder", "yaml-no-names", _bad("yaml-no-names"), ValueError,
         (BAD + "yaml-no-names/data.yaml", "names")),
    case("error", "load_yolo_folder", "yaml-names-gap", _bad("yaml-names-gap"), ValueError,
         (BAD + "yaml-names-gap/data.yaml", "0..2")),
    case("error", "load_yolo_folder", "yaml-names-repeat", _bad("yaml-names-repeat"), ValueError,
         (BAD + "yaml-names-repeat/data.yaml", "'a'")),
    case("error", "load_yolo_folder", "yaml-nc-disagrees", _bad("yaml-nc-disagrees"), ValueError,
         (BAD + "yaml-nc-disagrees/data.yaml", "nc is 4")),
    case("error", "load_yolo_folder", "yaml-path-gone", _bad("yaml-path-gone"), FileNotFoundError,
         ("/no/such/folder/images/train", "path:")),
    case("error", "load_yolo_folder", "yaml-no-images-part", _bad("yaml-no-images-part"), ValueError,
         ("'images'", "images/<split>")),
    case("error", "load_yolo_folder", "yaml-split-list", _bad("yaml-split-list"), ValueError,
         (BAD + "yaml-split-list/data.yaml", "one folder")),
    case("error", "load_yolo_folder", "yaml-path-number", _bad("yaml-path-number"), ValueError,
         (BAD + "yaml-path-number/data.yaml", "path must be a folder name")),
    case("error", "load_yolo_folder", "path-not-a-folder", lambda e: load_yolo_folder(e["root"] / "nothing"),
         FileNotFoundError, "nothing"),
    case("error", "load_yolo_folder", "path-a-number", lambda e: load_yolo_folder(3), ValueError, "path"),
    case("error", "load_yolo_folder", "yaml-file-missing", lambda e: load_yolo_folder(e["root"] / "no.yaml"),
         FileNotFoundError, "no.yaml"),
    case("error", "load_yolo_folder", "size-not-stride", _yolo(size=40), ValueError, ("size", "32")),
    case("error", "load_yolo_folder", "size-zero", _yolo(size=0), ValueError, "size"),
    case("error", "load_yolo_folder", "size-float", _yolo(size=64.0), ValueError, "size"),
    case("error", "load_yolo_folder", "missing-labels-unknown", _yolo(missing_labels="skip"), ValueError,
         "missing_labels"),
    case("ok", "load_yolo_folder", "numpy-size", _ok_numpy_size),
]

CLASSES_BAD = "classes-bad/"
LOAD_CLASSES = [
    case("error", "load_class_folder", "no-val-folder", _bad_classes("no-val-folder", "val"), FileNotFoundError,
         (CLASSES_BAD + "no-val-folder", "'val'", "['train']")),
    case("error", "load_class_folder", "empty-class", _bad_classes("empty-class", "val"), ValueError,
         (CLASSES_BAD + "empty-class/val/square", "no images", "every class")),
    case("error", "load_class_folder", "class-only-in-train", _bad_classes("class-only-in-train", "val"), ValueError,
         ("'squares'", "'square'", "same class folders")),
    case("error", "load_class_folder", "corrupt-image", _bad_classes("corrupt-image"), ValueError,
         (CLASSES_BAD + "corrupt-image/train/circle/", "not a readable image")),
    case("error", "load_class_folder", "no-class-folders", _bad_classes("no-class-folders", "val"), ValueError,
         (CLASSES_BAD + "no-class-folders/val", "<class>")),
    case("error", "load_class_folder", "split-number", _bad_classes("empty-class", 1), FileNotFoundError, "1"),
    case("error", "load_class_folder", "size-small", lambda e: load_class_folder(e["root"] / "classes", size=4),
         ValueError, "size"),
    case("error", "load_class_folder", "path-missing", lambda e: load_class_folder(e["root"] / "nope"),
         FileNotFoundError, "nope"),
]


def _det(e, split="train"):
    return e["detection"][split]


def _cls(e, split="train"):
    return e["classification"][split]


WRITE = [
    case("error", "write_yolo_folder", "folder-not-empty", _write_yolo(_det, lambda e: e["root"] / "taken"),
         FileExistsError, ("taken", "not an empty folder")),
    case("error", "write_yolo_folder", "parent-missing", _write_yolo(_det, lambda e: e["root"] / "a" / "b"),
         FileNotFoundError, "a/b"),
    case("error", "write_yolo_folder", "classification-data", _write_yolo(_cls, lambda e: e["root"] / "new"),
         ValueError, ("data", "DetectionSet")),
    case("error", "write_yolo_folder", "names-count", _write_yolo(_det, lambda e: e["root"] / "new", names=["a"]),
         ValueError, ("names", "3 classes")),
    case("error", "write_yolo_folder", "unknown-split",
         lambda e: write_yolo_folder({"train": _det(e), "holdout": _det(e, "val")}, e["root"] / "new"), ValueError,
         "holdout"),
    case("error", "write_yolo_folder", "path-number", _write_yolo(_det, lambda e: 7), ValueError, "path"),
    case("error", "write_class_folder", "folder-not-empty", _write_classes(_cls, lambda e: e["root"] / "taken"),
         FileExistsError, "taken"),
    case("error", "write_class_folder", "detection-data", _write_classes(_det, lambda e: e["root"] / "new"),
         ValueError, ("data", "ImageSet")),
    case("error", "write_class_folder", "class-missing-in-split",
         lambda e: write_class_folder({"train": _cls(e), "val": _cls(e, "val").subset([0, 1])}, e["root"] / "new"),
         ValueError, ("data['val']", "'triangle'", "data.split")),
    case("error", "write_class_folder", "name-with-slash",
         _write_classes(_cls, lambda e: e["root"] / "new", names=["a/b", "c", "d"]), ValueError, ("names", "'a/b'")),
    case("error", "write_class_folder", "splits-differ",
         lambda e: write_class_folder({"train": _cls(e), "val": data.shapes(1, classes=2, size=16)}, e["root"] / "n"),
         ValueError, "different classes"),
]


@pytest.fixture
def env(broken, detection, classification):
    return {"root": broken, "detection": detection, "classification": classification}


@pytest.mark.parametrize("call, kind, expected, names", LOAD_YOLO + LOAD_CLASSES + WRITE)
def test_bad_input(env, call, kind, expected, names):
    run_case(env, call, kind, expected, names)
    assert not (env["root"] / "new").exists() and not (env["root"] / "n").exists()
