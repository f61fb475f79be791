"""`make bench`: time the real CLI against a bare Polars read of the same files, and report
each performance target as met or not met from ratios measured in the same run.

Every figure that decides a target is a ratio of two whole processes timed in turn, round
after round (interleaved), so a host that slows down slows both sides alike:

- start-up: `arrs-validate rules`, `explain CAP-01` and `--help` against `python -c pass`
  (target: at most 3x), with the import time of each command (`python -X importtime`) and
  whether it imported Polars, Pandera or durable-rules (it must not);
- the sample batch (one ICB) end to end against a bare Polars read process of its claim
  files (target: at most 1.5x);
- a national year end to end, payments.csv and lines.csv included, against a bare Polars
  read process of its claim files (target: at most 4x);
- a million lines' peak memory (target: at most 1 GB), with the growth per line from the
  peaks at three sizes (month, year, million).

And `check` on one claim file of about 5,000 lines (what a PCN's editor runs on save), as
CSV (against its 1 s target) and as the same cells in an .xlsx workbook: the median wall
time of the real CLI, start-up included.

It also times a fixed loop of Python alone and as two processes at once, before and after:
this machine's two cores are shared with other machines' work. Batches are generated under
bench/ (git-ignored) and reused; bench/results.json keeps the figures.

    .venv/bin/python tools/bench.py [--runs 5] [--sizes month,year,million] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

# The environment a shell would start the tool with, taken before this process imports
# Polars: importing Polars writes its own allocator settings (_RJEM_MALLOC_CONF) into
# os.environ, and a child inheriting them measured 1.24 GB where the same run started from a
# shell peaks under 1 GB. Every measured process gets this environment.
SHELL_ENV = dict(os.environ)
ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
CLI = ROOT / ".venv" / "bin" / "arrs-validate"
SAMPLE = ROOT / "sample_claims"
SIZES = {
    # name: (PCNs, months, what it stands for)
    "month": (1250, 6, "one national month with its history since April (~225,000 lines)"),
    "year": (1250, 12, "a national year (~450,000 lines)"),
    "million": (2750, 12, "1,000,000 lines"),
}
PHASES = ("read", "schema", "derive", "rules", "findings", "report", "outputs")
STARTUP = {
    "rules": ["rules"],
    "explain": ["explain", "CAP-01"],
    "--help": ["--help"],
}
HEAVY = ("polars", "pandera", "durable")  # what the catalogue commands must not import
TARGETS = {
    "startup": 3.0,  # each of rules, explain, --help: x `python -c pass`
    "sample": 1.5,  # the sample batch: x a bare Polars read process of its files
    "year": 4.0,  # the national year: x a bare Polars read process of its files
    "million_mb": 1024,  # peak memory at a million lines
}

# The floor: a process that imports Polars and reads the same claim files, as the run does
# (text, every column; the sample's one Latin-1 file read leniently as the run reads it).
_POLARS_READ = """
import sys, polars as pl
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("*.csv")):
    pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True, encoding="utf8-lossy")
"""


def batch(name: str) -> tuple[Path, dict]:
    from validator.generate import generate

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


def timed(command: list[str], ok: tuple[int, ...] = (0,), memory: bool = False) -> dict:
    """One whole process: wall seconds and peak memory (its own, and with its children)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=SHELL_ENV
    )
    sampler = TreeMemory(process.pid) if memory else None
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if sampler:
        sampler.stop()
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        sys.exit(f"{' '.join(command)} failed with exit code {code}: {process.stderr.read()}")
    process.stderr.close()
    peak = usage.ru_maxrss / 1024
    return {
        "wall": wall,
        "peak_rss_mb": peak,
        "peak_tree_mb": max(peak, sampler.peak_mb if sampler else 0),
    }


CHECK_PCNS = 147  # one month of 147 PCNs: one claim file of 5,013 lines


