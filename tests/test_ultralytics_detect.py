"""The workbench's detector against Ultralytics' own (``ultralytics.nn.tasks``, built from yolov8n.yaml, no download).

Same tensors, same forward pass, the same DFL loss; class rows by name on every level of both
heads; ``fit`` on an Ultralytics ``DetectionModel``. Skipped without ultralytics; CI runs this
file with ``PYTHONPATH=build/ultralytics`` and ``WB_REQUIRE_ULTRALYTICS=1`` (fail instead of skip).
"""
import numpy as np
import pytest
import torch

import workbench as wb
from workbench.detection import ciou, decode, detect_head, dfl_loss, predict
from workbench.models import YOLO
from workbench.scenes import shape_scenes
from workbench.training import Batches

CLASS_CONVS = [f"22.cv3.{i}.2.{p}" for i in range(3) for p in ("weight", "bias")]


@pytest.fixture(scope="module")
def yolov8n_80(tasks):
    torch.manual_seed(0)
    return tasks.DetectionModel("yolov8n.yaml", nc=80, verbose=False)


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights and BatchNorm statistics away from their initial values, so equality means something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and "dfl" not in name:
                noise = torch.randn(tensor.shape, generator=generator)
                tensor.copy_(tensor.abs() + 0.5 + 0.1 * noise.abs() if "running_var" in name else
                             tensor + 0.1 * noise)
    return model


