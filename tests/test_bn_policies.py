"""BatchNorm policies are visible: the module's class carries the policy, on our models and on foreign ones."""
import copy
import pickle

import pytest
import torch
from foreign_models import TinyResNet
from torch import nn

import workbench as wb
from workbench.batchnorm import BN_POLICIES, PolicyNorm, bn_policy
from workbench.plots import freeze_rows


def norms(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def small_1d():
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))


MODELS = {"yolo": lambda: wb.build_model(nc=3), "tiny_resnet": lambda: TinyResNet(3), "bn1d": small_1d}
DEPTH = {"yolo": 3, "tiny_resnet": 2, "bn1d": 2}


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("policy", BN_POLICIES)
def test_the_policy_shows_in_print_and_keeps_every_tensor_object(kind, policy):
    torch.manual_seed(0)
    model = MODELS[kind]()
    keys = list(model.state_dict())
    tensors = {n: t for n, t in [*model.named_parameters(), *model.named_buffers()]}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    originals = {id(m): type(m) for m in norms(model)}
    wb.freeze(model, depth=DEPTH[kind], bn=policy)
    pinned = [m for m in norms(model) if bn_policy(m) == policy]
    assert pinned and all(isinstance(m, PolicyNorm) and isinstance(m, originals[id(m)]) for m in pinned)
    name = policy.capitalize() + originals[id(pinned[0])].__name__
    assert f"{name}(" in str(model) and f"policy='{policy}'" in str(model)
    assert list(model.state_dict()) == keys
    assert all(t is tensors[n] for n, t in [*model.named_parameters(), *model.named_buffers()])
    assert [p for g in optimizer.param_groups for p in g["params"]] == list(model.parameters())
    assert all(p is q for p, q in zip(optimizer.param_groups[0]["params"], model.parameters()))
    wb.unfreeze(model)
    assert {id(m): type(m) for m in norms(model)} == originals and "policy=" not in str(model)


@pytest.mark.parametrize("kind", MODELS)
def test_deepcopy_state_dict_pickle_and_train_keep_the_policy(kind):
    model = MODELS[kind]()
    wb.freeze(model, depth=DEPTH[kind], bn="eval")
    pinned = [i for i, m in enumerate(norms(model)) if bn_policy(m) == "eval"]
    twin = copy.deepcopy(model)
    twin.load_state_dict(model.state_dict())
    again = pickle.loads(pickle.dumps(model))  # our own bytes: the classes are found by name
    for m in (model, twin, again):
        m.train()
        assert [i for i, bn in enumerate(norms(m)) if bn_policy(bn) == "eval"] == pinned
        assert all(not norms(m)[i].training for i in pinned)
        assert all(norms(m)[i].training for i in range(len(norms(m))) if i not in pinned)


def test_eval_policy_keeps_statistics_and_frozen_policy_normalises_with_them_in_train_mode():
    torch.manual_seed(0)
    model = small_1d()
    x = torch.randn(16, 4) * 3 + 1
    for policy in ("eval", "frozen"):
        wb.unfreeze(model)
        wb.freeze(model, depth=2, bn=policy)
        bn = model[1]
        before = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
        model.train()
        out = model(x)
        assert all(torch.equal(a, b) for a, b in zip(before, (bn.running_mean, bn.running_var, bn.num_batches_tracked)))
        assert bn.training == (policy == "frozen")
        with torch.no_grad():
            reference = nn.functional.batch_norm(model[0](x), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                                 False, 0.0, bn.eps)
        torch.testing.assert_close(out, model[3](model[2](reference)))


def test_layer_table_and_freeze_map_show_the_policy_on_a_foreign_model():
    model = TinyResNet(3)
    wb.freeze(model, depth=2, bn="affine")
    table = wb.layer_table(model)
    assert [r.bn for r in table][:3] == ["", "affine", ""]  # conv1 has no BatchNorm; bn1 is layer 1
    assert "affine" in str(table) and "<td>affine</td>" in table._repr_html_()
    assert [row[-1] for row in freeze_rows(model)][:3] == ["", "affine", ""]
    wb.unfreeze(model)
    assert all(r.bn == "" for r in wb.layer_table(model)) and type(model.bn1) is nn.BatchNorm2d
