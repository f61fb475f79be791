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
import stat
import tomllib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Protocol

import polars as pl

from validator.errors import ConfigError
from validator.paths import SCHEMA_FILE
from validator.units import MAX_LINES

csv.field_size_limit(16 * 1024 * 1024)

WTE_COLUMNS = ("wte", "hours_per_week")
READERS = 2  # claim files read at once


class TooManyLines(ConfigError):
    """The claims hold more lines than the run's limit: refused, nothing published."""

    def __init__(self, limit: int, found: str) -> None:
        super().__init__(
            f"the claims hold more than the limit of {limit:,} lines ({found}); split the "
            "batch, or raise the limit with --max-lines (for a run, also config: max_lines) if "
            "this machine has the memory for it"
        )


def schema_columns() -> dict[str, dict]:
    """The claim columns (README, Inputs), from schemas/claims.toml."""
    with SCHEMA_FILE.open("rb") as handle:
        return tomllib.load(handle)["columns"]


CLAIM_COLUMNS = schema_columns()
REQUIRED_COLUMNS = [name for name, spec in CLAIM_COLUMNS.items() if spec["required"]]


class ColumnProfile(Protocol):
    """How one source names the claim columns and spells their values (validator/profile.py)."""

    def column_for(self, header: str) -> str: ...

    def respelled(self, frame: pl.DataFrame) -> pl.DataFrame: ...


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
    source: str = ""  # the path as given: what its rows carry as `source_file`
    # A workbook's sheets that are not claim tables, each with why (on its first table).
    skipped_sheets: list[str] = field(default_factory=list)
    # Where each claim column the header names sits in it (1 = the first column).
    positions: dict[str, int] = field(default_factory=dict)
    # The run-wide row_no of its first row: its rows are row_no first_row_no .. + rows_read - 1.
    first_row_no: int = 0


def normalise_header(name: str) -> str:
    """`  Claim Month ` -> `claim_month`: case-insensitive, spaces equal underscores."""
    return "_".join(name.strip().lower().split())


def expand_claim_paths(arguments: list[str]) -> list[str]:
    """Files as given; a directory stands for every `*.csv` and `*.xlsx` directly in it, in
    name order (not Excel's `~$` lock files of open workbooks)."""
    paths: list[str] = []
    for argument in arguments:
        if os.path.isdir(argument):
            # Folders and other non-files named *.csv are kept, to be reported, not skipped.
            try:
                names = sorted(
                    name
                    for name in os.listdir(argument)
                    if name.lower().endswith((".csv", ".xlsx")) and not name.startswith("~$")
                )
            except OSError:
                paths.append(argument)  # a folder it cannot list: reported by the reader
                continue
            if not names:
                paths.append(os.path.join(argument, "*.csv"))
            paths.extend(os.path.join(argument, name) for name in names)
        else:
            paths.append(argument)
    return paths


