"""Lesson 6 experiments: the primitives on a model the workbench did not define."""
import ast
import importlib
import importlib.util
import inspect
import types

import pytest
import torch
from foreign_models import TinyResNet as ConftestResNet
from torch import nn

from workbench import numbered_layers
from workbench.experiments import own_model, tiny_resnet
from workbench.freezing import bn_policy
from workbench.schedules import YoloSchedule


@pytest.fixture(scope="module")
def source():
    return own_model.pretrain_own(own_model.SOURCE_RECIPE.replace(epochs=1, batch_size=6), n_per_class=3)


@pytest.fixture(scope="module")
def target():
    return own_model.target_task(4)  # 6 training and 6 validation images


def test_tiny_resnet_is_plain_pytorch_with_torchvision_names():
    tree = ast.parse(inspect.getsource(tiny_resnet))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and node.module}
    assert imported <= {"torch", "__future__"}
    model = own_model.build(3)
    assert [layer.name for layer in numbered_layers(model)] == [
        "conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc"]
    assert [layer.stage for layer in numbered_layers(model)][-1] == "head"
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert model.layer2.downsample is not None and model.layer1.downsample is None


def test_tasks_are_seeded_and_disjoint():
    train, val = own_model.target_task(4)
    assert (len(train), len(val)) == (6, 6)
    assert set(train.classes).isdisjoint(own_model.SOURCE_CLASSES)
    again, _ = own_model.target_task(4)
    assert torch.equal(train.x, again.x)
    source_train, _ = own_model.source_task(4)
    assert source_train.classes == own_model.SOURCE_CLASSES and len(source_train) == 18


def test_fit_options_group_every_parameter_once_with_the_head_faster():
    model = own_model.build(3)
    options = own_model.fit_options(model, own_model.OWN_RECIPE.replace(lr=0.02), head_mult=10)
    assert (options["epochs"], options["batch_size"], "lr" in options) == (6, 10, False)
    groups = options["optimizer"].param_groups
    assert isinstance(options["optimizer"], torch.optim.AdamW)
    placed = [id(p) for g in groups for p in g["params"]]
    assert sorted(placed) == sorted(id(p) for p in model.parameters())
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"weight": 0.02, "norm": 0.02, "bias": 0.02, "weight/head": pytest.approx(0.2),
                   "bias/head": pytest.approx(0.2)}
    assert {n for g in groups if g["name"].endswith("/head") for n in g["names"]} == {"fc.weight", "fc.bias"}
    schedule = options["schedule"]
    assert schedule == YoloSchedule("ultralytics", warmup_epochs=own_model.WARMUP_EPOCHS, warmup_bias_lr=0.0)


def test_pretrain_own_is_seeded(source):
    again = own_model.pretrain_own(own_model.SOURCE_RECIPE.replace(epochs=1, batch_size=6), n_per_class=3)
    assert source.classes == own_model.SOURCE_CLASSES and source.model.fc.out_features == 6
    assert source.steps == 2  # 3 per class of 6 classes, 75 % for training: 12 images in batches of 6
    for (name, a), b in zip(source.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert 0.0 <= source.val_accuracy <= 1.0 and "source validation accuracy" in str(source)


def test_start_model_transfers_all_but_the_class_layer_and_freezes(source):
    state = source.model.state_dict()
    scratch = own_model.start_model("scratch", source, 3)
    pretrained = own_model.start_model("pretrained", source, 3)
    frozen = own_model.start_model("frozen", source, 3, depth=5, bn="eval")
    for name, tensor in pretrained.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, state[name]), name
    assert not torch.equal(scratch.conv1.weight, state["conv1.weight"])
    assert torch.equal(scratch.fc.weight, pretrained.fc.weight), "same seed: the fresh head starts alike"
    trainable = {name for name, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in frozen.named_parameters() if name.startswith(("layer3.", "fc."))}
    assert bn_policy(frozen.layer2.bn2) == "eval" and bn_policy(frozen.layer3.bn2) is None
    frozen.train()
    assert not frozen.bn1.training and frozen.layer3.bn1.training
    with pytest.raises(ValueError, match="choose one of"):
        own_model.start_model("linear probe", source, 3)


def test_fine_tune_reports_each_run(source, target):
    train, val = target
    result = own_model.fine_tune(source, train, val, own_model.OWN_RECIPE.replace(epochs=2, batch_size=3))
    assert [r.run for r in result.rows] == ["scratch", "pretrained", "frozen"]
    for row in result.rows:
        history = result.histories[row.run]
        accuracy = history.val["accuracy"]
        assert (row.steps, row.first_val_accuracy, row.best_val_accuracy) == (4, accuracy[0], max(accuracy))
        assert row.trainable == sum(p.numel() for p in result.models[row.run].parameters() if p.requires_grad)
    assert result.row("frozen").trainable < result.row("pretrained").trainable == 19_723
    frozen = result.histories["frozen"]
    rows = [k for k, name in enumerate(frozen.layer_names) if name in ("conv1", "bn1", "layer1", "layer2")]
    assert len(rows) == 4 and all(step[k] == 0 for step in frozen.layer_grad_norms for k in rows)
    assert "frozen" in str(result) and "<caption>" in result._repr_html_()
    with pytest.raises(ValueError, match="no run"):
        result.row("staged")


def test_fine_tune_rejects_an_unknown_run_before_training(source, target):
    with pytest.raises(ValueError, match="choose from"):
        own_model.fine_tune(source, *target, runs=["scratch", "staged"])


def test_fine_tune_takes_any_model_and_a_state_dict(target):
    train, val = target
    torch.manual_seed(0)
    state = ConftestResNet(num_classes=6).state_dict()
    result = own_model.fine_tune(state, train, val, build=lambda nc: ConftestResNet(num_classes=nc), runs=["frozen"],
                                 depth=4, recipe=own_model.OWN_RECIPE.replace(epochs=1, batch_size=3))
    model = result.models["frozen"]
    assert torch.equal(model.layer1.conv1.weight, state["layer1.conv1.weight"])
    assert [p.requires_grad for p in model.layer3.parameters()] == [True] * len(list(model.layer3.parameters()))
    assert not model.layer2.conv1.weight.requires_grad


def test_library_model_says_how_to_install_a_missing_library(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install timm"):
        own_model.library_model("timm")
    with pytest.raises(ValueError, match="choose one of"):
        own_model.library_model("keras")


def test_a_library_installed_for_another_torch_is_reported_not_raised(monkeypatch):
    def broken(name):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(importlib, "import_module", broken)
    assert own_model.library_available("torchvision") is False
    assert "does not load" in own_model.library_problem("torchvision")
    with pytest.raises(ValueError, match="does not load"):
        own_model.library_model("torchvision")


def test_library_model_never_asks_for_downloaded_weights(monkeypatch):
    calls = {}

    def resnet18(**kwargs):
        calls.update(kwargs)
        return nn.Linear(2, kwargs["num_classes"])

    fake = types.SimpleNamespace(resnet18=resnet18)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(importlib, "import_module", lambda name: fake)
    model = own_model.library_model("torchvision", nc=4)
    assert calls == {"weights": None, "num_classes": 4} and model.out_features == 4
