"""Bad inputs to build_model and the data sets (shapes, digits, split, ImageSet, scenes): refused, nothing changed."""
import numpy as np
import pytest
import torch
from unchanged import case, run_case

from workbench import build_model, data, scenes
from workbench.scenes import DetectionSet


def _ok_build(env):
    model = build_model(nc=np.int64(3), ch=np.int64(1))
    assert (model.nc, model.ch, model.layers[-1].linear.out_features) == (3, 1, 3)
    assert type(model.nc) is int and model.eval()(torch.zeros(1, 1, 32, 32)).shape == (1, 3)


BUILD = [
    case("error", "build_model", "scale-unknown", lambda e: build_model("x"), ValueError, "scale"),
    case("error", "build_model", "scale-none", lambda e: build_model(None), ValueError, "scale"),
    case("error", "build_model", "task-unknown", lambda e: build_model(task="segment"), ValueError, "task"),
    case("error", "build_model", "task-list", lambda e: build_model(task=["detect"]), ValueError, "task"),
    case("error", "build_model", "nc-zero", lambda e: build_model(nc=0), ValueError, "nc"),
    case("error", "build_model", "nc-negative", lambda e: build_model(nc=-1), ValueError, "nc"),
    case("error", "build_model", "nc-float", lambda e: build_model(nc=2.5), ValueError, "nc"),
    case("error", "build_model", "nc-string", lambda e: build_model(nc="3"), ValueError, "nc"),
    case("error", "build_model", "nc-bool", lambda e: build_model(nc=True), ValueError, "nc"),
    case("error", "build_model", "nc-none", lambda e: build_model(nc=None), ValueError, "nc"),
    case("error", "build_model", "ch-zero", lambda e: build_model(ch=0), ValueError, "ch"),
    case("error", "build_model", "ch-float", lambda e: build_model(ch=1.5), ValueError, "ch"),
    case("error", "build_model", "nc-numpy-float", lambda e: build_model(nc=np.float64(3.0)), ValueError, "nc"),
    case("ok", "build_model", "numpy-int-nc-ch", _ok_build),
]


def _ok_shapes(env):
    got = data.shapes(np.int64(2), classes=np.int64(3), size=np.int32(16), gap=np.float32(0.5))
    ref = data.shapes(2, classes=3, size=16, gap=0.5)
    assert torch.equal(got.x, ref.x) and torch.equal(got.y, ref.y) and got.classes == ref.classes


def _ok_digits(env):
    got = data.digits(np.int64(2), size=np.int64(16), channels=np.int64(1))
    ref = data.digits(2, size=16, channels=1)
    assert torch.equal(got.x, ref.x) and torch.equal(got.y, ref.y)


GENERATORS = [
    case("error", "shapes", "n_per_class-zero", lambda e: data.shapes(0), ValueError, "n_per_class"),
    case("error", "shapes", "n_per_class-negative", lambda e: data.shapes(-1), ValueError, "n_per_class"),
    case("error", "shapes", "n_per_class-float", lambda e: data.shapes(2.5), ValueError, "n_per_class"),
    case("error", "shapes", "n_per_class-string", lambda e: data.shapes("5"), ValueError, "n_per_class"),
    case("error", "shapes", "n_per_class-bool", lambda e: data.shapes(True), ValueError, "n_per_class"),
    case("error", "shapes", "size-small", lambda e: data.shapes(2, size=4), ValueError, "size"),
    case("error", "shapes", "size-float", lambda e: data.shapes(2, size=16.5), ValueError, "size"),
    case("error", "shapes", "gap-negative", lambda e: data.shapes(2, gap=-0.1), ValueError, "gap"),
    case("error", "shapes", "gap-large", lambda e: data.shapes(2, gap=1.5), ValueError, "gap"),
    case("error", "shapes", "gap-nan", lambda e: data.shapes(2, gap=float("nan")), ValueError, "gap"),
    case("error", "shapes", "gap-string", lambda e: data.shapes(2, gap="far"), ValueError, "gap"),
    case("error", "shapes", "classes-zero", lambda e: data.shapes(2, classes=0), ValueError, "classes"),
    case("error", "shapes", "classes-too-many", lambda e: data.shapes(2, classes=13), ValueError, "classes"),
    case("error", "shapes", "classes-float", lambda e: data.shapes(2, classes=2.5), ValueError, "classes"),
    case("error", "shapes", "classes-duplicate", lambda e: data.shapes(2, classes=["ring", "ring"]), ValueError,
         ("classes", "ring")),
    case("error", "shapes", "classes-unknown", lambda e: data.shapes(2, classes=["dragon"]), ValueError,
         ("classes", "dragon")),
    case("error", "shapes", "classes-empty", lambda e: data.shapes(2, classes=[]), ValueError, "classes"),
    case("error", "shapes", "classes-string", lambda e: data.shapes(2, classes="ring"), ValueError,
         ("classes", "['ring']")),
    case("ok", "shapes", "numpy-numbers", _ok_shapes),
    case("error", "digits", "n_per_class-too-many", lambda e: data.digits(175), ValueError, "n_per_class"),
    case("error", "digits", "n_per_class-zero", lambda e: data.digits(0), ValueError, "n_per_class"),
    case("error", "digits", "channels-two", lambda e: data.digits(2, channels=2), ValueError, "channels"),
    case("error", "digits", "channels-bool", lambda e: data.digits(2, channels=True), ValueError, "channels"),
    case("error", "digits", "size-small", lambda e: data.digits(2, size=4), ValueError, "size"),
    case("error", "digits", "gap-large", lambda e: data.digits(2, gap=2), ValueError, "gap"),
    case("ok", "digits", "numpy-numbers", _ok_digits),
]


