"""Safe in anyone's hands: the output folder never destroys what the tool did not write, no
code runs from the current folder, locks never write through links, bad settings are named,
and every exit code tells the truth. Each case runs the real CLI on real files."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from tests.helpers import CLI, PROJECT, agreements, claims, register, run_cli, run_small
from tests.test_unattended import GUARD, drain, parked_run
from validator import cli, runner
from validator.runner import OutputLock
from validator.unattended import latest_previous

CONSOLE_SCRIPT = Path(sys.executable).parent / "arrs-validate"


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) with its SHA-256."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def small_inputs(folder: Path) -> tuple[Path, Path]:
    return claims(folder / "claims" / "c.csv", {}), register(folder / "pcns.csv")


def run_into(folder: Path, out: str | Path, *extra: str, cwd: Path | None = None):
    claim_file, pcns = small_inputs(folder)
    return run_cli(
        "run", str(claim_file.parent), "--pcns", str(pcns), "--out", str(out), *extra, cwd=cwd
    )


def assert_refused(completed: subprocess.CompletedProcess, *words: str) -> None:
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    for word in words:
        assert word in completed.stderr, completed.stderr


# --- the output folder never destroys what the tool did not write -------------------------


def test_out_naming_the_claims_folder_is_refused_and_the_claims_survive(tmp_path):
    claim_file, pcns = small_inputs(tmp_path)
    before = tree_digest(tmp_path)
    completed = run_cli(
        "run", str(claim_file.parent), "--pcns", str(pcns), "--out", str(claim_file.parent)
    )
    assert_refused(completed, "--out", "is the input CLAIMS")
    assert tree_digest(tmp_path) == before


def test_out_naming_the_register_file_is_refused(tmp_path):
    claim_file, pcns = small_inputs(tmp_path)
    before = tree_digest(tmp_path)
    completed = run_cli("run", str(claim_file), "--pcns", str(pcns), "--out", str(pcns))
    assert_refused(completed, "is the input --pcns")
    assert tree_digest(tmp_path) == before and pcns.is_file()


def test_run_dot_out_dot_moves_nothing(tmp_path):
    small_inputs(tmp_path)
    before = tree_digest(tmp_path)
    completed = run_cli("run", ".", "--pcns", "pcns.csv", "--out", ".", cwd=tmp_path)
    assert_refused(completed, "--out . is the input CLAIMS .")
    assert tree_digest(tmp_path) == before
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.old-*"))


@pytest.mark.parametrize("where", ["inside the claims", "around the register"])
def test_out_inside_or_around_an_input_is_refused(tmp_path, where):
    claim_file, pcns = small_inputs(tmp_path)
    out = claim_file.parent / "report" if where == "inside the claims" else tmp_path
    before = tree_digest(tmp_path)
    completed = run_cli("run", str(claim_file.parent), "--pcns", str(pcns), "--out", str(out))
    assert_refused(completed, "--out")
    assert tree_digest(tmp_path) == before


def test_a_folder_of_someone_elses_files_is_never_emptied(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "important.txt").write_text("keep me")
    completed = run_into(tmp_path, out)
    assert_refused(completed, "no manifest.json written by arrs-validate", "nothing was changed")
    assert (out / "important.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".mine.*-*"))


def test_a_file_added_to_an_earlier_runs_folder_is_never_deleted(tmp_path):
    out = tmp_path / "out"
    assert run_into(tmp_path, out).returncode == 0
    (out / "notes.txt").write_text("my notes")
    completed = run_into(tmp_path, out)
    assert_refused(completed, "notes.txt", "did not write")
    assert (out / "notes.txt").read_text() == "my notes"


def test_an_earlier_runs_folder_is_replaced_as_before(tmp_path):
    out = tmp_path / "out"
    assert run_into(tmp_path, out).returncode == 0
    assert run_into(tmp_path, out).returncode == 0
    assert (out / "manifest.json").is_file()


def test_an_out_that_is_a_link_publishes_at_its_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    for _ in range(3):
        assert run_into(tmp_path, link).returncode == 0
    assert link.is_symlink() and (target / "manifest.json").is_file()
    # Only the last run's replaced outputs wait beside the target, as for any folder.
    assert len(list(tmp_path.glob(".real.old-*"))) == 1
    assert not list(tmp_path.glob(".link.*"))


# --- no code from the current folder; no writing through links ---------------------------


def test_the_page_renderer_never_imports_from_the_current_folder(tmp_path):
    planted = tmp_path / "validator"
    planted.mkdir()
    marker = tmp_path / "pwned"
    for name in ("__init__.py", "pages.py"):
        (planted / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    claim_file, pcns = small_inputs(tmp_path / "inputs")
    completed = subprocess.run(
        [str(CONSOLE_SCRIPT), "run", str(claim_file), "--pcns", str(pcns), "--out", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert not marker.exists()
    assert (tmp_path / "out" / "pcn" / "U10001.html").is_file()


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("do not truncate")
    (tmp_path / ".out.lock").symlink_to(precious)
    completed = run_into(tmp_path, tmp_path / "out")
    assert_refused(completed, "is a symbolic link")
    assert precious.read_text() == "do not truncate"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ["12345", "null", "[1, 2]", "\x00garbage{"])
def test_a_stale_or_garbled_lock_file_is_cleared(tmp_path, content):
    (tmp_path / ".out.lock").write_text(content)
    completed = run_into(tmp_path, tmp_path / "out")
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / ".out.lock").read_text() == ""  # emptied on release


def test_one_lock_per_folder_whether_named_by_pattern_or_by_path(tmp_path):
    reports = tmp_path / "reports"
    held = OutputLock(reports / "2021-06")
    held.acquire()
    try:
        completed = run_into(tmp_path, reports / "{review_month}")
        assert_refused(completed, "is in use by process", str(os.getpid()))
        relative = run_into(tmp_path, Path("reports/./2021-06"), cwd=tmp_path)
        assert_refused(relative, "is in use by process")
    finally:
        held.release()
    assert not (reports / "2021-06").exists()
    assert run_into(tmp_path, reports / "{review_month}").returncode == 0
    assert (reports / "2021-06" / "manifest.json").is_file()


# --- bad settings are named, with exit 2 ---------------------------------------------------


def write_config(folder: Path, body: str) -> Path:
    small_inputs(folder)
    path = folder / "run.toml"
    path.write_text('claims = ["claims"]\npcns = "pcns.csv"\nout = "out"\n' + body)
    return path


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('show_names = "false"', "show_names"),
        ('wait = "abc"', "wait"),
        ("wait = nan", "wait"),
        ("wait = -1", "wait"),
        ('log_format = "xml"', "log_format"),
        ('fail_on = "sometimes"', "fail_on"),
        ("quiet = 1", "quiet"),
        ('month = "0000-01"', "0000"),
        ('month = "٢٠٢١-04"', "month"),
        ('max_lines = "1000000"', "max_lines"),
        ("max_lines = 0", "max_lines"),
        ("max_lines = 1.5", "max_lines"),
    ],
)
def test_config_values_of_the_wrong_type_are_named(tmp_path, body, named):
    config = write_config(tmp_path, body)
    completed = run_cli("run", "--config", str(config))
    assert_refused(completed, "--config", named)
    assert not (tmp_path / "out").exists()


def test_config_claims_of_the_wrong_type_is_named(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('claims = 5\npcns = "p.csv"\nout = "out"\n')
    assert_refused(run_cli("run", "--config", str(config)), "claims = 5")


def test_show_names_false_in_the_config_never_shows_names(tmp_path):
    config = write_config(tmp_path, "show_names = false")
    assert run_cli("run", "--config", str(config)).returncode == 0
    pages = "".join(page.read_text() for page in (tmp_path / "out").rglob("*.html"))
    assert "Alex Example" not in pages


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--wait", "nan"), "--wait"),
        (("--wait", "inf"), "--wait"),
        (("--month", "0000-01"), "--month 0000-01"),
        (("--month", "٢٠٢١-04"), "--month"),
        (("--timings", "no/such/folder/t.json"), "--timings"),
        (("--max-lines", "0"), "--max-lines"),
    ],
)
def test_bad_options_are_named_before_any_output(tmp_path, extra, named):
    completed = run_into(tmp_path, tmp_path / "out", *extra)
    assert_refused(completed, named)
    assert not (tmp_path / "out").exists()


def test_a_batch_past_the_line_limit_is_refused_before_it_is_all_read(tmp_path):
    """One huge (or hostile) batch cannot exhaust the machine's memory: past --max-lines the
    run stops, names the limit and how to raise it, and publishes nothing. A single file
    past it is refused before it is parsed; several files, as soon as they add up past it."""
    pcns = register(tmp_path / "pcns.csv")
    big = claims(tmp_path / "big" / "c.csv", *({"staff_id": f"S{n}"} for n in range(30)))
    completed = run_cli(
        "run", str(big), "--pcns", str(pcns), "--out", str(tmp_path / "o"), "--max-lines", "20"
    )
    assert_refused(completed, "limit of 20 lines", "c.csv alone has 30 lines", "--max-lines")
    for month in ("2021-04", "2021-05", "2021-06"):
        claims(
            tmp_path / "months" / f"{month}.csv",
            *({"staff_id": f"S{n}", "claim_month": month} for n in range(8)),
        )
    folder = str(tmp_path / "months")
    completed = run_cli(
        "run", folder, "--pcns", str(pcns), "--out", str(tmp_path / "o"), "--max-lines", "20"
    )
    assert_refused(completed, "limit of 20 lines", "24 lines in the first 3 of 3 claim file(s)")
    assert not (tmp_path / "o").exists()
    completed = run_cli(
        "run", folder, "--pcns", str(pcns), "--out", str(tmp_path / "o"), "--max-lines", "24"
    )
    assert completed.returncode == 0, completed.stderr  # at the limit: the run goes on


def test_the_line_limit_counts_claim_lines_and_holds_for_check_and_workbooks(tmp_path):
    """Trailing blank lines are not claim lines; `check` takes --max-lines too; a workbook's
    sheets count together, refused before any sheet becomes claim rows."""
    from validator.xlsx import workbook

    pcns = register(tmp_path / "pcns.csv")
    padded = claims(tmp_path / "padded.csv", *({"staff_id": f"S{n}"} for n in range(3)))
    padded.write_text(padded.read_text() + "\n\n")
    out = str(tmp_path / "o")
    completed = run_cli("run", str(padded), "--pcns", str(pcns), "--out", out, "--max-lines", "3")
    assert completed.returncode == 0, completed.stderr
    assert_refused(run_cli("check", str(padded), "--max-lines", "2"), "limit of 2 lines")
    assert run_cli("check", str(padded), "--max-lines", "3").returncode == 0
    sheet = pl.read_csv(padded, infer_schema=False)
    book = tmp_path / "book.xlsx"
    book.write_bytes(workbook([("June", sheet, (), {}), ("July", sheet, (), {})]))
    completed = run_cli("run", str(book), "--pcns", str(pcns), "--out", out, "--max-lines", "5")
    assert_refused(completed, "book.xlsx alone has 6 rows in its sheets")


def test_rules_html_into_a_missing_folder_is_exit_2(tmp_path):
    completed = run_cli("rules", "--html", str(tmp_path / "no" / "rules.html"))
    assert_refused(completed, "--html")


def test_a_register_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    claim_file, _ = small_inputs(tmp_path)
    fifo = tmp_path / "pcns.fifo"
    os.mkfifo(fifo)
    completed = run_cli("run", str(claim_file), "--pcns", str(fifo), "--out", str(tmp_path / "o"))
    assert_refused(completed, "--pcns", "named pipe")
    assert not (tmp_path / "o").exists()


# --- nothing to report on: nothing published -----------------------------------------------


def test_no_readable_claim_file_publishes_nothing_and_keeps_the_last_report(tmp_path):
    out = tmp_path / "out"
    assert run_into(tmp_path, out).returncode == 0
    before = tree_digest(out)
    completed = run_cli(
        "run",
        str(tmp_path / "missing-folder"),
        "--pcns",
        str(tmp_path / "pcns.csv"),
        "--out",
        str(out),
    )
    assert_refused(completed, "has no claim lines", "missing-folder", "Nothing was published")
    assert tree_digest(out) == before


def test_a_review_month_without_lines_creates_no_folder(tmp_path):
    completed = run_into(tmp_path, tmp_path / "out", "--month", "2022-01")
    assert_refused(completed, "review month 2022-01 has no claim lines")
    assert not (tmp_path / "out").exists()


def test_previous_auto_chains_only_to_a_run_that_checked_lines(tmp_path):
    reports = tmp_path / "reports"
    for month, checked in (("2021-04", 5), ("2021-05", 0)):
        folder = reports / month
        folder.mkdir(parents=True)
        (folder / "exceptions.csv").write_text("rule_id\n")
        (folder / "manifest.json").write_text(
            json.dumps({"tool": "arrs-validate", "reconciliation": {"rows_checked": checked}})
        )
    assert latest_previous(str(reports / "{review_month}"), "2021-06") == reports / "2021-04"


# --- exit codes that tell the truth --------------------------------------------------------


def test_fail_on_and_quiet(tmp_path):
    line = {"training_status": ""}  # a clinical pharmacist not started: TRN-01, reject
    claim_file = claims(tmp_path / "c.csv", line)
    pcns = register(tmp_path / "p.csv")
    base = ("run", str(claim_file), "--pcns", str(pcns))
    assert run_cli(*base, "--out", str(tmp_path / "a")).returncode == 1
    assert run_cli(*base, "--out", str(tmp_path / "b"), "--fail-on", "never").returncode == 0
    quiet = run_cli(*base, "--out", str(tmp_path / "c"), "--quiet")
    assert quiet.returncode == 1 and quiet.stdout == "" and quiet.stderr == ""
    assert (tmp_path / "c" / "manifest.json").is_file()


def test_a_warning_fails_only_with_fail_on_warning(tmp_path):
    # An SPL-02-free warning: none in a clean line, so use an unmatched agreement? No: a
    # clean run has no open finding at all, and --fail-on warning keeps it 0.
    assert run_small(tmp_path, tmp_path / "out", "--fail-on", "warning").returncode == 0


def test_json_logs_are_pure_json_with_a_finish_event(tmp_path):
    ok = run_into(tmp_path, tmp_path / "out", "--log-format", "json")
    refused = run_into(tmp_path, tmp_path / "claims", "--log-format", "json")
    for completed, code in ((ok, 0), (refused, 2)):
        assert completed.returncode == code
        events = [json.loads(line) for line in completed.stderr.splitlines()]
        assert events[-1]["event"] == "finish" and events[-1]["exit_code"] == code
    assert any(event["event"] == "error" for event in map(json.loads, refused.stderr.splitlines()))


def test_a_full_stderr_is_never_a_success_code(tmp_path):
    claim_file, pcns = small_inputs(tmp_path)
    with open("/dev/full", "w") as full:
        completed = subprocess.run(
            [*CLI, "run", str(claim_file), "--pcns", str(pcns), "--out", str(tmp_path / "o")],
            cwd=PROJECT,
            stdout=subprocess.DEVNULL,
            stderr=full,
            timeout=300,
        )
    assert completed.returncode == 2


def test_a_latin1_file_name_and_control_characters_never_reach_the_log_raw(tmp_path):
    folder = tmp_path / "claims"
    claims(folder / "ok.csv", {})
    latin1 = os.fsencode(folder) + b"/caf\xe9.csv"
    Path(os.fsdecode(latin1)).write_bytes((folder / "ok.csv").read_bytes())
    claims(folder / "x\n2026-01-01T00:00:00+00:00 arrs-validate forged finish.csv", {})
    pcns = register(tmp_path / "p.csv")
    completed = run_cli("run", str(folder), "--pcns", str(pcns), "--out", str(tmp_path / "o"))
    assert completed.returncode == 1, completed.stderr  # three lines of one person: DUP-01
    assert "Traceback" not in completed.stderr
    for line in completed.stderr.splitlines():
        assert " forged " not in line or "\\n" in line


def test_a_stop_just_after_publishing_says_the_new_outputs_stand(tmp_path, monkeypatch, capsys):
    publish = runner.Staging.publish

    def publish_then_stop(self):
        publish(self)
        raise cli.Stopped(15)

    monkeypatch.setattr(runner.Staging, "publish", publish_then_stop)
    claim_file, pcns = small_inputs(tmp_path)
    out = tmp_path / "out"
    code = cli.main(["run", str(claim_file), "--pcns", str(pcns), "--out", str(out)])
    assert code == 3
    error = capsys.readouterr().err
    assert "after publishing" in error and "previous outputs were left" not in error
    assert (out / "manifest.json").is_file()


def test_a_stop_while_the_libraries_load_ends_with_a_message(tmp_path):
    """The `start` line is logged before Polars, Pandera and durable-rules are imported: a
    SIGTERM then lands while they load, and must still end with a message and exit 3."""
    claim_file, pcns = small_inputs(tmp_path)
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "run", str(claim_file), "--pcns", str(pcns), "--out", "o"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    with process.stderr:
        first = process.stderr.readline()
        assert " start " in first
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
    assert process.wait() == 3
    assert "stopped by SIGTERM" in rest and "Traceback" not in rest
    assert not (tmp_path / "o").exists()


# --- bad reference data is refused, never silently used ---------------------------------


def reference_folder(folder: Path, name: str, text: str) -> Path:
    reference = folder / "reference"
    reference.mkdir(exist_ok=True)
    (reference / name).write_text(text)
    return reference


RATE_HEADER = "role,afc_band,area,effective_from,effective_to,annual_maximum\n"
LIMIT_HEADER = "financial_year,role,list_size_min,list_size_max,max_wte\n"


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        (
            "rates.csv",
            RATE_HEADER + "clinical_pharmacist,,standard,2021-04-01,,1000000000.00\n",
            "line 2 column annual_maximum",
        ),
        (
            "rates.csv",
            RATE_HEADER
            + "clinical_pharmacist,,standard,2021-04-01,,100.00\n"
            + "clinical_pharmacist,,standard,2021-04-01,,99999.00\n",
            "is already at",
        ),
        (
            "limits.csv",
            LIMIT_HEADER
            + "2021/22,mental_health_practitioner,0,99999,1.0\n"
            + "2021/22,mental_health_practitioner,50000,,2.0\n",
            "overlap",
        ),
        ("limits.csv", LIMIT_HEADER + "2022/23,paramedic,500,100,1.0\n", "is below list_size_min"),
    ],
)
def test_bad_reference_rows_are_named(tmp_path, name, text, named):
    reference = reference_folder(tmp_path, name, text)
    completed = run_into(tmp_path, tmp_path / "out", "--reference", str(reference))
    assert_refused(completed, name, named)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("register_row", "named"),
    [({"pcn_code": "U٧١٠٠١"}, "pcn_code"), ({"arrs_sum": "99999999999.99"}, "arrs_sum")],
)
def test_bad_register_rows_are_named(tmp_path, register_row, named):
    claim_file = claims(tmp_path / "c.csv", {})
    pcns = register(tmp_path / "p.csv", register_row)
    completed = run_cli("run", str(claim_file), "--pcns", str(pcns), "--out", str(tmp_path / "o"))
    assert_refused(completed, "p.csv line 2", named)


def test_an_agreement_from_year_0000_is_named(tmp_path):
    agreed = agreements(tmp_path / "a.csv", {"rule_id": "CAP-01", "from_month": "0000-04"})
    completed = run_into(tmp_path, tmp_path / "o", "--agreements", str(agreed))
    assert_refused(completed, "from_month")


@pytest.mark.parametrize("month", ["٢٠٢١-06", "0000-06"])
def test_odd_digits_and_year_0000_in_a_claim_month_are_schema_findings(tmp_path, month):
    claim_file = claims(tmp_path / "c.csv", {}, {"staff_id": "S2", "claim_month": month})
    pcns = register(tmp_path / "p.csv")
    completed = run_cli("run", str(claim_file), "--pcns", str(pcns), "--out", str(tmp_path / "o"))
    assert completed.returncode == 1, completed.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "o" / "exceptions.csv").read_text())))
    assert [(row["rule_id"], row["source_line"]) for row in rows] == [("SCH-01", "3")]


def test_amounts_beyond_any_claim_are_schema_findings_and_totals_stay_exact(tmp_path):
    huge = {"amount_claimed": "999,999,999,999.99", "monthly_salary": "999999999999.99"}
    lines = [{"staff_id": f"S{n}", **huge} for n in range(3)] + [{}]
    claim_file = claims(tmp_path / "c.csv", *lines)
    pcns = register(tmp_path / "p.csv")
    completed = run_cli("run", str(claim_file), "--pcns", str(pcns), "--out", str(tmp_path / "o"))
    assert completed.returncode == 1, completed.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "o" / "exceptions.csv").read_text())))
    assert {row["rule_id"] for row in rows} == {"SCH-01"}
    assert all("10,000,000.00" in row["message"] for row in rows)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["reconciliation"]["rows_rejected_by_schema"] == 3
    for value in (row["amount_claimed"] for row in rows):
        assert not value.startswith("-")


def wait_until_blocked_on_its_log(process: subprocess.Popen) -> None:
    """Until the parked run waits to write its next log line into the full pipe: a state the
    kernel shows (wchan), looked at again and again; how long it takes does not matter."""
    deadline = time.monotonic() + GUARD  # only so a broken run fails instead of hanging
    wchan = Path(f"/proc/{process.pid}/wchan")
    while "pipe_write" not in wchan.read_text():
        assert process.poll() is None, "the run ended before it wrote its first phase line"
        assert time.monotonic() < deadline, "the run never reached its first phase line"
        time.sleep(0.01)


def test_the_manifest_records_the_register_as_read_not_as_replaced(tmp_path):
    out = tmp_path / "out"
    process, read_end = parked_run(tmp_path, out)
    wait_until_blocked_on_its_log(process)  # the register is read before the first phase line
    register_file = tmp_path / "inputs" / "p.csv"
    as_read = hashlib.sha256(register_file.read_bytes()).hexdigest()
    register(register_file, {"pcn_name": "Replaced PCN"})  # replaced mid-run
    drain(process, read_end)
    manifest = json.loads((out / "manifest.json").read_text())
    [pcns] = [item for item in manifest["inputs"] if item["kind"] == "pcns"]
    assert pcns["sha256"] == as_read != hashlib.sha256(register_file.read_bytes()).hexdigest()


# --- one hostile file cannot take the machine down -----------------------------------------


def test_a_row_of_garbage_makes_a_few_findings_not_one_per_field(tmp_path):
    garbage = {name: "??" for name in ("pcn_code", "claim_month", "staff_id", "role")}
    garbage |= {"wte": "x", "employment_start": "x", "monthly_salary": "x", "amount_claimed": "x"}
    claim_file = claims(tmp_path / "c.csv", {}, garbage)
    pcns = register(tmp_path / "p.csv")
    completed = run_cli("run", str(claim_file), "--pcns", str(pcns), "--out", str(tmp_path / "o"))
    assert completed.returncode == 1, completed.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "o" / "exceptions.csv").read_text())))
    line_3 = [row for row in rows if row["source_line"] == "3"]
    assert [row["rule_id"] for row in line_3] == ["SCH-01"] * 4
    # The first three bad fields in the schema's column order, then one naming the rest.
    messages = sorted(row["message"] for row in line_3)
    for column in ("pcn_code", "claim_month", "staff_id"):
        assert sum(f"column {column} is" in message for message in messages) == 1, messages
    [rest] = [message for message in messages if "more column(s)" in message]
    assert "5 more column(s) as well: role, wte, employment_start, monthly_salary" in rest


# --- a --previous folder that is not what this tool wrote ---------------------------------


@pytest.mark.parametrize("damage", ["short row", "cp1252", "utf-16", "20 MB field"])
def test_a_damaged_previous_run_is_named_not_a_crash(tmp_path, damage):
    earlier = tmp_path / "earlier"
    assert run_into(tmp_path, earlier, "--fail-on", "never").returncode == 0
    text = "rule_id,severity,status,agreement_id,pcn_code,staff_id,role,claim_month\n"
    text += "CAP-01,adjust,open,,U10001,S001,clinical_pharmacist,2021-06\n"
    path = earlier / "exceptions.csv"
    if damage == "short row":
        path.write_text(text + "CAP-01,adjust\n")
    elif damage == "cp1252":
        path.write_bytes((text + "SCH-01,reject,open,,U10001,Sí £,x,2021-06\n").encode("cp1252"))
    elif damage == "utf-16":
        path.write_text(text, encoding="utf-16")
    else:
        path.write_text(text + "CAP-01,adjust,open,," + "x" * 20_000_000 + ",S1,r,2021-06\n")
    completed = run_into(tmp_path, tmp_path / "out", "--previous", str(earlier))
    assert_refused(completed, "--previous", "exceptions.csv")
    assert not (tmp_path / "out").exists()


def test_a_claims_folder_the_run_may_not_list_is_named_and_the_rest_validated(tmp_path):
    """Root lists any folder whatever its mode, so as root the run is made without the two
    capabilities that let it (as tests/test_hostile.py's unreadable-file case does)."""
    closed = tmp_path / "closed"
    claims(closed / "c.csv", {})
    closed.chmod(0o000)
    good = claims(tmp_path / "open" / "c.csv", {"staff_id": "S2"})
    command = [*CLI, "run", str(closed), str(good.parent), "--pcns"]
    command += [str(register(tmp_path / "p.csv")), "--out", str(tmp_path / "out")]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to take root's right to read anything"
        drop = "--bounding-set=-dac_override,-dac_read_search"
        command = [setpriv, "--inh-caps=-all", drop, *command]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, cwd=PROJECT, timeout=300
        )
    finally:
        closed.chmod(0o755)
    assert completed.returncode == 2, completed.stderr
    assert "closed: cannot be read (Permission denied)" in completed.stderr
    assert "Traceback" not in completed.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["reconciliation"]["rows_checked"] == 1  # the open folder's line


