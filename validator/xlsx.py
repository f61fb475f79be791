# ruff: noqa: E501  (the OOXML boilerplate below reads best unwrapped)
"""A small, fast XLSX writer for the auditors' workbook: text, exact money and frozen,
filterable headers, built as XML by Polars expressions rather than cell by cell.

(xlsxwriter writes about 90,000 cells a second here, so a national run's half a million
cells took over five seconds; this writes the same workbook in a fraction of that.)
"""

from __future__ import annotations

import decimal
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import polars as pl

_CONTENT_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>
<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>
{sheets}
</Types>"""
_SHEET_TYPE = (
    '<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
)
_ROOT_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>
</Relationships>"""
_WORKBOOK = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">
<sheets>{sheets}</sheets>
<definedNames>{names}</definedNames>
</workbook>"""
_WORKBOOK_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
{sheets}
<Relationship Id="rIdStyles" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>
<Relationship Id="rIdStrings" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>
</Relationships>"""
_SHARED_STRINGS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" uniqueCount="{count}">"""
# Style 0: plain; 1: bold header; 2: money £#,##0.00.
_STYLES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">
<numFmts count="1"><numFmt numFmtId="164" formatCode="&quot;£&quot;#,##0.00"/></numFmts>
<fonts count="2"><font><sz val="11"/><name val="Calibri"/></font><font><b/><sz val="11"/><name val="Calibri"/></font></fonts>
<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>
<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>
<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>
<cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/><xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/><xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>
</styleSheet>"""


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


_PENNY = pl.lit(decimal.Decimal("0.01"))


def pounds_text(pence: pl.Expr) -> pl.Expr:
    """Integer pence as exact pounds text with two decimals, `1234.50` or `-0.05` (blank when
    there is none): the pence as a decimal of scale 2, never a float, and quicker in Polars
    than building the text from its parts."""
    return (pence.cast(pl.Decimal(38, 0)) * _PENNY).cast(pl.String)


_XML_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


# Excel's limits: a sheet holds 1,048,576 rows (one of them the header) and a cell 32,767
# characters. A frame past the first is split over continuation sheets, a cell past the second
# is cut with a note; the CSV and JSON outputs always hold everything.
EXCEL_DATA_ROWS = 1_048_575
EXCEL_CELL_CHARACTERS = 32_767
_CUT_AT = EXCEL_CELL_CHARACTERS - 100


FORMULA_START = r"^[=+\-@\t\r]"


def formula_safe(text: pl.Expr) -> pl.Expr:
    """Text a spreadsheet would run as a formula (beginning `=`, `+`, `-`, `@`, a tab or a
    carriage return) prefixed with `'`: in every CSV file and in the workbook (README,
    Outputs)."""
    return pl.when(text.str.contains(FORMULA_START)).then("'" + text).otherwise(text)


_FORBIDDEN = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x{FFFE}\x{FFFF}]"
_EDGE_SPACE = r"^\s|\s$"


def _xml_text(expr: pl.Expr, needs: dict[str, bool] | None = None) -> pl.Expr:
    """Text safe inside XML and within Excel's cell limit: without the characters XML forbids
    (controls, U+FFFE and U+FFFF), escaped, and cut short with a note if too long.

    `needs` (_text_needs) says which of these steps the column's text needs at all: a step
    no cell needs is left out, with the same result (a national year's lines sheet has
    millions of text cells, and none of them a control character or 32,767 characters)."""
    needs = needs or {"forbidden": True, "long": True, "escapes": True}
    clean = expr.str.replace_all(_FORBIDDEN, "") if needs["forbidden"] else expr
    fitted = clean
    if needs["long"]:
        length = clean.str.len_chars()
        fitted = (
            pl.when(length > EXCEL_CELL_CHARACTERS)
            .then(
                clean.str.slice(0, _CUT_AT)
                + pl.format(
                    "… (cut here: {} characters in all; the CSV has the whole text)", length
                )
            )
            .otherwise(clean)
        )
    return fitted.str.replace_many(_XML_ESCAPES) if needs["escapes"] else fitted


def _text_needs(frame: pl.DataFrame, names: list[str]) -> dict[str, dict[str, bool]]:
    """For each text column: whether any cell begins like a formula, and whether any cell,
    once formula-safe, has a character XML forbids, is past Excel's cell limit (counted in
    bytes, which are never fewer than characters), has a character to escape, or has a
    space at an edge. Each distinct text is looked at once (a national year's lines repeat
    a few hundred file names, roles and rules half a million times)."""
    checks = {
        "forbidden": lambda text: text.str.contains(_FORBIDDEN),
        "long": lambda text: text.str.len_bytes() > EXCEL_CELL_CHARACTERS,
        "escapes": lambda text: text.str.contains(r"[&<>]"),
        "edged": lambda text: text.str.contains(_EDGE_SPACE),
    }
    needs = {}
    for name in names:
        distinct = frame.select(pl.col(name).unique().cast(pl.String))  # (categories: codes)
        found = distinct.with_columns(formula_safe(pl.col(name)).alias("shown")).select(
            pl.col(name).str.contains(FORMULA_START).any().alias("formula"),
            *(check(pl.col("shown")).any().alias(step) for step, check in checks.items()),
        )
        needs[name] = {step: bool(value) for step, value in found.row(0, named=True).items()}
    return needs


def within_limits(
    sheets: list[tuple[str, pl.DataFrame, tuple[str, ...], dict[str, int]]],
) -> list[tuple[str, pl.DataFrame, tuple[str, ...], dict[str, int]]]:
    """The sheets with any frame too long for one sheet split over `NAME 2`, `NAME 3` ..."""
    fitted = []
    for name, frame, money, widths in sheets:
        for part, offset in enumerate(range(0, max(frame.height, 1), EXCEL_DATA_ROWS), start=1):
            label = name if part == 1 else f"{name} {part}"
            fitted.append((label, frame.slice(offset, EXCEL_DATA_ROWS), money, widths))
    return fitted


ROWS_PER_CHUNK = 20_000  # rows of a sheet built and compressed at a time: memory stays flat


def _text_element(text: pl.Expr, needs: dict[str, bool]) -> list[str | pl.Expr]:
    """The pieces of a `<t>` element holding `text`, keeping its edge spaces where it has
    them (`xml:space="preserve"`)."""
    preserve: list[str | pl.Expr] = []
    if needs["edged"]:
        preserve = [
            pl.when(text.str.contains(_EDGE_SPACE))
            .then(pl.lit(' xml:space="preserve"'))
            .otherwise(pl.lit(""))
        ]
    return ["<t", *preserve, ">", _xml_text(text, needs), "</t>"]


# A text column is written through the shared strings when each of its texts is in at least
# this many cells on average (a national year's lines name 12 files, 1,250 PCNs and 16 roles
# in 444,654 rows); a column of texts nearly all different (the messages) is written inline.
SHARED_FROM_CELLS_PER_TEXT = 20


class SharedStrings:
    """The workbook's shared strings (xl/sharedStrings.xml): the distinct texts of the
    columns that repeat, each written once in the workbook (whichever columns and sheets
    hold it), which their cells refer to by number. A national year's lines sheet is then
    169 MB of XML instead of 240 MB, and quicker to compress."""

    def __init__(self) -> None:
        self.known = pl.DataFrame(schema={"text": pl.String, "number": pl.String})
        self.items: list[bytes] = []

    @property
    def count(self) -> int:
        return self.known.height

    def numbers(self, frame: pl.DataFrame, name: str, needs: dict[str, bool]) -> pl.Expr | None:
        """The number in the table of each cell's text of column `name` (null where the
        cell is), its texts not yet in the table added to it; None if its texts do not
        repeat."""
        cells = frame.select(pl.col(name).unique(maintain_order=True).drop_nulls())
        if cells.height * SHARED_FROM_CELLS_PER_TEXT > frame.height:
            return None
        # A category's cells are looked up by its code, never turned into text row by row.
        categorical = frame.schema[name] == pl.Categorical
        key = pl.col(name).to_physical() if categorical else pl.col(name).cast(pl.String)
        cells = cells.select(key.alias("key"), pl.col(name).cast(pl.String).alias("cell"))
        # A cell shows its text formula-safe; two texts may show the same (`=1`, `'=1`).
        cells = cells.with_columns(formula_safe(pl.col("cell")).alias("text"))
        new = cells.select("text").unique(maintain_order=True)
        new = new.filter(~pl.col("text").is_in(self.known["text"].implode()))
        items = io.BytesIO()
        new.select(_joined(["<si>", *_text_element(pl.col("text"), needs), "</si>"])).write_csv(
            items, include_header=False, quote_style="never", line_terminator=""
        )
        self.items.append(items.getvalue())
        numbers = pl.int_range(self.count, self.count + new.height, eager=True)
        self.known = pl.concat([self.known, new.with_columns(number=numbers.cast(pl.String))])
        mapping = cells.join(self.known, on="text", how="left", maintain_order="left")
        return key.replace_strict(mapping["key"], mapping["number"], default=None)

    def xml(self) -> Iterator[bytes]:
        yield _SHARED_STRINGS.format(count=self.count).encode()
        yield from self.items
        yield b"</sst>"


def _cell(
    frame: pl.DataFrame,
    name: str,
    money: tuple[str, ...],
    needs: dict[str, dict[str, bool]],
    shared: SharedStrings,
) -> list[str | pl.Expr]:
    """The XML of the column's cells as its pieces, literal markup and expressions, to be
    concatenated with the row's other cells (_row)."""
    column = pl.col(name)
    if name in money:  # exact: the decimal text of the pence, read as a number
        pieces: list[str | pl.Expr] = ['<c s="2"><v>', pounds_text(column), "</v></c>"]
    elif frame.schema[name].is_numeric():
        pieces = ["<c><v>", column.cast(pl.String), "</v></c>"]
    elif (number := shared.numbers(frame, name, needs[name])) is not None:
        pieces = ['<c t="s"><v>', number, "</v></c>"]
    else:
        text = column.cast(pl.String)
        if needs[name]["formula"]:  # (a step no cell needs is left out, as in _xml_text)
            text = formula_safe(text)
        pieces = ['<c t="inlineStr"><is>', *_text_element(text, needs[name]), "</is></c>"]
    if frame[name].null_count():
        return [pl.when(column.is_null()).then(pl.lit("<c/>")).otherwise(_joined(pieces))]
    return pieces


