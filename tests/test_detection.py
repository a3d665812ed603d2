import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import workbench as wb
from workbench import data
from workbench.detection import (
    DetectionLoss,
    assign,
    batched_nms,
    box_iou,
    decode,
    detect_head,
    dfl_loss,
    nms,
    postprocess,
    predict,
)
from workbench.metrics import average_precisions, evaluate_detection, mean_average_precision
from workbench.models import Conv, Detect
from workbench.scenes import EMPTY, DetectionSet, digit_scenes, shape_scenes
from workbench.training import Batches, check_inputs


# ----------------------------------------------------------------------------------------------- scenes
@pytest.mark.parametrize("make", [shape_scenes, digit_scenes])
def test_scenes_are_seeded_and_deterministic(make):
    a, b, c = make(12, seed=1), make(12, seed=1), make(12, seed=2)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert a.x.shape == (12, 3, 64, 64) and a.x.dtype == torch.float32 and 0 <= a.x.min() and a.x.max() <= 1


@pytest.mark.parametrize("make", [shape_scenes, digit_scenes])
def test_boxes_are_valid_disjoint_and_padded(make):
    scenes = make(60, objects=(1, 4), seed=0)
    assert scenes.y.shape == (60, 4, 5)
    counts = (scenes.y[..., 0] != EMPTY).sum(1)
    assert counts.min() >= 1 and counts.max() <= 4 and counts.float().mean() > 2
    for i in range(len(scenes)):
        objects = scenes.objects(i)
        cls, boxes = objects[:, 0], objects[:, 1:]
        assert ((cls >= 0) & (cls < scenes.nc) & (cls == cls.round())).all()
        assert ((boxes >= 0) & (boxes <= 64)).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        iou = box_iou(boxes, boxes)
        assert torch.equal(iou > 0, torch.eye(len(boxes), dtype=torch.bool))
        padding = scenes.y[i, len(objects):]
        assert (padding[:, 0] == EMPTY).all() and (padding[:, 1:] == 0).all()


def test_shape_boxes_are_tight_around_the_painted_pixels():
    scenes = shape_scenes(30, seed=3)  # gap 0: warm shapes (red >= 0.7) on dark backgrounds (red <= 0.25)
    for i in range(len(scenes)):
        painted = scenes.x[i, 0] > 0.5
        covered = torch.zeros_like(painted)
        for _, x1, y1, x2, y2 in scenes.objects(i).long().tolist():
            inside = painted[y1:y2, x1:x2]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y1:y2, x1:x2] = True
        assert not (painted & ~covered).any()


def test_scene_knobs_and_classes():
    three = shape_scenes(20, classes=["ring", "tee", "circle"], objects=(2, 2), object_size=(0.3, 0.3), seed=0)
    assert three.classes == ("ring", "tee", "circle") and three.nc == 3
    assert ((three.y[..., 0] != EMPTY).sum(1) == 2).all()
    sides = torch.cat([three.objects(i)[:, 3:] - three.objects(i)[:, 1:3] for i in range(20)])
    assert sides.max() <= 0.3 * 64 + 2
    assert shape_scenes(3, size=96).x.shape == (3, 3, 96, 96)
    assert digit_scenes(5).classes == data.DIGITS
    near, far = shape_scenes(40, seed=0), shape_scenes(40, seed=0, gap=1.0)
    assert far.x.std((2, 3)).mean() > near.x.std((2, 3)).mean()
    assert (far.x.mean((0, 2, 3)) - near.x.mean((0, 2, 3))).abs().sum() > 0.2


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 48}, "multiple of 32"), ({"objects": (3, 1)}, "objects"), ({"gap": 2.0}, "gap"),
    ({"object_size": (0.05, 0.3)}, "object_size"), ({"n": 0}, "n must be"), ({"classes": ["blob"]}, "unknown"),
])
def test_bad_scene_arguments_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        shape_scenes(**{"n": 2, **kwargs})


