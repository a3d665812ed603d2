"""The cost of monitoring every step: ``fit`` against a bare PyTorch loop on the same model and data.

Three loops over the same batches of ``build_model("n")`` (batch 64, 32x32, AdamW), each from
the same starting weights:

- ``bare``: zero_grad, forward, cross-entropy, backward, step;
- ``bare+monitor``: the same plus ``GradientMonitor.measure()`` (per-layer gradient norms from one
  ``torch._foreach_norm``) and clipping at 10 with the measured total when it bites, as ``fit`` does;
- ``fit``: ``fit(...)``, which also records per-layer norms and the clip coefficient every step,
  keeps the last good weights and checks for non-finite values.

Runs alternate with the order rotated every round so all three see the same machine load; each
ratio is the median of per-round ratios to ``bare``. The clock is the process's CPU time with one
torch thread (``--clock wall`` for wall time), which other processes on a shared machine disturb
far less than wall time. Target: ``fit`` <= 1.03x ``bare``.

    python bench/bench_monitor.py [--rounds 9] [--steps 20] [--batch 64] [--threads 1] [--clock cpu]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from bench_fit import bare_loop  # the same bare loop as bench_fit.py (this folder is on sys.path)

from workbench import build_model, data, fit
from workbench.monitor import GradientMonitor, clip_coefficient
from workbench.optim import make_optimizer
from workbench.training import DEFAULT_CLIP, Batches

LR = 1e-3


def bare_monitored(model, batches) -> None:
    optimizer = make_optimizer(model, "adamw", lr=LR)
    monitor = GradientMonitor(model)
    model.train()
    for x, y in batches.epoch(0):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        total = monitor.measure()
        if clip_coefficient(total.item(), DEFAULT_CLIP) < 1:  # as fit: scale only when clipping bites
            monitor.clip(DEFAULT_CLIP, total)
        optimizer.step()
    monitor.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    images = data.shapes(args.steps * args.batch // 10, classes=10, size=32, seed=0)
    batches = Batches(images, args.batch, seed=0)
    torch.manual_seed(0)
    template = build_model("n", nc=10)
    loops = {
        "bare": lambda model: bare_loop(model, batches, LR),
        "bare+monitor": lambda model: bare_monitored(model, batches),
        "fit": lambda model: fit(model, images, epochs=1, batch_size=args.batch, optimizer="adamw", lr=LR,
                                 device="cpu", progress=False),
    }

    def timed(name: str) -> float:
        model = copy.deepcopy(template)
        start = clock()
        loops[name](model)
        return clock() - start

    for name in loops:  # warm-up
        timed(name)
    names, times = list(loops), {name: [] for name in loops}
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:
            times[name].append(timed(name))
    steps = len(batches)
    print(f"build_model('n'), batch {args.batch}, 32x32, {steps} steps per run, {args.rounds} rounds, "
          f"{args.threads} thread(s), {args.clock} clock")
    print(f"{'loop':<14}{'median s':>10}{'ms/step':>10}{'ratio':>8}{'ratio q1-q3':>16}")
    for name in names:
        ratios = [t / b for t, b in zip(times[name], times["bare"], strict=True)]
        median, (q1, _, q3) = statistics.median(times[name]), statistics.quantiles(ratios, n=4)
        print(f"{name:<14}{median:>10.3f}{1000 * median / steps:>10.1f}{statistics.median(ratios):>8.3f}"
              f"{q1:>9.3f}-{q3:.3f}")
    fit_ratio = statistics.median(t / b for t, b in zip(times["fit"], times["bare"], strict=True))
    print(f"fit / bare = {fit_ratio:.3f}x (target <= 1.03x): {'ok' if fit_ratio <= 1.03 else 'OVER'}")


if __name__ == "__main__":
    main()
