"""How far each lesson's claims are from failing, over seeds and torch thread counts.

Every numeric claim a lesson's check cell makes goes through ``workbench.claims.check``, which
appends (claim, value, op, threshold) to the file named by ``WORKBENCH_CLAIMS_LOG``. This bench
runs each notebook (lessons and solutions) in a fresh kernel with ``SEED = k`` put into its setup
cell and ``torch.set_num_threads(t)`` / ``OMP_NUM_THREADS=t`` for the kernel, with failed checks
recorded rather than raised, and prints per claim the threshold, the worst value seen, the margin
(negative: the claim fails somewhere) and the seed/threads of the worst run. Cells that raise for
another reason are listed after the table.

The experiment tests (``tests/test_experiments_*.py``) assert mechanisms on tiny, fixed runs
(exact equalities and signs); ``--tests`` also runs them once per thread count.

    python bench/bench_claims.py                                  # every notebook, seeds 0-4, threads 1 and 2
    python bench/bench_claims.py notebooks/01_*.ipynb --seeds 0 1 --threads 1 --jobs 2 --save runs.jsonl
    python bench/bench_claims.py --load runs.jsonl other.jsonl    # the table of runs saved earlier
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from bench_notebooks import kernel_pid, peak_rss_mib  # noqa: E402

from workbench.claims import KEEP_GOING_VARIABLE, LOG_VARIABLE, margin  # noqa: E402

SEED_LINE = re.compile(r"^SEED = \d+$", re.MULTILINE)


def seeded_notebook(path: Path, seed: int, threads: int):
    """The notebook with ``SEED = seed`` in its setup cell and a first cell setting torch's threads."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    setup = [cell for cell in nb.cells if cell.cell_type == "code" and SEED_LINE.search(cell.source)]
    if len(setup) != 1:
        raise ValueError(f"{path}: expected one cell with a line `SEED = 0`, found {len(setup)}")
    setup[0].source = SEED_LINE.sub(f"SEED = {seed}", setup[0].source)
    nb.cells.insert(0, nbformat.v4.new_code_cell(f"import torch\ntorch.set_num_threads({threads})"))
    return nb


