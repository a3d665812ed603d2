"""BatchNorm policies you can see: a policy is a subclass of the module's own BatchNorm class.

:func:`pin` swaps a BatchNorm module's class for a subclass of that class and of one policy
(``BatchNorm2d`` under ``"eval"`` becomes ``EvalBatchNorm2d``, printed with ``policy='eval'``);
the module object stays the same, so its parameters, buffers, state_dict keys and optimiser
references do not change, and ``copy.deepcopy``, pickling and ``model.train()`` keep the policy.
:func:`release` gives the module its own class back. :func:`workbench.freeze` and
:func:`workbench.unfreeze` call these; the policies are explained in :mod:`workbench.freezing`.

Example:
    >>> bn = nn.BatchNorm1d(4)
    >>> pin(bn, "eval"); type(bn).__name__, bn_policy(bn), bn.train().training
    ('EvalBatchNorm1d', 'eval', False)
    >>> release(bn, True); type(bn) is nn.BatchNorm1d, bn_policy(bn)
    (True, None)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BN_POLICIES = ("eval", "train", "affine", "frozen")


class PolicyNorm:
    """Base of the BatchNorm classes that carry a policy: ``print(model)`` shows it in the name and the repr.

    :func:`freeze` swaps a BatchNorm's class for a subclass of its own class and this one
    (``BatchNorm2d`` -> ``EvalBatchNorm2d``); the module object stays the same, so its parameters,
    buffers, state_dict keys and optimiser references do not change, and ``copy.deepcopy`` and
    ``model.train()`` keep the policy. :func:`unfreeze` swaps the original class back.
    """

    policy: str = ""
    original: type = nn.Module

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, policy={self.policy!r}"


class _EvalPolicy(PolicyNorm):
    """``"eval"``: running statistics fixed; the module stays in eval mode whatever ``train()`` asks."""

    policy = "eval"

    def train(self, mode: bool = True):
        self.training = False
        return self


class _FrozenPolicy(PolicyNorm):
    """``"frozen"``: normalises with the running statistics in any mode and updates nothing (timm's FrozenBatchNorm)."""

    policy = "frozen"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.running_mean is None:  # track_running_stats=False: there is nothing to freeze but gamma/beta
            return super().forward(x)
        self._check_input_dim(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class _TrainPolicy(PolicyNorm):
    policy = "train"


class _AffinePolicy(PolicyNorm):
    policy = "affine"


_POLICY_BASES = {p.policy: p for p in (_EvalPolicy, _FrozenPolicy, _TrainPolicy, _AffinePolicy)}
_POLICY_CLASSES: dict[tuple[type, str], type] = {}


def policy_class(norm: type, policy: str) -> type:
    """The BatchNorm class ``norm`` under ``policy``: ``policy_class(nn.BatchNorm2d, "eval")`` is ``EvalBatchNorm2d``.

    Made once per pair; the classes of torch's BatchNorm are module attributes here, so a pickled
    model finds them again.
    """
    if (norm, policy) not in _POLICY_CLASSES:
        name = policy.capitalize() + norm.__name__
        name = name if name not in globals() else f"{name}_{len(_POLICY_CLASSES)}"  # another module's namesake
        cls = type(name, (_POLICY_BASES[policy], norm), {"original": norm, "__module__": __name__})
        globals()[name] = _POLICY_CLASSES[norm, policy] = cls
    return _POLICY_CLASSES[norm, policy]


for _norm in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
    for _policy in BN_POLICIES:
        policy_class(_norm, _policy)


def pin(module: _BatchNorm, policy: str) -> None:
    module.__class__ = policy_class(type(module), policy)
    if policy == "eval":
        module.training = False


def release(module: _BatchNorm, mode: bool) -> None:
    module.__class__ = module.original
    module.training = mode


def bn_policy(module: nn.Module) -> str | None:
    """The policy :func:`freeze` gave this BatchNorm module (``None`` if it has none)."""
    return module.policy if isinstance(module, PolicyNorm) else None
