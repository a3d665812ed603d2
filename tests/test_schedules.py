"""Schedules: the YOLO golden table, both profiles against transcriptions of their trainers, torch's
schedulers, and what fit records against what the preview predicted."""
import math
import threading
import warnings

import numpy as np
import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, OneCycleLR

from workbench import YoloSchedule, build_model, fit, param_groups
from workbench.optim import make_optimizer
from workbench.schedules import CosineWarmup, OneCycle

HYP = dict(lr0=0.01, lrf=0.01, momentum=0.937, warmup_epochs=3.0, warmup_momentum=0.8, warmup_bias_lr=0.1)

GOLDEN = [  # iteration, epoch, bias lr, other lr, momentum (yolov5, nb=100, 100 epochs, linear)
    (0, 0, 0.1, 0.0, 0.8),
    (50, 0, 0.085, 0.0016666667, 0.82283333),
    (100, 1, 0.069967, 0.0033003333, 0.84566667),
    (150, 1, 0.0549505, 0.0049505, 0.8685),
    (300, 3, 0.009703, 0.009703, 0.937),
]


def groups(lr=0.01, **kwargs):
    return param_groups(build_model(nc=3), lr, **kwargs)


def test_golden_table():
    preview = YoloSchedule("yolov5").preview(groups(), nb=100, epochs=100)
    assert preview.warmup == 300
    for ni, epoch, bias, other, momentum in GOLDEN:
        assert preview.epoch[ni] == epoch
        assert preview.lr["bias"][ni] == pytest.approx(bias, abs=1e-9)
        assert preview.lr["weight"][ni] == preview.lr["norm"][ni] == pytest.approx(other, abs=1e-9)
        assert preview.momentum["weight"][ni] == pytest.approx(momentum, abs=1e-8)  # the table's 8 decimals
    exact = [0.8 + 0.137 * ni / 300 for ni, *_ in GOLDEN]
    np.testing.assert_allclose([preview.momentum["bias"][ni] for ni, *_ in GOLDEN], exact, rtol=0, atol=1e-12)


@pytest.mark.parametrize("nb, epochs, yolov5, ultralytics", [
    (10, 100, 100, 30), (100, 100, 300, 300), (10, 2, 100, 10), (10, 1, 100, 0), (7, 10, 100, 21)])
def test_warmup_iterations_of_both_profiles(nb, epochs, yolov5, ultralytics):
    assert YoloSchedule("yolov5").warmup_iterations(nb, epochs) == yolov5
    assert YoloSchedule("ultralytics").warmup_iterations(nb, epochs) == ultralytics