def decode(data: bytes) -> tuple[str, str]:
    """The file's text and the encoding used: UTF-8 (with or without BOM), else Windows-1252."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError("it is UTF-16 text; save it as CSV UTF-8 (or CSV) and send it again")
    if b"\x00" in data:
        raise ValueError("it contains NUL bytes, so it is not a CSV text file; send the CSV export")
    bom = data.startswith(b"\xef\xbb\xbf")
    if bom:
        data = data[3:]
    try:
        return data.decode("utf-8"), "utf-8-sig" if bom else "utf-8"
    except UnicodeDecodeError:
        pass
    try:  # (a UTF-8 mark before Windows-1252 text, as some tools write, is dropped)
        return data.decode("windows-1252"), "windows-1252"
    except UnicodeDecodeError as error:
        raise ValueError(
            f"byte {error.start} is neither UTF-8 nor Windows-1252 text; save it as CSV UTF-8"
        ) from None


def _is_blank(row: list[str]) -> bool:
    return all(not cell.strip() for cell in row)


def _physical_lines(data: bytes) -> pl.Series | None:
    """Every physical line of the file as text, read by Polars (None if it cannot be)."""
    if b"\x1f" in data or (b"\r" in data and data.count(b"\r") != data.count(b"\r\n")):
        return None
    try:
        lines = pl.read_csv(
            data,
            has_header=False,
            separator="\x1f",  # a byte the file does not hold: each line is one field
            quote_char=None,
            new_columns=["line"],
            infer_schema=False,
            empty_string_is_null=False,
            raise_if_empty=False,
        )
    except (pl.exceptions.PolarsError, ValueError):
        return None
    if lines.width != 1:
        return None
    return lines["line"].str.strip_suffix("\r")


def _field_counts(lines: pl.Series) -> pl.Series | None:
    """Fields per line, quote-aware; None if a line's quotes do not balance (a quoted field
    that spans lines, or a stray quote), which only the csv module reads correctly."""
    counts = lines.str.count_matches(",", literal=True) + 1
    quoted = lines.str.contains('"', literal=True)
    if not quoted.any():
        return counts.cast(pl.Int64)
    with_quotes = lines.filter(quoted)
    if (with_quotes.str.count_matches('"', literal=True) % 2 == 1).any():
        return None
    outside = with_quotes.str.replace_all('"[^"]*"', "").str.count_matches(",", literal=True) + 1
    return counts.scatter(quoted.arg_true(), outside).cast(pl.Int64)


def _cells_with_polars(data: bytes) -> tuple[list[str], pl.DataFrame] | None:
    """Fast path: Polars parses the cells, and per-line field counts come from the raw lines.

    Valid only when every physical line is one record (no quoted field spans lines) and
    quotes balance on every line; otherwise returns None and the csv module reads it.
    """
    lines = _physical_lines(data)
    if lines is None or lines.len() == 0:
        return None
    counts = _field_counts(lines)
    if counts is None:
        return None
    header = next(csv.reader([lines[0]]))
    try:
        cells = pl.read_csv(
            data,
            has_header=False,
            infer_schema=False,
            empty_string_is_null=False,
            truncate_ragged_lines=True,
            raise_if_empty=False,
        )
    except (pl.exceptions.PolarsError, ValueError):
        return None
    if cells.height != lines.len() or cells.width < len(header):
        return None
    cells = cells.select(
        pl.col(name).alias(f"c{index}") for index, name in enumerate(cells.columns[: len(header)])
    ).with_columns(
        counts.alias("fields"),
        lines.str.contains(r'^[\s,"]*$').alias("blank"),
        pl.int_range(1, lines.len() + 1, dtype=pl.Int64).alias("source_line"),
    )
    return header, cells.slice(1)


def _cells_with_csv_module(text: str) -> tuple[list[str], pl.DataFrame]:
    """Exact path for any CSV the csv module reads (quoted newlines included); slower."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = next(reader, None) or []
    width = len(header)
    columns: list[list[str | None]] = [[] for _ in range(width)]
    fields, blank, lines = [], [], []
    row_start = reader.line_num + 1  # a row is numbered by the line it starts on
    try:
        for row in reader:
            lines.append(row_start)
            row_start = reader.line_num + 1
            fields.append(max(len(row), 1))  # an empty line is one empty field, as in Polars
            blank.append(_is_blank(row))
            for index in range(width):
                columns[index].append(row[index] if index < len(row) else "")
    except csv.Error as error:
        raise csv.Error(f"from line {row_start}: {error}") from None
    cells = pl.DataFrame(
        {
            **{f"c{index}": values for index, values in enumerate(columns)},
            "fields": fields,
            "blank": blank,
            "source_line": lines,
        },
        schema={
            **{f"c{index}": pl.String for index in range(width)},
            "fields": pl.Int64,
            "blank": pl.Boolean,
            "source_line": pl.Int64,
        },
    )
    return header, cells


def _file_bytes(info: ClaimFile, path: str) -> bytes | None:
    """The file's bytes, or None with `info.problem` saying why they cannot be had."""
    try:
        kind = os.stat(path).st_mode
        if stat.S_ISDIR(kind):
            os.listdir(path)  # a claims folder this user cannot list: OSError, reported below
            info.problem = "is a folder, not a claim file; move or rename it"
            return None
        if not stat.S_ISREG(kind):
            info.problem = "is not a regular file (a pipe or device?); give a CSV or .xlsx file"
            return None
        data = Path(path).read_bytes()
    except OSError as error:
        info.problem = f"cannot be read ({error.strerror or error}); check the path and permissions"
        return None
    info.sha256 = hashlib.sha256(data).hexdigest()
    return data


