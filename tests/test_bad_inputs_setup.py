"""Bad inputs to freezing, parameter groups and schedules: refused clearly, the model and optimizer unchanged."""
import copy

import numpy as np
import pytest
import torch
from foreign_models import TinyResNet
from unchanged import case, model_state, run_case, same

import workbench as wb
from workbench.freezing import freeze, set_freeze_depth, unfreeze
from workbench.optim import make_optimizer, param_groups
from workbench.schedules import CosineWarmup, OneCycle, YoloSchedule


def _ok_numpy_depth(e):
    twin = copy.deepcopy(e["model"])
    assert freeze(e["model"], depth=np.int64(3)).changed == freeze(twin, depth=3).changed
    assert set_freeze_depth(e["model"], np.int32(1)).tensors == set_freeze_depth(twin, 1).tensors
    assert same(model_state(e["model"]), model_state(twin))


def _clash(e):
    freeze(e["frozen"], depth=2, bn="frozen")  # frozen holds depth=2, bn="eval" already


FREEZE = [
    case("error", "freeze", "depth-negative", lambda e: freeze(e["model"], -1), ValueError, "depth"),
    case("error", "freeze", "depth-too-large", lambda e: freeze(e["model"], 100), ValueError, ("depth", "0..10")),
    case("error", "freeze", "depth-float", lambda e: freeze(e["model"], 2.5), ValueError, "depth"),
    case("error", "freeze", "depth-string", lambda e: freeze(e["model"], "3"), ValueError, "depth"),
    case("error", "freeze", "depth-bool", lambda e: freeze(e["model"], True), ValueError, "depth"),
    case("error", "freeze", "depth-everything", lambda e: freeze(e["model"], 10), ValueError,
         ("no trainable parameter", "depth <= 9")),
    case("error", "freeze", "layers-unknown", lambda e: freeze(e["model"], layers=[99]), ValueError,
         ("layer index 99", "0..9")),
    case("error", "freeze", "layers-empty", lambda e: freeze(e["model"], layers=[]), ValueError, "layers=[]"),
    case("error", "freeze", "layers-string", lambda e: freeze(e["model"], layers="0"), ValueError, "layers"),
    case("error", "freeze", "layers-float", lambda e: freeze(e["model"], layers=[1.5]), ValueError, "1.5"),
    case("error", "freeze", "patterns-no-match", lambda e: freeze(e["model"], patterns="backbone.*"), ValueError,
         ("pattern 'backbone.*'", "layers.0")),
    case("error", "freeze", "patterns-empty-string", lambda e: freeze(e["model"], patterns=[""]), ValueError,
         "patterns"),
    case("error", "freeze", "bn-unknown", lambda e: freeze(e["model"], 2, bn="bogus"), ValueError, ("bn", "eval")),
    case("error", "freeze", "bn-not-string", lambda e: freeze(e["model"], 2, bn=["eval"]), ValueError, "bn"),
    case("error", "freeze", "depth-and-layers", lambda e: freeze(e["model"], 2, layers=[1]), ValueError,
         ("depth", "layers")),
    case("error", "freeze", "no-selection", lambda e: freeze(e["model"]), ValueError, "depth="),
    case("error", "freeze", "model-state-dict", lambda e: freeze(e["model"].state_dict(), 2), ValueError, "model"),
    case("error", "freeze", "bn-policy-clash", _clash, ValueError, ("bn='eval'", "unfreeze")),
    case("error", "freeze", "foreign-depth-too-large", lambda e: freeze(e["resnet"], 99), ValueError, "depth"),
    case("error", "freeze", "foreign-everything", lambda e: freeze(e["resnet"], patterns="*"), ValueError,
         "no trainable parameter"),
    case("ok", "freeze", "numpy-depth", _ok_numpy_depth),
    case("error", "unfreeze", "layers-unknown", lambda e: unfreeze(e["frozen"], layers=[42]), ValueError, "42"),
    case("error", "unfreeze", "depth-negative", lambda e: unfreeze(e["frozen"], -2), ValueError, "depth"),
    case("error", "unfreeze", "patterns-no-match", lambda e: unfreeze(e["frozen"], patterns="nothing*"), ValueError,
         "pattern"),
    case("error", "unfreeze", "model-none", lambda e: unfreeze(None), ValueError, "model"),
    case("error", "set_freeze_depth", "depth-negative", lambda e: set_freeze_depth(e["frozen"], -1), ValueError,
         "depth"),
    case("error", "set_freeze_depth", "depth-too-large", lambda e: set_freeze_depth(e["frozen"], 11), ValueError,
         "depth"),
    case("error", "set_freeze_depth", "depth-everything", lambda e: set_freeze_depth(e["frozen"], 10), ValueError,
         ("depth 10", "no trainable")),
    case("error", "set_freeze_depth", "depth-float", lambda e: set_freeze_depth(e["frozen"], 2.0), ValueError,
         "depth"),
    case("error", "set_freeze_depth", "bn-unknown", lambda e: set_freeze_depth(e["frozen"], 3, bn="x"), ValueError,
         "bn"),
    case("error", "set_freeze_depth", "model-list", lambda e: set_freeze_depth([e["model"]], 3), ValueError, "model"),
]


