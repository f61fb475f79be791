"""Reference data (roles, rates, training conditions, number limits), the PCN register and
the agreements file.

All are small CSV files read in full and checked on load. Any problem is a configuration
error (exit 2, no outputs) whose message lists every bad cell with its file, line and fix.
Shipped reference rows live in reference/; `--reference DIR` replaces rows with the same key
and adds the rest (docs/scheme.md, Reference data).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import polars as pl

from validator import units
from validator import values as v
from validator.errors import ConfigError
from validator.load import CLAIM_COLUMNS, decode, normalise_header
from validator.paths import REFERENCE_DIR
from validator.units import display_pounds

# The claim columns a training condition may name: each holds one of its choices, or blank.
# A blank training_status means not_started (a value); a blank in the others, not recorded.
CONDITION_COLUMNS = ("training_status", "splw_online_programme", "peer_support", "pamvr_registered")
# Columns of version 1's roles.csv that now live in training.csv.
MOVED_ROLE_COLUMNS = ("training_condition", "accepted_statuses")
AREAS = ["standard", "outer_london", "inner_london"]


class CellError(ValueError):
    """A reference cell that does not parse; the message says what was expected."""


def _text(cell: str) -> str:
    return cell.strip()


def _required_text(cell: str) -> str:
    if not cell.strip():
        raise CellError("a value (it is required)")
    return cell.strip()


def _code(cell: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]+", cell.strip()):
        raise CellError("a lower-case code of letters, digits and '_'")
    return cell.strip()


def _pcn_code(cell: str) -> str:
    if not re.fullmatch(r"U[0-9]{5}", cell.strip()):
        raise CellError("a PCN ODS code: U followed by five digits")
    return cell.strip()


def _date(cell: str) -> dt.date:
    text = cell.strip()
    for pattern, form in (
        (units.ISO_DATE_PATTERN, "%Y-%m-%d"),
        (units.UK_DATE_PATTERN, "%d/%m/%Y"),
    ):
        if re.fullmatch(pattern, text):
            try:
                return dt.datetime.strptime(text, form).date()
            except ValueError:
                break
    raise CellError("a date as YYYY-MM-DD or DD/MM/YYYY")


def _optional_date(cell: str) -> dt.date | None:
    return _date(cell) if cell.strip() else None


def _month(cell: str) -> dt.date:
    text = cell.strip()
    if not re.fullmatch(units.MONTH_PATTERN, text):
        raise CellError("a month as YYYY-MM")
    return dt.date(int(text[:4]), int(text[5:]), 1)


def _money(cell: str) -> int:
    text = cell.strip()
    match = re.fullmatch(units.MONEY_PATTERN, text)
    if not match:
        raise CellError("an amount in pounds with at most 2 decimal places, e.g. 56829.00")
    pence = int(match.group(1).replace(",", "")) * 100 + int((match.group(2) or "").ljust(2, "0"))
    if pence > v.MAX_MONEY_PENCE:
        raise CellError(
            f"an amount of at most {display_pounds(v.MAX_MONEY_PENCE)} (no PCN's ARRS sum or "
            "role's annual maximum comes near it)"
        )
    return pence


def _count(cell: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", cell.strip()):
        raise CellError("a whole number")
    return int(cell.strip())


def _optional_count(cell: str) -> int | None:
    return _count(cell) if cell.strip() else None


def _positive_count(cell: str) -> int:
    value = _count(cell)
    if value <= 0:
        raise CellError("a whole number greater than 0")
    return value


def _decimal(cell: str, expected: str) -> Decimal:
    """A plain decimal number: never NaN, Infinity or an exponent (1e30)."""
    text = cell.strip()
    if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9})?", text):
        raise CellError(expected)
    return Decimal(text)


MAX_LIMIT_WTE = 1_000  # a number limit no PCN's list could reach


def _wte(cell: str) -> int:
    value = _decimal(cell, "a WTE as a decimal, e.g. 1.0")
    units = value * v.WTE_UNITS
    if not 0 < value <= MAX_LIMIT_WTE or units != units.to_integral_value():
        raise CellError(
            f"a positive WTE of at most {MAX_LIMIT_WTE} with up to 6 decimal places, e.g. 1.0"
        )
    return int(units)


def _share_parts(cell: str) -> int:
    """A cost share such as 0.5 in parts per 10,000."""
    value = _decimal(cell, "a share between 0 and 1, e.g. 0.5")
    parts = value * 10_000
    if not 0 < value <= 1 or parts != parts.to_integral_value():
        raise CellError("a share between 0 and 1 with up to 4 decimal places, e.g. 0.5")
    return int(parts)


def _financial_year(cell: str) -> str:
    text = cell.strip()
    match = re.fullmatch(r"([0-9]{4})/([0-9]{2})", text)
    if not match or (int(match.group(1)) + 1) % 100 != int(match.group(2)):
        raise CellError("a financial year such as 2021/22")
    return text


def _choice(options: list[str]) -> Callable[[str], str]:
    def parse(cell: str) -> str:
        text = cell.strip().lower()
        for option in options:
            if text == option.lower():
                return option
        raise CellError(f"one of {', '.join(o or '(blank)' for o in options)}")

    return parse


@dataclass
class Table:
    """Rows of one reference file, each with the file and line it came from, and the facts
    the manifest records of each file read (describe), taken from the very bytes read."""

    rows: list[dict]
    files: list[dict]


# Columns a reference file may leave out: each reads as blank (docs/scheme.md, reference data).
OPTIONAL_COLUMNS = {"effective_to"}


def read_table(path: Path, columns: dict[str, Callable[[str], object]], what: str) -> Table:
    """Read and check one CSV; raise ConfigError listing every problem in it."""
    try:
        data = path.read_bytes()
        text, encoding = decode(data)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the {what} ({error.strerror or error})") from None
    except ValueError as error:
        raise ConfigError(f"{path}: the {what} is not readable text: {error}") from None
    reader = csv.reader(text.splitlines())
    header = [normalise_header(name) for name in next(reader, [])]
    missing = [name for name in columns if name not in header and name not in OPTIONAL_COLUMNS]
    if missing:
        raise ConfigError(
            f"{path}: the {what} lacks column(s) {', '.join(missing)}; "
            f"its header must name: {', '.join(columns)}"
        )
    problems: list[str] = []
    rows: list[dict] = []
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            problems.append(
                f"{path} line {line}: has {len(cells)} fields, header has {len(header)}"
            )
            continue
        record = dict(zip(header, cells, strict=True))
        row: dict = {"_where": f"{path} line {line}"}
        for name, parse in columns.items():
            cell = record.get(name, "")
            try:
                row[name] = parse(cell)
            except CellError as error:
                problems.append(f"{path} line {line} column {name}: '{cell}' — expected {error}")
        rows.append(row)
    if problems:
        raise ConfigError(f"the {what} has errors:\n  " + "\n  ".join(problems))
    return Table(rows=rows, files=[describe(path, data, encoding, len(rows))])


def describe(path: Path, data: bytes, encoding: str, rows: int) -> dict:
    """A small CSV input as the manifest records it: SHA-256, encoding and data rows, of the
    bytes the run read (a file replaced mid-run is recorded as it was used)."""
    return {
        "path": str(path),
        "sha256": hashlib.sha256(data).hexdigest(),
        "encoding": encoding,
        "rows": rows,
    }


def _duplicate_keys(table: Table, key: tuple[str, ...], name: str) -> list[str]:
    """Rows of one file with the same key: which one would win is a guess, so both are named."""
    seen: dict[tuple, str] = {}
    problems = []
    for row in table.rows:
        value = tuple(row[k] for k in key)
        if value in seen:
            shown = ", ".join(
                f"{k} {v if v not in (None, '') else '(blank)'}"
                for k, v in zip(key, value, strict=True)
            )
            problems.append(f"{row['_where']}: {shown} is already at {seen[value]}; keep one")
        seen[value] = row["_where"]
    return problems


ROLE_COLUMNS = {
    "role": _code,
    "title": _required_text,
    "claimable_from": _date,
    "cost_share": _share_parts,
}
RATE_COLUMNS = {
    "role": _code,
    "afc_band": lambda cell: cell.strip().lower(),
    "area": _choice(AREAS),
    "effective_from": _date,
    "effective_to": _optional_date,
    "annual_maximum": _money,
}
TRAINING_COLUMNS = {
    "role": _code,
    "condition": _required_text,
    "column": _choice(list(CONDITION_COLUMNS)),
    "accepted": _required_text,
    "level": _choice(["must", "recommended"]),
    "source": _required_text,
}
LIMIT_COLUMNS = {
    "financial_year": _financial_year,
    "role": _code,
    "list_size_min": _count,
    "list_size_max": _optional_count,
    "max_wte": _wte,
}
REFERENCE_FILES = {
    "roles.csv": (ROLE_COLUMNS, ("role",)),
    "rates.csv": (RATE_COLUMNS, ("role", "afc_band", "area", "effective_from")),
    "training.csv": (TRAINING_COLUMNS, ("role", "condition")),
    "limits.csv": (LIMIT_COLUMNS, ("financial_year", "role", "list_size_min")),
}


@dataclass
class Reference:
    roles: pl.DataFrame
    rates: pl.DataFrame
    training: pl.DataFrame
    limits: pl.DataFrame
    files: list[Path]

    @property
    def role_codes(self) -> list[str]:
        return self.roles["role"].to_list()

    @property
    def role_names(self) -> dict[str, str]:
        """Each role's code and title in lower case -> its code (a claim may give either)."""
        names = {title.lower(): code for code, title in self.roles.select("role", "title").rows()}
        return {**names, **{code: code for code in self.role_codes}}


