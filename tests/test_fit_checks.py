"""fit checks everything it can before the first forward pass: a clear error, the model and data untouched."""
import numpy as np
import pytest
import torch

from workbench import build_model, data, fit, freeze
from workbench.scenes import shape_scenes
from workbench.training import Freeze, Optim


def _classes3():
    return data.shapes(4, classes=3)


def _with_label(value):
    """A data set whose label 5 was changed after it was built (ImageSet checks its labels only when built)."""
    ds = _classes3()
    ds.y[5] = value
    return ds


def _loader(value):
    return torch.utils.data.DataLoader(_with_label(value), batch_size=6, shuffle=True,
                                       generator=torch.Generator().manual_seed(0))


CASES = [
    # (what, model builder, data builder, fit options, words the message must hold)
    ("label -1", lambda: build_model(nc=3), lambda: _with_label(-1), {}, ["label -1", "0..nc-1"]),
    ("label 3 of 3 classes", lambda: build_model(nc=3), lambda: _with_label(3), {}, ["nc=3", "nc=4"]),
    ("DataLoader label >= nc", lambda: build_model(nc=3), lambda: _loader(7), {}, ["up to 7", "nc=3"]),
    ("DataLoader label -1", lambda: build_model(nc=3), lambda: _loader(-1), {}, ["label -1"]),
    ("channels", lambda: build_model(nc=3), lambda: data.digits(3, channels=1), {}, ["channels", "ch=1"]),
    ("detector fed classes", lambda: build_model("n", "detect", nc=3), _classes3, {}, ["detector", "task="]),
    ("classifier fed boxes", lambda: build_model(nc=3), lambda: shape_scenes(4, seed=0), {},
     ["detection targets", "task='detect'"]),
    ("every parameter frozen", lambda: _all_frozen(), _classes3, {}, ["frozen", "unfreeze"]),
    ("batch_size 2.5", lambda: build_model(nc=3), _classes3, dict(batch_size=2.5), ["batch_size"]),
    ("batch_size 0", lambda: build_model(nc=3), _classes3, dict(batch_size=0), ["batch_size"]),
    ("epochs '3'", lambda: build_model(nc=3), _classes3, dict(epochs="3"), ["epochs"]),
    ("epochs True", lambda: build_model(nc=3), _classes3, dict(epochs=True), ["epochs"]),
    ("clip -1", lambda: build_model(nc=3), _classes3, dict(clip=-1), ["clip", "None or 0"]),
    ("clip nan", lambda: build_model(nc=3), _classes3, dict(clip=float("nan")), ["clip"]),
    ("lr nan", lambda: build_model(nc=3), _classes3, dict(lr=float("nan")), ["lr"]),
    ("lr -1", lambda: build_model(nc=3), _classes3, dict(lr=-1.0), ["lr"]),
    ("lr with an optimizer object", lambda: build_model(nc=3), _classes3,
     dict(optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), lr=0.5), ["lr="]),
    ("optimizer name", lambda: build_model(nc=3), _classes3, dict(optimizer="adam"), ["'adam'", "'sgd'"]),
    ("device name", lambda: build_model(nc=3), _classes3, dict(device="gpu"), ["device='gpu'", "'cpu'"]),
]


def _all_frozen():
    model = build_model(nc=3)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.mark.parametrize("what, make_model, make_data, options, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_anything_changes(what, make_model, make_data, options, words):
    torch.manual_seed(0)
    model, train = make_model(), make_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    images = getattr(getattr(train, "dataset", train), "x", None)
    kept = images.clone() if images is not None else None
    generator = getattr(train, "generator", None)
    rng = generator.get_state() if generator is not None else None
    with pytest.raises(ValueError) as caught:
        fit(model, train, epochs=options.pop("epochs", 1), progress=False, **options)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm buffers too
    assert [p.requires_grad for p in model.parameters()] == flags
    if kept is not None:
        assert torch.equal(images, kept)
    if rng is not None:
        assert torch.equal(generator.get_state(), rng)  # peeking at the first batch put the generator back


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_cpu_machine_says_how_to_choose():
    model = build_model(nc=3)
    with pytest.raises(ValueError, match="device='auto'.*device='cpu'"):
        fit(model, _classes3(), epochs=1, device="cuda", progress=False)


def test_labels_are_checked_against_the_output_width_of_a_foreign_model(tiny_resnet):
    width = tiny_resnet(torch.zeros(1, 3, 32, 32)).shape[1]
    with pytest.raises(ValueError, match=f"nc={width}"):
        fit(tiny_resnet, _with_label(width), epochs=1, progress=False)


def test_numpy_integers_are_accepted_where_integers_are():
    history = fit(build_model(nc=3), _classes3(), epochs=np.int64(1), batch_size=np.int64(6), progress=False)
    assert history.status == "completed" and history.step == 2


def test_a_label_minus_one_is_allowed_with_your_own_loss():
    loss = torch.nn.CrossEntropyLoss(ignore_index=-1)
    history = fit(build_model(nc=3), _with_label(-1), epochs=1, batch_size=6, progress=False, loss_fn=loss)
    assert history.status == "completed"


def test_a_freeze_schedule_may_unfreeze_what_the_workbench_froze():
    model = build_model(nc=3)
    freeze(model, depth=len(model.layers) - 1)
    history = fit(model, _classes3(), epochs=1, batch_size=6, progress=False, freeze={0: 0})
    assert history.status == "completed" and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("make, words", [
    (lambda: Optim("sgd", weight_decay=-1e-4), ["weight_decay", "0 for none"]),
    (lambda: Optim("sgd", weight_decay=float("nan")), ["weight_decay"]),
    (lambda: Optim("sgd", momentum=1.5), ["momentum"]),
    (lambda: Optim("adam"), ["'adam'", "torch optimizer"]),
    (lambda: Freeze({0: 3}, bn="fixed"), ["bn='fixed'", "'frozen'"]),
    (lambda: Freeze(3), ["{epoch: depth}"]),
])
def test_grouped_options_check_their_settings(make, words):
    with pytest.raises(ValueError) as caught:
        make()
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_an_optim_gives_fit_every_setting(small_shapes):
    train, _ = small_shapes
    history = fit(build_model(nc=3), train, epochs=1, batch_size=12, progress=False,
                  optimizer=Optim("sgd", lr=0.02, momentum=0.8, weight_decay=1e-3))
    groups = history.run.optimizer.param_groups
    assert type(history.run.optimizer).__name__ == "SGD"
    assert {(g["lr"], g["momentum"]) for g in groups} == {(0.02, 0.8)}
    assert {g["tag"]: g["weight_decay"] for g in groups} == {"weight": 1e-3, "norm": 0.0, "bias": 0.0}
