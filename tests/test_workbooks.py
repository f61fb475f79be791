""".xlsx claim files (README, Inputs): read as the CSVs are, with `file.xlsx[Sheet] line N`
references; hostile workbooks are a file problem (exit 2), never a hang or a traceback."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

import polars as pl
import pytest

from tests.helpers import BASE_LINE, CLAIM_HEADER, PROJECT, claims, run_cli
from validator.load import decode
from validator.xlsx import workbook

SAMPLE = PROJECT / "sample_claims"


def csv_frame(path: Path) -> pl.DataFrame:
    """A claim CSV's cells as text, exactly as written (short rows padded, as Excel would)."""
    rows = list(csv.reader(io.StringIO(decode(path.read_bytes())[0], newline="")))
    header, body = rows[0], rows[1:]
    columns = [[row[i] if i < len(row) else "" for row in body] for i in range(len(header))]
    return pl.DataFrame(columns, schema=dict.fromkeys(header, pl.String), orient="col")


@pytest.fixture(scope="module")
def sample_workbooks(tmp_path_factory) -> Path:
    """The sample batch as one workbook per month (written by the project's own .xlsx
    writer): the claims on a sheet "Claims", after a "Notes" sheet that is not a claim table."""
    folder = tmp_path_factory.mktemp("workbooks")
    notes = pl.DataFrame({"note": ["Exported by the PCN's finance team"]})
    for path in sorted((SAMPLE / "claims").glob("*.csv")):
        book = workbook([("Notes", notes, (), {}), ("Claims", csv_frame(path), (), {})])
        (folder / f"{path.stem}.xlsx").write_bytes(book)
    return folder


def run_into(out: Path, claims_folder: Path):
    return run_cli(
        "run",
        str(claims_folder),
        "--pcns",
        str(SAMPLE / "pcns.csv"),
        "--agreements",
        str(SAMPLE / "agreements.csv"),
        "--month",
        "2021-12",
        "--out",
        str(out),
    )


def without_sources(text: str) -> str:
    """An output's text with every claim file's path reduced to its month."""
    return re.sub(r"[^,\"\s]*/(20\d\d-\d\d)\.(?:csv|xlsx\[Claims\])", r"\1", text)


def test_the_sample_as_workbooks_gives_the_same_findings_summary_and_payments(
    tmp_path, sample_workbooks
):
    from_csv = run_into(tmp_path / "csv", SAMPLE / "claims")
    from_xlsx = run_into(tmp_path / "xlsx", sample_workbooks)
    assert from_csv.returncode == from_xlsx.returncode == 2  # the sample seeds REF-01
    assert "Traceback" not in from_xlsx.stderr
    # Every table a run writes (exceptions, summary, and payments where the run writes them).
    names = [path.name for path in sorted((tmp_path / "csv").glob("*.csv"))]
    assert {"exceptions.csv", "summary.csv"} <= set(names)
    for name in names:
        csv_text = (tmp_path / "csv" / name).read_text(encoding="utf-8")
        xlsx_text = (tmp_path / "xlsx" / name).read_text(encoding="utf-8")
        assert without_sources(xlsx_text) == without_sources(csv_text), name
    exceptions = (tmp_path / "xlsx" / "exceptions.csv").read_text(encoding="utf-8")
    assert f"{sample_workbooks}/2021-09.xlsx[Claims],30," in exceptions
    assert f"{sample_workbooks}/2021-09.xlsx[Claims] line 30 (" in exceptions
    assert "2021-04.xlsx: sheet(s) skipped, not claim tables: Notes" in from_xlsx.stderr
    manifest = json.loads((tmp_path / "xlsx" / "manifest.json").read_text(encoding="utf-8"))
    books = [entry for entry in manifest["inputs"] if entry["kind"] == "claims"]
    assert [entry["path"] for entry in books] == [
        f"{sample_workbooks}/2021-{month:02d}.xlsx[Claims]" for month in range(4, 13)
    ]
    assert all(
        entry["skipped_sheets"] == ["Notes (no pcn_code, claim_month, staff_id column)"]
        for entry in books
    )