def _ok_numpy_groups(e):
    got = param_groups(e["model"], np.float32(0.01), np.float64(5e-4), lr_mult={np.int64(9): 10})
    ref = param_groups(e["model"], 0.01, 5e-4, lr_mult={9: 10})
    assert [(g["name"], g["lr"], g["weight_decay"], g["names"]) for g in got] == \
           [(g["name"], pytest.approx(g["lr"]), pytest.approx(g["weight_decay"]), g["names"]) for g in ref]


GROUPS = [
    case("error", "param_groups", "lr-zero", lambda e: param_groups(e["model"], 0), ValueError, "lr"),
    case("error", "param_groups", "lr-negative", lambda e: param_groups(e["model"], -0.01), ValueError, "lr"),
    case("error", "param_groups", "lr-nan", lambda e: param_groups(e["model"], float("nan")), ValueError, "lr"),
    case("error", "param_groups", "lr-inf", lambda e: param_groups(e["model"], float("inf")), ValueError, "lr"),
    case("error", "param_groups", "lr-string", lambda e: param_groups(e["model"], "0.01"), ValueError, "lr"),
    case("error", "param_groups", "lr-bool", lambda e: param_groups(e["model"], True), ValueError, "lr"),
    case("error", "param_groups", "lr-none", lambda e: param_groups(e["model"], None), ValueError, "lr"),
    case("error", "param_groups", "lr-slice-step", lambda e: param_groups(e["model"], slice(1e-3, 1e-2, 2)),
         ValueError, "slice"),
    case("error", "param_groups", "lr-slice-negative", lambda e: param_groups(e["model"], slice(-1e-3)), ValueError,
         "slice"),
    case("error", "param_groups", "weight_decay-negative", lambda e: param_groups(e["model"], 0.01, -5e-4),
         ValueError, "weight_decay"),
    case("error", "param_groups", "weight_decay-nan", lambda e: param_groups(e["model"], 0.01, float("nan")),
         ValueError, "weight_decay"),
    case("error", "param_groups", "weight_decay-string", lambda e: param_groups(e["model"], 0.01, "5e-4"),
         ValueError, "weight_decay"),
    case("error", "param_groups", "lr_mult-unknown-stage",
         lambda e: param_groups(e["model"], 0.01, lr_mult={"neck": 10}), ValueError, ("lr_mult", "'neck'", "head")),
    case("error", "param_groups", "lr_mult-unknown-layer",
         lambda e: param_groups(e["model"], 0.01, lr_mult={99: 10}), ValueError, ("lr_mult", "99")),
    case("error", "param_groups", "lr_mult-zero", lambda e: param_groups(e["model"], 0.01, lr_mult={"head": 0}),
         ValueError, "'head'"),
    case("error", "param_groups", "lr_mult-mixed", lambda e: param_groups(e["model"], 0.01, lr_mult={"head": 10, 1: 2}),
         ValueError, "lr_mult"),
    case("error", "param_groups", "lr_mult-list", lambda e: param_groups(e["model"], 0.01, lr_mult=[10]), ValueError,
         "lr_mult"),
    case("error", "param_groups", "lr_mult-float-key", lambda e: param_groups(e["model"], 0.01, lr_mult={1.5: 2}),
         ValueError, "lr_mult"),
    case("error", "param_groups", "layer_decay-zero", lambda e: param_groups(e["model"], 0.01, layer_decay=0),
         ValueError, "layer_decay"),
    case("error", "param_groups", "layer_decay-large", lambda e: param_groups(e["model"], 0.01, layer_decay=1.5),
         ValueError, "layer_decay"),
    case("error", "param_groups", "model-state-dict", lambda e: param_groups(e["model"].state_dict(), 0.01),
         ValueError, "model"),
    case("error", "param_groups", "model-without-parameters", lambda e: param_groups(torch.nn.ReLU(), 0.01),
         ValueError, "no parameters"),
    case("ok", "param_groups", "numpy-numbers", _ok_numpy_groups),
    case("error", "make_optimizer", "name-unknown", lambda e: make_optimizer(e["model"], "adam"), ValueError,
         ("'adam'", "adamw")),
    case("error", "make_optimizer", "weight_decay-negative",
         lambda e: make_optimizer(e["model"], "sgd", weight_decay=-1.0), ValueError, "weight_decay"),
    case("error", "make_optimizer", "lr-negative", lambda e: make_optimizer(e["model"], "sgd", lr=-0.1), ValueError,
         "lr"),
]