def _shown(path: str) -> str:
    """A name that is not UTF-8 (a Latin-1 file name) with its odd bytes escaped, so every
    output and log line can carry it."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_claim_file(
    path: str, profile: ColumnProfile | None = None, max_lines: int = MAX_LINES
) -> tuple[ClaimFile, pl.DataFrame | None]:
    """Read one CSV file into text cells. Returns the file's description and its rows (or
    None), numbered from 0 in `row_no`. A column profile renames its headers and respells
    its values first. A file of more than `max_lines` lines is refused before it is parsed
    (TooManyLines)."""
    info = ClaimFile(path=_shown(path), source=path)
    data = _file_bytes(info, path)
    if data is None:
        return info, None
    # Counted from the bytes, before anything is decoded or parsed: the lines of text after
    # the header (trailing blank lines not counted; a line break inside a quoted value is).
    lines = data.rstrip().count(b"\n")
    if lines > max_lines:
        raise TooManyLines(max_lines, f"{info.path} alone has {lines:,} lines of text")
    try:
        text, info.encoding = decode(data)
    except ValueError as error:
        info.problem = f"is not readable text: {error}"
        return info, None

    utf8 = data[3:] if info.encoding == "utf-8-sig" else data
    parsed = _cells_with_polars(utf8 if info.encoding != "windows-1252" else text.encode())
    if parsed is None:
        try:
            parsed = _cells_with_csv_module(text)
        except csv.Error as error:
            info.problem = (
                f"cannot be parsed as CSV {error}; check the quoting there "
                '(a " must close every quoted value, and "" stands for a quote)'
            )
            return info, None
    header, cells = parsed
    del text, data, utf8
    if not header or _is_blank(header):
        info.problem = "is empty: the first line must be the header row (README, Inputs)"
        return info, None
    return _claim_table(info, header, cells, path, profile)


def _column_names(header: list[str], profile: ColumnProfile | None) -> list[str]:
    names = [normalise_header(name) for name in header]
    return [profile.column_for(name) for name in names] if profile is not None else names


def _missing_columns(names: list[str]) -> list[str]:
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if not any(name in names for name in WTE_COLUMNS):
        missing.append("wte or hours_per_week")
    return missing


def _claim_table(
    info: ClaimFile,
    header: list[str],
    cells: pl.DataFrame,
    source: str,
    profile: ColumnProfile | None,
) -> tuple[ClaimFile, pl.DataFrame | None]:
    """A table of text cells (a CSV file's or a sheet's) as claim rows, each row keeping
    `source` and its line; or None with `info.problem` saying why not."""
    names = _column_names(header, profile)
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        # Two columns of one claim field are ambiguous; two unknown ones (ignored) are not.
        if name in seen and name in CLAIM_COLUMNS:
            written = header[seen[name] - 1].strip(), header[position - 1].strip()
            aliased = f" ('{written[0]}' and '{written[1]}', by the column profile)"
            info.problem = (
                f"header columns {seen[name]} and {position} are both named '{name}'"
                f"{aliased if profile is not None and written[0] != written[1] else ''}; "
                "rename or remove one"
            )
            return info, None
        seen[name] = position

    # Blank trailing lines are ignored (README, Inputs); blank lines between rows are not.
    non_blank = cells.with_row_index("i").filter(~pl.col("blank"))["i"]
    cells = cells.head(int(non_blank.max()) + 1 if non_blank.len() else 0)

    missing = _missing_columns(names)
    if missing:
        info.problem = (
            f"lacks required column(s) {', '.join(missing)}; add them to the header row "
            "(names are matched ignoring case and spaces)"
        )
        info.unread_rows = cells.height
        return info, None
    info.extra_columns = [name for name in names if name not in CLAIM_COLUMNS]
    info.positions = {name: seen[name] for name in CLAIM_COLUMNS if name in seen}
    info.rows_read = cells.height
    if cells.height == 0:
        info.problem = (
            "has a header but no claim rows; if the PCN has nothing to claim, leave the file out"
        )
        return info, None

    width = len(header)
    frame = cells.select(
        *(
            (pl.col(f"c{seen[name] - 1}") if name in seen else pl.lit(None, pl.String)).alias(name)
            for name in CLAIM_COLUMNS
        ),
        pl.when(pl.col("blank"))
        .then(pl.lit("is blank between data rows; delete the line or fill it in"))
        .when(pl.col("fields") != width)
        .then(
            pl.format(
                "has {} fields but the header has {}; check for a missing or extra comma "
                "or an unquoted comma in a value",
                pl.col("fields"),
                pl.lit(width),
            )
        )
        .alias("row_problem"),
        "source_line",
        pl.lit(source).alias("source_file"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row_no"),
    )
    return info, (profile.respelled(frame) if profile is not None else frame)


def read_claim_workbook(
    path: str, profile: ColumnProfile | None = None, max_lines: int = MAX_LINES
) -> list[tuple[ClaimFile, pl.DataFrame | None]]:
    """Every claim table of an .xlsx workbook: each sheet whose header row names the
    required columns, as `file.xlsx[Sheet]` with the sheet's own row numbers. The other
    sheets are listed in `skipped_sheets` of the first table (or, if there is none, the
    workbook is a file problem naming them)."""
    from validator.workbook import WorkbookError, read_workbook

    workbook = ClaimFile(path=_shown(path), source=path, encoding="xlsx")
    data = _file_bytes(workbook, path)
    if data is None:
        return [(workbook, None)]
    try:
        sheets = read_workbook(data)
    except WorkbookError as error:
        workbook.problem = str(error)
        return [(workbook, None)]
    del data
    tables: list[tuple[ClaimFile, pl.DataFrame | None]] = []
    skipped: list[str] = []
    rows = sum(sheet.cells.height for sheet in sheets if sheet.cells is not None)
    if rows > max_lines:  # before any sheet becomes claim rows
        raise TooManyLines(max_lines, f"{workbook.path} alone has {rows:,} rows in its sheets")
    for sheet in sheets:
        source = f"{path}[{sheet.name}]"
        info = ClaimFile(_shown(source), workbook.sha256, "xlsx", source=source)
        if sheet.problem:
            info.problem = sheet.problem
            tables.append((info, None))
            continue
        if sheet.skipped:
            skipped.append(f"{sheet.name} ({sheet.skipped})")
            continue
        if sheet.cells is None or not sheet.header or _is_blank(sheet.header):
            skipped.append(f"{sheet.name} (empty)")
            continue
        missing = _missing_columns(_column_names(sheet.header, profile))
        if missing:
            skipped.append(f"{sheet.name} (no {', '.join(missing[:3])} column)")
            continue
        if sheet.error_count:
            info.problem = (
                f"has {sheet.error_count} cell(s) showing a formula error (#REF!, #DIV/0!, "
                f"#VALUE! ...), at {', '.join(sheet.error_cells) or 'cells without a reference'}"
                "; correct them in the workbook and save it again"
            )
            info.unread_rows = sheet.cells.height
            tables.append((info, None))
            continue
        tables.append(_claim_table(info, sheet.header, sheet.cells, source, profile))
    if not tables:
        workbook.problem = (
            "has no sheet whose header row names the claim columns (README, Inputs); "
            f"its sheets: {'; '.join(skipped) or 'none'}"
        )
        return [(workbook, None)]
    tables[0][0].skipped_sheets = skipped
    return tables


def column_positions(files: list[ClaimFile]) -> pl.DataFrame:
    """Where each claim column sits in the header of each claim file (or sheet) of `files`,
    keyed by the row_no of the file's first row (a file's rows are numbered together): a
    row's several schema findings follow it. Keyed by number, not by the file's name, which
    need not be UTF-8."""
    firsts, columns, at = [], [], []
    for file in files:
        for name, position in file.positions.items():
            firsts.append(file.first_row_no)
            columns.append(name)
            at.append(position)
    return pl.DataFrame(
        {"first_row_no": firsts, "column": columns, "file_position": at},
        schema={"first_row_no": pl.Int64, "column": pl.String, "file_position": pl.Int64},
    )


def with_file_of_row(rows: pl.DataFrame, starts: pl.DataFrame) -> pl.DataFrame:
    """`rows` (in row_no order) with the columns of `starts` (a row per claim file, by its
    first_row_no, in order) of the file each row is in: a file's rows are numbered together,
    so it is the last file starting at or before the row. By number, not by the file's
    name, which need not be UTF-8."""
    return rows.join_asof(starts, left_on="row_no", right_on="first_row_no", strategy="backward")


def skipped_sheets_text(file: ClaimFile) -> str:
    """What a run or check says of a workbook's sheets that hold no claim table."""
    workbook = file.path.rsplit("[", 1)[0]
    return f"{workbook}: sheet(s) skipped, not claim tables: {'; '.join(file.skipped_sheets)}"


