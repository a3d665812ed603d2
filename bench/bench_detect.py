"""Time for the `n` detector to reach mAP@0.5 >= 0.7 on shape scenes (target: <= 60 s on 2 CPU cores).

The recipe: 800 training scenes of the 10 source shapes (64x64, 1-3 objects each), the `n`
detector from scratch (the light head, ``reg_max=1``, as the shipped weights; ``--reg-max 16`` for
Ultralytics' DFL head), fit with AdamW (lr 0.002, constant), batch 8, 3 epochs; then mAP@0.5 on
300 held-out scenes. Runs are repeated with different seeds, and interleaved over the thread
counts asked for, so every setting sees the same machine load. Training time is reported as
wall time (what a user waits) and as this process's CPU time (with 1 thread, close to the wall
time on an idle machine); validation is timed apart. The last run's detector is then
transferred to a 3-class target and the ledger's first lines are printed.

    python bench/bench_detect.py [--repeats 3] [--threads 1 2] [--epochs 3] [--scenes 800] [--reg-max 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import workbench as wb
from workbench.scenes import shape_scenes
from workbench.training import Batches

BUDGET_S, TARGET_MAP = 60.0, 0.7


def run(train, val, seed: int, threads: int, args) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = wb.build_model("n", "detect", nc=train.nc, reg_max=args.reg_max)
    wall, cpu = time.perf_counter(), time.process_time()
    history = wb.fit(model, train, epochs=args.epochs, batch_size=args.batch, optimizer="adamw", lr=args.lr,
                     seed=seed, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    start = time.perf_counter()
    result = wb.evaluate(model, Batches(val, 64, shuffle=False))
    return {"threads": threads, "seed": seed, "wall": wall, "cpu": cpu, "steps": history.step,
            "loss": history.loss[-1], "mAP50": result["mAP50"], "eval": time.perf_counter() - start, "model": model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--scenes", type=int, default=800)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--reg-max", type=int, default=1, help="1: the light head of the shipped detector; "
                        "16: Ultralytics' DFL head")
    args = parser.parse_args()

    start = time.perf_counter()
    train = shape_scenes(args.scenes, seed=0)
    val = shape_scenes(300, seed=10_000)
    print(f"data: {args.scenes} + 300 scenes 64x64 in {time.perf_counter() - start:.2f} s; "
          f"load average before {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"recipe: n detector, AdamW lr {args.lr}, batch {args.batch}, {args.epochs} epochs")
    print(f"{'threads':>7} {'seed':>4} {'steps':>5} {'train wall s':>12} {'train cpu s':>11} {'mAP50':>6} "
          f"{'eval s':>6}")
    runs = []
    for seed in range(args.repeats):
        for threads in args.threads if seed % 2 == 0 else args.threads[::-1]:
            r = run(train, val, seed, threads, args)
            runs.append(r)
            print(f"{threads:>7} {seed:>4} {r['steps']:>5} {r['wall']:>12.1f} {r['cpu']:>11.1f} {r['mAP50']:>6.3f} "
                  f"{r['eval']:>6.1f}", flush=True)
    print(f"load average after {os.getloadavg()[0]:.1f}")
    medians = {}
    for threads in args.threads:
        mine = [r for r in runs if r["threads"] == threads]
        wall = statistics.median(r["wall"] for r in mine)
        score = statistics.median(r["mAP50"] for r in mine)
        medians[threads] = wall
        verdict = "meets" if wall <= BUDGET_S and score >= TARGET_MAP else "misses"
        print(f"threads {threads}: median train {wall:.1f} s wall ({wall / BUDGET_S:.2f}x the {BUDGET_S:.0f} s "
              f"budget), "
              f"{statistics.median(r['cpu'] for r in mine):.1f} s cpu, median mAP50 {score:.3f} -> {verdict} "
              f"the target (mAP50 >= {TARGET_MAP} in <= {BUDGET_S:.0f} s)")
    if len(args.threads) > 1:
        base = args.threads[0]
        print("wall-time ratio to", base, "thread(s):",
              ", ".join(f"{t} threads {medians[t] / medians[base]:.2f}x" for t in args.threads[1:]))

    target_names = ("circle", "halfdisk", "tee")
    report = wb.transfer(runs[-1]["model"], wb.build_model("n", "detect", nc=3, reg_max=args.reg_max),
                         class_names=(train.classes, target_names))
    print(f"\n10 -> 3 transfer ({', '.join(target_names)}):")
    print("\n".join(str(report).splitlines()[:5]))


if __name__ == "__main__":
    main()
