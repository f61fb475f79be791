"""The life of one run in its output folder: the lock, the safety checks, the staging folder,
the page renderer, publishing and clean-up, in one place.

The output folder is replaced as a whole, so a run must never destroy what it did not write.
Before anything is touched it refuses (a ConfigError, exit 2):
- an input that is not a regular file (a FIFO would hang the run while it holds the lock);
- an `--out` that is a file, or a folder holding anything this tool does not write, or one
  whose manifest.json this tool did not write;
- an `--out` that is, contains or lies inside any input file or folder.
A symbolic link given as `--out` is followed: the run publishes at its target and the link
stays as it is. One lock file guards each real output folder, however it was named (a
`{review_month}` pattern, a relative path, a link), and every step that creates or removes a
folder beside it happens under that lock.

The CLI parses the options, calls `OutputRun(...).execute()`, prints and picks nothing but
the words; the exit code is decided here because the manifest records it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from validator.errors import ConfigError
from validator.unattended import check_out_pattern, out_folder, run_manifest

if TYPE_CHECKING:
    from validator.pipeline import RunResult

EXIT_CLEAN, EXIT_FINDINGS, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
SEVERITY_ORDER = ("reject", "adjust", "query", "warning")

# Everything a run writes into its output folder: a folder holding anything else was not
# made by this tool (or someone has put their own files there) and is never replaced.
OUTPUT_FILES = frozenset(
    {
        "exceptions.csv",
        "summary.csv",
        "payments.csv",
        "lines.csv",
        "manifest.json",
        "exceptions.json",
        "exceptions.xlsx",
        "index.html",
        "rules.html",
    }
)
OUTPUT_FOLDERS = {"pcn": re.compile(r"U[0-9]{5}\.html")}  # the PCN pages, by their names


class LockHeld(Exception):
    """Another run holds the output folder's lock."""


def real_path(path: Path) -> Path:
    """The absolute path with every symbolic link resolved (the path need not exist)."""
    return Path(os.path.realpath(path))