def test_yolov8n_fills_the_workbench_detector_tensor_for_tensor(tasks, yolov8n_80):
    """80 classes: every entry fits, the DFL bins too; 80 -> 3 counts what Ultralytics' intersect_dicts counts."""
    from ultralytics.utils.torch_utils import intersect_dicts

    state = yolov8n_80.state_dict()
    same = wb.build_model("n", "detect", nc=80)
    assert wb.transfer(state, same).headline == f"Transferred {len(state)}/{len(state)} items from pretrained weights"
    assert len(state) == 355 and all(torch.equal(same.state_dict()["layers." + k[6:]], v) for k, v in state.items())

    report = wb.transfer(state, wb.build_model("n", "detect", nc=3))
    theirs = intersect_dicts(state, tasks.DetectionModel("yolov8n.yaml", nc=3, verbose=False).state_dict())
    assert report.headline == f"Transferred {len(theirs)}/355 items from pretrained weights" == \
        "Transferred 319/355 items from pretrained weights"
    # the class branch is max(64, min(nc, 100)) wide: 80 at 80 classes, 64 at 3, so its hidden convs differ too
    missed = {r.name for r in report.where("shape_mismatch")}
    assert missed == {"layers." + k[6:] for k in state if k not in theirs}
    assert all(name.startswith("layers.22.cv3.") for name in missed) and report.counts["shape_mismatch"] == 36


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_eval_output_equals_ultralytics_with_the_same_weights(tasks, size):
    torch.manual_seed(0)
    theirs = _randomised(tasks.DetectionModel("yolov8n.yaml", nc=3, verbose=False)).eval()
    ours = wb.build_model("n", "detect", nc=3)
    assert wb.transfer(theirs, ours).n_transferred == len(theirs.state_dict()) == 355
    boxes = _assert_same_output(ours, theirs, torch.rand(2, 3, *size))
    assert boxes.shape[1] == sum((size[0] // s) * (size[1] // s) for s in (8, 16, 32))


def _assert_same_output(ours, theirs, x) -> torch.Tensor:
    """The workbench's decoded boxes (xyxy) and scores equal Ultralytics' eval output (xywh, sigmoid scores)."""
    with torch.no_grad():
        decoded, _ = theirs.eval()(x)  # (B, 4 + nc, A): xywh boxes in pixels, sigmoid scores
        boxes, logits, _, _ = decode(ours.eval()(x), detect_head(ours).stride.tolist(), reg_max=16)
    xywh, scores = decoded.transpose(1, 2).split((4, decoded.shape[1] - 4), -1)
    xyxy = torch.cat([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], -1)
    torch.testing.assert_close(boxes, xyxy, atol=1e-3, rtol=1e-5)  # pixels
    torch.testing.assert_close(logits.sigmoid(), scores, atol=1e-5, rtol=1e-5)
    assert (boxes[..., 2:] - boxes[..., :2]).std() > 1.0  # the bins are far from uniform: a real check
    return boxes


def test_dfl_matches_ultralytics_bbox_loss(tasks):
    """Ultralytics' DFLoss / BboxLoss on the same tensors: the DFL term in grid cells, CIoU in pixels or cells."""
    from ultralytics.utils.loss import BboxLoss, DFLoss

    torch.manual_seed(0)
    raw, target = torch.randn(7, 64), torch.rand(7, 4) * 17
    expected = DFLoss(16)(raw.view(-1, 16), target.clone())  # (7, 1): the mean over the four sides
    torch.testing.assert_close(dfl_loss(raw, target, 16), expected.view(-1))

    anchors = torch.rand(1, 7, 2) * 8 + 2  # grid cells, one image of 7 cells
    stride = torch.full((7, 1), 8.0)
    pred = anchors.repeat(1, 1, 2) + torch.cat([-torch.rand(1, 7, 2) * 3, torch.rand(1, 7, 2) * 3], -1)
    goal = anchors.repeat(1, 1, 2) + torch.cat([-torch.rand(1, 7, 2) * 5, torch.rand(1, 7, 2) * 5], -1)
    scores, fg = torch.rand(1, 7, 3), torch.tensor([[True, True, False, True, True, True, False]])
    total = scores.sum()
    box, dfl = BboxLoss(16)(raw.view(1, 7, 64), pred, anchors[0], goal, scores, total, fg, torch.tensor([64.0, 64.0]),
                            stride)
    weight = scores.sum(-1)[fg]
    distances = torch.cat([anchors - goal[..., :2], goal[..., 2:] - anchors], -1)[fg]
    ours = (dfl_loss(raw.view(1, 7, 64)[fg], distances, 16) * weight).sum() / total
    torch.testing.assert_close(ours, dfl)
    overlap = ciou(pred[fg] * 8, goal[fg] * 8)  # the workbench's CIoU, in pixels
    torch.testing.assert_close(((1 - overlap) * weight).sum() / total, box)


def test_class_rows_by_name_on_every_level_of_both_heads(tasks):
    """10 -> 3 classes (the class branch 64 wide in both): rows by name on cv3.0.2, cv3.1.2 and cv3.2.2 alike."""
    torch.manual_seed(0)
    source = _randomised(tasks.DetectionModel("yolov8n.yaml", nc=10, verbose=False))
    names, target_names = [f"class{i}" for i in range(10)], ["class5", "new", "class0"]
    for target in (wb.build_model("n", "detect", nc=3), tasks.DetectionModel("yolov8n.yaml", nc=3, verbose=False)):
        prefix = "layers." if isinstance(target, YOLO) else "model."
        fresh = {k: v.clone() for k, v in target.state_dict().items()}
        report = wb.transfer(source, target, class_names=(names, target_names))
        rows = {r.name: r for r in report.where("partial")}
        assert set(rows) == {prefix + k for k in CLASS_CONVS}  # all three levels, weight and bias
        assert {r.note for r in rows.values()} == {"2/3 class rows copied by name"}
        state, given = target.state_dict(), source.state_dict()
        for key in CLASS_CONVS:
            torch.testing.assert_close(state[prefix + key][[0, 2]], given["model." + key][[5, 0]])
            torch.testing.assert_close(state[prefix + key][1], fresh[prefix + key][1])  # "new": fresh
    back = wb.transfer(wb.build_model("n", "detect", nc=3), tasks.DetectionModel("yolov8n.yaml", nc=2, verbose=False),
                       class_names=(["a", "b", "c"], ["c", "a"]), dry_run=True)
    assert {r.name for r in back.where("partial")} == {"model." + k for k in CLASS_CONVS}


def test_fit_trains_an_ultralytics_detection_model(tasks):
    torch.manual_seed(0)
    model = tasks.DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    scenes = shape_scenes(48, classes=2, seed=0)
    history = wb.fit(model, scenes, scenes.subset(range(16)), epochs=3, batch_size=8, lr=0.002, optimizer="adamw",
                     progress=False)
    assert history.status == "completed" and set(history.val) == {"loss", "mAP50"}
    per_epoch = [np.mean(history.loss[e * 6:(e + 1) * 6]) for e in range(3)]
    assert per_epoch[-1] < 0.85 * per_epoch[0]  # 10.9 -> 7.7 on this seed
    assert history.val["loss"][-1] < 0.8 * history.val["loss"][0]  # 4.9 -> 3.2: the workbench's loss, eval mode
    result = wb.evaluate(model, Batches(scenes.subset(range(16)), 8, shuffle=False))
    assert result["loss"] == pytest.approx(history.val["loss"][-1]) and 0.0 <= result["mAP50"] <= 1.0
    found = predict(model, scenes.x[:2], conf=0.0)
    assert len(found) == 2 and found[0].shape[1] == 6 and model.training  # predict restores the mode


@pytest.mark.parametrize("build, what", [
    (lambda t: t.SegmentationModel("yolov8n-seg.yaml", nc=2, verbose=False), "segmentation"),
    (lambda t: t.DetectionModel("yolov10n.yaml", nc=2, verbose=False), "end-to-end"),
])
def test_fit_refuses_heads_it_cannot_train_and_says_what_it_can(tasks, build, what):
    model = build(tasks)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=f"{what}.*Supported detection heads: .*yolov8n.yaml"):
        wb.fit(model, shape_scenes(8, classes=2, seed=0), epochs=1, batch_size=8, progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing changed


def test_a_yolov8n_file_fills_the_workbench_detector_and_detects_the_same(tasks, tmp_path):
    """An Ultralytics-format ``.pt`` (EMA in half precision, as training saves it), read without running it."""
    from test_yolo_checkpoints import ultralytics_checkpoint

    torch.manual_seed(0)
    theirs = _randomised(tasks.DetectionModel("yolov8n.yaml", nc=3, verbose=False), seed=1).eval()
    path = tmp_path / "yolov8n_shapes.pt"
    torch.save(ultralytics_checkpoint(theirs), path)
    ours = wb.build_model("n", "detect", nc=3)
    assert wb.transfer(path, ours).headline == "Transferred 355/355 items from pretrained weights"
    _assert_same_output(ours, theirs.half().float(), torch.rand(2, 3, 64, 96))  # the values the file holds