def _check_file(suffix: str) -> Path:
    """One claim file of about 5,000 lines: the CSV, or the same cells as a workbook."""
    import polars as pl

    from validator.generate import generate
    from validator.xlsx import workbook

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
    command = [str(CLI), "check", str(path)]
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, env=SHELL_ENV)
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


def run_command(claims: Path, pcns: Path, agreements: Path, month: str, out: Path) -> list[str]:
    return [
        str(CLI),
        "run",
        str(claims),
        "--pcns",
        str(pcns),
        "--agreements",
        str(agreements),
        "--month",
        month,
        "--out",
        str(out),
        "--timings",
        str(out.parent / f"{out.name}-timings.json"),
        "--quiet",
    ]


def paired(run: list[str], claims: Path, runs: int, memory: bool = False) -> dict:
    """`runs` rounds of (the bare Polars read process, the run), interleaved; medians, the
    ratio of the medians, and each round's own ratio."""
    floor_command = [str(VENV_PYTHON), "-c", _POLARS_READ, str(claims)]
    floors, walls, peaks, trees, phases = [], [], [], [], []
    timings = Path(run[run.index("--timings") + 1])
    for _ in range(runs):
        floors.append(timed(floor_command)["wall"])
        # exit 1 (open findings) and 2 (the sample's missing rate) are completed runs
        figures = timed(run, ok=(0, 1, 2), memory=memory)
        walls.append(figures["wall"])
        peaks.append(figures["peak_rss_mb"])
        trees.append(figures["peak_tree_mb"])
        phases.append(json.loads(timings.read_text()))
    floor, wall = statistics.median(floors), statistics.median(walls)
    return {
        "polars_read_seconds_median": round(floor, 3),
        "run_seconds_median": round(wall, 3),
        "run_seconds_all": [round(w, 2) for w in walls],
        "ratio": round(wall / floor, 2),
        "ratio_each_round": [round(w / f, 2) for w, f in zip(walls, floors, strict=True)],
        "phase_seconds_median": {
            phase: round(statistics.median(p.get(phase, 0.0) for p in phases), 3)
            for phase in PHASES
        },
        "peak_rss_mb": round(max(peaks)),
        "peak_rss_mb_each_run": [round(peak) for peak in peaks],
        "peak_rss_with_page_renderer_mb": round(max(trees)),
    }