def run_notebook(path: Path, seed: int, threads: int, timeout: int = 900) -> dict:
    """Execute one notebook at one grid point; its claim records, cell errors and CPU seconds."""
    from nbclient import NotebookClient

    nb = seeded_notebook(path, seed, threads)
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as log:
        log_path = log.name
    env = {**os.environ, LOG_VARIABLE: log_path, KEEP_GOING_VARIABLE: "1", "OMP_NUM_THREADS": str(threads),
           "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}  # idle threads sleep: CPU time stays honest
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            store_widget_state=False, resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    with client.setup_kernel(env=env):
        pid = kernel_pid(client)
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        cpu, peak = kernel_cpu_seconds(pid), peak_rss_mib(pid)
    errors = [f"{out.ename}: {out.evalue}"[:300] for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.output_type == "error"]
    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    os.unlink(log_path)
    return {"notebook": path.stem, "seed": seed, "threads": threads, "records": records, "errors": errors,
            "seconds": round(time.perf_counter() - started, 1), "cpu_seconds": cpu, "peak_mib": peak}


def kernel_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a process has used so far, from ``/proc/<pid>/stat``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def run_tests(threads: int) -> dict:
    """Run the experiment tests with ``threads`` torch threads; their failures, if any."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    tests = sorted(str(p) for p in (ROOT / "tests").glob("test_experiments_*.py"))
    done = subprocess.run([sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    return {"notebook": "tests/test_experiments_*", "seed": None, "threads": threads, "records": [],
            "errors": failed if done.returncode else [], "summary": summary}


def worst(runs: list[dict]) -> list[dict]:
    """Per (notebook, claim): the threshold, the worst value over the runs, its margin and where it was seen."""
    table: dict[tuple[str, str], dict] = {}
    for run in runs:
        for record in run["records"]:
            key = (run["notebook"], record["claim"])
            where = f"seed {run['seed']}/{run['threads']}t"
            m = margin(record["value"], record["op"], record["threshold"])
            row = table.setdefault(key, {"notebook": key[0], "claim": key[1], "op": record["op"],
                                         "threshold": record["threshold"], "runs": 0, "failed": 0,
                                         "worst": record["value"], "margin": m, "where": where})
            row["runs"] += 1
            row["failed"] += not record["holds"]
            if m is not None and (row["margin"] is None or m < row["margin"]):
                row.update(worst=record["value"], margin=m, where=where)
            elif m is None and not record["holds"] and row["failed"] == 1:
                row.update(worst=record["value"], where=where)
    return list(table.values())


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 28 else text[:25] + "..."


def markdown(rows: list[dict]) -> str:
    lines = ["| lesson | claim | threshold | worst value | margin | where | failed/runs |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        shown_margin = "-" if r["margin"] is None else f"{r['margin']:.3g}"
        lines.append(f"| {r['notebook']} | {r['claim']} | {r['op']} {_cell(r['threshold'])} | {_cell(r['worst'])} "
                     f"| {shown_margin} | {r['where']} | {r['failed']}/{r['runs']} |")
    return "\n".join(lines)


def cost_table(runs: list[dict]) -> str:
    """Per notebook: the largest kernel CPU time and peak memory over its runs."""
    lines = ["", "| notebook | runs | CPU s (max) | peak MiB (max) |", "|---|---:|---:|---:|"]
    for name in sorted({r["notebook"] for r in runs if r.get("cpu_seconds") is not None}):
        mine = [r for r in runs if r["notebook"] == name and r.get("cpu_seconds") is not None]
        peaks = [r["peak_mib"] for r in mine if r.get("peak_mib") is not None]
        lines.append(f"| {name} | {len(mine)} | {max(r['cpu_seconds'] for r in mine):.0f} | "
                     f"{max(peaks) if peaks else float('nan'):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every lesson and solution notebook")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at the same time")
    parser.add_argument("--tests", action="store_true", help="also run the experiment tests per thread count")
    parser.add_argument("--save", type=Path, help="append each run (JSON lines) to this file as it ends")
    parser.add_argument("--load", nargs="+", type=Path, default=[], help="runs saved earlier, tabled with these")
    args = parser.parse_args(argv)
    runs = [json.loads(line) for path in args.load for line in path.read_text().splitlines() if line.strip()]
    notebooks = args.notebooks if args.notebooks or args.load else sorted(
        [*(ROOT / "notebooks").glob("[0-9]*.ipynb"), *(ROOT / "notebooks" / "solutions").glob("*.ipynb")])
    grid = [(path, seed, threads) for path in notebooks for seed in args.seeds for threads in args.threads]

    def one(point):
        result = run_notebook(*point)
        print(f"{result['notebook']} seed {point[1]} threads {point[2]}: {len(result['records'])} claims, "
              f"{sum(not r['holds'] for r in result['records'])} failed, {len(result['errors'])} errors, "
              f"{result['seconds']} s, {result['cpu_seconds']} CPU s, {result['peak_mib'] or float('nan'):.0f} MiB",
              file=sys.stderr, flush=True)
        if args.save:
            with args.save.open("a") as file:
                file.write(json.dumps(result, default=repr) + "\n")
        return result

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs += list(pool.map(one, grid))
    if args.tests:
        runs += [run_tests(t) for t in args.threads]
    print(markdown(worst(runs)))
    print(cost_table(runs))
    broken = [(r["notebook"], r["seed"], r["threads"], e) for r in runs for e in r["errors"]]
    for notebook, seed, threads, error in broken:
        print(f"error in {notebook} (seed {seed}, {threads} threads): {error}")
    for r in runs:
        if "summary" in r:
            print(f"experiment tests, {r['threads']} threads: {r['summary']}")
    failed = sum(not rec["holds"] for r in runs for rec in r["records"])
    return 1 if failed or broken else 0


if __name__ == "__main__":
    sys.exit(main())