def _joined(pieces: list[str | pl.Expr]) -> pl.Expr:
    """One text of the pieces, neighbouring literal markup merged into one literal."""
    merged: list[str | pl.Expr] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    return pl.concat_str([pl.lit(piece) if isinstance(piece, str) else piece for piece in merged])


def _sheet(
    frame: pl.DataFrame, money: tuple[str, ...], widths: dict[str, int], shared: SharedStrings
) -> Iterator[bytes]:
    """One worksheet's XML, in pieces, built by Polars ROWS_PER_CHUNK rows at a time (a
    national year's lines sheet is hundreds of megabytes of XML: never all of it at once).

    Cells carry no reference (the `r` attribute is optional in SpreadsheetML; a row's cells
    are then its columns in order), so a blank cell is written as an empty `<c/>`. Text
    keeps its edge spaces only where it has them (`xml:space="preserve"`). A national year's
    findings sheet is about 40% smaller so, and quicker to build and to compress.

    A row is one concatenation of its markup and its values (a column without blanks adds
    its pieces to it, not a finished cell): Polars then builds no column of cell texts only
    to copy it into the row, which took a third of the time.
    """
    columns = frame.columns
    header = "".join(
        f'<c r="{_column_letter(i)}1" t="inlineStr" s="1"><is><t>{name}</t></is></c>'
        for i, name in enumerate(columns)
    )
    texts = [name for name in columns if name not in money and not frame.schema[name].is_numeric()]
    needs = _text_needs(frame, texts)
    cells = [piece for name in columns for piece in _cell(frame, name, money, needs, shared)]
    last = f"{_column_letter(len(columns) - 1)}{frame.height + 1}"
    cols = "".join(
        f'<col min="{i + 1}" max="{i + 1}" width="{widths.get(name, 14)}" customWidth="1"/>'
        for i, name in enumerate(columns)
    )
    yield (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<sheetViews><sheetView workbookViewId="0"><pane ySplit="1" topLeftCell="A2" '
        'activePane="bottomLeft" state="frozen"/></sheetView></sheetViews>'
        f"<cols>{cols}</cols><sheetData>"
        f'<row r="1">{header}</row>'
    ).encode()
    for offset in range(0, frame.height, ROWS_PER_CHUNK):
        chunk = frame.slice(offset, ROWS_PER_CHUNK)
        row_number = (pl.int_range(pl.len()) + offset + 2).cast(pl.String)
        rows = io.BytesIO()
        # Polars writes the rows' UTF-8 straight out (a one-column CSV with nothing quoted
        # and no line ends is the rows themselves): never joined into one text, then encoded.
        chunk.select(_joined(['<row r="', row_number, '">', *cells, "</row>"])).write_csv(
            rows, include_header=False, quote_style="never", line_terminator=""
        )
        yield rows.getvalue()
    yield f'</sheetData><autoFilter ref="A1:{last}"/></worksheet>'.encode()


