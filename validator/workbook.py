"""Reading claim workbooks (.xlsx): each sheet's cells as text, with the sheet row of each.

Cells are read by fastexcel (Rust's calamine) as text: a number as its decimal text (a money
cell shown £1,234.50 reads 1234.5, which the schema takes as the same amount), a date cell as
its date (2021-06-16), TRUE and FALSE as Excel shows them, and a formula as the value Excel
saved with it. Before fastexcel sees the file, the zip is checked here by streaming every part
once: a workbook that expands past MAX_UNZIPPED_BYTES (a zip bomb), a sheet of more than
MAX_SHEET_ROWS rows, an encrypted (password-protected) or corrupt file is refused with a
message, never read into memory. The same pass finds where each sheet's data starts (calamine
drops leading blank rows, and line references must be the rows Excel shows) and any cell that
shows a formula error (#REF!, #DIV/0!), which calamine would read as blank.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from xml.etree import ElementTree

import polars as pl

MAX_UNZIPPED_BYTES = 1 << 30  # 1 GiB: a national year of claims as one workbook is ~350 MB
MAX_SHEET_ROWS = 500_000  # a national year is ~445,000 lines; beyond this, send CSV
_CHUNK = 1 << 20
_HEAD = 4 << 20  # where a sheet's first row with a value is looked for
_ENCRYPTED = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an OLE file: encrypted .xlsx, or old .xls
_ROW = re.compile(rb"<(?:\w+:)?row[\s>/]")
_ERROR_CELL = re.compile(rb"<(?:\w+:)?c\b[^>]*?\bt=\"e\"[^>]*>")
_CELL_REF = re.compile(rb'\br="([A-Z]{1,3}[0-9]{1,7})"')
_ROW_WITH_BODY = re.compile(rb"<(?:\w+:)?row\b([^>]*?)(?:/>|>(.*?)</(?:\w+:)?row>)", re.S)
_HAS_VALUE = re.compile(rb"<(?:\w+:)?(?:v|t)(?:\s[^>]*)?>[^<]")
_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_RELATIONSHIP = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_PACKAGE_RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_SAVE_AGAIN = "save it again from Excel as .xlsx (without a password), or as CSV"


class WorkbookError(ValueError):
    """The file cannot be read as a workbook at all; the message says why and what to do."""


@dataclass
class SheetScan:
    """What one pass over a worksheet's XML found."""

    rows: int = 0
    first_row: int = 1
    error_cells: list[str] = field(default_factory=list)
    error_count: int = 0


@dataclass
class Sheet:
    """One sheet: its header (the first row with a value) and its data rows as text cells
    c0, c1, ... with `fields`, `blank` and `source_line`, as a CSV file's are read."""

    name: str
    header: list[str] = field(default_factory=list)
    cells: pl.DataFrame | None = None
    problem: str = ""
    skipped: str = ""  # why it is no table at all (a chart sheet)
    error_cells: list[str] = field(default_factory=list)
    error_count: int = 0


def _scan(stream, scan: SheetScan | None, budget: list[int]) -> None:
    """Read one zip part to its end, counting bytes against the budget; for a worksheet,
    count its rows, find its first row with a value and its formula-error cells."""
    tail = b""
    head = b""
    while chunk := stream.read(_CHUNK):
        budget[0] -= len(chunk)
        if budget[0] < 0:
            raise WorkbookError(
                f"expands to more than {MAX_UNZIPPED_BYTES >> 20} MB when unzipped (a zip "
                f"bomb, or far more claims than one workbook should hold); send it as CSV"
            )
        if scan is None:
            continue
        window = tail + chunk
        # A match wholly inside `tail` was counted with the chunk before; bytes.count and
        # a guarded regex keep this pass far quicker than fastexcel's own read.
        scan.rows += _rows(window) - _rows(tail)
        matches = _ERROR_CELL.finditer(window) if b't="e"' in window else ()
        for match in matches:
            if match.end() > len(tail):
                scan.error_count += 1
                ref = _CELL_REF.search(match.group())
                if ref and len(scan.error_cells) < 5:
                    scan.error_cells.append(ref.group(1).decode())
        tail = window[-256:]
        if len(head) < _HEAD:
            head += chunk
    if scan is not None:
        scan.first_row = _first_row(head)


def _rows(text: bytes) -> int:
    """Row elements begun in `text` (`<row ...>`, `<row>`, or with a prefix: `<x:row ...>`)."""
    if b":row" in text:
        return len(_ROW.findall(text))
    return text.count(b"<row ") + text.count(b"<row>") + text.count(b"<row/")


def _first_row(head: bytes) -> int:
    """The sheet row number of the first row holding a value (1 if it cannot be told)."""
    for number, match in enumerate(_ROW_WITH_BODY.finditer(head), start=1):
        if match.group(2) and _HAS_VALUE.search(match.group(2)):
            ref = re.search(rb'\br="([0-9]+)"', match.group(1))
            return int(ref.group(1)) if ref else number
    return 1