def test_check_reads_a_folder_of_workbooks_and_csvs(tmp_path, sample_workbooks):
    csv_file = claims(tmp_path / "extra.csv", {"pcn_code": "X"})
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "2021-09.xlsx").write_bytes((sample_workbooks / "2021-09.xlsx").read_bytes())
    (folder / "extra.csv").write_bytes(csv_file.read_bytes())
    (folder / "~$2021-09.xlsx").write_bytes(b"an open workbook's lock file")
    completed = run_cli("check", str(folder))
    assert completed.returncode == 1, completed.stderr
    assert f"{folder}/2021-09.xlsx[Claims]: 39 rows, 3 schema finding(s)" in completed.stdout
    assert "    30  amount_claimed  4,6O4.25" in completed.stdout
    assert f"{folder}/extra.csv: 1 rows, 1 schema finding(s)" in completed.stdout
    assert "~$" not in completed.stdout + completed.stderr


# A hand-made workbook, so cells can be what Excel writes: numbers, dates, booleans,
# formulas with their cached values, error cells, data that starts below blank rows.
_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/'
    'package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.'
    'openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType='
    '"application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.'
    'openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>{sheets}</Types>'
)
_STYLES = (
    '<?xml version="1.0" encoding="UTF-8"?><styleSheet xmlns="http://schemas.openxmlformats.org/'
    'spreadsheetml/2006/main"><numFmts count="1"><numFmt numFmtId="164" formatCode='
    '"&quot;£&quot;#,##0.00"/></numFmts><fonts count="1"><font/></fonts><fills count="1"><fill/>'
    '</fills><borders count="1"><border/></borders><cellStyleXfs count="1"><xf/></cellStyleXfs>'
    '<cellXfs count="3"><xf/><xf numFmtId="14" applyNumberFormat="1"/><xf numFmtId="164" '
    'applyNumberFormat="1"/></cellXfs></styleSheet>'
)
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def raw_workbook(sheets: dict[str, str]) -> bytes:
    """An .xlsx whose sheets hold the given <sheetData> rows XML."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as book:
        overrides = "".join(
            f'<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="application/vnd.'
            'openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            for n in range(1, len(sheets) + 1)
        )
        book.writestr("[Content_Types].xml", _TYPES.format(sheets=overrides))
        book.writestr(
            "_rels/.rels",
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
            f'package/2006/relationships"><Relationship Id="rId1" Type="{RELS}/officeDocument" '
            'Target="xl/workbook.xml"/></Relationships>',
        )
        entries = "".join(
            f'<sheet name="{name}" sheetId="{n}" r:id="rId{n}"/>'
            for n, name in enumerate(sheets, start=1)
        )
        book.writestr(
            "xl/workbook.xml",
            f'<?xml version="1.0"?><workbook xmlns="{MAIN}" xmlns:r="{RELS}"><sheets>{entries}'
            "</sheets></workbook>",
        )
        links = "".join(
            f'<Relationship Id="rId{n}" Type="{RELS}/worksheet" Target="worksheets/sheet{n}.xml"/>'
            for n in range(1, len(sheets) + 1)
        )
        book.writestr(
            "xl/_rels/workbook.xml.rels",
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
            f'package/2006/relationships">{links}<Relationship Id="rIdS" Type="{RELS}/styles" '
            'Target="styles.xml"/></Relationships>',
        )
        book.writestr("xl/styles.xml", _STYLES)
        for n, rows in enumerate(sheets.values(), start=1):
            book.writestr(
                f"xl/worksheets/sheet{n}.xml",
                f'<?xml version="1.0"?><worksheet xmlns="{MAIN}"><sheetData>{rows}'
                "</sheetData></worksheet>",
            )
    return buffer.getvalue()


def _letter(index: int) -> str:
    return chr(65 + index) if index < 26 else "A" + chr(65 + index - 26)


def text_cell(ref: str, value: str) -> str:
    return f'<c r="{ref}" t="inlineStr"><is><t>{value}</t></is></c>'


EXCEL_SERIAL = {"2021-04-01": 44287, "2021-06-16": 44363}  # Excel's day numbers


def typed_row(number: int, line: dict) -> str:
    """A claim line as Excel stores it: money as numbers shown £#,##0.00, dates as day
    numbers shown as dates, the rest as text; `formula` cells keep a cached value."""
    cells = []
    for index, name in enumerate(CLAIM_HEADER):
        ref, value = f"{_letter(index)}{number}", line[name]
        if value == "":
            continue
        if name in ("monthly_salary", "employer_ni", "employer_pension", "amount_claimed"):
            formula = f"<f>SUM(L{number}:N{number})</f>" if name == "amount_claimed" else ""
            cells.append(f'<c r="{ref}" s="2">{formula}<v>{value}</v></c>')
        elif value in EXCEL_SERIAL:
            cells.append(f'<c r="{ref}" s="1"><v>{EXCEL_SERIAL[value]}</v></c>')
        elif name == "wte":
            cells.append(f'<c r="{ref}"><v>{value}</v></c>')
        else:
            cells.append(text_cell(ref, value))
    return f'<row r="{number}">{"".join(cells)}</row>'


def typed_sheet(lines: list[dict], first_row: int = 1) -> str:
    header = "".join(text_cell(f"{_letter(i)}{first_row}", n) for i, n in enumerate(CLAIM_HEADER))
    rows = [f'<row r="{first_row}">{header}</row>']
    rows += [typed_row(first_row + 1 + i, line) for i, line in enumerate(lines)]
    return "".join(rows)


LINES = [
    {**BASE_LINE, "wte": "1"},
    {
        **BASE_LINE,
        "staff_id": "S002",
        "employment_start": "2021-06-16",
        "wte": "0.8",
        "amount_claimed": "4400",
    },
    {**BASE_LINE, "staff_id": "S003", "wte": "1.5"},
    {**BASE_LINE, "staff_id": "S004", "pcn_code": "U1"},
]


def test_typed_cells_read_as_the_csv_reads_their_text(tmp_path):
    """Numbers, date cells and cached formula values give the same table as the CSV of the
    same claims; data starting on row 4 keeps Excel's row numbers."""
    book = tmp_path / "typed.xlsx"
    book.write_bytes(raw_workbook({"June": typed_sheet(LINES, first_row=4)}))
    same = claims(tmp_path / "same.csv", *LINES)
    from_book = run_cli("check", str(book))
    from_csv = run_cli("check", str(same))
    assert from_book.returncode == from_csv.returncode == 1, from_book.stderr
    assert from_book.stdout.startswith(f"{book}[June]: 4 rows, 2 schema finding(s)")
    table = lambda text: [  # noqa: E731
        (int(m[1]), m[2]) for m in re.finditer(r"^ +(\d+)  (\S+)", text, re.M)
    ]
    assert table(from_book.stdout) == [
        (line + 3, column) for line, column in table(from_csv.stdout)
    ]
    assert table(from_book.stdout) == [(7, "wte"), (8, "pcn_code")]