def workbook(sheets: list[tuple[str, pl.DataFrame, tuple[str, ...], dict[str, int]]]) -> bytes:
    """The bytes of an .xlsx of `sheets` (write_workbook; for small workbooks)."""
    buffer = io.BytesIO()
    write_workbook(buffer, sheets)
    return buffer.getvalue()


def write_workbook(
    path: Path | BinaryIO,
    sheets: list[tuple[str, pl.DataFrame, tuple[str, ...], dict[str, int]]],
) -> None:
    """Write to `path` an .xlsx of (name, frame, money columns in pence, column widths)
    sheets, split and cut to Excel's limits (within_limits, _xml_text). Written as it is
    built: the workbook is never held whole in memory."""
    sheets = within_limits(sheets)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as book:
        book.writestr(
            "[Content_Types].xml",
            _CONTENT_TYPES.format(
                sheets="".join(_SHEET_TYPE.format(n=n) for n in range(1, len(sheets) + 1))
            ),
        )
        book.writestr("_rels/.rels", _ROOT_RELS)
        book.writestr(
            "xl/workbook.xml",
            _WORKBOOK.format(
                sheets="".join(
                    f'<sheet name="{name}" sheetId="{n}" r:id="rId{n}"/>'
                    for n, (name, *_) in enumerate(sheets, start=1)
                ),
                names="".join(
                    f'<definedName name="_xlnm._FilterDatabase" localSheetId="{n}" hidden="1">'
                    f"'{name}'!$A$1:${_column_letter(frame.width - 1)}${frame.height + 1}"
                    "</definedName>"
                    for n, (name, frame, *_) in enumerate(sheets)
                ),
            ),
        )
        book.writestr(
            "xl/_rels/workbook.xml.rels",
            _WORKBOOK_RELS.format(
                sheets="".join(
                    f'<Relationship Id="rId{n}" Type="http://schemas.openxmlformats.org/'
                    f'officeDocument/2006/relationships/worksheet" '
                    f'Target="worksheets/sheet{n}.xml"/>'
                    for n in range(1, len(sheets) + 1)
                )
            ),
        )
        book.writestr("xl/styles.xml", _STYLES)
        shared = SharedStrings()
        for n, (_, frame, money, widths) in enumerate(sheets, start=1):
            with book.open(f"xl/worksheets/sheet{n}.xml", "w", force_zip64=True) as part:
                for piece in _sheet(frame, money, widths, shared):
                    part.write(piece)
        with book.open("xl/sharedStrings.xml", "w", force_zip64=True) as part:
            for piece in shared.xml():
                part.write(piece)
