import threading

import pytest
import torch

from workbench import History, build_model, data, fit
from workbench.training import Batches, pick_device


def _run(small_shapes, **kwargs):
    train, val = small_shapes
    torch.manual_seed(0)
    model = build_model(nc=3)
    options = dict(epochs=3, batch_size=12, progress=False, seed=0)
    options.update(kwargs)
    return model, fit(model, train, val, **options)


def test_fit_lowers_the_loss_and_records_history(small_shapes):
    model, history = _run(small_shapes, epochs=4, optimizer="adamw", lr=3e-3)
    assert history.status == "completed" and history.epochs_done == 4
    assert history.step == 4 * 3 == len(history.epoch) == len(history.grad_norm)
    first, last = sum(history.loss[:3]) / 3, sum(history.loss[-3:]) / 3
    assert last < 0.8 * first
    assert len(history.val["accuracy"]) == 4 and len(history.val["loss"]) == 4
    assert set(history.lr) == {"weight", "norm", "bias"}
    assert all(len(v) == history.step for v in history.lr.values())


def test_same_seed_same_curve_on_cpu(small_shapes):
    _, a = _run(small_shapes)
    _, b = _run(small_shapes)
    _, c = _run(small_shapes, seed=1)
    assert a.loss == b.loss and a.val == b.val
    assert a.loss != c.loss


def test_interrupt_keeps_history_and_model_and_resumes_exactly(small_shapes):
    train, val = small_shapes
    _, full = _run(small_shapes)

    stop = threading.Event()

    def stop_after_four(history):
        if history.step == 4:
            stop.set()

    torch.manual_seed(0)
    model = build_model(nc=3)
    history = fit(model, train, val, epochs=3, batch_size=12, progress=False, seed=0, callback=stop_after_four,
                  stop=stop)
    assert history.status == "interrupted" and history.step == 4
    assert history.loss == full.loss[:4]
    stop.clear()
    history = fit(model, train, val, epochs=3, batch_size=12, progress=False, seed=0, history=history)
    assert history.status == "completed"
    assert history.loss == pytest.approx(full.loss, rel=1e-5)


def test_keyboard_interrupt_returns_model_of_last_completed_step(small_shapes):
    train, _ = small_shapes
    torch.manual_seed(0)
    model = build_model(nc=3)
    snapshots = []

    def interrupt_on_third(history):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        if history.step == 3:
            raise KeyboardInterrupt

    history = fit(model, train, epochs=2, batch_size=12, progress=False, callback=interrupt_on_third)
    assert history.status == "interrupted" and history.step == 3
    assert all(torch.equal(v, snapshots[-1][k]) for k, v in model.state_dict().items())


def test_non_finite_loss_stops_and_restores_last_finite_weights(small_shapes):
    train, _ = small_shapes
    model = build_model(nc=3)
    calls = {"n": 0}

    def loss_that_explodes(outputs, targets):
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(outputs, targets)
        return loss * float("nan") if calls["n"] == 3 else loss

    kept = {}

    def remember(history):
        kept.update({k: v.clone() for k, v in model.state_dict().items()})

    history = fit(model, train, epochs=2, batch_size=12, progress=False, loss_fn=loss_that_explodes,
                  callback=remember)
    assert history.status == "non_finite" and history.step == 2
    in_epoch = history.epochs_done + 1  # the epoch of the step that failed: the step after the last recorded one
    assert in_epoch == (history.epoch[-1] + 1 if history.steps_in_epoch else history.epoch[-1] + 2)
    assert f"2 steps, stopped in epoch {in_epoch} ({in_epoch - 1} completed)" in repr(history)
    assert "non-finite loss" in history.events[-1][1]
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())


def test_fit_works_on_a_foreign_model_and_a_dataloader(tiny_resnet, small_shapes):
    train, val = small_shapes
    loader = torch.utils.data.DataLoader(train, batch_size=12)
    history = fit(tiny_resnet, loader, val, epochs=2, progress=False)
    assert history.status == "completed" and history.step == 6


def test_batches_order_is_seeded_per_epoch():
    ds = data.shapes(5, classes=2)
    b = Batches(ds, 4, seed=3)
    first = [y.tolist() for _, y in b.epoch(0)]
    assert first == [y.tolist() for _, y in Batches(ds, 4, seed=3).epoch(0)]
    assert first != [y.tolist() for _, y in b.epoch(1)]
    assert len(b) == 3 and sum(len(y) for y in first) == 10


def test_pick_device_prefers_cuda_then_mps_then_cpu():
    device = pick_device("auto")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert device.type == expected
    assert pick_device("cpu").type == "cpu"


@pytest.mark.parametrize("make, message", [
    (lambda: data.shapes(4, classes=3).subset([]), "empty"),
    (lambda: data.digits(3, channels=1), "channels"),
    (lambda: data.shapes(4, classes=5), "nc=5"),
])
def test_bad_training_input_raises_and_leaves_the_model_alone(make, message):
    model = build_model(nc=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        fit(model, make(), epochs=1, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_epochs_and_images_of_the_wrong_rank():
    model = build_model(nc=3)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, data.shapes(2, classes=3), epochs=0)
    flat = data.ImageSet(torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long), ("a",))
    with pytest.raises(ValueError, match="channels"):
        fit(build_model(ch=1, nc=3), flat, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        data.ImageSet(torch.zeros(4, 32, 32), torch.zeros(4, dtype=torch.long), ("a",))


def test_history_repr_is_readable():
    assert "new" in repr(History())


def test_history_repr_says_which_epoch_a_stopped_run_stopped_in():
    stopped = History(loss=[1.0] * 28, epoch=[e for e in range(6) for _ in range(5)][:28], status="non_finite",
                      epochs_done=5, steps_in_epoch=3)
    assert "28 steps, stopped in epoch 6 (5 completed)" in repr(stopped)
    done = History(loss=[1.0] * 30, epoch=[e for e in range(6) for _ in range(5)], status="completed", epochs_done=6)
    assert "30 steps, 6 epochs" in repr(done)
    assert "5 steps, 1 epoch," in repr(History(loss=[1.0] * 5, epoch=[0] * 5, status="completed", epochs_done=1))


def test_a_last_batch_of_one_image_joins_the_previous_batch():
    ds = data.shapes(3, classes=3)  # 9 images, batch 4 -> 4 + 5
    sizes = [len(y) for _, y in Batches(ds, 4).epoch(0)]
    assert sizes == [4, 5] and len(Batches(ds, 4)) == 2
    history = fit(build_model(nc=3), ds, epochs=1, batch_size=4, progress=False)
    assert history.status == "completed" and history.step == 2


def test_ctrl_c_stops_between_steps_and_keeps_the_completed_ones(small_shapes):
    import os
    import signal

    train, _ = small_shapes
    torch.manual_seed(0)
    model = build_model(nc=3)
    kept = {}

    def press_ctrl_c_after_two(history):
        if history.step == 2 and not kept:
            kept.update({k: v.clone() for k, v in model.state_dict().items()})
            os.kill(os.getpid(), signal.SIGINT)  # what the notebook's stop button sends to the kernel

    history = fit(model, train, epochs=2, batch_size=12, progress=False, callback=press_ctrl_c_after_two)
    assert history.status == "interrupted" and history.step == 2
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # fit put the handler back
