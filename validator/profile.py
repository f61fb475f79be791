"""Column profiles: how one source's exports name the claim columns and spell their values.

A profile (`--columns PROFILE.toml`, README "Inputs") maps an export's header names onto the
claim columns, its value spellings onto the values the schema accepts (`Yes` -> `Y`,
"Clinical Pharmacist (ARRS)" -> `clinical_pharmacist`), and may name the format its dates and
months are written in. It only renames and respells: the schema then judges the result as it
judges any claim file, so a value no alias covers is reported as written, never guessed.
A profile that names a column the claim files do not have, or respells a value into one the
schema would refuse, is refused before anything is read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from validator.errors import ConfigError
from validator.load import CLAIM_COLUMNS, normalise_header
from validator.schema import valid_cells

PROFILE_EXAMPLE = """\
date_format = "%d-%b-%Y"          # optional: dates written as 16-Jun-2021
month_format = "%b %Y"            # optional: claim months written as Jun 2021

[columns.staff_id]
headers = ["Staff Member ID"]     # header names that mean this column

[columns.additional_to_baseline]
headers = ["Additional to baseline?"]
values = { "Yes" = "Y", "No" = "N" }   # spelling in the export = value in the claim file"""

_TOP_KEYS = {"date_format", "month_format", "columns"}
_COLUMN_KEYS = {"headers", "values"}


@dataclass
class Profile:
    """A column profile as read and checked."""

    path: str
    sha256: str
    # normalised header name in the export -> claim column
    headers: dict[str, str] = field(default_factory=dict)
    # claim column -> {export's spelling, stripped and in lower case -> value}
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    date_format: str | None = None
    month_format: str | None = None

    def column_for(self, header: str) -> str:
        """The claim column a normalised header name stands for (itself when no alias)."""
        return self.headers.get(header, header)

    def respelled(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The claim text cells with every aliased spelling and formatted date replaced by
        what the claim schema reads; any other text is left exactly as it was."""
        changes = []
        for name, spec in CLAIM_COLUMNS.items():
            text = pl.col(name).str.strip_chars()
            formats = {
                "date": (self.date_format, "%Y-%m-%d"),
                "month": (self.month_format, "%Y-%m"),
            }
            written, canonical = formats.get(spec["kind"], (None, None))
            aliases = self.values.get(name)
            if not written and not aliases:
                continue
            cell = pl.col(name)
            if written:
                parsed = text.str.to_date(written, strict=False)
                cell = pl.when(parsed.is_not_null()).then(parsed.dt.strftime(canonical))
                cell = cell.otherwise(pl.col(name))
            if aliases:
                key = text.str.to_lowercase()
                cell = (
                    pl.when(key.is_in(list(aliases)))
                    .then(key.replace_strict(aliases, default=None, return_dtype=pl.String))
                    .otherwise(cell)
                )
            changes.append(cell.alias(name))
        return frame.with_columns(changes) if changes else frame

    def manifest_entry(self) -> dict:
        return {"kind": "columns", "path": self.path, "sha256": self.sha256}


def _refuse(path: Path, problems: list[str]) -> ConfigError:
    return ConfigError(
        f"--columns {path}: the column profile has errors:\n  "
        + "\n  ".join(problems)
        + "\na profile looks like:\n"
        + PROFILE_EXAMPLE
    )


def _check_format(key: str, pattern: object, sample: dt.date) -> str | None:
    """A problem with a date or month format, or None: it must read back what it writes."""
    if not isinstance(pattern, str) or "%" not in pattern:
        return f"{key} = {pattern!r} is not a format; give strftime codes in quotes, e.g. %d-%b-%Y"
    try:
        written = sample.strftime(pattern)
        read = pl.select(pl.lit(written).str.to_date(pattern, strict=False)).item()
    except (ValueError, pl.exceptions.PolarsError):
        read = None
    if read != sample:
        return f"{key} = {pattern!r} does not read back the dates it writes; check its codes"
    return None


def load_profile(path: Path, role_names: dict[str, str]) -> Profile:
    """Read and check a column profile; raise ConfigError naming every problem in it.

    `role_names` maps role codes and titles (lower case) to codes, so a value alias for
    `role` must name a role the reference data has."""
    try:
        data = path.read_bytes()
        document = tomllib.loads(data.decode("utf-8"))
    except OSError as error:
        raise ConfigError(f"--columns {path}: cannot read it ({error.strerror or error})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--columns {path}: not valid TOML ({error})") from None
    profile = Profile(path=str(path), sha256=hashlib.sha256(data).hexdigest())
    problems = [f"unknown key {key!r}" for key in sorted(set(document) - _TOP_KEYS)]
    for key, sample in (
        ("date_format", dt.date(2021, 6, 16)),
        ("month_format", dt.date(2021, 6, 1)),
    ):
        if key in document:
            problem = _check_format(key, document[key], sample)
            if problem:
                problems.append(problem)
            else:
                setattr(profile, key, document[key])
    columns = document.get("columns", {})
    if not isinstance(columns, dict):
        problems.append("columns must be tables: [columns.staff_id] and so on")
        columns = {}
    claimed_by: dict[str, str] = {}
    for written_name, spec in columns.items():
        name = normalise_header(written_name)
        where = f"[columns.{written_name}]"
        if name not in CLAIM_COLUMNS:
            problems.append(
                f"{where} is not a claim column; the columns are: {', '.join(CLAIM_COLUMNS)}"
            )
            continue
        if not isinstance(spec, dict):
            problems.append(f"{where} must be a table with headers and/or values")
            continue
        problems += [f"{where}: unknown key {key!r}" for key in sorted(set(spec) - _COLUMN_KEYS)]
        problems += _header_aliases(profile, name, where, spec.get("headers", []), claimed_by)
        problems += _value_aliases(profile, name, where, spec.get("values", {}), role_names)
    if problems:
        raise _refuse(path, problems)
    return profile


def _header_aliases(
    profile: Profile, name: str, where: str, headers: object, claimed_by: dict[str, str]
) -> list[str]:
    if not isinstance(headers, list) or not all(isinstance(h, str) and h.strip() for h in headers):
        return [f'{where}: headers must be a list of names in quotes, e.g. ["Staff Member ID"]']
    problems = []
    for header in headers:
        alias = normalise_header(header)
        if alias in CLAIM_COLUMNS and alias != name:
            problems.append(f"{where}: header {header!r} is the name of the column {alias}")
        elif alias in claimed_by and claimed_by[alias] != name:
            problems.append(
                f"{where}: header {header!r} is already an alias of {claimed_by[alias]}"
            )
        else:
            claimed_by[alias] = name
            profile.headers[alias] = name
    return problems


def _value_aliases(
    profile: Profile, name: str, where: str, values: object, role_names: dict[str, str]
) -> list[str]:
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(t, str) for k, t in values.items()
    ):
        return [f'{where}: values must be a table of "spelling" = "value", e.g. {{ "Yes" = "Y" }}']
    targets = list(values.values())
    valid = valid_cells(name, targets, role_names)
    expected = CLAIM_COLUMNS[name].get("expected", "")
    problems = [
        f"{where}: {spelling!r} = {target!r}, but {target!r} is not a valid {name}: "
        f"expected {expected}"
        for (spelling, target), ok in zip(values.items(), valid, strict=True)
        if not ok
    ]
    aliases: dict[str, str] = {}
    for spelling, target in values.items():
        key = spelling.strip().lower()
        if key in aliases and aliases[key] != target:
            problems.append(f"{where}: {spelling!r} is given twice, as different values")
        aliases[key] = target
    if aliases and not problems:
        profile.values[name] = aliases
    return problems
