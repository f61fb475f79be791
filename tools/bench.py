"""`make bench`: generate national-scale batches, run the real CLI on each, report figures.

Before and after, it times a fixed loop of Python alone and as two processes at once: this
machine's two cores are shared with other machines' work, and the runs slow when they are.

First, `check` on one claim file of about 5,000 lines (what a PCN's editor runs on save),
as CSV (against its 1 s target) and as the same cells in an .xlsx workbook: the median wall
time of the real CLI, start-up included.

For each size it prints and writes to bench/results.json: lines, the median wall time of
the end-to-end run and of each phase (read, schema, derive, rules, findings, report,
outputs), lines per second, peak resident memory, the index page's size, and the ratio of
the run to the time Polars alone takes to read the same CSV files.

    .venv/bin/python tools/bench.py [--runs 5] [--sizes month,year,million]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl

from validator.generate import generate
from validator.xlsx import workbook

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SIZES = {
    # name: (PCNs, months, what it stands for)
    "month": (1250, 6, "one national month with its history since April (~225,000 lines)"),
    "year": (1250, 12, "a national year (~450,000 lines)"),
    "million": (2750, 12, "1,000,000 lines"),
}
PHASES = ("read", "schema", "derive", "rules", "findings", "report", "outputs")


def batch(name: str) -> tuple[Path, dict]:
    pcns, months, _ = SIZES[name]
    folder = BENCH / name
    stamp = folder / "batch.json"
    wanted = {"pcns": pcns, "months": months, "seed": 2021}
    if stamp.exists() and json.loads(stamp.read_text()).get("params") == wanted:
        return folder, json.loads(stamp.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    counts = generate(folder, pcns=pcns, months=months, seed=2021)
    info = {"params": wanted, **counts, "generate_seconds": round(time.perf_counter() - started)}
    stamp.write_text(json.dumps(info, indent=2))
    return folder, info


class TreeMemory:
    """Samples, every 20 ms, the resident memory of a process and its children (the page
    renderer), whose own peaks wait4 does not report."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss_kb(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            try:
                children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
            except OSError:
                children = []
            total = self._rss_kb(self.pid) + sum(self._rss_kb(int(child)) for child in children)
            self.peak_mb = max(self.peak_mb, total / 1024)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def run_once(folder: Path, review_month: str) -> dict:
    timings = folder / "timings.json"
    command = [
        str(ROOT / ".venv" / "bin" / "arrs-validate"),
        "run",
        str(folder / "claims"),
        "--pcns",
        str(folder / "pcns.csv"),
        "--agreements",
        str(folder / "agreements.csv"),
        "--month",
        review_month,
        "--out",
        str(folder / "out"),
        "--timings",
        str(timings),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = TreeMemory(process.pid)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    sampler.stop()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        sys.exit(f"run failed with exit code {code}: {process.stderr.read().decode()}")
    return {
        "wall": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "peak_tree_rss_mb": max(sampler.peak_mb, usage.ru_maxrss / 1024),
        **json.loads(timings.read_text()),
    }


CHECK_PCNS = 147  # one month of 147 PCNs: one claim file of 5,013 lines


def _check_file(suffix: str) -> Path:
    """One claim file of about 5,000 lines: the CSV, or the same cells as a workbook."""
    folder = BENCH / "check"
    stamp = folder / "batch.json"
    wanted = {"pcns": CHECK_PCNS, "months": 1, "seed": 2021}
    if not stamp.exists() or json.loads(stamp.read_text()) != wanted:
        shutil.rmtree(folder, ignore_errors=True)
        generate(folder, **wanted)
        stamp.write_text(json.dumps(wanted))
    files = sorted((folder / "claims").glob("*.csv"))
    if suffix == ".csv":
        return files[0]
    book = folder / f"{files[0].stem}.xlsx"
    if not book.exists():
        cells = pl.read_csv(files[0], infer_schema=False)
        book.write_bytes(workbook([("Claims", cells, (), {})]))
    return book


def check_figure(runs: int, suffix: str = ".csv") -> dict:
    """The median wall time of `arrs-validate check` on one ~5,000-line claim file."""
    path = _check_file(suffix)
    lines = sum(1 for _ in _check_file(".csv").open(encoding="utf-8")) - 1
    command = [str(ROOT / ".venv" / "bin" / "arrs-validate"), "check", str(path)]
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        if completed.returncode not in (0, 1):
            sys.exit(f"check failed with exit code {completed.returncode}: {completed.stderr}")
    return {
        "file": path.name,
        "lines": lines,
        "runs": runs,
        "wall_seconds_median": round(statistics.median(walls), 2),
        "wall_seconds_all": [round(wall, 2) for wall in walls],
    }


def polars_read_seconds(folder: Path) -> float:
    files = sorted((folder / "claims").glob("*.csv"))
    started = time.perf_counter()
    for path in files:
        pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
    return time.perf_counter() - started


_SPIN = (
    "import time; t = time.perf_counter(); sum(range(20_000_000)); print(time.perf_counter() - t)"
)


def calibration() -> dict:
    """How free the two cores are just now: the seconds a fixed loop of Python takes alone,
    and as two processes at once. On a shared host the second figure can be half as fast
    again as the first, and every run below slows with it."""

    def spin(count: int) -> list[float]:
        spinning = [
            subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        return [round(float(process.communicate()[0]), 2) for process in spinning]

    return {"one_process_s": spin(1)[0], "two_processes_s": spin(2)}


def targets(sizes: dict) -> list[str]:
    """Issue #5's targets against the medians measured (sizes not run are left out)."""
    checks = []
    if "check" in sizes:
        checks.append(("check of ~5,000 lines <= 1 s", sizes["check"]["wall_seconds_median"], 1))
    if "year" in sizes:
        checks.append(("national year <= 5 s", sizes["year"]["wall_seconds_median"], 5))
    if "million" in sizes:
        million = sizes["million"]
        checks.append(("1,000,000 lines <= 10 s", million["wall_seconds_median"], 10))
        checks.append(("1,000,000 lines peak memory <= 2 GB (MB)", million["peak_rss_mb"], 2048))
    for name, figures in sizes.items():
        if name.startswith("check"):
            continue
        checks.append((f"{name} index.html < 2 MB (KB)", figures["index_html_kb"], 2048))
    return [
        f"target {name}: {value} -> {'met' if value <= limit else 'NOT MET'}"
        for name, value, limit in checks
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="month,year,million")
    args = parser.parse_args()
    results = {
        "machine": {
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "polars": pl.__version__,
        },
        "sizes": {},
    }
    results["machine"]["calibration_before"] = calibration()
    print(f"calibration before: {results['machine']['calibration_before']}", flush=True)
    for name, suffix in (("check", ".csv"), ("check_xlsx", ".xlsx")):
        check = results["sizes"][name] = check_figure(max(args.runs, 5), suffix)
        print(
            f"{name:10s} {check['lines']:>7,} lines of {check['file']}  "
            f"{check['wall_seconds_median']:6.2f} s (median of {check['runs']}, start-up included)",
            flush=True,
        )
    for name in args.sizes.split(","):
        folder, info = batch(name)
        runs = [run_once(folder, info["review_month"]) for _ in range(args.runs)]
        polars_read = statistics.median(polars_read_seconds(folder) for _ in range(3))
        median = {
            key: statistics.median(run.get(key, 0.0) for run in runs)
            for key in ("wall", "peak_rss_mb", *PHASES)
        }
        figures = {
            "what": SIZES[name][2],
            "lines": info["lines"],
            "runs": args.runs,
            "wall_seconds_median": round(median["wall"], 2),
            "wall_seconds_all": [round(run["wall"], 2) for run in runs],
            "phase_seconds_median": {phase: round(median[phase], 2) for phase in PHASES},
            "lines_per_second": round(info["lines"] / median["wall"]),
            "peak_rss_mb": round(max(run["peak_rss_mb"] for run in runs)),
            "peak_rss_with_page_renderer_mb": round(max(run["peak_tree_rss_mb"] for run in runs)),
            "index_html_kb": round((folder / "out" / "index.html").stat().st_size / 1024),
            "polars_read_seconds": round(polars_read, 2),
            "ratio_to_polars_read": round(median["wall"] / polars_read, 1),
        }
        results["sizes"][name] = figures
        phases = " ".join(f"{p} {figures['phase_seconds_median'][p]:.2f}" for p in PHASES)
        print(
            f"{name:8s} {figures['lines']:>9,} lines  {figures['wall_seconds_median']:6.2f} s "
            f"(median of {args.runs})  {figures['lines_per_second']:>9,} lines/s  "
            f"peak {figures['peak_rss_mb']:,} MB (with the page renderer "
            f"{figures['peak_rss_with_page_renderer_mb']:,} MB)  "
            f"index {figures['index_html_kb']} KB  "
            f"x{figures['ratio_to_polars_read']} Polars read\n          {phases}",
            flush=True,
        )
    results["machine"]["calibration_after"] = calibration()
    print(f"calibration after: {results['machine']['calibration_after']}")
    results["targets"] = targets(results["sizes"])
    for line in results["targets"]:
        print(line)
    (BENCH / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {BENCH / 'results.json'}")


if __name__ == "__main__":
    main()
