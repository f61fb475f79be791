"""Running unattended: locks, clean stops, kills, the config file and the log lines."""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import CLI, PROJECT, claims, register, run_cli, run_small
from validator.runner import OutputLock
from validator.unattended import month_for_policy

IN_OPEN, IN_MODIFY, IN_CREATE = 0x20, 0x2, 0x100
GUARD = 300  # seconds: only so a broken run fails the test instead of hanging it


class Events:
    """Wait for something to happen, never for a number of seconds: inotify reports every
    open, write or new file in a folder and a pidfd reports the process's exit, so a wait
    wakes exactly when there is something new to look at (Linux)."""

    def __init__(self, folder: Path, process: subprocess.Popen) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.inotify = libc.inotify_init1(os.O_CLOEXEC)
        if self.inotify < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = IN_OPEN | IN_MODIFY | IN_CREATE
        if libc.inotify_add_watch(self.inotify, bytes(folder), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
        self.exited = os.pidfd_open(process.pid)
        self.process = process

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        while not condition():
            ready, _, _ = select.select([self.inotify, self.exited], [], [], GUARD)
            assert ready, f"nothing happened for {GUARD} s while waiting until {what}"
            if self.exited in ready:
                assert condition(), f"the run ended (exit {self.process.wait()}) before {what}"
                return
            os.read(self.inotify, 65536)

    def close(self) -> None:
        os.close(self.inotify)
        os.close(self.exited)


def holder_pid(out: Path) -> int | None:
    try:
        return json.loads(OutputLock(out).path.read_text() or "{}").get("pid")
    except (OSError, ValueError):
        return None


def has_open(process: subprocess.Popen, path: Path) -> bool:
    """Whether `process` holds `path` open (its descriptors come and go as it runs)."""
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{process.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if Path(os.readlink(fd)) == path:
                    return True
    return False


def fill(pipe_write_end: int) -> None:
    """Fill a pipe to the brim, so the next write to it waits until someone reads. (Written
    through a second, non-blocking description of the pipe: the run's own stays blocking.)"""
    filler = os.open(f"/proc/self/fd/{pipe_write_end}", os.O_WRONLY | os.O_NONBLOCK)
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, b"\n" * 65536)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, b"\n")  # the last bytes of a partly filled page
    finally:
        os.close(filler)


def parked_run(folder: Path, out: Path) -> tuple[subprocess.Popen, int]:
    """A run held mid-way, its lock taken, for as long as the test needs: no guessing how long
    a run lasts or when it is "well into" its work.

    The test holds the output lock first, so the run (given --wait) stops at it; once the run
    waits there, the test fills the run's stderr pipe and lets the lock go. The run takes the
    lock and its next log line waits in the kernel until the test reads the pipe (`drain`).
    Returns the process and the pipe's read end."""
    holder = OutputLock(out)
    holder.acquire()
    read_end, write_end = os.pipe()
    inputs = folder / "inputs"
    command = [*CLI, "run", str(claims(inputs / "c.csv", {})), "--pcns"]
    command += [str(register(inputs / "p.csv")), "--out", str(out), "--wait", str(GUARD)]
    try:
        process = subprocess.Popen(
            command, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=write_end
        )
        events = Events(out.parent, process)
        try:
            events.wait_until(lambda: has_open(process, holder.path), "the run waits for the lock")
            assert holder_pid(out) == os.getpid(), "the run took the lock the test holds"
            fill(write_end)
            holder.release()
            events.wait_until(lambda: holder_pid(out) == process.pid, "the run takes the lock")
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            events.close()
    finally:
        os.close(write_end)
        holder.release()  # (a no-op once released)
    return process, read_end


def drain(process: subprocess.Popen, read_end: int) -> str:
    """Let a parked run go on: read its stderr to the end, then reap it."""
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], GUARD)
            assert ready, f"the run wrote nothing for {GUARD} s"
            chunk = pipe.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
    process.wait()
    return b"".join(chunks).decode()


def previous_outputs(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path / "out"
    assert run_small(tmp_path, out).returncode == 0
    return out, {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def test_second_run_on_the_same_out_exits_2_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    first, first_stderr = parked_run(tmp_path, out)
    try:
        second = run_small(tmp_path, out)
        assert second.returncode == 2
        assert f"in use by process {first.pid}" in second.stderr
        assert "started 20" in second.stderr and "--wait" in second.stderr
    finally:
        drain(first, first_stderr)
    assert first.returncode == 0


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_cleanly_and_leaves_the_previous_outputs(tmp_path, stop):
    out, before = previous_outputs(tmp_path)
    process, stderr_pipe = parked_run(tmp_path, out)
    process.send_signal(stop)
    stderr = drain(process, stderr_pipe)
    assert process.returncode == 3
    assert f"stopped by {stop.name}" in stderr and "Traceback" not in stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not list(tmp_path.glob(".out.new-*"))


def test_sigkill_leaves_the_previous_outputs_and_the_next_run_clears_the_lock(tmp_path):
    out, before = previous_outputs(tmp_path)
    process, stderr_pipe = parked_run(tmp_path, out)
    process.kill()
    process.wait()
    os.close(stderr_pipe)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert holder_pid(out) == process.pid  # the lock file still names the killed run
    again = run_small(tmp_path, out)
    assert again.returncode == 0, again.stderr
    assert f"stale_lock_cleared holder={{'pid': {process.pid}" in again.stderr
    assert not list(tmp_path.glob(".out.new-*"))  # the killed run's staging folder is gone


def test_lock_waits_when_asked(tmp_path):
    """A run given --wait waits while another holds the lock, then takes it and runs (the
    parked run is made exactly that way, and checks it waited while the lock was held)."""
    process, stderr_pipe = parked_run(tmp_path, tmp_path / "out")
    stderr = drain(process, stderr_pipe)
    assert process.returncode == 0, stderr
    assert "in use by process" not in stderr


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
