"""Real Ultralytics models (``ultralytics.nn.tasks``, built from its YAMLs, no download) meet the workbench's.

Skipped without ultralytics; CI runs this file with ``PYTHONPATH=build/ultralytics`` and
``WB_REQUIRE_ULTRALYTICS=1`` (fail instead of skip), as ``tests/test_yolo_checkpoints.py``.
"""

import pytest
import torch

import workbench as wb


def test_yolov8n_cls_fills_the_workbench_classifier_with_no_layer_map(tasks):
    torch.manual_seed(0)
    source = tasks.ClassificationModel("yolov8n-cls.yaml", nc=3, verbose=False)
    model = wb.build_model("n", task="classify", nc=3)
    report = wb.transfer(source, model)
    assert report.headline == "Transferred 158/158 items from pretrained weights" and not report.where("unused")
    assert report.layout == "source layout: Ultralytics (model.{i} → layers.{i})"
    state = model.state_dict()
    assert all(torch.equal(state["layers." + k[len("model."):]], v) for k, v in source.state_dict().items())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # the same weights give the same class scores (Ultralytics' eval output is the softmax)
        theirs = source.eval()(x)
        torch.testing.assert_close(model.eval()(x).softmax(1), theirs[0] if isinstance(theirs, tuple) else theirs)


def test_the_workbench_classifier_fills_yolov8n_cls(tasks):
    torch.manual_seed(0)
    source, target = wb.build_model("n", task="classify", nc=3), tasks.ClassificationModel("yolov8n-cls.yaml", nc=3,
                                                                                              verbose=False)
    report = wb.transfer(source, target)
    assert report.headline == "Transferred 158/158 items from pretrained weights"
    assert report.layout == "source layout: workbench (layers.{i} → model.{i})"


@pytest.mark.parametrize("yaml, n_backbone, n_layers", [("yolov8n.yaml", 10, 23), ("yolo11n.yaml", 11, 24)])
def test_an_ultralytics_detector_has_a_neck(tasks, yaml, n_backbone, n_layers):
    """Stages from the model's YAML: its backbone list, then the head list's layers (neck), the last one the head."""
    model = tasks.DetectionModel(yaml, nc=3, verbose=False)
    stages = [layer.stage for layer in wb.numbered_layers(model)]
    assert stages == ["backbone"] * n_backbone + ["neck"] * (n_layers - n_backbone - 1) + ["head"]
    ledger = wb.transfer(model, tasks.DetectionModel(yaml, nc=3, verbose=False), dry_run=True)
    assert [layer.stage for layer in ledger.layers] == stages  # what the ledger's per-layer table shows
    assert [r.stage for r in wb.layer_table(model)] == stages
