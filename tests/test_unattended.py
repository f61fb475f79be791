"""Running unattended: locks, clean stops, kills, the config file and the log lines."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import CLI, PROJECT, claims, register, run_cli, run_small
from validator.generate import generate
from validator.runner import OutputLock
from validator.unattended import month_for_policy


@pytest.fixture(scope="module")
def big_batch(tmp_path_factory) -> Path:
    """A batch large enough (about 250,000 lines) that a run lasts a few seconds."""
    folder = tmp_path_factory.mktemp("big")
    generate(folder, pcns=700, months=12, seed=3)
    return folder


def start_run(batch: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *CLI,
            "run",
            str(batch / "claims"),
            "--pcns",
            str(batch / "pcns.csv"),
            "--month",
            "2022-03",
            "--out",
            str(out),
        ],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def previous_outputs(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path / "out"
    assert run_small(tmp_path, out).returncode == 0
    return out, {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def wait_until_started(process: subprocess.Popen, lock: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().strip():
            time.sleep(0.5)  # well into the run
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the run never took its lock")


def test_second_run_on_the_same_out_exits_2_naming_the_holder(tmp_path, big_batch):
    out = tmp_path / "out"
    first = start_run(big_batch, out)
    try:
        wait_until_started(first, tmp_path / ".out.lock")
        second = run_small(tmp_path, out)
        assert second.returncode == 2
        assert f"in use by process {first.pid}" in second.stderr
        assert "started 20" in second.stderr and "--wait" in second.stderr
    finally:
        first.communicate(timeout=120)
    assert first.returncode == 1


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_cleanly_and_leaves_the_previous_outputs(tmp_path, big_batch, stop):
    out, before = previous_outputs(tmp_path)
    process = start_run(big_batch, out)
    wait_until_started(process, tmp_path / ".out.lock")
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3
    assert f"stopped by {stop.name}" in stderr and "Traceback" not in stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not list(tmp_path.glob(".out.new-*"))


def test_sigkill_leaves_the_previous_outputs_and_the_next_run_clears_the_lock(tmp_path, big_batch):
    out, before = previous_outputs(tmp_path)
    process = start_run(big_batch, out)
    wait_until_started(process, tmp_path / ".out.lock")
    process.kill()
    process.communicate(timeout=30)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    holder = json.loads((tmp_path / ".out.lock").read_text())
    assert holder["pid"] == process.pid  # the lock file still names the killed run
    again = run_small(tmp_path, out)
    assert again.returncode == 0, again.stderr
    assert f"stale_lock_cleared holder={{'pid': {process.pid}" in again.stderr
    assert not list(tmp_path.glob(".out.new-*"))  # the killed run's staging folder is gone


def test_lock_waits_when_asked(tmp_path):
    holder = OutputLock(tmp_path / "out")
    holder.acquire()
    waiting = subprocess.Popen(
        [
            *CLI,
            "run",
            str(claims(tmp_path / "c.csv", {})),
            "--pcns",
            str(register(tmp_path / "p.csv")),
            "--out",
            str(tmp_path / "out"),
            "--wait",
            "30",
        ],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    assert waiting.poll() is None  # still waiting for the lock
    holder.release()
    waiting.communicate(timeout=60)
    assert waiting.returncode == 0


def test_config_file_runs_a_month_per_folder_and_chains_previous(tmp_path):
    register(tmp_path / "pcns.csv")
    claims(
        tmp_path / "claims" / "2021-05.csv",
        {"claim_month": "2021-05", "wte": "0.5", "amount_claimed": "3000.00"},
    )
    config = tmp_path / "arrs.toml"
    config.write_text(
        'claims = ["claims"]\npcns = "pcns.csv"\nmonth = "latest"\n'
        'out = "reports/{review_month}"\nprevious = "auto"\nlog_format = "json"\n'
    )
    first = run_cli("run", "--config", str(config))
    assert first.returncode == 1, first.stderr
    assert (tmp_path / "reports" / "2021-05" / "exceptions.csv").exists()
    claims(tmp_path / "claims" / "2021-06.csv", {"claim_month": "2021-06"})
    second = run_cli("run", "--config", str(config))
    assert second.returncode == 1
    events = [json.loads(line) for line in second.stderr.splitlines() if line.startswith("{")]
    finish = next(event for event in events if event["event"] == "finish")
    assert finish["out"].endswith("reports/2021-06")
    assert finish["previous"].endswith("reports/2021-05")
    assert {event["event"] for event in events} >= {"start", "file_read", "phase", "finish"}
    assert all(event["run_id"] == finish["run_id"] for event in events)
    document = json.loads((tmp_path / "reports" / "2021-06" / "exceptions.json").read_text())
    assert {f["change"] for f in document["findings"]} == {"persisting"}


def test_config_errors_name_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('claims = ["x"]\nmonht = "latest"\n')
    completed = run_cli("run", "--config", str(config))
    assert completed.returncode == 2 and "unknown key(s) monht" in completed.stderr
    missing = run_cli("run", "x.csv")
    assert missing.returncode == 2 and "--pcns, --out" in missing.stderr


def test_previous_calendar_month_policy():
    assert month_for_policy("previous-calendar-month", dt.date(2022, 1, 6)) == "2021-12"
    assert month_for_policy("latest") is None
    assert month_for_policy("2021-09") == "2021-09"


def test_plain_log_lines_when_not_a_terminal(tmp_path):
    completed = run_small(tmp_path, tmp_path / "out")
    assert "\x1b" not in completed.stderr and "\r" not in completed.stderr
    lines = completed.stderr.splitlines()
    assert any(" start " in line for line in lines)
    assert any(" finish exit_code=0" in line for line in lines)


def test_progress_bar_on_a_terminal(tmp_path):
    """Run under a real pseudo-terminal: the progress bar is drawn there."""
    import pty

    claims(tmp_path / "claims" / "a.csv", {})
    claims(tmp_path / "claims" / "b.csv", {"staff_id": "S2"})
    command = [
        *CLI,
        "run",
        str(tmp_path / "claims"),
        "--pcns",
        str(register(tmp_path / "p.csv")),
        "--out",
        str(tmp_path / "out"),
    ]
    output = bytearray()

    def read(fd):
        data = os.read(fd, 4096)
        output.extend(data)
        return data

    status = pty.spawn(command, read) if sys.platform.startswith("linux") else None
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"reading claim files" in bytes(output)


def test_replaced_outputs_wait_beside_until_the_next_run_removes_them(tmp_path):
    out = tmp_path / "out"
    assert run_small(tmp_path, out).returncode == 0
    assert not list(tmp_path.glob(".out.old-*"))  # nothing was replaced
    first_run = json.loads((out / "manifest.json").read_text())["run_id"]
    assert run_small(tmp_path, out).returncode == 0
    (replaced,) = tmp_path.glob(".out.old-*")
    assert json.loads((replaced / "manifest.json").read_text())["run_id"] == first_run
    assert run_small(tmp_path, out).returncode == 0
    assert not replaced.exists()
    assert len(list(tmp_path.glob(".out.old-*"))) == 1  # only the second run's outputs