def _ok_numpy_preview(e):
    got = YoloSchedule("ultralytics").preview(e["groups"], nb=np.int64(10), epochs=np.int32(3))
    ref = YoloSchedule("ultralytics").preview(e["groups"], nb=10, epochs=3)
    assert got.warmup == ref.warmup and all(np.array_equal(got.lr[k], ref.lr[k]) for k in ref.lr)


def _apply(e, ni, nb=10, epochs=3, schedule=None):
    (schedule or YoloSchedule("ultralytics")).apply(e["optimizer"], ni, nb, epochs)


SCHEDULES = [
    case("error", "YoloSchedule", "profile-unknown", lambda e: YoloSchedule("v8"), ValueError, "profile"),
    case("error", "YoloSchedule", "lrf-large", lambda e: YoloSchedule(lrf=2), ValueError, "lrf"),
    case("error", "YoloSchedule", "lrf-nan", lambda e: YoloSchedule(lrf=float("nan")), ValueError, "lrf"),
    case("error", "YoloSchedule", "warmup_epochs-negative", lambda e: YoloSchedule(warmup_epochs=-1), ValueError,
         "warmup_epochs"),
    case("error", "YoloSchedule", "warmup_epochs-inf", lambda e: YoloSchedule(warmup_epochs=float("inf")), ValueError,
         "warmup_epochs"),
    case("error", "YoloSchedule", "momentum-large", lambda e: YoloSchedule(momentum=1.5), ValueError, "momentum"),
    case("error", "YoloSchedule", "warmup_bias_lr-string", lambda e: YoloSchedule(warmup_bias_lr="0.1"), ValueError,
         "warmup_bias_lr"),
    case("error", "YoloSchedule", "warmup_momentum-bool", lambda e: YoloSchedule(warmup_momentum=True), ValueError,
         "warmup_momentum"),
    case("error", "CosineWarmup", "warmup_epochs-negative", lambda e: CosineWarmup(warmup_epochs=-1), ValueError,
         "warmup_epochs"),
    case("error", "CosineWarmup", "lrf-negative", lambda e: CosineWarmup(lrf=-0.1), ValueError, "lrf"),
    case("error", "CosineWarmup", "momentum-nan", lambda e: CosineWarmup(momentum=float("nan")), ValueError,
         "momentum"),
    case("error", "OneCycle", "pct_start-zero", lambda e: OneCycle(pct_start=0), ValueError, "pct_start"),
    case("error", "OneCycle", "pct_start-large", lambda e: OneCycle(pct_start=1.5), ValueError, "pct_start"),
    case("error", "OneCycle", "div-small", lambda e: OneCycle(div=0.5), ValueError, "div"),
    case("error", "OneCycle", "moms-two", lambda e: OneCycle(moms=(0.9, 0.8)), ValueError, "moms"),
    case("error", "OneCycle", "moms-number", lambda e: OneCycle(moms=0.9), ValueError, "moms"),
    case("error", "preview", "nb-zero", lambda e: YoloSchedule().preview(e["groups"], nb=0, epochs=3), ValueError,
         "nb"),
    case("error", "preview", "epochs-float", lambda e: YoloSchedule().preview(e["groups"], nb=10, epochs=2.5),
         ValueError, "epochs"),
    case("error", "preview", "nb-string", lambda e: CosineWarmup().preview(e["groups"], nb="10", epochs=3), ValueError,
         "nb"),
    case("error", "preview", "yolov5-too-short", lambda e: YoloSchedule("yolov5").preview(e["groups"], nb=10, epochs=5),
         ValueError, ("nw", "100", "profile='ultralytics'")),
    case("error", "preview", "cosine-warmup-whole-run",
         lambda e: CosineWarmup(warmup_epochs=3).preview(e["groups"], nb=10, epochs=3), ValueError, "warmup_epochs"),
    case("error", "preview", "onecycle-too-short", lambda e: OneCycle().preview(e["groups"], nb=1, epochs=2),
         ValueError, "pct_start"),
    case("error", "preview", "groups-numbers", lambda e: YoloSchedule().preview([1, 2], nb=100, epochs=4), ValueError,
         ("groups[0]", "param_groups")),
    case("error", "preview", "groups-one-dict", lambda e: YoloSchedule().preview(e["groups"][0], nb=100, epochs=4),
         ValueError, "groups"),
    case("error", "preview", "groups-without-lr",
         lambda e: YoloSchedule().preview([{"params": []}], nb=100, epochs=4), ValueError, ("groups[0]", "'lr'")),
    case("error", "apply", "ni-negative", lambda e: _apply(e, -1), ValueError, "ni"),
    case("error", "apply", "ni-float", lambda e: _apply(e, 2.5), ValueError, "ni"),
    case("error", "apply", "nb-zero", lambda e: _apply(e, 0, nb=0), ValueError, "nb"),
    case("error", "apply", "optimizer-groups", lambda e: YoloSchedule().apply(e["groups"], 0, 10, 3), ValueError,
         "optimizer"),
    case("error", "torch_scheduler", "onecycle-moms",
         lambda e: OneCycle(moms=(0.95, 0.85, 0.9)).torch_scheduler(e["optimizer"], 10, 3), ValueError, "moms"),
    case("ok", "preview", "numpy-run-length", _ok_numpy_preview),
]

CASES = FREEZE + GROUPS + SCHEDULES


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model = wb.build_model(nc=3)
    frozen = copy.deepcopy(model)
    freeze(frozen, depth=3, bn="eval")
    return model, frozen, TinyResNet()


@pytest.fixture
def env(models):
    model, frozen, resnet = (copy.deepcopy(m) for m in models)
    groups = param_groups(model, 0.01)
    optimizer = torch.optim.SGD(param_groups(model, 0.01), lr=0.01, momentum=0.9)
    return {"model": model, "frozen": frozen, "resnet": resnet, "groups": groups, "optimizer": optimizer}


@pytest.mark.parametrize("call, kind, expected, names", CASES)
def test_bad_input(env, call, kind, expected, names):
    run_case(env, call, kind, expected, names)
