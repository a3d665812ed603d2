"""fit's step time against a bare PyTorch loop on the same model and data, and images/s on CPU.

The bare loop is zero_grad, forward, loss, backward, step with the same optimiser and the same
batches; fit adds its progress bar, per-layer gradient monitoring, clipping, recording and
the step's transaction (before the optimiser writes, a copy of the parameters it is about to
write and of their optimiser state; after, one fused norm of the written weights).
Runs alternate (bare, fit, fit, bare, ...) so both see the same machine load; the ratio is the
median of per-pair ratios.

    OMP_NUM_THREADS=1 python bench/bench_fit.py [--rounds 15] [--steps 20] [--scale n] [--size 32] [--clock cpu]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from workbench import build_model, data, fit
from workbench.optim import make_optimizer
from workbench.training import Batches


def bare_loop(model, batches, lr):
    optimizer = make_optimizer(model, "adamw", lr=lr)
    model.train()
    for x, y in batches.epoch(0):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def timed(function, *args, **kwargs) -> float:
    start = clock()
    function(*args, **kwargs)
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--scale", default="n")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: this process's CPU time (robust on a shared machine; use 1 torch thread)")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.manual_seed(0)
    images = data.shapes(args.steps * args.batch // 10, size=args.size, seed=0)
    batches = Batches(images, args.batch, seed=0)
    template = build_model(args.scale, nc=10)
    lr = 1e-3

    def run_bare():
        return timed(bare_loop, copy.deepcopy(template), batches, lr)

    def run_fit():
        return timed(fit, copy.deepcopy(template), images, epochs=1, batch_size=args.batch, optimizer="adamw", lr=lr,
                     progress=True)

    run_bare(), run_fit()  # warm-up
    bare, ours = [], []
    for r in range(args.rounds):
        order = (run_bare, run_fit) if r % 2 == 0 else (run_fit, run_bare)
        times = {f: f() for f in order}
        bare.append(times[run_bare])
        ours.append(times[run_fit])
    ratios = [o / b for o, b in zip(ours, bare)]
    steps = len(batches)
    print(f"model {args.scale}, {args.size}x{args.size}, batch {args.batch}, {steps} steps per run, "
          f"{args.rounds} interleaved rounds, torch threads {torch.get_num_threads()}, {args.clock} clock")
    print(f"bare loop step  median {1000 * statistics.median(bare) / steps:7.1f} ms")
    print(f"fit step        median {1000 * statistics.median(ours) / steps:7.1f} ms  (progress bar on)")
    print(f"ratio fit / bare: median {statistics.median(ratios):.3f}  (min {min(ratios):.3f}, max {max(ratios):.3f})")
    print(f"images/s, fit, training: {len(images) / statistics.median(ours):.0f}")
    model = copy.deepcopy(template).eval()
    x = images.x[: args.batch]
    with torch.no_grad():
        infer = statistics.median(timed(model, x) for _ in range(args.rounds))
    print(f"images/s, inference: {args.batch / infer:.0f}")


if __name__ == "__main__":
    main()
