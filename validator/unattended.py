"""Running from cron with nobody watching: clean stops on SIGTERM and SIGINT, the TOML config
file that holds a scheduled run's settings (every key type-checked), and which earlier run a
scheduled run compares against. (The output folder's lock is runner.py's.)"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path

from validator.errors import ConfigError
from validator.units import MAX_LINES, MONTH_PATTERN


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


MONTH_POLICIES = ("latest", "previous-calendar-month")
FAIL_ON = ("reject", "adjust", "query", "warning", "never")
LOG_FORMATS = ("text", "json")
MAX_LINES_ALLOWED = 1_000_000_000
MAX_WAIT_SECONDS = 86_400.0  # a day: longer than any run, short enough to notice a mistake


@dataclass
class RunConfig:
    """Settings of a scheduled run, from `--config FILE` (paths relative to that file)."""

    claims: list[str] = field(default_factory=list)
    pcns: str | None = None
    agreements: str | None = None
    reference: str | None = None
    columns: str | None = None
    month: str = "latest"
    out: str | None = None
    previous: str = ""
    show_names: bool = False
    log_format: str = "text"
    wait: float = 0.0
    fail_on: str = "query"
    quiet: bool = False
    max_lines: int = MAX_LINES


CONFIG_EXAMPLE = """\
claims = ["claims"]                     # files or folders of *.csv
pcns = "pcns.csv"
agreements = "agreements.csv"           # optional
reference = "reference"                 # optional
columns = "profiles/export.toml"        # optional: a column profile for another export
month = "previous-calendar-month"       # or "latest", or a month such as "2021-12"
out = "reports/{review_month}"          # {review_month} keeps one folder per month
previous = "auto"                       # chain to the latest earlier run, or a folder, or ""
show_names = false                      # true shows staff names in the report
log_format = "text"                     # or "json"
wait = 0                                # seconds to wait for a run holding the lock
fail_on = "query"                       # reject, adjust, query, warning or never
quiet = false                           # true: print nothing but errors
max_lines = 1000000                     # a batch of more claim lines is refused"""

# What each key of a config file must hold, in words for the message that refuses it.
_CONFIG_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "claims": ((str, list), 'a path or a list of paths, e.g. ["claims"]'),
    "pcns": ((str,), 'a path in quotes, e.g. "pcns.csv"'),
    "agreements": ((str,), "a path in quotes"),
    "reference": ((str,), "a path in quotes"),
    "columns": ((str,), 'a column profile\'s path in quotes, e.g. "profiles/export.toml"'),
    "month": ((str,), 'latest, previous-calendar-month or a month such as "2021-12", in quotes'),
    "out": ((str,), 'a path in quotes, e.g. "reports/{review_month}"'),
    "previous": ((str,), '"auto", "" or a path, in quotes'),
    "show_names": ((bool,), "true or false, without quotes"),
    "log_format": ((str,), '"text" or "json"'),
    "wait": ((int, float), "a number of seconds, without quotes, e.g. 60"),
    "fail_on": ((str,), '"reject", "adjust", "query", "warning" or "never"'),
    "quiet": ((bool,), "true or false, without quotes"),
    "max_lines": ((int,), "a whole number of lines, without quotes, e.g. 1000000"),
}


def _checked(path: Path, data: dict) -> dict:
    """The config's values, each of the type its key needs (TOML's bool is not an int here)."""
    for key, value in data.items():
        types, expected = _CONFIG_TYPES[key]
        wrong = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if key == "claims" and isinstance(value, list):
            wrong = not value or not all(isinstance(item, str) and item for item in value)
        if wrong:
            raise ConfigError(
                f"--config {path}: {key} = {value!r} is not valid; expected {expected}"
            )
    return data


def check_wait(seconds: float, where: str) -> float:
    if not (0 <= seconds <= MAX_WAIT_SECONDS):  # also refuses nan
        raise ConfigError(
            f"{where}: {seconds!r} is not a number of seconds between 0 and "
            f"{MAX_WAIT_SECONDS:.0f}; give e.g. 60"
        )
    return float(seconds)


def check_max_lines(lines: int, where: str) -> int:
    if not 1 <= lines <= MAX_LINES_ALLOWED:
        raise ConfigError(
            f"{where}: {lines!r} is not a number of lines between 1 and {MAX_LINES_ALLOWED:,}; "
            f"give e.g. {MAX_LINES}"
        )
    return lines


