"""Reading claim files: encodings, header names and row widths, every row keeping its line.

Nothing here judges a value; it only turns files into a frame of text cells, one row per data
line, with `source_file`, `source_line` and a run-wide `row_no`. A row whose shape is wrong
(too few or too many fields, a blank line between data) keeps a `row_problem` for the schema
stage to report. A file that cannot be read at all is described in `ClaimFile.problem`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from validator.paths import SCHEMA_FILE

csv.field_size_limit(16 * 1024 * 1024)

WTE_COLUMNS = ("wte", "hours_per_week")


def schema_columns() -> dict[str, dict]:
    """The claim columns of SPEC section 2, from schemas/claims.toml."""
    with SCHEMA_FILE.open("rb") as handle:
        return tomllib.load(handle)["columns"]


CLAIM_COLUMNS = schema_columns()
REQUIRED_COLUMNS = [name for name, spec in CLAIM_COLUMNS.items() if spec["required"]]


@dataclass
class ClaimFile:
    """One claim file as read: what it is, and how many rows it held."""

    path: str
    sha256: str = ""
    encoding: str = ""
    rows_read: int = 0
    problem: str = ""
    unread_rows: int = 0
    extra_columns: list[str] = field(default_factory=list)


def normalise_header(name: str) -> str:
    """`  Claim Month ` -> `claim_month`: case-insensitive, spaces equal underscores."""
    return "_".join(name.strip().lower().split())


def expand_claim_paths(arguments: list[str]) -> list[str]:
    """Files as given; a directory stands for every `*.csv` directly in it, in name order."""
    paths: list[str] = []
    for argument in arguments:
        if os.path.isdir(argument):
            names = sorted(
                name
                for name in os.listdir(argument)
                if name.lower().endswith(".csv") and not os.path.isdir(os.path.join(argument, name))
            )
            if not names:
                paths.append(os.path.join(argument, "*.csv"))
            paths.extend(os.path.join(argument, name) for name in names)
        else:
            paths.append(argument)
    return paths


def decode(data: bytes) -> tuple[str, str]:
    """The file's text and the encoding used: UTF-8 (with or without BOM), else Windows-1252."""
    if b"\x00" in data:
        raise ValueError("it contains NUL bytes, so it is not a CSV text file")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("windows-1252"), "windows-1252"
    except UnicodeDecodeError as error:
        raise ValueError(
            f"byte {error.start} is neither UTF-8 nor Windows-1252 text; save it as CSV UTF-8"
        ) from None


def _is_blank(row: list[str]) -> bool:
    return all(not cell.strip() for cell in row)


def read_claim_file(path: str, first_row_no: int) -> tuple[ClaimFile, pl.DataFrame | None]:
    """Read one file into text cells. Returns the file's description and its rows (or None)."""
    info = ClaimFile(path=path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        info.problem = f"cannot be read ({error.strerror or error}); check the path and permissions"
        return info, None
    info.sha256 = hashlib.sha256(data).hexdigest()
    try:
        text, info.encoding = decode(data)
    except ValueError as error:
        info.problem = f"is not readable text: {error}"
        return info, None

    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or _is_blank(header):
            info.problem = "is empty: the first line must be the header row of SPEC section 2"
            return info, None
        rows: list[tuple[int, list[str]]] = []
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as error:
        info.problem = f"line {reader.line_num}: {error}; check the quoting of that line"
        return info, None

    names = [normalise_header(name) for name in header]
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in seen and name:
            info.problem = (
                f"header columns {seen[name]} and {position} are both named '{name}'; "
                "rename or remove one"
            )
            return info, None
        seen[name] = position

    while rows and _is_blank(rows[-1][1]):
        rows.pop()  # blank trailing lines are ignored (SPEC section 2)

    missing = [name for name in REQUIRED_COLUMNS if name not in seen]
    if not any(name in seen for name in WTE_COLUMNS):
        missing.append("wte or hours_per_week")
    if missing:
        info.problem = (
            f"lacks required column(s) {', '.join(missing)}; add them to the header row "
            "(names are matched ignoring case and spaces)"
        )
        info.unread_rows = len(rows)
        return info, None
    info.extra_columns = [name for name in names if name not in CLAIM_COLUMNS]

    positions = {name: seen[name] - 1 for name in CLAIM_COLUMNS if name in seen}
    width = len(header)
    columns: dict[str, list[str | None]] = {name: [] for name in CLAIM_COLUMNS}
    lines: list[int] = []
    problems: list[str | None] = []
    for line, row in rows:
        lines.append(line)
        if _is_blank(row):
            problems.append("is blank between data rows; delete the line or fill it in")
        elif len(row) != width:
            problems.append(
                f"has {len(row)} fields but the header has {width}; "
                "check for a missing or extra comma or an unquoted comma in a value"
            )
        else:
            problems.append(None)
        for name in CLAIM_COLUMNS:
            position = positions.get(name)
            columns[name].append(
                row[position] if position is not None and position < len(row) else None
            )

    info.rows_read = len(rows)
    frame = pl.DataFrame(
        {
            **columns,
            "row_problem": problems,
            "source_line": lines,
        },
        schema={
            **dict.fromkeys(CLAIM_COLUMNS, pl.String),
            "row_problem": pl.String,
            "source_line": pl.Int64,
        },
    ).with_columns(
        pl.lit(path).alias("source_file"),
        (pl.int_range(pl.len(), dtype=pl.Int64) + first_row_no).alias("row_no"),
    )
    return info, frame


def read_claims(arguments: list[str]) -> tuple[list[ClaimFile], pl.DataFrame]:
    """Every claim file named (directories expanded), as one frame of text rows."""
    files: list[ClaimFile] = []
    frames: list[pl.DataFrame] = []
    next_row_no = 1
    for path in expand_claim_paths(arguments):
        info, frame = read_claim_file(path, next_row_no)
        files.append(info)
        if frame is not None:
            frames.append(frame)
            next_row_no += frame.height
    if frames:
        claims = pl.concat(frames, how="vertical")
    else:
        claims = pl.DataFrame(
            schema={
                **dict.fromkeys(CLAIM_COLUMNS, pl.String),
                "row_problem": pl.String,
                "source_line": pl.Int64,
                "source_file": pl.String,
                "row_no": pl.Int64,
            }
        )
    return files, claims
