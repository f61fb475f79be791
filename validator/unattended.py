"""Running from cron with nobody watching: a lock per output folder, clean stops on SIGTERM
and SIGINT, and the TOML config file that holds a scheduled run's settings."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import signal
import socket
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from validator.errors import ConfigError


class LockHeld(Exception):
    """Another run holds the output folder's lock."""


class Stopped(BaseException):
    """The run was asked to stop (SIGTERM or SIGINT).

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way (in a
    library's callback handling, say) can swallow it and let the run carry on."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)


def stop_on_signals() -> None:
    """Turn SIGTERM and SIGINT into a Stopped exception, so the run unwinds cleanly: the
    staging folder is removed and the previous outputs are left as they were."""

    def handler(signal_number: int, _frame) -> None:
        raise Stopped(signal_number)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class OutputLock:
    """An exclusive lock beside the output folder (`.NAME.lock`), held for the whole run.

    The kernel's flock is released when the holder dies, even by SIGKILL, so a lock left by
    a killed run is never in the way: its file still names the dead holder, which is how a
    stale lock is recognised (and reported). The file is emptied, never deleted, on release,
    so two waiting runs can never lock two different files.
    """

    def __init__(self, out: Path) -> None:
        out = out.absolute()
        self.path = out.parent / f".{out.name}.lock"
        self.handle: int | None = None
        self.stale_holder: dict | None = None

    def _holder(self) -> dict:
        try:
            return json.loads(Path(self.path).read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self, wait_seconds: float = 0.0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder()
                    os.close(handle)
                    raise LockHeld(
                        f"the output folder {self.path.parent / self.path.name[1:-5]} is in "
                        f"use by process {holder.get('pid', '?')} on "
                        f"{holder.get('host', '?')}, started {holder.get('started', '?')}; "
                        "wait for it to finish, or give --wait SECONDS"
                    ) from None
                time.sleep(0.2)
        self.handle = handle
        previous = self._holder()
        if previous.get("pid"):
            self.stale_holder = previous  # it died holding the lock: the lock was stale
        os.ftruncate(handle, 0)
        os.pwrite(
            handle,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
            ).encode(),
            0,
        )
        os.fsync(handle)

    def release(self) -> None:
        if self.handle is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.handle, 0)
        os.close(self.handle)  # closing releases the flock
        self.handle = None


MONTH_POLICIES = ("latest", "previous-calendar-month")


@dataclass
class RunConfig:
    """Settings of a scheduled run, from `--config FILE` (paths relative to that file)."""

    claims: list[str] = field(default_factory=list)
    pcns: str | None = None
    agreements: str | None = None
    reference: str | None = None
    month: str = "latest"
    out: str | None = None
    previous: str = ""
    show_names: bool = False
    log_format: str = "text"
    wait: float = 0.0


_CONFIG_KEYS = set(RunConfig.__dataclass_fields__)
CONFIG_EXAMPLE = """\
claims = ["claims"]                     # files or folders of *.csv
pcns = "pcns.csv"
agreements = "agreements.csv"           # optional
reference = "reference"                 # optional
month = "previous-calendar-month"       # or "latest", or a month such as "2021-12"
out = "reports/{review_month}"          # {review_month} keeps one folder per month
previous = "auto"                       # chain to the latest earlier run, or a folder, or ""
log_format = "text"                     # or "json"
wait = 0                                # seconds to wait for a run holding the lock"""


def load_config(path: Path) -> RunConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--config {path}: not valid TOML ({error})") from None
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown key(s) {', '.join(unknown)}; a config file looks like:\n"
            + CONFIG_EXAMPLE
        )
    base = path.parent

    def resolve(value: str | None) -> str | None:
        if not value:
            return value
        return str(Path(value) if Path(value).is_absolute() else base / value)

    claims = data.get("claims", [])
    if isinstance(claims, str):
        claims = [claims]
    config = RunConfig(
        claims=[resolve(claim) for claim in claims],
        pcns=resolve(data.get("pcns")),
        agreements=resolve(data.get("agreements")),
        reference=resolve(data.get("reference")),
        month=str(data.get("month", "latest")),
        out=resolve(data.get("out")),
        previous=data.get("previous", "")
        if data.get("previous") in ("", "auto")
        else resolve(data.get("previous")),
        show_names=bool(data.get("show_names", False)),
        log_format=str(data.get("log_format", "text")),
        wait=float(data.get("wait", 0)),
    )
    if config.month not in MONTH_POLICIES and not re.fullmatch(r"\d{4}-\d{2}", config.month):
        raise ConfigError(
            f"--config {path}: month must be latest, previous-calendar-month or YYYY-MM"
        )
    return config


def month_for_policy(policy: str, today: dt.date | None = None) -> str | None:
    """The review month a policy names: None for `latest` (the input decides)."""
    if policy == "latest":
        return None
    if policy == "previous-calendar-month":
        today = today or dt.date.today()
        last_month = today.replace(day=1) - dt.timedelta(days=1)
        return f"{last_month:%Y-%m}"
    return policy


def out_folder(pattern: str, review_month: str | None) -> Path | None:
    """The output folder for a pattern; None while it needs a month not yet known."""
    if "{review_month}" not in pattern:
        return Path(pattern)
    if review_month is None:
        return None
    return Path(pattern.replace("{review_month}", review_month))


def latest_previous(pattern: str, review_month: str) -> Path | None:
    """`previous = "auto"`: the output folder of the latest earlier run of the same pattern
    (for a pattern without {review_month}, the folder itself: the last run's outputs)."""
    if "{review_month}" not in pattern:
        folder = Path(pattern)
        return folder if (folder / "exceptions.csv").exists() else None
    template = Path(pattern)
    parent = template.parent
    if "{review_month}" in str(parent):
        raise ConfigError("out: {review_month} may only stand in the last folder name")
    name = re.escape(template.name).replace(re.escape("{review_month}"), r"(\d{4}-\d{2})")
    earlier = []
    if parent.is_dir():
        for child in parent.iterdir():
            match = re.fullmatch(name, child.name)
            if match and match.group(1) < review_month and (child / "exceptions.csv").exists():
                earlier.append((match.group(1), child))
    return max(earlier)[1] if earlier else None