def check_choice(value: str, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def check_month_policy(policy: str, where: str) -> str:
    if policy not in MONTH_POLICIES and not re.fullmatch(MONTH_PATTERN, policy):
        raise ConfigError(
            f"{where} {policy}: expected latest, previous-calendar-month or a month YYYY-MM "
            "between 1900 and 2199, such as 2021-12"
        )
    return policy


def load_config(path: Path) -> RunConfig:
    if path.exists() and not path.is_file():
        raise ConfigError(f"--config {path}: not a regular file; give a TOML file")
    import tomllib  # here: `--help` reads no TOML, and tomllib takes 10 ms to import

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--config {path}: not valid TOML ({error})") from None
    unknown = sorted(set(data) - set(_CONFIG_TYPES))
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown key(s) {', '.join(unknown)}; a config file looks like:\n"
            + CONFIG_EXAMPLE
        )
    data = _checked(path, data)
    base = path.parent

    def resolve(value: str | None) -> str | None:
        if not value:
            return value
        return str(Path(value) if Path(value).is_absolute() else base / value)

    claims = data.get("claims", [])
    if isinstance(claims, str):
        claims = [claims]
    previous = data.get("previous", "")
    return RunConfig(
        claims=[resolve(claim) for claim in claims],
        pcns=resolve(data.get("pcns")),
        agreements=resolve(data.get("agreements")),
        reference=resolve(data.get("reference")),
        columns=resolve(data.get("columns")),
        month=check_month_policy(data.get("month", "latest"), f"--config {path}: month"),
        out=resolve(data.get("out")),
        previous=previous if previous in ("", "auto") else resolve(previous),
        show_names=data.get("show_names", False),
        log_format=check_choice(
            data.get("log_format", "text"), LOG_FORMATS, f"--config {path}: log_format"
        ),
        wait=check_wait(data.get("wait", 0), f"--config {path}: wait"),
        fail_on=check_choice(data.get("fail_on", "query"), FAIL_ON, f"--config {path}: fail_on"),
        quiet=data.get("quiet", False),
        max_lines=check_max_lines(data.get("max_lines", MAX_LINES), f"--config {path}: max_lines"),
    )


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


MANIFEST_LIMIT = 256 << 20  # bytes; a national run's manifest is a few hundred kilobytes


def run_manifest(folder: Path) -> dict | None:
    """The manifest of a run this tool wrote into `folder`, or None if it holds none."""
    try:
        # Non-blocking and no links: a FIFO or a link named manifest.json is not a manifest.
        handle = os.open(folder / "manifest.json", os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return None
        chunks, size = [], 0
        while chunk := os.read(handle, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MANIFEST_LIMIT:
                return None  # no manifest this tool writes comes near it
        document = json.loads(b"".join(chunks))
    except (OSError, ValueError):
        return None
    finally:
        os.close(handle)
    if isinstance(document, dict) and document.get("tool") == "arrs-validate":
        return document
    return None


def completed_with_lines(folder: Path) -> bool:
    """A run that completed and checked claim lines: the only kind `previous = "auto"` chains
    to (an empty or failed run would make every finding of the next month look new)."""
    document = run_manifest(folder)
    if document is None or not (folder / "exceptions.csv").is_file():
        return False
    reconciliation = document.get("reconciliation")
    checked = reconciliation.get("rows_checked") if isinstance(reconciliation, dict) else None
    return isinstance(checked, int) and checked > 0


def check_out_pattern(pattern: str) -> None:
    if "{review_month}" in str(Path(pattern).parent):
        raise ConfigError(
            f"out {pattern}: {{review_month}} may only stand in the last folder name, "
            "e.g. reports/{review_month}"
        )


def latest_previous(pattern: str, review_month: str) -> Path | None:
    """`previous = "auto"`: the output folder of the latest earlier run of the same pattern
    that completed with checked lines (for a pattern without {review_month}, the folder
    itself: the last run's outputs)."""
    if "{review_month}" not in pattern:
        folder = Path(pattern)
        return folder if completed_with_lines(folder) else None
    template = Path(pattern)
    parent = template.parent
    name = re.escape(template.name).replace(re.escape("{review_month}"), r"([0-9]{4}-[0-9]{2})")
    earlier = []
    if parent.is_dir():
        for child in parent.iterdir():
            match = re.fullmatch(name, child.name)
            if match and match.group(1) < review_month and completed_with_lines(child):
                earlier.append((match.group(1), child))
    return max(earlier)[1] if earlier else None