def test_split_sends_whole_scenes_to_one_side():
    scenes = shape_scenes(50, seed=0)
    train, val = data.split(scenes, 0.2, seed=0)
    assert isinstance(train, DetectionSet) and (len(train), len(val)) == (40, 10)
    rows = {tuple(x.flatten()[:64].tolist()) for x in torch.cat([train.x, val.x])}
    assert len(rows) == 50
    with pytest.raises(ValueError, match="max_objects"):
        DetectionSet(scenes.x, scenes.y[:, :, :4], scenes.classes)


# ----------------------------------------------------------------------------------------------- boxes and NMS
def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 2, 2]])
    b = torch.tensor([[5.0, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    expected = torch.tensor([[50 / 150, 0, 1], [0, 0, 4 / 100]])
    torch.testing.assert_close(box_iou(a, b), expected)


def test_decode_hand_case():
    raw = torch.zeros(1, 4 + 2, 2, 2)
    raw[0, :4, 1, 0] = torch.log(torch.expm1(torch.tensor(2.5)))  # softplus = 2.5 -> 2 cells each side
    boxes, logits, centres, strides = decode([raw], [8], reg_max=1)
    assert centres[2].tolist() == [4.0, 12.0] and strides.flatten().tolist() == [8.0] * 4
    torch.testing.assert_close(boxes[0, 2], torch.tensor([-12.0, -4.0, 20.0, 28.0]))
    assert logits.shape == (1, 4, 2)


def test_decode_dfl_hand_case():
    """reg_max=16: each side's distance is the expectation over bins 0..15; one-hot bins give whole cells."""
    raw = torch.zeros(1, 4 * 16 + 2, 2, 2)
    raw[0, 0 * 16 + 2, 1, 0] = 50.0  # left: bin 2 alone; top: bins 3 and 4 equally (3.5); right, bottom: uniform
    raw[0, 1 * 16 + 3, 1, 0] = raw[0, 1 * 16 + 4, 1, 0] = 50.0
    boxes, logits, centres, strides = decode([raw], [8], reg_max=16)
    cx, cy = centres[2].tolist()
    expected = torch.tensor([cx - 2 * 8, cy - 3.5 * 8, cx + 7.5 * 8, cy + 7.5 * 8])
    torch.testing.assert_close(boxes[0, 2], expected)
    assert logits.shape == (1, 4, 2)


def test_nms_hand_cases():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60]])
    scores = torch.tensor([0.6, 0.9, 0.8, 0.1])
    assert nms(boxes, scores, 0.7).tolist() == [1, 2, 3]  # the duplicate goes, IoU 0.5 stays
    assert nms(boxes, scores, 0.4).tolist() == [1, 3]
    assert nms(boxes, scores, 0.5).tolist() == [1, 2, 3]  # suppression needs IoU above the threshold
    assert nms(boxes[:0], scores[:0]).tolist() == []
    # a chain: 0 suppresses 1, so 2 (overlapping only 1) survives
    chain = torch.tensor([[0.0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]])
    assert nms(chain, torch.tensor([0.9, 0.8, 0.7]), 0.3).tolist() == [0, 2]
    classes = torch.tensor([0, 1, 1, 0])
    assert batched_nms(boxes, scores, classes, 0.4).tolist() == [1, 0, 3]


boxes_strategy = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 20), st.integers(1, 20),
                                    st.floats(0.01, 1.0), st.integers(0, 2)), min_size=0, max_size=25)


@settings(max_examples=60, deadline=None)
@given(rows=boxes_strategy, threshold=st.sampled_from([0.3, 0.5, 0.7]))
def test_nms_keeps_what_greedy_suppression_keeps(rows, threshold):
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h, _, _ in rows], dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor([s for *_, s, _ in rows], dtype=torch.float32)
    classes = torch.tensor([c for *_, c in rows], dtype=torch.long)
    kept = batched_nms(boxes, scores, classes, threshold).tolist()
    iou = box_iou(boxes, boxes)
    expected = []  # the definition, written out
    for i in sorted(range(len(rows)), key=lambda i: -scores[i].item()):
        if all(classes[i] != classes[j] or iou[i, j] <= threshold for j in expected):
            expected.append(i)
    assert sorted(kept) == sorted(expected)
    assert [scores[i].item() for i in kept] == sorted((scores[i].item() for i in kept), reverse=True)