def _merged(name: str, override_dir: Path | None) -> Table:
    columns, key = REFERENCE_FILES[name]
    table = read_table(REFERENCE_DIR / name, columns, f"shipped reference file {name}")
    if override_dir is None or not (override_dir / name).exists():
        extra = Table(rows=[], files=[])
    else:
        if name == "roles.csv":
            _refuse_moved_columns(override_dir / name)
        extra = read_table(override_dir / name, columns, f"reference file {name}")
    problems = _duplicate_keys(table, key, name) + _duplicate_keys(extra, key, name)
    if problems:
        raise ConfigError(f"{name} has rows with the same key:\n  " + "\n  ".join(problems))
    by_key = {tuple(row[k] for k in key): row for row in table.rows}
    for row in extra.rows:
        by_key[tuple(row[k] for k in key)] = row  # a user row replaces the shipped one
    return Table(rows=list(by_key.values()), files=table.files + extra.files)


def _refuse_moved_columns(path: Path) -> None:
    """A version 1 roles.csv still holding the training columns is refused, not half-read."""
    try:
        text, _ = decode(path.read_bytes())
    except (OSError, ValueError):
        return  # read_table reports it
    header = [normalise_header(name) for name in next(csv.reader(text.splitlines()), [])]
    moved = [name for name in MOVED_ROLE_COLUMNS if name in header]
    if moved:
        raise ConfigError(
            f"{path}: column(s) {', '.join(moved)} have moved: training conditions are rows "
            "of training.csv (role, condition, column, accepted, level, source), one row per "
            "condition; remove them from roles.csv and put the conditions in training.csv in "
            "the same --reference folder (docs/scheme.md, Training conditions)"
        )