def hostile(tmp_path: Path) -> dict[str, bytes]:
    good = raw_workbook({"Claims": typed_sheet(LINES[:1])})
    rows = "".join(f'<row r="{n}"><c r="A{n}"><v>{n}</v></c></row>' for n in range(1, 1_000_001))
    bomb = io.BytesIO()
    zeros = bytes(1 << 20)
    with (
        zipfile.ZipFile(io.BytesIO(good)) as parts,
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as book,
    ):
        for name in parts.namelist():  # a real workbook, but for its one sheet
            if name != "xl/worksheets/sheet1.xml":
                book.writestr(name, parts.read(name))
        with book.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as part:
            for _ in range(1100):  # 1.1 GB of zeros, about 1 MB zipped
                part.write(zeros)
    # The amount's formula, saved showing #REF! (a deleted column it summed).
    error = re.sub(
        r'<c r="([A-Z]+2)" s="2"><f>(.*?)</f><v>[^<]*</v>',
        r'<c r="\1" t="e"><f>\2</f><v>#REF!</v>',
        typed_sheet(LINES[:1]),
    )
    return {
        "password.xlsx": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4000),
        "corrupt.xlsx": b"PK\x03\x04 this is not really a zip file",
        "truncated.xlsx": good[: len(good) // 2],
        "bomb.xlsx": bomb.getvalue(),
        "million.xlsx": raw_workbook({"Claims": rows}),
        "errors.xlsx": raw_workbook({"Claims": error}),
        "notes.xlsx": raw_workbook({"Notes": text_cell("A1", "no claims here")}),
    }