def _sheet_parts(book: zipfile.ZipFile) -> list[tuple[str, str, bool]]:
    """(sheet name, its XML part, whether it is a worksheet) in the workbook's order; the
    others are chart and dialog sheets, which hold no cells."""
    workbook = ElementTree.fromstring(book.read("xl/workbook.xml"))
    rels = ElementTree.fromstring(book.read("xl/_rels/workbook.xml.rels"))
    targets = {
        rel.get("Id"): (rel.get("Target", ""), rel.get("Type", ""))
        for rel in rels.iter(f"{_PACKAGE_RELS}Relationship")
    }
    parts = []
    for sheet in workbook.iter(f"{_MAIN}sheet"):
        target, kind = targets.get(sheet.get(_RELATIONSHIP), ("", ""))
        part = target.lstrip("/") if target.startswith("/") else posixpath.join("xl", target)
        parts.append((sheet.get("name", ""), posixpath.normpath(part), kind.endswith("/worksheet")))
    return parts


def _checked_zip(data: bytes) -> tuple[dict[str, SheetScan], set[str]]:
    """Every part streamed once (bomb-proof); each worksheet's scan, by sheet name; and the
    names of the sheets that are not worksheets."""
    if data.startswith(_ENCRYPTED):
        raise WorkbookError(
            "is password-protected (encrypted) or an old-style .xls workbook, which cannot be "
            f"read; {_SAVE_AGAIN}"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as book:
            sheet_parts = _sheet_parts(book)
            parts = {part: name for name, part, worksheet in sheet_parts if worksheet}
            others = {name for name, _, worksheet in sheet_parts if not worksheet}
            budget = [MAX_UNZIPPED_BYTES]
            scans: dict[str, SheetScan] = {}
            for member in book.infolist():
                scan = SheetScan() if member.filename in parts else None
                with book.open(member) as stream:
                    _scan(stream, scan, budget)
                if scan is not None:
                    scans[parts[member.filename]] = scan
            return scans, others
    except WorkbookError:
        raise
    except (NotImplementedError, RuntimeError) as error:  # unsupported compression, encryption
        raise WorkbookError(f"cannot be unzipped ({error}); {_SAVE_AGAIN}") from None
    except Exception as error:  # zipfile and zlib fail on corrupt bytes in many ways
        raise WorkbookError(
            f"is not a readable .xlsx workbook ({error or type(error).__name__}); it may be "
            f"corrupt; {_SAVE_AGAIN}"
        ) from None


_DATE_ONLY = r"^(\d{4}-\d{2}-\d{2}) 00:00:00$"


def _as_shown(column: pl.Expr) -> pl.Expr:
    """A cell's text as Excel shows it: a date without a midnight time, TRUE/FALSE in capitals,
    an empty cell as empty text (as a CSV's)."""
    text = column.cast(pl.String)
    return (
        pl.when(text == "true")
        .then(pl.lit("TRUE"))
        .when(text == "false")
        .then(pl.lit("FALSE"))
        .otherwise(text.str.replace(_DATE_ONLY, "$1"))
        .fill_null("")
    )


def _cells(frame: pl.DataFrame, first_row: int) -> tuple[list[str], pl.DataFrame]:
    names = [f"c{index}" for index in range(frame.width)]
    shown = frame.select(
        _as_shown(pl.col(column)).alias(name)
        for column, name in zip(frame.columns, names, strict=True)
    )
    header = list(shown.row(0)) if shown.height else []
    data = shown.slice(1).with_columns(
        pl.lit(len(names), dtype=pl.Int64).alias("fields"),
        pl.all_horizontal(pl.col(name).str.strip_chars() == "" for name in names).alias("blank"),
        pl.int_range(first_row + 1, first_row + shown.height, dtype=pl.Int64).alias("source_line"),
    )
    return header, data


def _unless_reader_failure(error: BaseException) -> None:
    """Re-raise anything but a failure of the reader itself: fastexcel's own errors, and a
    panic in its Rust code, which pyo3 raises as a BaseException (PanicException) that no
    `except Exception` would catch. A stop (SIGTERM, Ctrl-C) still stops the run."""
    if isinstance(error, Exception) or type(error).__name__ == "PanicException":
        return
    raise error


def read_workbook(data: bytes) -> list[Sheet]:
    """Every sheet of an .xlsx workbook as text cells; raises WorkbookError if the file cannot
    be read as a workbook at all. A sheet too large to read carries a `problem` instead."""
    import fastexcel  # imported here: only a workbook needs it

    scans, others = _checked_zip(data)
    try:
        reader = fastexcel.read_excel(data)
        names = reader.sheet_names
    except BaseException as error:
        _unless_reader_failure(error)
        raise WorkbookError(f"cannot be read as a workbook ({error}); {_SAVE_AGAIN}") from None
    sheets = []
    for name in names:
        scan = scans.get(name, SheetScan())
        sheet = Sheet(name, error_cells=scan.error_cells, error_count=scan.error_count)
        sheets.append(sheet)
        if name in others:
            sheet.skipped = "a chart or dialog sheet"
            continue
        if scan.rows > MAX_SHEET_ROWS:
            sheet.problem = (
                f"has {scan.rows:,} rows, more than the {MAX_SHEET_ROWS:,} a workbook sheet "
                "is read up to; send the claims as CSV files"
            )
            continue
        try:
            loaded = reader.load_sheet(name, header_row=None, dtypes="string").to_polars()
        except BaseException as error:
            _unless_reader_failure(error)
            sheet.problem = f"cannot be read ({error}); {_SAVE_AGAIN}"
            continue
        sheet.header, sheet.cells = _cells(loaded, scan.first_row)
    return sheets