def read_claim_source(
    path: str, profile: ColumnProfile | None = None, max_lines: int = MAX_LINES
) -> list[tuple[ClaimFile, pl.DataFrame | None]]:
    """A CSV file (one table) or an .xlsx workbook (a table per claim sheet)."""
    if path.lower().endswith(".xlsx"):
        return read_claim_workbook(path, profile, max_lines)
    return [read_claim_file(path, profile, max_lines)]


def _named_before(paths: list[str]) -> list[str | None]:
    """For each path, the earlier path of the same real file, if one was named already (the
    same file under another name, or a file given and also found in a folder given)."""
    seen: dict[str, str] = {}
    earlier: list[str | None] = []
    for path in paths:
        real = os.path.realpath(path)
        earlier.append(seen.get(real) if os.path.isfile(real) else None)
        seen.setdefault(real, path)
    return earlier


def _read_once(
    path: str, earlier: str | None, profile: ColumnProfile | None, max_lines: int
) -> list[tuple[ClaimFile, pl.DataFrame | None]]:
    """read_claim_source, except that a file already named is reported, not read again: its
    lines would otherwise be claimed, and paid, twice."""
    if earlier is None:
        return read_claim_source(path, profile, max_lines)
    info = ClaimFile(path=os.fsencode(path).decode("utf-8", "backslashreplace"))
    shown = os.fsencode(earlier).decode("utf-8", "backslashreplace")
    info.problem = (
        f"is the same file as {shown}, named again; it was read once, so its lines are "
        "claimed once: name each claim file once"
    )
    return [(info, None)]