# ----------------------------------------------------------------------------------------------- mAP
def _pred(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def _truth(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)


A, B, C = [0.0, 0, 10, 10], [20.0, 20, 30, 30], [40.0, 0, 50, 10]


def test_perfect_predictions_score_one():
    truth = [_truth([0, *A], [1, *B]), _truth([0, *C])]
    found = [_pred([*A, 0.9, 0], [*B, 0.8, 1]), _pred([*C, 0.7, 0])]
    assert mean_average_precision(found, truth) == 1.0
    padded = torch.full((2, 3, 5), 0.0)
    padded[..., 0] = -1
    padded[0, :2], padded[1, :1] = truth[0], truth[1]
    assert mean_average_precision(found, padded) == 1.0


def test_one_miss_halves_the_recall():
    truth = [_truth([0, *A], [0, *B])]
    assert mean_average_precision([_pred([*A, 0.9, 0])], truth) == 0.5


def test_duplicates_and_poor_overlaps_are_false_positives():
    truth = [_truth([0, *A], [0, *B])]
    # A 0.9 (TP), A again 0.8 (duplicate: FP), B 0.7 (TP): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    found = [_pred([*A, 0.9, 0], [*A, 0.8, 0], [*B, 0.7, 0])]
    assert mean_average_precision(found, truth) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # a box shifted to IoU 1/3 (< 0.5) ranked first: precision 0, 1/2, 2/3 -> envelope 2/3 everywhere
    shifted = [5.0, 0, 15, 10]
    found = [_pred([*shifted, 0.95, 0], [*A, 0.9, 0], [*B, 0.7, 0])]
    assert mean_average_precision(found, truth) == pytest.approx(2 / 3)
    # at IoU 0.3 the shifted box matches A first and the exact A becomes the duplicate
    assert mean_average_precision(found, truth, iou_threshold=0.3) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # a duplicate ranked below every true positive costs nothing (the envelope)
    found = [_pred([*A, 0.9, 0], [*B, 0.8, 0], [*A, 0.1, 0])]
    assert mean_average_precision(found, truth) == 1.0


def test_classes_are_averaged_and_classes_without_objects_left_out():
    truth = [_truth([0, *A], [1, *B], [1, *C])]
    found = [_pred([*A, 0.9, 0], [*B, 0.8, 1], [*C, 0.6, 2])]  # C predicted as class 2: a false positive
    assert average_precisions(found, truth) == {0: 1.0, 1: 0.5}
    assert mean_average_precision(found, truth) == 0.75
    assert mean_average_precision([_pred()], [_truth([0, *A])]) == 0.0
    with pytest.raises(ValueError, match="images"):
        mean_average_precision([_pred()], [_truth(), _truth()])


def test_matching_is_across_images_by_score():
    truth = [_truth([0, *A]), _truth([0, *A])]
    # image 0: a miss at 0.95 then a hit at 0.5; image 1: a hit at 0.9
    found = [_pred([*B, 0.95, 0], [*A, 0.5, 0]), _pred([*A, 0.9, 0])]
    # ranked: FP, TP, TP -> precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> AP = 2/3
    assert mean_average_precision(found, truth) == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------------- foreign detector
class TinyDetector(nn.Module):
    """A small conv stack with our Detect head on two levels (strides 8 and 16)."""

    def __init__(self, nc: int = 3, reg_max: int = 16):
        super().__init__()
        self.stem = nn.Sequential(Conv(3, 16, 3, 2), Conv(16, 32, 3, 2), Conv(32, 32, 3, 2))
        self.down = Conv(32, 32, 3, 2)
        self.head = Detect(nc, (32, 32), strides=(8, 16), reg_max=reg_max)

    def forward(self, x):
        p3 = self.stem(x)
        return self.head([p3, self.down(p3)])


def test_assigner_gives_every_object_cells_even_thin_ones():
    model = TinyDetector(nc=3)
    targets = torch.tensor([[[2.0, 10, 10, 40, 40], [1.0, 45, 2, 49, 60], [-1.0, 0, 0, 0, 0]]])  # a 4-pixel bar
    boxes, logits, centres, strides = decode(model(torch.zeros(1, 3, 64, 64)), [8, 16], reg_max=16)
    target_boxes, target_scores, foreground = assign(logits.sigmoid(), boxes, centres, strides, targets)
    owners = target_boxes[foreground]
    assert {tuple(b) for b in owners.tolist()} == {(10.0, 10.0, 40.0, 40.0), (45.0, 2.0, 49.0, 60.0)}
    classes = target_scores[foreground].argmax(-1)
    assert set(classes.tolist()) == {1, 2} and (target_scores[~foreground] == 0).all()


def test_loss_decreases_and_fit_reports_map():
    torch.manual_seed(0)
    model = TinyDetector(nc=3)
    scenes = shape_scenes(48, classes=3, seed=0)
    history = wb.fit(model, scenes, scenes.subset(range(16)), epochs=3, batch_size=16, lr=0.003,
                     optimizer="adamw", progress=False)
    assert history.status == "completed"
    assert np.mean(history.loss[-3:]) < 0.8 * np.mean(history.loss[:3])
    assert set(history.val) == {"loss", "mAP50"} and 0.0 <= history.val["mAP50"][-1] <= 1.0
    assert history.val["loss"][-1] < history.val["loss"][0]


def test_dfl_loss_matches_a_hand_reference():
    """Each side's target between two bins: cross-entropy to both, weighted by closeness; the mean of the 4 sides."""
    torch.manual_seed(0)
    raw, target = torch.randn(5, 4 * 16), torch.rand(5, 4) * 18 - 1  # some below 0 and above 15: clamped
    log_p = raw.view(5, 4, 16).log_softmax(-1)
    expected = torch.zeros(5)
    for i in range(5):
        for side in range(4):
            t = min(max(target[i, side].item(), 0.0), 16 - 1.01)
            left = int(t)
            expected[i] -= ((left + 1 - t) * log_p[i, side, left] + (t - left) * log_p[i, side, left + 1]) / 4
    torch.testing.assert_close(dfl_loss(raw, target, 16), expected)
    sharp = torch.full((1, 4 * 16), -30.0)
    sharp[0, [2, 16 + 2, 32 + 2, 48 + 2]] = 30.0
    assert dfl_loss(sharp, torch.full((1, 4), 2.0), 16).item() < 1e-6  # all mass on the target bin: no loss


@pytest.mark.parametrize("reg_max", [1, 16])
def test_detection_loss_is_the_weighted_sum_of_its_parts(reg_max):
    torch.manual_seed(0)
    model = TinyDetector(nc=3, reg_max=reg_max)
    scenes = shape_scenes(4, classes=3, seed=0)
    loss_fn = DetectionLoss(model)
    loss = loss_fn(model(scenes.x), scenes.y)
    parts = loss_fn.last
    expected = 7.5 * parts["box"] + 1.0 * parts["cls"] + (1.5 * parts["dfl"] if reg_max > 1 else 0.0)
    assert set(parts) == ({"box", "cls", "dfl"} if reg_max > 1 else {"box", "cls"}) and parts["box"] > 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_dfl_detector_learns_on_shape_scenes():
    """reg_max=16 (Ultralytics' head): a few seconds of CPU training lift mAP@0.5 well above the untrained 0."""
    torch.manual_seed(0)
    model = TinyDetector(nc=2)
    train, val = shape_scenes(64, classes=2, seed=0), shape_scenes(32, classes=2, seed=100)
    untrained = evaluate_detection(model, Batches(val, 32, shuffle=False))["mAP50"]
    history = wb.fit(model, train, val, epochs=6, batch_size=8, lr=0.003, optimizer="adamw", progress=False)
    assert detect_head(model).reg_max == 16 and untrained <= 0.05
    assert history.val["mAP50"][-1] >= 0.25 + untrained  # 0.66 on this seed; 0.41 to 0.66 over seeds 0-3


def test_predict_and_evaluate_on_a_foreign_detector():
    model = TinyDetector(nc=2).train()
    images = torch.rand(3, 3, 64, 64)
    found = predict(model, images, conf=0.0, iou=0.5, max_det=7)
    assert model.training and len(found) == 3
    for rows in found:
        assert rows.shape[1] == 6 and len(rows) <= 7
        assert (rows[:, :4] >= 0).all() and (rows[:, :4] <= 64).all() and (rows[:, 5] < 2).all()
        assert torch.equal(rows[:, 4], rows[:, 4].sort(descending=True).values)
    model.eval()
    same = postprocess(model(images), [8, 16], (64, 64), conf=0.0, iou=0.5, max_det=7, reg_max=16)
    assert all(torch.equal(a, b) for a, b in zip(found, same))
    scenes = shape_scenes(8, classes=2, seed=0)
    result = wb.evaluate(model, Batches(scenes, 4, shuffle=False))
    assert result == evaluate_detection(model, Batches(scenes, 4, shuffle=False))
    assert set(result) == {"loss", "mAP50"}


def test_detection_targets_are_checked_against_the_class_count():
    scenes = shape_scenes(6, classes=3, seed=0)
    check_inputs(wb.build_model("n", "detect", nc=3), scenes)  # -1 padding is not a class
    with pytest.raises(ValueError, match="nc=3"):
        check_inputs(wb.build_model("n", "detect", nc=2), scenes)
    with pytest.raises(ValueError, match="Detect head"):
        DetectionLoss(nn.Linear(2, 2))


# ----------------------------------------------------------------------------------------------- transfer 10 -> 3
def test_detector_transfer_10_to_3_keeps_backbone_and_neck_and_rows_by_name():
    torch.manual_seed(0)
    source = wb.build_model("n", "detect", nc=10)
    wb.fit(source, shape_scenes(16, seed=0), epochs=1, batch_size=8, optimizer="adamw", lr=0.002, progress=False)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    target_names = ("circle", "halfdisk", "tee")  # circle is a source class, the other two are new
    target = wb.build_model("n", "detect", nc=3)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}

    plain = wb.transfer(source, wb.build_model("n", "detect", nc=3), dry_run=True)
    lines = str(plain).splitlines()
    assert lines[0] == "Transferred 349/355 items from pretrained weights  (dry run: nothing loaded)"
    assert "Items: 184 parameters + 171 buffers (57 num_batches_tracked)" in lines  # + dfl.conv.weight
    class_keys = {f"layers.22.cv3.{i}.2.{p}" for i in range(3) for p in ("weight", "bias")}
    assert {r.name for r in plain.where("shape_mismatch")} == class_keys  # 355 - 349 = 6: nc outputs on 3 levels
    for layer in plain.by_layer():
        if layer.stage in ("backbone", "neck"):
            assert layer.transferred == layer.items and layer.coverage == 1.0
    head = [layer for layer in plain.by_layer() if layer.stage == "head"][0]
    assert (head.items, head.transferred, head.shape_mismatch) == (85, 79, 6)

    report = wb.transfer(source, target, class_names=(data.SOURCE_CLASSES, target_names))
    assert str(report).splitlines()[0] == "Transferred 349/355 items from pretrained weights"
    assert {r.name for r in report.where("partial")} == class_keys
    state = target.state_dict()
    for key in class_keys:
        torch.testing.assert_close(state[key][0], before[key][0])  # circle: row 0 in both
        torch.testing.assert_close(state[key][1:], fresh[key][1:])  # new classes: fresh initialisation
    box_branch = [k for k in state if k.startswith("layers.22.cv2.")]
    assert box_branch and all(torch.equal(state[k], before[k]) for k in box_branch)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in before.items())  # the source is unchanged
    assert detect_head(target).nc == 3
