"""What the studio costs: training with it attached against ``fit`` alone, and one redraw at 300 steps.

Overhead: the same fine-tune (the same model, data, optimiser, schedule and freeze-depth
callable) run by ``fit`` alone and by ``Studio.run`` (its callback, throttled redraws with weight
drift, and the last redraw), CPU time of the whole process (the studio trains in a thread),
rounds alternating the order; the ratio is the median of per-round ratios. Target: <= 1.05.

Redraw: ``Studio.redraw()`` on a recorded 300-step run (weight drift, the figure, the update of
the live FigureWidget), alternating 299 and 300 steps so that every redraw changes the data;
median CPU time (this process; robust on a shared machine, where wall time waits for other work). Target: <= 50 ms.

    OMP_NUM_THREADS=1 python bench/bench_studio.py [--rounds 9] [--epochs 8] [--redraws 21]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from workbench import data, fit
from workbench.optim import make_optimizer
from workbench.panels import Studio
from workbench.plots.studio import history_until


def _studio(epochs: int, batch: int, n_per_class: int) -> Studio:
    train, val = data.split(data.shapes(n_per_class, classes=3, seed=0), 0.2, seed=0)
    return Studio("shapes_n", train, val, depth=4, epochs=epochs, batch_size=batch, device="cpu")


def fit_alone(studio: Studio) -> float:
    """``fit`` with the studio's recipe on a copy of its starting model, no callback; CPU seconds."""
    model = copy.deepcopy(studio.model)
    optimizer = make_optimizer(model, studio.optimizer_name, lr=studio.lr0.value)
    depth = studio.depth.value
    started = time.process_time()
    fit(model, studio.train, studio.val, epochs=studio.epochs.value, batch_size=studio.batch_size.value,
        optimizer=optimizer, schedule=studio._schedule(), freeze=lambda epoch, step: depth,
        freeze_bn=studio.bn.value, device="cpu", progress=False, seed=studio.seed)
    return time.process_time() - started


def with_studio(studio: Studio) -> float:
    """``Studio.run`` from its starting weights; CPU seconds of the process (training thread included)."""
    studio.reset()
    studio.redraws = 0
    started = time.process_time()
    studio.run(wait=True)
    return time.process_time() - started


def overhead(rounds: int, epochs: int, batch: int, n_per_class: int) -> tuple[list[float], list[float], Studio]:
    studio = _studio(epochs, batch, n_per_class)
    fit_alone(studio), with_studio(studio)  # warm-up
    alone, attached = [], []
    for r in range(rounds):
        order = (fit_alone, with_studio) if r % 2 == 0 else (with_studio, fit_alone)
        times = {f.__name__: f(studio) for f in order}
        alone.append(times["fit_alone"])
        attached.append(times["with_studio"])
    return alone, attached, studio


def redraw_ms(redraws: int, steps: int = 300) -> list[float]:
    studio = _studio(epochs=steps // 10, batch=8, n_per_class=25)  # 60 training images: 8 batches, 2 of 6
    studio.batch_size.value = 6  # 10 batches per epoch
    history = studio.run(wait=True)
    assert history.step == steps, history.step
    frames = [history_until(history, steps - 1), history]
    times = []
    for k in range(redraws):
        studio.history = frames[k % 2]
        started = time.process_time()
        studio.redraw()
        times.append(1000 * (time.process_time() - started))
    return times[1:]  # the first is a warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n-per-class", type=int, default=80)
    parser.add_argument("--redraws", type=int, default=21)
    args = parser.parse_args()
    alone, attached, studio = overhead(args.rounds, args.epochs, args.batch, args.n_per_class)
    ratios = [a / b for a, b in zip(attached, alone)]
    steps = studio.history.step
    print(f"fine-tune from shapes_n, {steps} steps of batch {args.batch}, {args.rounds} interleaved rounds, "
          f"torch threads {torch.get_num_threads()}, CPU clock")
    print(f"fit alone      median {statistics.median(alone):6.2f} s")
    print(f"studio + fit   median {statistics.median(attached):6.2f} s  "
          f"({studio.redraws} redraws in the last run, the last one included)")
    print(f"overhead ratio median {statistics.median(ratios):6.3f}  (target <= 1.05; "
          f"min {min(ratios):.3f}, max {max(ratios):.3f})")
    times = redraw_ms(args.redraws)
    print(f"redraw at 300 steps median {statistics.median(times):6.1f} ms over {len(times)} "
          f"(min {min(times):.1f}, max {max(times):.1f}; target <= 50 ms)")


if __name__ == "__main__":
    main()