# Rows handed to the schema stage at a time: a batch's text is checked, and all but its
# rejected rows let go, while the next files are read, so a national batch's text is never
# all held at once (a million lines of text cells take about 640 MB).
BATCH_ROWS = 100_000
ALL_ROWS = 2**62  # one batch


def _empty_claims() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            **dict.fromkeys(CLAIM_COLUMNS, pl.String),
            "row_problem": pl.String,
            "source_line": pl.Int64,
            "source_file": pl.String,
            "row_no": pl.Int64,
        }
    )


class ClaimBatches:
    """Every claim file named (directories expanded), as frames of text rows of at least
    `batch_rows` rows each (whole files; the last batch may be smaller, and a run with no
    readable row gets one empty frame). `files` lists each file as it is read;
    `on_file(file, number, total)` is told after each one, for progress reports; `profile`
    (a column profile) renames and respells every file's columns.

    Files are read two at a time, at most two ahead of the batch being used: most of a
    file's reading is Polars and hashing, which let go of the GIL, so files are read while
    the last batch is checked. Rows are numbered in the order of the files."""

    def __init__(
        self,
        arguments: list[str],
        on_file: Callable[[ClaimFile, int, int], None] | None = None,
        profile: ColumnProfile | None = None,
        batch_rows: int | None = None,
        max_lines: int = MAX_LINES,
    ) -> None:
        self.paths = expand_claim_paths(arguments)
        self.max_lines = max_lines
        self.on_file = on_file
        self.profile = profile
        self.batch_rows = BATCH_ROWS if batch_rows is None else batch_rows
        self.files: list[ClaimFile] = []
        self.batch_files: list[ClaimFile] = []  # the files of the batch last yielded

    def __iter__(self) -> Iterator[pl.DataFrame]:
        jobs = iter(zip(self.paths, _named_before(self.paths), strict=True))
        batch: list[pl.DataFrame] = []
        reading_files: list[ClaimFile] = []  # the files of the batch being made
        rows = 0
        next_row_no = 1
        yielded = False
        with ThreadPoolExecutor(READERS, thread_name_prefix="read") as pool:
            reading: deque[Future] = deque()

            def read_next() -> None:
                for path, earlier in islice(jobs, 1):
                    reading.append(
                        pool.submit(_read_once, path, earlier, self.profile, self.max_lines)
                    )

            for _ in range(READERS):
                read_next()
            number = 0
            while reading:
                tables = reading.popleft().result()
                read_next()
                number += 1
                for info, frame in tables:
                    self.files.append(info)
                    reading_files.append(info)
                    if frame is not None:
                        info.first_row_no = next_row_no
                        batch.append(frame.with_columns(pl.col("row_no") + next_row_no))
                        next_row_no += frame.height
                        rows += frame.height
                        if next_row_no - 1 > self.max_lines:
                            raise TooManyLines(
                                self.max_lines,
                                f"{next_row_no - 1:,} lines in the first {number}"
                                f" of {len(self.paths)} claim file(s)",
                            )
                if self.on_file is not None:
                    self.on_file(tables[0][0], number, len(self.paths))
                if batch and rows >= self.batch_rows:
                    self.batch_files, reading_files = reading_files, []
                    yield pl.concat(batch, how="vertical")
                    yielded = True
                    batch, rows = [], 0
        if batch or not yielded:
            self.batch_files = reading_files
            yield pl.concat(batch, how="vertical") if batch else _empty_claims()


def read_claims(
    arguments: list[str],
    on_file: Callable[[ClaimFile, int, int], None] | None = None,
    profile: ColumnProfile | None = None,
    max_lines: int = MAX_LINES,
) -> tuple[list[ClaimFile], pl.DataFrame]:
    """Every claim file named, as one frame of text rows (ClaimBatches, all at once)."""
    batches = ClaimBatches(arguments, on_file, profile, batch_rows=ALL_ROWS, max_lines=max_lines)
    (claims,) = batches
    return batches.files, claims