# --- found in review: races, names, repeats -----------------------------------------------


def test_a_file_put_into_the_output_folder_during_a_run_is_never_deleted(tmp_path):
    out = tmp_path / "out"
    process, read_end = parked_run(tmp_path, out)  # holds the lock; publishes when drained
    assert process.poll() is None
    drain(process, read_end)  # the first run publishes into a new folder
    process, read_end = parked_run(tmp_path, out)
    (out / "notes.txt").write_text("written while the run was working")
    log = drain(process, read_end)
    assert process.returncode == 2, log
    assert "notes.txt" in log and "nothing was changed" in log
    assert (out / "notes.txt").read_text() == "written while the run was working"
    for _ in range(2):  # and later runs neither delete it nor replace the folder
        assert_refused(run_into(tmp_path, out), "notes.txt")
    assert (out / "notes.txt").is_file()


def test_replaced_outputs_holding_a_foreign_file_are_kept(tmp_path):
    out = tmp_path / "out"
    for _ in range(2):
        assert run_into(tmp_path, out).returncode == 0
    [old] = list(tmp_path.glob(".out.old-*"))
    (old / "mine.txt").write_text("keep")
    completed = run_into(tmp_path, out)
    assert completed.returncode == 0 and "was kept" in completed.stderr
    assert (old / "mine.txt").read_text() == "keep"