def _check_training(rows: list[dict]) -> list[str]:
    """Each condition's accepted values must be values its claim column can hold."""
    problems = []
    for row in rows:
        choices = CLAIM_COLUMNS[row["column"]]["choices"]
        accepted = [value.strip() for value in row["accepted"].split(";") if value.strip()]
        unknown = [value for value in accepted if value not in choices]
        if unknown or not accepted:
            problems.append(
                f"{row['_where']} column accepted: '{row['accepted']}' — expected "
                f"';'-separated values of {row['column']}: {', '.join(choices)}"
            )
        row["accepted"] = ";".join(accepted)
    return problems


def _frame(rows: list[dict], columns: dict, dtypes: dict) -> pl.DataFrame:
    return pl.DataFrame([{k: row[k] for k in columns} for row in rows], schema=dtypes, orient="row")


def _limit_ranges(rows: list[dict]) -> list[str]:
    """Each (year, role)'s list-size ranges must not run backwards or overlap: a PCN's limit
    must be one number, not whichever row happens to come first."""
    problems = []
    ordered = sorted(
        rows, key=lambda row: (row["financial_year"], row["role"], row["list_size_min"])
    )
    for number, row in enumerate(ordered):
        top = row["list_size_max"]
        if top is not None and top < row["list_size_min"]:
            problems.append(
                f"{row['_where']}: list_size_max {top} is below list_size_min "
                f"{row['list_size_min']}"
            )
        following = ordered[number + 1] if number + 1 < len(ordered) else None
        if (
            following is not None
            and (following["financial_year"], following["role"])
            == (row["financial_year"], row["role"])
            and (top is None or following["list_size_min"] <= top)
        ):
            problems.append(
                f"{following['_where']}: list sizes from {following['list_size_min']} overlap "
                f"the range of {row['_where']} ({row['list_size_min']} to "
                f"{'any size' if top is None else top}) for {row['role']} in "
                f"{row['financial_year']}"
            )
    return problems


