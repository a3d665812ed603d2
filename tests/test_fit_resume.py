"""fit leaves the caller's random state alone, keeps resume state in History.run, and follows a live freeze rule."""
import threading

import pytest
import torch

from workbench import build_model, fit
from workbench.freezing import bn_policy
from workbench.training import Freeze, RunState

OPTIONS = dict(epochs=2, batch_size=12, progress=False, seed=0)


def test_fit_leaves_the_callers_random_state_as_it_found_it(small_shapes):
    train, _ = small_shapes
    model, loader = build_model(nc=3), torch.utils.data.DataLoader(train, batch_size=12, shuffle=True)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(model, train, **OPTIONS)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(123)  # a DataLoader without its own generator shuffles from the caller's RNG
    fit(model, loader, epochs=1, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_two_trials_after_fit_start_from_different_weights(small_shapes):
    train, _ = small_shapes
    fit(build_model(nc=3), train, **OPTIONS)
    a, b = build_model(nc=3), build_model(nc=3)
    assert not torch.equal(a.layers[0].conv.weight, b.layers[0].conv.weight)


def _interrupted(small_shapes, **options):
    train, _ = small_shapes
    stop = threading.Event()
    torch.manual_seed(0)
    model = build_model(nc=3)
    settings = {**OPTIONS, **options}
    history = fit(model, train, stop=stop, callback=lambda h: stop.set() if h.step == 2 else None, **settings)
    assert history.status == "interrupted"
    return model, train, history


def test_resume_state_travels_in_its_own_object(small_shapes):
    _, _, history = _interrupted(small_shapes, optimizer="sgd", lr=0.02)
    assert isinstance(history.run, RunState) and not hasattr(history, "_resume")
    assert history.run.batch_size == 12 and history.run.train_size == 36
    assert type(history.run.optimizer).__name__ == "SGD"
    assert "run" not in repr(history)


@pytest.mark.parametrize("change, words", [
    (dict(batch_size=8), ["batch_size 12", "8"]),
    (dict(seed=1), ["seed 0"]),
    (dict(optimizer="adamw"), ["name='sgd'", "name='adamw'"]),
    (dict(lr=0.5), ["lr=0.02", "lr=0.5"]),
])
def test_a_resume_that_changes_the_run_is_refused(small_shapes, change, words):
    model, train, history = _interrupted(small_shapes, optimizer="sgd", lr=0.02)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    options = {**OPTIONS, "optimizer": "sgd", "lr": 0.02, **change}
    with pytest.raises(ValueError) as caught:
        fit(model, train, history=history, **options)
    assert all(word in str(caught.value) for word in words), str(caught.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert history.step == 2


def test_a_resume_on_other_data_is_refused(small_shapes):
    model, train, history = _interrupted(small_shapes)
    with pytest.raises(ValueError, match="number of training images 36"):
        fit(model, train.subset(range(24)), history=history, **OPTIONS)


def test_a_resume_that_leaves_the_optimizer_out_keeps_its_own(small_shapes):
    model, train, history = _interrupted(small_shapes, optimizer="sgd", lr=0.02)
    optimizer = history.run.optimizer
    history = fit(model, train, history=history, epochs=2, batch_size=12, progress=False)
    assert history.status == "completed" and history.run.optimizer is optimizer


def test_a_freeze_rule_changes_the_depth_at_a_step_boundary(small_shapes):
    train, _ = small_shapes
    torch.manual_seed(0)
    model = build_model(nc=3)
    asked, optimizers = [], []

    def rule(epoch, step):
        asked.append((epoch, step))
        return 9 if step < 3 else 0

    history = fit(model, train, freeze=Freeze(rule, bn="frozen"), callback=lambda h: optimizers.append(h.run.optimizer),
                  **OPTIONS)
    assert history.status == "completed" and asked == [(s // 3, s) for s in range(6)]
    assert history.depth == [9, 9, 9, 0, 0, 0]
    assert history.freeze_depth == {0: 9, 1: 0}
    assert [text for _, text in history.events] == ["step 1 (epoch 1): freeze depth 9",
                                                    "step 4 (epoch 2): freeze depth 0 (was 9)"]
    norms = torch.tensor(history.layer_grad_norms)
    first = history.layer_names.index("layers.0")
    assert (norms[:3, first] == 0).all() and (norms[3:, first] > 0).all()  # layer 0 lights up at step 3
    assert len({id(o) for o in optimizers}) == 1  # no new optimiser: it held the frozen parameters all along
    assert all(p.requires_grad for p in model.parameters())
    assert all(bn_policy(m) is None for m in model.modules())


def test_a_freeze_rule_may_change_mid_epoch_and_return_none_to_keep_the_depth(small_shapes):
    train, _ = small_shapes
    model = build_model(nc=3)
    history = fit(model, train, freeze=lambda epoch, step: {0: 6, 4: 2}.get(step), **OPTIONS)
    assert history.depth == [6, 6, 6, 6, 2, 2]
    assert history.events[1] == (4, "step 5 (epoch 2): freeze depth 2 (was 6)")


def test_an_epoch_schedule_fills_the_per_step_depth(small_shapes):
    train, _ = small_shapes
    history = fit(build_model(nc=3), train, freeze={0: 9, 1: 3}, **OPTIONS)
    assert history.depth == [9, 9, 9, 3, 3, 3]
    assert fit(build_model(nc=3), train, **OPTIONS).depth == []