def import_figures(arguments: list[str]) -> dict:
    """A command's imports under `python -X importtime`: the total, and which of the heavy
    libraries it loaded."""
    code = f"import sys; from validator.cli import main; sys.exit(main({arguments!r}))"
    process = subprocess.run(
        [str(VENV_PYTHON), "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=SHELL_ENV,
    )
    total_us, heavy = 0, set()
    for line in process.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if not match:
            continue
        cumulative, indent, module = match.groups()
        if not indent:  # a top-level import: its cumulative time holds its children's
            total_us += int(cumulative)
        top = module.split(".")[0]
        if top.startswith(HEAVY):
            heavy.add(top)
    return {"import_ms": round(total_us / 1000, 1), "heavy_imports": sorted(heavy)}


# What a run imports before it reads a claim (its page renderer, a child process, imports Jinja
# alongside): timed alone, it is the floor under the sample's ratio.
_RUN_IMPORTS = (
    "import validator.cli, validator.runner, validator.pipeline, validator.outputs, "
    "validator.report"
)

# The Polars read, after importing Pandera's Polars API as the run imports it (without
# Hypothesis): the least a run that schema-checks with Pandera does, and nothing of the tool.
_POLARS_READ_WITH_PANDERA = (
    "import sys; sys.modules['hypothesis'] = None\n"
    "import pandera.backends.polars.builtin_checks, pandera.polars\n" + _POLARS_READ
)


def imports_alone(claims: Path, rounds: int) -> dict:
    """Two floors under the sample's ratio, each against the bare Polars read of `claims`,
    interleaved: a process that only imports what a run imports, and the Polars read that
    also imports Pandera. How much of the ratio no work on the claims can remove."""
    floor_command = [str(VENV_PYTHON), "-c", _POLARS_READ, str(claims)]
    imports_command = [str(VENV_PYTHON), "-c", _RUN_IMPORTS]
    pandera_command = [str(VENV_PYTHON), "-c", _POLARS_READ_WITH_PANDERA, str(claims)]
    floors, walls, panderas = [], [], []
    for _ in range(rounds):
        floors.append(timed(floor_command)["wall"])
        walls.append(timed(imports_command)["wall"])
        panderas.append(timed(pandera_command)["wall"])
    floor = statistics.median(floors)
    wall, pandera = statistics.median(walls), statistics.median(panderas)
    return {
        "seconds_median": round(wall, 3),
        "ratio": round(wall / floor, 2),
        "read_with_pandera_seconds_median": round(pandera, 3),
        "read_with_pandera_ratio": round(pandera / floor, 2),
    }


def output_floor(out: Path) -> dict:
    """What a run's required outputs cost to serialise with none of the tool's work: its
    lines.csv and exceptions.csv (read back as text) written again by Polars' CSV writer and
    encoded by its JSON encoder (exceptions.json holds both again), and its workbook's XML
    deflated again as the tool writes it (level 1). CPU seconds of this process, every
    thread counted: no validation, no formatting, no XML built, no page rendered."""
    import io
    import zipfile
    import zlib

    import polars as pl

    frames = [
        pl.read_csv(out / name, infer_schema=False) for name in ("lines.csv", "exceptions.csv")
    ]
    with zipfile.ZipFile(out / "exceptions.xlsx") as book:
        xml = [book.read(member) for member in book.infolist()]
    seconds = {}
    started = time.process_time()
    for frame in frames:
        frame.write_csv(io.BytesIO())
    seconds["csv"] = time.process_time() - started
    started = time.process_time()
    for frame in frames:
        frame.select(pl.struct(pl.all()).struct.json_encode()).write_csv(
            io.BytesIO(), quote_style="never"
        )
    seconds["json"] = time.process_time() - started
    started = time.process_time()
    for part in xml:
        packer = zlib.compressobj(1, zlib.DEFLATED, -15)
        packer.compress(part)
        packer.flush()
        zlib.crc32(part)
    seconds["workbook_deflate"] = time.process_time() - started
    return {
        **{name: round(value, 2) for name, value in seconds.items()},
        "cpu_seconds": round(sum(seconds.values()), 2),
        "workbook_xml_mb": round(sum(len(part) for part in xml) / 1e6),
    }


def startup(rounds: int) -> dict:
    """rules, explain and --help against `python -c pass`, interleaved; with import times."""
    base = [str(VENV_PYTHON), "-c", "pass"]
    seconds: dict[str, list[float]] = {"python -c pass": [], **{name: [] for name in STARTUP}}
    for _ in range(rounds):
        seconds["python -c pass"].append(timed(base)["wall"])
        for name, arguments in STARTUP.items():
            seconds[name].append(timed([str(CLI), *arguments])["wall"])
    floor = statistics.median(seconds["python -c pass"])
    figures = {"python_c_pass_seconds_median": round(floor, 4)}
    for name, arguments in STARTUP.items():
        median = statistics.median(seconds[name])
        figures[name] = {
            "seconds_median": round(median, 4),
            "ratio": round(median / floor, 2),
            **import_figures(arguments),
        }
    return figures


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


def growth_per_line(sizes: dict) -> dict | None:
    """Peak memory against lines at the sizes measured: a least-squares line (KB per line
    and the fixed MB), needing three sizes."""
    points = [(figures["lines"], figures["peak_rss_mb"]) for figures in sizes.values()]
    if len(points) < 3:
        return None
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
        (x - mean_x) ** 2 for x, _ in points
    )
    return {
        "kb_per_line": round(slope * 1024, 2),
        "fixed_mb": round(mean_y - slope * mean_x),
        "points": [{"lines": x, "peak_rss_mb": y} for x, y in points],
    }