def test_an_out_name_with_glob_characters_clears_its_own_leftovers_only(tmp_path):
    neighbour = tmp_path / ".o1.old-keepme"
    neighbour.mkdir()
    (neighbour / "x").write_text("not this run's")
    for _ in range(3):
        assert run_into(tmp_path, tmp_path / "o[1]").returncode == 0
    assert len(list(tmp_path.glob(".o[[]1].old-*"))) == 1
    assert (neighbour / "x").is_file()


def test_a_page_name_the_tool_never_writes_makes_the_folder_foreign(tmp_path):
    out = tmp_path / "out"
    assert run_into(tmp_path, out).returncode == 0
    (out / "pcn" / "notes.html").write_text("<p>mine</p>")
    assert_refused(run_into(tmp_path, out), "pcn/notes.html")


def test_a_manifest_that_is_a_fifo_is_not_read(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "manifest.json")
    assert_refused(run_into(tmp_path, out), "no manifest.json written by arrs-validate")


def test_a_refused_run_creates_no_folder_and_no_lock(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    assert_refused(run_into(tmp_path, out, "--month", "2030-01"), "has no claim lines")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("where", ["the register", "inside the output folder"])
def test_timings_never_overwrite_an_input_or_an_output(tmp_path, where):
    _, pcns = small_inputs(tmp_path)
    before = pcns.read_bytes()
    out = tmp_path / "out"
    target = pcns if where == "the register" else out / "summary.csv"
    completed = run_into(tmp_path, out, "--timings", str(target))
    assert_refused(completed, "--timings")
    assert pcns.read_bytes() == before and not out.exists()


def test_the_same_claim_file_named_twice_is_read_once(tmp_path):
    claim_file, pcns = small_inputs(tmp_path)
    completed = run_cli(
        "run",
        str(claim_file.parent),
        str(claim_file),
        str(claim_file.parent / "." / claim_file.name),
        "--pcns",
        str(pcns),
        "--out",
        str(tmp_path / "out"),
    )
    told = [line for line in completed.stderr.splitlines() if line.startswith("arrs-validate:")]
    assert completed.returncode == 2 and sum("named again" in line for line in told) == 2
    payments = list(csv.DictReader(io.StringIO((tmp_path / "out" / "payments.csv").read_text())))
    assert [(row["lines"], row["claimed"], row["payable"]) for row in payments] == [
        ("1", "4400.00", "4400.00")
    ]


def test_a_pcn_code_in_other_digits_belongs_to_no_pcn(tmp_path):
    claim_file = claims(tmp_path / "c.csv", {}, {"staff_id": "S2", "pcn_code": "U１２３４５"})
    pcns = register(tmp_path / "p.csv")
    out = tmp_path / "out"
    completed = run_cli("run", str(claim_file), "--pcns", str(pcns), "--out", str(out))
    assert completed.returncode == 1, completed.stderr
    for name in ("summary.csv", "payments.csv"):
        assert "１２３４５" not in (out / name).read_text(), name
    assert not list((out / "pcn").glob("*１*"))


@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "1e30", "1001"])
def test_a_limit_that_is_not_a_plain_number_is_named(tmp_path, value):
    reference = reference_folder(
        tmp_path, "limits.csv", LIMIT_HEADER + f"2022/23,paramedic,0,,{value}\n"
    )
    completed = run_into(tmp_path, tmp_path / "out", "--reference", str(reference))
    assert_refused(completed, "limits.csv line 2 column max_wte")


def test_a_defaulted_review_month_with_few_lines_is_warned_about(tmp_path):
    lines = [{"staff_id": f"S{n}"} for n in range(4)] + [{"claim_month": "2021-07"}]
    claim_file = claims(tmp_path / "c.csv", *lines)
    pcns = register(tmp_path / "p.csv")
    completed = run_cli("run", str(claim_file), "--pcns", str(pcns), "--out", str(tmp_path / "o"))
    assert "the latest claim month in the input" in completed.stdout
    assert "under half the 4 of 2021-06" in completed.stderr
    quiet = run_cli(
        "run", str(claim_file), "--pcns", str(pcns), "--out", str(tmp_path / "q"), "--quiet"
    )
    assert quiet.stdout == "" and "under half" not in quiet.stderr