class OutputLock:
    """An exclusive lock beside the output folder (`.NAME.lock`), held for the whole run.

    The kernel's flock is released when the holder dies, even by SIGKILL, so a lock left by
    a killed run is never in the way: its file still names the dead holder, which is how a
    stale lock is recognised (and reported). Whatever a stale file holds (a number, `null`,
    garbage), it is cleared. The file is opened without following a link and must be a
    regular file: a lock that is a link to another file is refused, never written through.
    The file is emptied, never deleted, on release, so two waiting runs can never lock two
    different files.
    """

    def __init__(self, out: Path) -> None:
        out = real_path(out)
        self.folder = out
        self.path = out.parent / f".{out.name}.lock"
        self.handle: int | None = None
        self.stale_holder: dict | None = None

    def _holder(self, handle: int) -> dict:
        """Who the lock file says holds it; {} when it is empty or garbled."""
        try:
            text = os.pread(handle, 4096, 0)
            holder = json.loads(text or b"{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {"garbled": repr(holder)[:80]}

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
            )
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ConfigError(
                    f"the lock file {self.path} is a symbolic link; this tool never writes "
                    "through a link: remove it (the run creates its own lock file)"
                ) from None
            raise ConfigError(
                f"--out {self.folder}: cannot create the lock file {self.path} "
                f"({error.strerror or error}); choose a writable output folder"
            ) from None
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            os.close(handle)
            raise ConfigError(f"the lock file {self.path} is not a regular file; remove it")
        return handle

    def acquire(self, wait_seconds: float = 0.0) -> None:
        handle = self._open()
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(handle)
                    os.close(handle)
                    raise LockHeld(
                        f"the output folder {self.folder} is in use by process "
                        f"{holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                        f"{holder.get('started', '?')}; wait for it to finish, or give "
                        "--wait SECONDS"
                    ) from None
                time.sleep(0.2)  # polling the kernel's lock; no test depends on this pace
        self.handle = handle
        previous = self._holder(handle)
        if previous:
            self.stale_holder = previous  # it died holding the lock: the lock was stale
        os.ftruncate(handle, 0)
        os.pwrite(
            handle,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": _hostname(),
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


def _leftovers(out: Path) -> list[Path]:
    """Folders beside `out` from earlier runs: the outputs before the last run (`.old-`),
    or a killed run's half-written staging folder (`.new-`). Matched by name, never as a
    glob pattern (an `--out` named `o[1]` must not match `.o1.old-*`)."""
    prefixes = (f".{out.name}.new-", f".{out.name}.old-")
    return sorted(
        entry
        for entry in out.parent.iterdir()
        if entry.name.startswith(prefixes) and entry.is_dir() and not entry.is_symlink()
    )


class Clearing:
    """The removal of `out`'s leftovers, on a background thread (join waits for it).
    Removing a thousand pages that are on disk takes ext4 a third of a second, nearly all of
    it waiting on the journal, so it is done while the run builds its report. Only a run
    holding the output folder's lock may start it.

    An earlier run's replaced outputs (`.old-`) are removed only if they hold nothing this
    tool did not write (a file put into the folder while that run published is kept, and
    named in `kept`), and never while `out` itself is missing: then the `.old-` folder may be
    the only copy of the last outputs (a stop between the two renames of a publish without
    an atomic exchange)."""

    def __init__(self, out: Path) -> None:
        self.kept: list[Path] = []
        folders = _leftovers(out) if out.parent.is_dir() else []
        removable = []
        for folder in folders:
            if folder.name.startswith(f".{out.name}.old-"):
                if not out.exists():
                    continue
                with contextlib.suppress(OSError):
                    if _foreign_entries(folder):
                        self.kept.append(folder)
                        continue
            removable.append(folder)
        import shutil  # (here and below: `rules`, `explain` and `--help` remove nothing)

        self.thread = threading.Thread(
            target=lambda: [shutil.rmtree(folder, ignore_errors=True) for folder in removable],
            name="clear-leftovers",
            daemon=True,
        )
        self.thread.start()

    def join(self) -> None:
        self.thread.join()


def _sync(folder: Path) -> None:
    """Everything written on `folder`'s file system reaches the disk (syncfs: that file
    system only, not every disk of the host as sync does)."""
    import ctypes.util  # here, not at the top: it costs `rules` and `--help` 15 ms to start

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not hasattr(libc, "syncfs") or libc.syncfs(handle) != 0:
            os.sync()
    finally:
        os.close(handle)


def _hostname() -> str:
    import socket  # here, not at the top: 9 ms of every `rules` and `--help` otherwise

    return socket.gethostname()


def _exchange(source: Path, target: Path) -> bool:
    """Atomically swap two folders (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if sys.platform != "linux":
        return False
    import ctypes.util  # here, not at the top: it costs `rules` and `--help` 15 ms to start

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = libc.renameat2(
        at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_exchange
    )
    return result == 0


class Staging:
    """A run's outputs being written: a fresh hidden folder beside `out`, published as `out`
    in one step (publish) or removed (discard). A reader sees the previous run or this one,
    never half of one.

    The outputs it replaces stay beside it as `.NAME.old-*` until the next run, which
    removes them (Clearing) while it builds its report.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.out.parent.mkdir(parents=True, exist_ok=True)
        import tempfile  # (here: `rules` and `--help` need no temporary folder)

        self.folder = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.new-", dir=self.out.parent))
        self.published = False

    def publish(self) -> None:
        out, staging = self.out, self.folder
        try:
            _sync(staging)  # everything on disk before it is published (one call, not per file)
            umask = os.umask(0)
            os.umask(umask)
            staging.chmod(0o777 & ~umask)  # as a folder made by mkdir would be
            import tempfile

            previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            previous.rmdir()
            if out.exists() and _exchange(staging, out):
                self.published = True  # the new outputs are live from this moment
                staging.rename(previous)  # staging now holds the outputs it replaced
            elif out.exists():
                out.rename(previous)
                staging.rename(out)
                self.published = True
            else:
                staging.rename(out)
                self.published = True
        except BaseException:
            if self.published:
                raise  # a stop just after publishing: the new outputs stand
            self.discard()
            raise

    def discard(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def _foreign_entries(out: Path) -> list[str]:
    """What `out` holds that no run of this tool writes."""
    foreign = []
    for entry in sorted(out.iterdir()):
        if entry.is_symlink():
            foreign.append(entry.name)
        elif entry.is_dir() and entry.name in OUTPUT_FOLDERS:
            pattern = OUTPUT_FOLDERS[entry.name]
            foreign += [
                f"{entry.name}/{page.name}"
                for page in sorted(entry.iterdir())
                if page.is_symlink() or not page.is_file() or not pattern.fullmatch(page.name)
            ]
        elif not (entry.is_file() and entry.name in OUTPUT_FILES):
            foreign.append(entry.name)
    return foreign


def check_output_folder(out: Path, inputs: list[tuple[str, Path]]) -> Path:
    """The real output folder, once it is safe to replace it as a whole; else ConfigError.

    `inputs`: (option, path) of every input file and folder of the run."""
    given, out = out, real_path(out)
    for option, path in inputs:
        source = real_path(path)
        if out == source or out in source.parents or source in out.parents:
            relation = (
                "is" if out == source else ("contains" if out in source.parents else "lies inside")
            )
            raise ConfigError(
                f"--out {given} {relation} the input {option} {path}: the output folder is "
                "replaced as a whole, so it must be apart from every input; choose another "
                "--out, e.g. out/"
            )
    if not out.exists():
        return out
    if not out.is_dir():
        raise ConfigError(
            f"--out {given} is a file, not a folder; give a folder for the outputs (nothing "
            "was changed)"
        )
    try:
        entries = list(out.iterdir())
        foreign = _foreign_entries(out) if entries else []
    except OSError as error:
        raise ConfigError(
            f"--out {given}: cannot read the folder ({error.strerror or error}); choose a "
            "folder this user can read and write"
        ) from None
    if not entries:
        return out
    if run_manifest(out) is None:
        raise ConfigError(
            f"--out {given} is a folder that holds files but no manifest.json written by "
            "arrs-validate: it is not an earlier run's output folder, and the run would replace "
            "it as a whole. Give an empty or new folder (nothing was changed)"
        )
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise ConfigError(
            f"--out {given} holds an earlier run's outputs but also {shown}, which this tool "
            "did not write and would delete: move them elsewhere, or give another --out "
            "(nothing was changed)"
        )
    return out


def check_timings(path: Path, inputs: list[tuple[str, Path]], out: Path | None) -> None:
    """--timings FILE must not be, or lie inside, an input or the output folder: it would
    overwrite an input, or a published output after the manifest hashed it."""
    target = real_path(path)
    named = [*inputs, *([("--out", out)] if out is not None else [])]
    for option, other in named:
        place = real_path(other)
        if target == place or place in target.parents:
            raise ConfigError(
                f"--timings {path} is, or lies inside, {option} {other}; write the timings "
                "somewhere apart from the inputs and the output folder"
            )


def _kind(path: Path) -> str:
    mode = path.stat().st_mode
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_input(option: str, path: Path) -> None:
    """The register, agreements and reference files must be regular files: reading a FIFO
    or a device would wait for ever while the run holds the output folder's lock. (Claim
    files are the reader's: one that cannot be read is reported and the rest validated.) A
    path that cannot be seen is left to the reader too, whose message names it."""
    if option == "CLAIMS":
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if stat.S_ISDIR(mode):
        with contextlib.suppress(OSError):
            for entry in sorted(path.glob("*.csv")):
                check_input(option, entry)
        return
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{option} {path}: {_kind(path)}; give a regular file")


@dataclass
class Outcome:
    """What the CLI tells: the result, where it went, the exit code and who stopped."""

    result: RunResult
    out: Path
    exit_code: int
    review_lines: int


def exit_code_for(result: RunResult, fail_on: str) -> int:
    """2 for a claim file that could not be read or a missing rate (REF-01; the rest was
    validated), else 1 when an open finding is at or above `fail_on`'s severity, else 0."""
    if result.file_problems or result.missing_rates:
        return EXIT_INPUT
    if fail_on == "never":
        return EXIT_CLEAN
    failing = SEVERITY_ORDER[: SEVERITY_ORDER.index(fail_on) + 1]
    findings = result.findings
    has = findings.filter(
        (findings["status"] == "open") & findings["severity"].is_in(list(failing))
    ).height
    return EXIT_FINDINGS if has else EXIT_CLEAN


def review_month_lines(result: RunResult) -> int:
    """Claim lines in the review month: checked ones, and schema-rejected rows whose claim
    month reads as the review month."""
    if result.review_month is None:
        return 0
    month = result.review_month
    review = f"{month:%Y-%m}"
    checked = _checked_lines(result, review)
    findings = result.findings
    rejected = (
        findings.filter((findings["rule_id"] == "SCH-01") & (findings["claim_month"] == review))
        .select("source_file", "source_line")
        .unique()
        .height
    )
    return checked + rejected


def month_before_lines(result: RunResult) -> tuple[str, int] | None:
    """The claim month before the review month and its checked lines, if it has any."""
    if result.review_month is None:
        return None
    month = result.review_month
    before = (month.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    count = _checked_lines(result, f"{before:%Y-%m}")
    return (f"{before:%Y-%m}", count) if count else None


def _checked_lines(result: RunResult, month: str) -> int:
    """The lines of a claim month (YYYY-MM) that passed the schema and were checked."""
    lines = result.every_line
    return lines.filter(
        (lines["claim_month"] == month) & (lines["outcome"] != "schema_rejected")
    ).height


class OutputRun:
    """One run from lock to publish. `published` tells a stop after publishing from one
    before it (the previous outputs are then left as they were)."""

    @property
    def published(self) -> bool:
        return self.staging is not None and self.staging.published

    def __init__(
        self,
        options,
        pattern: str,
        inputs: list[tuple[str, Path]],
        *,
        wait: float,
        fail_on: str,
        event: Callable[..., None],
        started: dt.datetime,
        run_id: str,
    ) -> None:
        check_out_pattern(pattern)
        self.options = options
        self.pattern = pattern
        self.inputs = inputs
        self.wait = wait
        self.fail_on = fail_on
        self.event = event
        self.started = started
        self.run_id = run_id
        self.staging: Staging | None = None
        self.out: Path | None = None
        self._lock: OutputLock | None = None
        self._clearing: Clearing | None = None

    def _take(self, out: Path) -> None:
        """Lock the real output folder (creating its parent and the lock file only now, once
        there is something to publish), check it again under the lock, and start clearing
        what earlier runs left beside it."""
        lock = OutputLock(out)
        lock.acquire(self.wait)
        self._lock = lock
        if lock.stale_holder:
            self.event("stale_lock_cleared", holder=lock.stale_holder, lock=str(lock.path))
        # Checked again under the lock: another run may have published there meanwhile.
        self.out = check_output_folder(out, self.inputs)
        self._clearing = Clearing(self.out)
        for folder in self._clearing.kept:
            self.event(
                "warning",
                message=f"{folder} holds files this tool did not write, so it was kept; "
                "move what you need out of it and remove it",
            )

    def execute(self) -> Outcome:
        from validator.outputs import data_files, write_outputs
        from validator.pages import Rendering
        from validator.pipeline import run_validation
        from validator.report import start_pages

        for option, path in self.inputs:
            check_input(option, path)
        out = out_folder(self.pattern, self.options.month)
        if out is not None:
            out = check_output_folder(out, self.inputs)  # refused before any work
        rendering = None
        try:
            rendering = Rendering()  # the page renderer starts while the run validates
            result = run_validation(self.options)
            review = f"{result.review_month:%Y-%m}" if result.review_month else None
            lines = review_month_lines(result)
            if not lines:
                raise ConfigError(self._no_lines_message(result, review, out))
            if out is None:
                out = check_output_folder(out_folder(self.pattern, review), self.inputs)
            self._take(out)
            exit_code = exit_code_for(result, self.fail_on)
            try:
                self.event("phase", name="report")
                self.staging = staging = Staging(self.out)
                with result.timings("report"):
                    # A child process renders the pages while this one builds the data files
                    # (the pages' data is made once the workbook's thread has begun).
                    data_files(
                        result,
                        self.run_id,
                        staging.folder,
                        lambda: start_pages(
                            result, self.started, self.run_id, staging.folder, rendering
                        ),
                    )
                    rendering.wait()
                self.event("phase", name="outputs")
                with result.timings("outputs"):
                    write_outputs(result, staging.folder, self.started, exit_code, self.run_id)
                    self._clearing.join()  # nothing from an earlier run is removed after this
                    check_output_folder(self.out, self.inputs)  # nothing put there meanwhile
                    staging.publish()
            except BaseException as error:
                rendering.stop()
                if self.staging is not None and not self.published:
                    self.staging.discard()  # the previous outputs stay as they were
                if isinstance(error, OSError):
                    raise ConfigError(
                        f"cannot write the output folder {self.out}: "
                        f"{error.strerror or error}; choose a writable --out with free space "
                        "(nothing was changed there)"
                    ) from None
                raise
            return Outcome(result, self.out, exit_code, lines)
        finally:
            if rendering is not None:
                rendering.stop()  # (a no-op once it has finished)
            if self._clearing is not None:
                self._clearing.join()  # removal is done before the lock is let go
            if self._lock is not None:
                self._lock.release()

    def _no_lines_message(self, result: RunResult, review: str | None, out: Path | None) -> str:
        read = len(result.files) - len(result.file_problems)
        problems = "".join(f"\n  {file.path}: {file.problem}" for file in result.file_problems)
        month = f"the review month {review}" if review else "the input"
        return (
            f"{month} has no claim lines ({read} of {len(result.files)} claim file(s) read, "
            f"{result.rows_read} rows in all){problems}\nNothing was published"
            + (f" and {out} was left as it was" if out else "")
            + ": check the claim files and --month."
        )