def verdicts(results: dict) -> list[str]:
    """Each target against the ratio (or memory) measured in this run."""
    checks = []
    if "check" in results:
        seconds = results["check"]["check"]["wall_seconds_median"]
        checks.append(("check of ~5,000 lines <= 1 s", seconds, 1.0, f"{seconds} s"))
    for name in STARTUP:
        if name in results.get("startup", {}):
            figures = results["startup"][name]
            checks.append(
                (
                    f"`{name}` <= {TARGETS['startup']}x python -c pass",
                    figures["ratio"],
                    TARGETS["startup"],
                    f"x{figures['ratio']}; imports {figures['import_ms']} ms, "
                    f"heavy: {', '.join(figures['heavy_imports']) or 'none'}",
                )
            )
            if figures["heavy_imports"]:
                checks.append((f"`{name}` imports no Polars, Pandera or durable-rules", 1, 0, ""))
    if "sample" in results:
        ratio = results["sample"]["ratio"]
        floors = results["sample"].get("imports_alone", {})
        shown = f"x{ratio}"
        if floors:
            shown += (
                f" (floors: the run's imports alone x{floors['ratio']}, the Polars read "
                f"importing Pandera x{floors['read_with_pandera_ratio']})"
            )
        checks.append(
            ("sample batch <= 1.5x a Polars read process", ratio, TARGETS["sample"], shown)
        )
    sizes = results.get("sizes", {})
    if "year" in sizes:
        year = sizes["year"]
        ratio = year["ratio"]
        report = year["phase_seconds_median"]["report"] / year["polars_read_seconds_median"]
        checks.append(
            (
                "national year <= 4x a Polars read process",
                ratio,
                TARGETS["year"],
                f"x{ratio} (the report phase alone x{report:.1f})",
            )
        )
    if "million" in sizes:
        peak = sizes["million"]["peak_rss_mb"]
        checks.append(("1,000,000 lines peak <= 1 GB", peak, TARGETS["million_mb"], f"{peak} MB"))
    return [
        f"target {name}: {shown} -> {'met' if value <= limit else 'NOT MET'}".replace(": ->", " ->")
        for name, value, limit, shown in checks
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds per batch (default 5)")
    parser.add_argument("--sizes", default="month,year,million")
    parser.add_argument(
        "--quick", action="store_true", help="start-up and the sample only (no national batches)"
    )
    args = parser.parse_args()
    import polars as pl

    results: dict = {
        "machine": {
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "polars": pl.__version__,
        },
    }
    BENCH.mkdir(exist_ok=True)
    results["machine"]["calibration_before"] = calibration()
    print(f"calibration before: {results['machine']['calibration_before']}", flush=True)

    results["startup"] = figures = startup(max(10, args.runs * 2))
    print(f"python -c pass {figures['python_c_pass_seconds_median']:.3f} s (median)")
    for name in STARTUP:
        each = figures[name]
        print(
            f"  {name:8s} {each['seconds_median']:.3f} s  x{each['ratio']}  imports "
            f"{each['import_ms']} ms  heavy imports: {', '.join(each['heavy_imports']) or 'none'}",
            flush=True,
        )
    results["check"] = {}
    for name, suffix in (("check", ".csv"), ("check_xlsx", ".xlsx")):
        check = results["check"][name] = check_figure(max(args.runs, 5), suffix)
        print(
            f"{name:10s} {check['lines']:>7,} lines of {check['file']}  "
            f"{check['wall_seconds_median']:6.2f} s (median of {check['runs']}, start-up included)",
            flush=True,
        )
    sample_run = run_command(
        SAMPLE / "claims",
        SAMPLE / "pcns.csv",
        SAMPLE / "agreements.csv",
        "2021-12",
        BENCH / "out-sample",
    )
    results["sample"] = sample = paired(sample_run, SAMPLE / "claims", max(args.runs, 5))
    results["sample"]["run_imports"] = import_figures(sample_run[1:])
    results["sample"]["imports_alone"] = alone = imports_alone(SAMPLE / "claims", max(args.runs, 5))
    print(
        f"sample   {sample['run_seconds_median']:.2f} s  Polars read "
        f"{sample['polars_read_seconds_median']:.2f} s"
        f"  x{sample['ratio']} (rounds {sample['ratio_each_round']})  run imports "
        f"{sample['run_imports']['import_ms']} ms\n"
        f"         a process importing what a run imports, and nothing else: "
        f"{alone['seconds_median']:.2f} s  x{alone['ratio']}\n"
        f"         the Polars read importing Pandera too: "
        f"{alone['read_with_pandera_seconds_median']:.2f} s  x{alone['read_with_pandera_ratio']}",
        flush=True,
    )
    results["sizes"] = {}
    for name in [] if args.quick else args.sizes.split(","):
        folder, info = batch(name)
        command = run_command(
            folder / "claims",
            folder / "pcns.csv",
            folder / "agreements.csv",
            info["review_month"],
            BENCH / f"out-{name}",
        )
        runs = args.runs if name != "million" else max(1, min(args.runs, 3))
        figures = {"what": SIZES[name][2], "lines": info["lines"], "runs": runs}
        figures.update(paired(command, folder / "claims", runs, memory=True))
        figures["lines_per_second"] = round(info["lines"] / figures["run_seconds_median"])
        figures["index_html_kb"] = round(
            (BENCH / f"out-{name}" / "index.html").stat().st_size / 1024
        )
        if name == "year":
            figures["output_floor"] = output_floor(BENCH / f"out-{name}")
        results["sizes"][name] = figures
        phases = " ".join(f"{p} {figures['phase_seconds_median'][p]:.2f}" for p in PHASES)
        print(
            f"{name:8s} {figures['lines']:>9,} lines  {figures['run_seconds_median']:6.2f} s "
            f"(median of {runs}; {figures['run_seconds_all']})  Polars read "
            f"{figures['polars_read_seconds_median']:.2f} s  x{figures['ratio']}  "
            f"peak {figures['peak_rss_mb']:,} MB (runs {figures['peak_rss_mb_each_run']}; "
            f"with the page renderer "
            f"{figures['peak_rss_with_page_renderer_mb']:,} MB)  "
            f"index {figures['index_html_kb']} KB"
            f"\n          {phases}",
            flush=True,
        )
        if "output_floor" in figures:
            floor = figures["output_floor"]
            print(
                f"          its outputs serialised with none of the tool's work: "
                f"{floor['cpu_seconds']:.2f} s of CPU (CSV {floor['csv']:.2f}, JSON "
                f"{floor['json']:.2f}, deflating the workbook's {floor['workbook_xml_mb']} MB "
                f"of XML {floor['workbook_deflate']:.2f}); 4x the read on {os.cpu_count()} "
                f"cores is {4 * figures['polars_read_seconds_median'] * os.cpu_count():.2f} s "
                "of CPU",
                flush=True,
            )
    growth = growth_per_line(results["sizes"])
    if growth:
        results["memory_growth"] = growth
        print(
            f"memory: {growth['kb_per_line']} KB a line beyond a fixed {growth['fixed_mb']} MB "
            f"(least squares over {len(growth['points'])} sizes)"
        )
    results["machine"]["calibration_after"] = calibration()
    print(f"calibration after: {results['machine']['calibration_after']}")
    results["targets"] = verdicts(results)
    for line in results["targets"]:
        print(line)
    (BENCH / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures written to {BENCH / 'results.json'}")


if __name__ == "__main__":
    main()