def load_reference(override_dir: Path | None) -> Reference:
    """Shipped roles, rates and limits, with `--reference DIR` rows replacing or adding."""
    if override_dir is not None:
        if not override_dir.is_dir():
            raise ConfigError(f"--reference {override_dir}: not a folder of reference CSV files")
        known = set(REFERENCE_FILES)
        unknown = sorted(p.name for p in override_dir.glob("*.csv") if p.name not in known)
        if unknown:
            raise ConfigError(
                f"--reference {override_dir}: unexpected file(s) {', '.join(unknown)}; "
                f"the folder may hold {', '.join(sorted(known))}"
            )
    roles = _merged("roles.csv", override_dir)
    rates = _merged("rates.csv", override_dir)
    training = _merged("training.csv", override_dir)
    limits = _merged("limits.csv", override_dir)
    codes = {row["role"] for row in roles.rows}
    unknown_roles = [
        f"{row['_where']}: role '{row['role']}' is not in roles.csv"
        for row in rates.rows + training.rows + limits.rows
        if row["role"] not in codes
    ] + _check_training(training.rows)
    if unknown_roles:
        raise ConfigError("the reference data has errors:\n  " + "\n  ".join(unknown_roles))
    backwards = _limit_ranges(limits.rows) + [
        f"{row['_where']}: effective_to {row['effective_to']} is before effective_from "
        f"{row['effective_from']}"
        for row in rates.rows
        if row["effective_to"] is not None and row["effective_to"] < row["effective_from"]
    ]
    if backwards:
        raise ConfigError(
            "the reference data has ranges that end before they start or overlap:\n  "
            + "\n  ".join(backwards)
        )
    return Reference(
        roles=_frame(
            roles.rows,
            ROLE_COLUMNS,
            {
                "role": pl.String,
                "title": pl.String,
                "claimable_from": pl.Date,
                "cost_share": pl.Int64,
            },
        ).sort("role"),
        # In file order (shipped rows, then a user's additions): the order findings take.
        training=_frame(
            training.rows,
            TRAINING_COLUMNS,
            {name: pl.String for name in TRAINING_COLUMNS},
        ),
        rates=_frame(
            rates.rows,
            RATE_COLUMNS,
            {
                "role": pl.String,
                "afc_band": pl.String,
                "area": pl.String,
                "effective_from": pl.Date,
                "effective_to": pl.Date,
                "annual_maximum": pl.Int64,
            },
        ).sort("role", "afc_band", "area", "effective_from"),
        limits=_frame(
            limits.rows,
            LIMIT_COLUMNS,
            {
                "financial_year": pl.String,
                "role": pl.String,
                "list_size_min": pl.Int64,
                "list_size_max": pl.Int64,
                "max_wte": pl.Int64,
            },
        ).sort("financial_year", "role", "list_size_min"),
        files=sorted(
            [*roles.files, *rates.files, *training.files, *limits.files],
            key=lambda facts: facts["path"],
        ),
    )


