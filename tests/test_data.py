import pytest
import torch

from workbench import data


def test_shapes_are_seeded_and_deterministic():
    a, b, c = data.shapes(20, seed=1), data.shapes(20, seed=1), data.shapes(20, seed=2)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_shapes_source_task_has_ten_balanced_classes():
    ds = data.shapes(7)
    assert ds.classes == data.SOURCE_CLASSES and len(ds.classes) == 10
    assert ds.x.shape == (70, 3, 32, 32) and ds.x.dtype == torch.float32
    assert torch.bincount(ds.y).tolist() == [7] * 10
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0


def test_target_tasks_by_count_or_names():
    assert data.shapes(3, classes=4).classes == data.SHAPES[:4]
    ds = data.shapes(3, classes=["tee", "ring"], size=48)
    assert ds.classes == ("tee", "ring") and ds.x.shape == (6, 3, 48, 48)
    assert len(data.SHAPES) >= 12


def test_every_shape_class_is_drawn_and_distinct():
    ds = data.shapes(1, classes=len(data.SHAPES), seed=0, size=32)
    foreground = (ds.x - ds.x.mean((2, 3), keepdim=True)).abs().sum((1, 2, 3))
    assert (foreground > 1).all()


def test_domain_gap_moves_the_image_statistics():
    near, far = data.shapes(30, seed=0, gap=0.0), data.shapes(30, seed=0, gap=1.0)
    mid = data.shapes(30, seed=0, gap=0.5)
    d_mid = (mid.x.mean((0, 2, 3)) - near.x.mean((0, 2, 3))).abs().sum()
    d_far = (far.x.mean((0, 2, 3)) - near.x.mean((0, 2, 3))).abs().sum()
    assert 0.05 < d_mid < d_far
    assert far.x.std((2, 3)).mean() > near.x.std((2, 3)).mean()  # texture and noise


def test_digits_are_real_and_resized():
    ds = data.digits(size=16)
    assert len(ds) == 1797 and ds.x.shape[1:] == (3, 16, 16) and ds.classes == data.DIGITS
    grey = data.digits(5, channels=1, seed=3)
    assert grey.x.shape == (50, 1, 32, 32) and torch.bincount(grey.y).tolist() == [5] * 10
    assert torch.equal(grey.x, data.digits(5, channels=1, seed=3).x)


def test_split_is_stratified_and_disjoint():
    ds = data.shapes(10, classes=3)
    train, val = data.split(ds, 0.3, seed=0)
    assert len(train) + len(val) == len(ds)
    assert torch.bincount(val.y).tolist() == [3, 3, 3]
    rows = {tuple(x.flatten()[:50].tolist()) for x in torch.cat([train.x, val.x])}
    assert len(rows) == len(ds)


@pytest.mark.parametrize("call, message", [
    (lambda: data.shapes(0), "n_per_class"),
    (lambda: data.shapes(5, classes=["hexagon"]), "choose from"),
    (lambda: data.shapes(5, classes=13), "between 1 and 12"),
    (lambda: data.shapes(5, gap=2.0), "gap must be"),
    (lambda: data.digits(500), "<= 174"),
    (lambda: data.digits(5, channels=2), "channels must be 1 or 3"),
    (lambda: data.split(data.shapes(2), 1.5), "val_fraction"),
])
def test_bad_data_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