def yolov5_reference(param_groups_, nb, epochs, cos, hyp):
    """YOLOv5 train.py's LR and momentum logic, transcribed (the bias group found by tag, not index)."""
    optimizer = torch.optim.SGD(param_groups_, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    E, lrf = epochs, hyp["lrf"]
    lf = (lambda x: ((1 - math.cos(x * math.pi / E)) / 2) * (lrf - 1) + 1) if cos else \
        (lambda x: (1 - x / E) * (1.0 - lrf) + lrf)
    scheduler = LambdaLR(optimizer, lr_lambda=lf)
    nw = max(round(hyp["warmup_epochs"] * nb), 100)
    scheduler.last_epoch = 0 - 1  # start_epoch - 1, "do not move"
    lr, momentum = {g["name"]: [] for g in optimizer.param_groups}, {g["name"]: [] for g in optimizer.param_groups}
    for epoch in range(E):
        for i in range(nb):
            ni = i + nb * epoch
            if ni <= nw:
                xi = [0, nw]
                for x in optimizer.param_groups:
                    x["lr"] = np.interp(ni, xi, [hyp["warmup_bias_lr"] if x["tag"] == "bias" else 0.0,
                                                 x["initial_lr"] * lf(epoch)])
                    if "momentum" in x:
                        x["momentum"] = np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]])
            for x in optimizer.param_groups:
                lr[x["name"]].append(float(x["lr"]))
                momentum[x["name"]].append(float(x["momentum"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scheduler.step() before optimizer.step()
            scheduler.step()
    return lr, momentum


def ultralytics_reference(param_groups_, nb, epochs, cos, hyp):
    """Ultralytics 8.4.103-8.4.182 BaseTrainer LR and momentum (_setup_scheduler, _get_warmup_iterations, _do_train)."""
    optimizer = torch.optim.SGD(param_groups_, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    E, lrf = epochs, hyp["lrf"]
    lf = (lambda x: max((1 - math.cos(x * math.pi / E)) / 2, 0) * (lrf - 1) + 1) if cos else \
        (lambda x: max(1 - x / E, 0) * (1.0 - lrf) + lrf)
    scheduler = LambdaLR(optimizer, lr_lambda=lf)
    warmup_epochs = min(hyp["warmup_epochs"], max(E - 1, 0))
    nw = round(warmup_epochs * nb) if warmup_epochs > 0 else 0
    scheduler.last_epoch = 0 - 1
    lr, momentum = {g["name"]: [] for g in optimizer.param_groups}, {g["name"]: [] for g in optimizer.param_groups}
    for epoch in range(E):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scheduler.step()
        for i in range(nb):
            ni = i + nb * epoch
            if ni < nw:
                xi = [0, nw]
                for x in optimizer.param_groups:
                    x["lr"] = float(np.interp(ni, xi, [hyp["warmup_bias_lr"] if x["tag"] == "bias" else 0.0,
                                                       x["initial_lr"] * lf(epoch)]))
                    if "momentum" in x:
                        x["momentum"] = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
            for x in optimizer.param_groups:
                lr[x["name"]].append(float(x["lr"]))
                momentum[x["name"]].append(float(x["momentum"]))
    return lr, momentum


@pytest.mark.parametrize("profile, nb, epochs, warmup_epochs", [
    ("yolov5", 7, 20, 3.0),  # nw = 100 (the floor), ending inside epoch 14
    ("yolov5", 40, 6, 3.0),  # nw = 120, at an epoch boundary
    ("ultralytics", 7, 6, 1.5),  # nw = round(10.5) = 10, inside epoch 1: its LR holds to the epoch's end
    ("ultralytics", 5, 3, 3.0),  # warmup capped at epochs - 1
    ("ultralytics", 5, 4, 0.0),  # no warmup
])
@pytest.mark.parametrize("cos", [False, True])
def test_profiles_match_transcribed_trainers_exactly(profile, nb, epochs, warmup_epochs, cos):
    hyp = dict(HYP, warmup_epochs=warmup_epochs)
    schedule = YoloSchedule(profile, lrf=hyp["lrf"], cos=cos, warmup_epochs=warmup_epochs)
    reference = yolov5_reference if profile == "yolov5" else ultralytics_reference
    lr, momentum = reference(groups(lr_mult={"head": 10}), nb, epochs, cos, hyp)
    preview = schedule.preview(groups(lr_mult={"head": 10}), nb, epochs)
    assert set(preview.lr) == set(lr) == {"weight", "norm", "bias", "weight/head", "norm/head", "bias/head"}
    for name in lr:
        assert preview.lr[name].tolist() == lr[name], name
        assert preview.momentum[name].tolist() == momentum[name], name


def test_warmup_edges_of_each_profile():
    lr0, nb, E = 0.01, 10, 10
    v5, ul = YoloSchedule("yolov5"), YoloSchedule("ultralytics", warmup_epochs=0.55)  # nw 100 and 6
    assert v5.lr_at(100, lr0, "bias", nb, E) == lr0 * v5.lf(10, E) and v5.momentum_at(100, nb, E) == 0.937
    assert ul.lr_at(5, lr0, "weight", nb, E) == pytest.approx(lr0 * 5 / 6)  # last warmup iteration (ni < nw)
    assert [ul.lr_at(ni, lr0, "weight", nb, E) for ni in range(6, 10)] == [ul.lr_at(5, lr0, "weight", nb, E)] * 4
    assert ul.lr_at(10, lr0, "bias", nb, E) == lr0 * ul.lf(1, E)
    assert ul.momentum_at(99, nb, E) == pytest.approx(0.8 + 0.137 * 5 / 6)  # never reaches 0.937


def test_lambda_lr_gives_the_preview():
    model = build_model(nc=3)
    for schedule in (YoloSchedule("ultralytics", warmup_epochs=1), CosineWarmup(warmup_epochs=1, lrf=0.05)):
        opt = torch.optim.SGD(param_groups(model, 0.02, lr_mult={"head": 10}), lr=0.02, momentum=0.9)
        preview = schedule.preview(opt, nb=6, epochs=4)
        scheduler = schedule.torch_scheduler(opt, nb=6, epochs=4)
        assert isinstance(scheduler, LambdaLR)
        for ni in range(24):
            for g in opt.param_groups:
                assert g["lr"] == pytest.approx(preview.lr[g["name"]][ni], rel=1e-13, abs=1e-18)
            opt.step()
            scheduler.step()


def test_cosine_warmup_against_torch_cosine_annealing():
    lr0, nb, E, lrf = 0.1, 5, 6, 0.1
    schedule = CosineWarmup(warmup_epochs=1, lrf=lrf)
    preview = schedule.preview([{"lr": lr0, "tag": "weight", "name": "w", "params": []}], nb, E)
    nw = schedule.warmup_iterations(nb, E)
    np.testing.assert_allclose(preview.lr["w"][:nw], lr0 * np.arange(nw) / nw, rtol=1e-15)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr0)
    cosine = CosineAnnealingLR(opt, T_max=nb * E - nw, eta_min=lr0 * lrf)
    torch_lrs = []
    for _ in range(nb * E - nw):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    np.testing.assert_allclose(preview.lr["w"][nw:], torch_lrs, rtol=1e-12)
    assert set(preview.momentum["w"]) == {0.937}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_one_cycle_matches_torch_one_cycle_lr(optimizer):
    model, nb, E = build_model(nc=3), 7, 4
    opt = make_optimizer(model, optimizer, lr=0.05, lr_mult={"head": 10})
    preview = OneCycle().preview(opt, nb, E)
    scheduler = OneCycle().torch_scheduler(opt, nb, E)
    assert isinstance(scheduler, OneCycleLR)
    key = "momentum" if optimizer == "sgd" else "betas"
    for ni in range(nb * E):
        for g in opt.param_groups:
            assert g["lr"] == pytest.approx(preview.lr[g["name"]][ni], rel=1e-12)
            m = g[key] if key == "momentum" else g[key][0]
            assert m == pytest.approx(preview.momentum[g["name"]][ni], rel=1e-12)
        opt.step()
        scheduler.step()
    lrs = preview.lr["weight/head"]
    assert lrs[0] == pytest.approx(0.5 / 25) and lrs.max() == pytest.approx(0.5) and lrs[-1] == pytest.approx(0.5 / 1e5)
    assert preview.momentum["weight"].min() == pytest.approx(0.85) and preview.momentum["weight"][0] == 0.95


def _fit(small_shapes, schedule, optimizer, **kwargs):
    train, _ = small_shapes
    torch.manual_seed(0)
    model = build_model(nc=3)
    opt = make_optimizer(model, optimizer, lr=0.01, lr_mult={"head": 10})
    preview = schedule.preview(opt, nb=3, epochs=3)  # 36 images in batches of 12
    history = fit(model, train, epochs=3, batch_size=12, optimizer=opt, schedule=schedule, progress=False, **kwargs)
    return model, opt, preview, history


@pytest.mark.parametrize("schedule", [YoloSchedule("ultralytics", warmup_epochs=1.5), CosineWarmup(), OneCycle()])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_fit_records_exactly_what_the_preview_predicted(small_shapes, schedule, optimizer):
    _, opt, preview, history = _fit(small_shapes, schedule, optimizer)
    assert history.status == "completed" and history.step == 9
    assert set(history.lr) == set(preview.lr) and len(history.lr) == 6
    for name in preview.lr:
        assert history.lr[name] == preview.lr[name].tolist()
        assert history.momentum[name] == preview.momentum[name].tolist()
    if optimizer == "adamw":
        assert all(g["betas"][1] == 0.999 for g in opt.param_groups)


def test_interrupted_and_resumed_run_keeps_the_curve(small_shapes):
    train, _ = small_shapes
    schedule = YoloSchedule("ultralytics", warmup_epochs=1.5)
    stop = threading.Event()
    model, _, preview, history = _fit(small_shapes, schedule, "sgd", stop=stop,
                                      callback=lambda h: stop.set() if h.step == 4 else None)
    assert history.status == "interrupted" and history.step == 4
    stop.clear()
    history = fit(model, train, epochs=3, batch_size=12, schedule=schedule, progress=False, history=history)
    assert history.status == "completed" and history.step == 9
    for name in preview.lr:
        assert history.lr[name] == preview.lr[name].tolist()
        assert history.momentum[name] == preview.momentum[name].tolist()


@pytest.mark.parametrize("schedule, message", [
    (YoloSchedule("yolov5"), "profile='ultralytics'"),
    (CosineWarmup(warmup_epochs=3), "warmup_epochs=3"),
    (OneCycle(pct_start=0.1), "rising phase"),
])
def test_schedule_that_cannot_fit_the_run_is_refused_before_anything_changes(small_shapes, schedule, message):
    train, _ = small_shapes
    model = build_model(nc=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(model, "sgd", lr=0.01)
    with pytest.raises(ValueError, match=message):
        fit(model, train, epochs=3, batch_size=12, optimizer=opt, schedule=schedule, progress=False)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(g["lr"] == 0.01 and "initial_lr" not in g and g["momentum"] == 0.937 for g in opt.param_groups)


@pytest.mark.parametrize("make, message", [
    (lambda: YoloSchedule("yolov8"), "choose one of \\['yolov5', 'ultralytics'\\]"),
    (lambda: YoloSchedule(lrf=1.5), "lrf"),
    (lambda: YoloSchedule(warmup_epochs=-1), "warmup_epochs"),
    (lambda: CosineWarmup(momentum=1.5), "momentum"),
    (lambda: OneCycle(moms=(0.9, 0.8)), "three momentums"),
    (lambda: YoloSchedule().preview(groups(), nb=0, epochs=3), "nb"),
])
def test_bad_settings_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
