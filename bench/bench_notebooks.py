"""Run every notebook (lessons and solutions) in a fresh kernel; print its wall time and peak memory.

Each notebook is executed by nbclient, as nbval does, in its own folder, with widget state not
stored. The time is measured around the whole run (kernel start included) and around the cells
alone; the peak memory is the kernel process's peak resident set size (``VmHWM`` in
``/proc/<pid>/status``, read just before the kernel shuts down; psutil's current RSS, sampled,
where ``/proc`` is missing). The limits every notebook must meet are 60 s and 1 GiB on 2 CPU
cores with ``OMP_NUM_THREADS=1`` (the default here).

    python bench/bench_notebooks.py                       # every notebook, once
    python bench/bench_notebooks.py notebooks/05_*.ipynb --repeat 3

Prints a markdown table (medians over ``--repeat`` runs; the peak is the largest seen).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_SECONDS, LIMIT_MIB = 60.0, 1024.0


def peak_rss_mib(pid: int) -> float | None:
    """The peak resident set size of a process in MiB (``VmHWM``), or None where ``/proc`` is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Fallback without ``/proc``: sample the kernel's RSS with psutil every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.peak, self._done = None, threading.Event()
        try:
            import psutil
        except ImportError:
            return
        process = psutil.Process(pid)

        def sample():
            while not self._done.is_set():
                try:
                    rss = process.memory_info().rss / 2**20
                except psutil.Error:
                    return
                self.peak = max(self.peak or 0.0, rss)
                self._done.wait(interval)

        threading.Thread(target=sample, daemon=True).start()

    def stop(self) -> float | None:
        self._done.set()
        return self.peak


def kernel_pid(client) -> int:
    provisioner = client.km.provisioner
    return provisioner.process.pid if getattr(provisioner, "process", None) is not None else provisioner.pid


def run_notebook(path: Path, timeout: int = 600) -> dict:
    """Execute one notebook in a fresh kernel; its total and cell seconds, peak RSS (MiB) and error if any."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    error, cells, peak = None, 0.0, None
    with client.setup_kernel():
        pid = kernel_pid(client)
        sampler = RssSampler(pid) if peak_rss_mib(pid) is None else None
        cells_started = time.perf_counter()
        try:
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
        except Exception as err:  # a failing cell: report it in the table, go on with the next notebook
            error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        cells = time.perf_counter() - cells_started
        peak = peak_rss_mib(pid) if sampler is None else sampler.stop()
    return {"total": time.perf_counter() - started, "cells": cells, "peak": peak, "error": error}


def notebooks(patterns: list[str]) -> list[Path]:
    if patterns:
        return [Path(p).resolve() for p in patterns]
    found = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
    return [p for p in found if ".ipynb_checkpoints" not in p.parts]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook paths (default: every notebook and solution)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per notebook (median time, largest peak)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell before giving up")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    paths = notebooks(args.notebooks)
    if not paths:
        print("no notebooks found", file=sys.stderr)
        return 1
    results: dict[Path, list[dict]] = {p: [] for p in paths}
    for _ in range(args.repeat):  # interleaved: every notebook once per round, so load drifts hit all alike
        for path in paths:
            results[path].append(run_notebook(path, args.timeout))
            last = results[path][-1]
            print(f"  {path.relative_to(ROOT)}: {last['total']:.1f} s, "
                  f"{last['peak'] or float('nan'):.0f} MiB{'  ' + last['error'] if last['error'] else ''}",
                  file=sys.stderr, flush=True)
    print(f"\nOMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, {args.repeat} run(s) per notebook (median time, largest peak)\n")
    print("| notebook | total (s) | cells (s) | peak RSS (MiB) | within 60 s and 1 GiB |")
    print("|---|---:|---:|---:|:---:|")
    failed = False
    for path, runs in results.items():
        total = statistics.median(r["total"] for r in runs)
        cells = statistics.median(r["cells"] for r in runs)
        peaks = [r["peak"] for r in runs if r["peak"] is not None]
        peak = max(peaks) if peaks else None
        errors = [r["error"] for r in runs if r["error"]]
        ok = not errors and total <= LIMIT_SECONDS and (peak is None or peak <= LIMIT_MIB)
        failed |= not ok
        verdict = "yes" if ok else ("error: " + errors[0] if errors else "no")
        print(f"| `{path.relative_to(ROOT)}` | {total:.1f} | {cells:.1f} | "
              f"{'n/a' if peak is None else f'{peak:.0f}'} | {verdict} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