def test_hostile_workbooks_are_file_problems_and_the_other_files_are_still_checked(tmp_path):
    folder = tmp_path / "claims"
    folder.mkdir()
    for name, data in hostile(tmp_path).items():
        (folder / name).write_bytes(data)
    good = claims(folder / "good.csv", {})
    completed = run_cli("check", str(folder))
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr and "panicked" not in completed.stderr
    assert f"{good}: 1 rows, no schema findings" in completed.stdout
    problems = dict(
        line.removeprefix("arrs-validate: ").split(": ", 1)
        for line in completed.stderr.splitlines()
    )
    expected = {
        "password.xlsx": "is password-protected (encrypted)",
        "corrupt.xlsx": "is not a readable .xlsx workbook",
        "truncated.xlsx": "is not a readable .xlsx workbook",
        "bomb.xlsx": "expands to more than 1024 MB when unzipped",
        "million.xlsx[Claims]": "has 1,000,000 rows, more than the 500,000",
        "errors.xlsx[Claims]": "has 1 cell(s) showing a formula error",
        "notes.xlsx": "has no sheet whose header row names the claim columns",
    }
    for name, problem in expected.items():
        assert problems[str(folder / name)].startswith(problem), (name, problems)
    amount = f"{chr(65 + CLAIM_HEADER.index('amount_claimed'))}2"
    assert f"at {amount};" in problems[str(folder / "errors.xlsx[Claims]")]


def test_damaged_workbooks_are_file_problems_never_exceptions(tmp_path):
    """Seeded damage to the zip and to the XML inside it: every outcome is a table or a
    file problem with a message, however zipfile, zlib, the XML parser or calamine fail."""
    import random

    from validator.load import read_claim_workbook

    good = raw_workbook({"Claims": typed_sheet(LINES), "More": typed_sheet(LINES[:1], 3)})
    with zipfile.ZipFile(io.BytesIO(good)) as book:
        parts = {name: book.read(name) for name in book.namelist()}
    rng = random.Random(2021)
    path = tmp_path / "damaged.xlsx"
    outcomes = set()
    for attempt in range(120):
        if attempt % 2:  # flipped bytes in the zip itself
            data = bytearray(good)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        else:  # a valid zip whose XML is damaged
            victim = rng.choice(list(parts))
            xml = bytearray(parts[victim])
            for _ in range(rng.randint(1, 6)):
                at = rng.randrange(len(xml))
                xml[at : at + rng.randint(0, 20)] = bytes([rng.choice(b'<>/"=09x ')])
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as book:
                for name, body in parts.items():
                    book.writestr(name, bytes(xml) if name == victim else body)
            data = bytearray(buffer.getvalue())
        path.write_bytes(bytes(data))
        for info, frame in read_claim_workbook(str(path)):
            assert (frame is None) == bool(info.problem), info
            outcomes.add("read" if frame is not None else info.problem.split(" (")[0])
    assert "read" in outcomes and "is not a readable .xlsx workbook" in outcomes
    assert len(outcomes) >= 3


def test_a_chart_sheet_is_skipped_and_named(tmp_path):
    book = raw_workbook({"Claims": typed_sheet(LINES[:1]), "Chart": ""})
    with zipfile.ZipFile(io.BytesIO(book)) as original:
        parts = {name: original.read(name) for name in original.namelist()}
    worksheet = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
    chartsheet = worksheet.replace("worksheet", "chartsheet")
    del parts["xl/worksheets/sheet2.xml"]
    parts["xl/chartsheets/sheet1.xml"] = (
        f'<?xml version="1.0"?><chartsheet xmlns="{MAIN}"><sheetViews><sheetView '
        'workbookViewId="0"/></sheetViews></chartsheet>'
    ).encode()
    for name, old, new in (
        (
            "xl/_rels/workbook.xml.rels",
            f'Type="{RELS}/worksheet" Target="worksheets/sheet2.xml"',
            f'Type="{RELS}/chartsheet" Target="chartsheets/sheet1.xml"',
        ),
        (
            "[Content_Types].xml",
            f'/xl/worksheets/sheet2.xml" ContentType="{worksheet}"',
            f'/xl/chartsheets/sheet1.xml" ContentType="{chartsheet}"',
        ),
    ):
        assert old.encode() in parts[name]
        parts[name] = parts[name].replace(old.encode(), new.encode())
    path = tmp_path / "chart.xlsx"
    with zipfile.ZipFile(path, "w") as rebuilt:
        for name, body in parts.items():
            rebuilt.writestr(name, body)
    completed = run_cli("check", str(path))
    assert completed.returncode == 0, completed.stderr
    assert f"{path}[Claims]: 1 rows, no schema findings" in completed.stdout
    assert "skipped, not claim tables: Chart (a chart or dialog sheet)" in completed.stderr