REGISTER_COLUMNS = {
    "pcn_code": _pcn_code,
    "pcn_name": _required_text,
    "financial_year": _financial_year,
    "area": _choice(AREAS),
    "list_size": _positive_count,
    "arrs_sum": _money,
}


def load_register(path: Path) -> tuple[pl.DataFrame, dict]:
    """The PCN register (`--pcns`): one row per PCN per financial year; and the facts the
    manifest records of the file as read."""
    table = read_table(path, REGISTER_COLUMNS, "PCN register (--pcns)")
    seen: dict[tuple[str, str], str] = {}
    duplicates = []
    for row in table.rows:
        key = (row["pcn_code"], row["financial_year"])
        if key in seen:
            duplicates.append(f"{row['_where']}: {key[0]} {key[1]} is already at {seen[key]}")
        seen[key] = row["_where"]
    if duplicates:
        raise ConfigError(
            "the PCN register has more than one row for a PCN and year; keep one:\n  "
            + "\n  ".join(duplicates)
        )
    frame = _frame(
        table.rows,
        REGISTER_COLUMNS,
        {
            "pcn_code": pl.String,
            "pcn_name": pl.String,
            "financial_year": pl.String,
            "area": pl.String,
            "list_size": pl.Int64,
            "arrs_sum": pl.Int64,
        },
    )
    return frame, table.files[0]


AGREEMENT_COLUMNS = {
    "agreement_id": _required_text,
    "rule_id": _required_text,
    "pcn_code": _pcn_code,
    "staff_id": _text,
    "from_month": _month,
    "to_month": _month,
    "extended_deadline": _optional_date,
    "approved_by": _text,
    "reason": _text,
}


def load_agreements(path: Path | None, rule_ids: set[str]) -> tuple[pl.DataFrame, dict | None]:
    """The commissioner's agreements (`--agreements`), checked against the rule catalogue;
    and the facts the manifest records of the file as read (None without one)."""
    dtypes = {
        "agreement_id": pl.String,
        "rule_id": pl.String,
        "pcn_code": pl.String,
        "staff_id": pl.String,
        "from_month": pl.Date,
        "to_month": pl.Date,
        "extended_deadline": pl.Date,
        "approved_by": pl.String,
        "reason": pl.String,
    }
    if path is None:
        return pl.DataFrame(schema=dtypes), None
    table = read_table(path, AGREEMENT_COLUMNS, "agreements file (--agreements)")
    problems = []
    ids: set[str] = set()
    for row in table.rows:
        where = row["_where"]
        if row["rule_id"] not in rule_ids:
            problems.append(f"{where}: rule_id '{row['rule_id']}' is not a rule; see `rules`")
        if row["from_month"] > row["to_month"]:
            problems.append(f"{where}: from_month is after to_month")
        if row["extended_deadline"] is not None and row["rule_id"] != "PAR-01":
            problems.append(f"{where}: extended_deadline is only for PAR-01 agreements")
        if row["agreement_id"] in ids:
            problems.append(f"{where}: agreement_id '{row['agreement_id']}' is used twice")
        ids.add(row["agreement_id"])
    if problems:
        raise ConfigError("the agreements file has errors:\n  " + "\n  ".join(problems))
    return _frame(table.rows, AGREEMENT_COLUMNS, dtypes), table.files[0]


def training_conditions_text(reference: Reference) -> str:
    """Every role's training conditions, as `explain` shows them for TRN-01, TRN-02, TRN-03."""
    lines = ["training conditions (reference/training.csv):"]
    for row in reference.training.iter_rows(named=True):
        accepted = row["accepted"].replace(";", ", ")
        lines.append(
            f"  {row['role']}: {row['level']}: {row['condition']} "
            f"({row['column']} one of {accepted})"
        )
        lines.append(f"      source: {row['source']}")
    return "\n".join(lines)