def _set(n_per_class=2, classes=2):
    return data.shapes(n_per_class, classes=classes, size=8)


SPLIT = [
    case("error", "split", "val_fraction-zero", lambda e: data.split(e["data"], 0), ValueError, "val_fraction"),
    case("error", "split", "val_fraction-one", lambda e: data.split(e["data"], 1), ValueError, "val_fraction"),
    case("error", "split", "val_fraction-large", lambda e: data.split(e["data"], 1.5), ValueError, "val_fraction"),
    case("error", "split", "val_fraction-nan", lambda e: data.split(e["data"], float("nan")), ValueError,
         "val_fraction"),
    case("error", "split", "val_fraction-string", lambda e: data.split(e["data"], "0.2"), ValueError, "val_fraction"),
    case("error", "split", "val_fraction-bool", lambda e: data.split(e["data"], True), ValueError, "val_fraction"),
    case("error", "split", "empty-validation", lambda e: data.split(e["data"], 0.1), ValueError,
         ("val_fraction", "validation part empty", "between 0.5 and 0.5")),
    case("error", "split", "empty-training", lambda e: data.split(e["data"], 0.9), ValueError,
         ("val_fraction", "training part empty", "4 images")),
    case("error", "split", "one-per-class", lambda e: data.split(e["one"], 0.5), ValueError,
         ("val_fraction", "at least 2 per class")),
    case("error", "split", "scenes-empty-validation", lambda e: data.split(e["scenes"], 0.1), ValueError,
         ("val_fraction", "3 scenes", "between 0.334 and 0.666")),
    case("error", "split", "not-an-imageset", lambda e: data.split((e["data"].x, e["data"].y)), ValueError, "data"),
    case("error", "split", "seed-negative", lambda e: data.split(e["data"], 0.5, seed=-1), ValueError, "seed"),
]


def _labels(values, dtype=torch.long):
    return torch.tensor(values, dtype=dtype)


def _image_set(e, y=None, classes=("a", "b"), x=None):
    return data.ImageSet(e["x"] if x is None else x, e["y"] if y is None else y, classes)


IMAGE_SET = [
    case("error", "ImageSet", "label-minus-one", lambda e: _image_set(e, y=e["y_minus"]), ValueError,
         ("y[2]", "-1", "0..1")),
    case("error", "ImageSet", "label-equals-nc", lambda e: _image_set(e, y=_labels([0, 1, 2, 0])), ValueError,
         ("y[2]", "0..1")),
    case("error", "ImageSet", "labels-float", lambda e: _image_set(e, y=_labels([0, 1, 1, 0], torch.float32)),
         ValueError, ("y", "y.long()")),
    case("error", "ImageSet", "labels-2d", lambda e: _image_set(e, y=torch.zeros(4, 2, dtype=torch.long)), ValueError,
         "y"),
    case("error", "ImageSet", "labels-count", lambda e: _image_set(e, y=_labels([0, 1, 1])), ValueError, "one label"),
    case("error", "ImageSet", "classes-duplicate", lambda e: _image_set(e, classes=("a", "a")), ValueError,
         ("classes", "'a'")),
    case("error", "ImageSet", "classes-empty", lambda e: _image_set(e, classes=()), ValueError, "classes"),
    case("error", "ImageSet", "classes-string", lambda e: _image_set(e, classes="ab"), ValueError, "classes"),
    case("error", "ImageSet", "classes-not-strings", lambda e: _image_set(e, classes=(0, 1)), ValueError, "classes"),
    case("error", "ImageSet", "x-not-tensor", lambda e: _image_set(e, x=e["x"].numpy()), ValueError, "x"),
    case("error", "ImageSet", "x-integer", lambda e: _image_set(e, x=(e["x"] * 255).byte()), ValueError, "x"),
    case("error", "ImageSet", "x-3d", lambda e: _image_set(e, x=e["x"][:, 0]), ValueError, "x"),
    case("error", "ImageSet", "subset-out-of-range", lambda e: e["data"].subset([0, 99]), IndexError, "99"),
]


def _scene_targets(label: float) -> torch.Tensor:
    y = torch.full((2, 1, 5), -1.0)
    y[0, 0] = torch.tensor([label, 1, 1, 5, 5])
    return y


def _ok_scenes(env):
    got = scenes.shape_scenes(np.int64(2), classes=np.int64(2), size=np.int64(64), objects=(np.int64(1), 2))
    ref = scenes.shape_scenes(2, classes=2, size=64, objects=(1, 2))
    assert torch.equal(got.x, ref.x) and torch.equal(got.y, ref.y)


SCENES = [
    case("error", "scenes", "n-zero", lambda e: scenes.shape_scenes(0), ValueError, "n"),
    case("error", "scenes", "n-float", lambda e: scenes.shape_scenes(2.5), ValueError, "n"),
    case("error", "scenes", "size-not-multiple", lambda e: scenes.shape_scenes(2, size=48), ValueError, "size"),
    case("error", "scenes", "size-small", lambda e: scenes.shape_scenes(2, size=16), ValueError, "size"),
    case("error", "scenes", "gap-large", lambda e: scenes.shape_scenes(2, gap=2.0), ValueError, "gap"),
    case("error", "scenes", "objects-zero", lambda e: scenes.shape_scenes(2, objects=(0, 2)), ValueError, "objects"),
    case("error", "scenes", "objects-reversed", lambda e: scenes.shape_scenes(2, objects=(3, 2)), ValueError,
         "objects"),
    case("error", "scenes", "objects-scalar", lambda e: scenes.shape_scenes(2, objects=3), ValueError, "objects"),
    case("error", "scenes", "object_size-reversed", lambda e: scenes.shape_scenes(2, object_size=(0.5, 0.2)),
         ValueError, "object_size"),
    case("error", "scenes", "object_size-tiny", lambda e: scenes.shape_scenes(2, object_size=(0.01, 0.1)),
         ValueError, "object_size"),
    case("error", "scenes", "object_size-string", lambda e: scenes.shape_scenes(2, object_size="big"), ValueError,
         "object_size"),
    case("error", "scenes", "classes-duplicate", lambda e: scenes.shape_scenes(2, classes=["ring", "ring"]),
         ValueError, "classes"),
    case("error", "scenes", "digit-scenes-n-zero", lambda e: scenes.digit_scenes(0), ValueError, "n"),
    case("error", "DetectionSet", "class-equals-nc", lambda e: DetectionSet(e["sx"], _scene_targets(2), ("a", "b")),
         ValueError, ("y[..., 0]", "0..1", "-1")),
    case("error", "DetectionSet", "class-minus-two", lambda e: DetectionSet(e["sx"], _scene_targets(-2), ("a", "b")),
         ValueError, "y[..., 0]"),
    case("error", "DetectionSet", "class-fraction", lambda e: DetectionSet(e["sx"], _scene_targets(0.5), ("a", "b")),
         ValueError, "y[..., 0]"),
    case("error", "DetectionSet", "classes-duplicate",
         lambda e: DetectionSet(e["sx"], _scene_targets(0), ("a", "a")), ValueError, "classes"),
    case("ok", "scenes", "numpy-numbers", _ok_scenes),
]

CASES = BUILD + GENERATORS + SPLIT + IMAGE_SET + SCENES


@pytest.fixture(scope="module")
def sets():
    return {"data": _set(2, 2), "one": _set(1, 3), "scenes": scenes.shape_scenes(3, classes=2, seed=0)}


@pytest.fixture
def env(sets):
    y = torch.tensor([0, 1, 1, 0])
    return {**sets, "x": torch.rand(4, 3, 8, 8), "y": y, "y_minus": torch.tensor([0, 1, -1, 0]),
            "sx": torch.rand(2, 3, 32, 32)}


@pytest.mark.parametrize("call, kind, expected, names", CASES)
def test_bad_input(env, call, kind, expected, names):
    run_case(env, call, kind, expected, names)
