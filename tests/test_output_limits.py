"""Outputs within the limits of the programs that open them: a workbook Excel opens (no sheet
past 1,048,576 rows, no cell past 32,767 characters, no character XML forbids), and messages
that name a few companions, never all of them. Read back with calamine (fastexcel), as an
auditor's spreadsheet would read them."""

from __future__ import annotations

import csv
import io
import re
import zipfile

import fastexcel
import polars as pl

from tests.helpers import claims, register, run_cli
from validator import xlsx


def test_a_long_cell_and_a_forbidden_character_still_make_a_workbook(tmp_path):
    long_name = "x" * 40_000
    claim_file = claims(tmp_path / "c.csv", {"staff_id": "S\ufffe1", "role": long_name})
    pcns = register(tmp_path / "p.csv")
    out = tmp_path / "o"
    completed = run_cli("run", str(claim_file), "--pcns", str(pcns), "--out", str(out))
    assert completed.returncode == 1, completed.stderr
    book = fastexcel.read_excel(out / "exceptions.xlsx")
    findings = book.load_sheet("findings").to_polars()
    assert findings.height == 2  # the two bad fields: staff_id and role
    for column in findings.columns:
        for value in findings[column].cast(pl.String).drop_nulls():
            assert len(value) <= xlsx.EXCEL_CELL_CHARACTERS and "\ufffe" not in value


def test_a_sheet_too_long_for_excel_continues_on_the_next(monkeypatch, tmp_path):
    monkeypatch.setattr(xlsx, "EXCEL_DATA_ROWS", 3)
    frame = pl.DataFrame({"rule_id": [f"R{n}" for n in range(7)], "amount": list(range(7))})
    path = tmp_path / "book.xlsx"
    path.write_bytes(xlsx.workbook([("findings", frame, ("amount",), {})]))
    book = fastexcel.read_excel(path)
    assert book.sheet_names == ["findings", "findings 2", "findings 3"]
    read = pl.concat(book.load_sheet(name).to_polars() for name in book.sheet_names)
    assert read["rule_id"].to_list() == frame["rule_id"].to_list()
    assert [str(value) for value in read["amount"]] == [
        "0.0",
        "0.01",
        "0.02",
        "0.03",
        "0.04",
        "0.05",
        "0.06",
    ]


def test_many_duplicates_name_five_others_and_count_the_rest(tmp_path):
    claim_file = claims(tmp_path / "c.csv", *({} for _ in range(40)))
    pcns = register(tmp_path / "p.csv")
    out = tmp_path / "o"
    completed = run_cli("run", str(claim_file), "--pcns", str(pcns), "--out", str(out))
    assert completed.returncode == 1, completed.stderr
    rows = list(csv.DictReader(io.StringIO((out / "exceptions.csv").read_text())))
    dup = [row for row in rows if row["rule_id"] == "DUP-01"]
    assert len(dup) == 40
    named = {
        row["source_line"]: re.findall(r"c\.csv line (\d+) \(U10001\)", row["message"])
        for row in dup
    }
    # Each line names the first five others of its group (never itself), then counts the rest.
    assert named["2"] == ["3", "4", "5", "6", "7"]
    assert named["4"] == ["2", "3", "5", "6", "7"]
    assert named["7"] == ["2", "3", "4", "5", "6"]
    assert named["8"] == named["41"] == ["2", "3", "4", "5", "6"]
    assert all("and 34 more" in row["message"] for row in dup)


def test_each_text_column_is_written_as_it_is_whichever_escaping_steps_it_needs(tmp_path):
    frame = pl.DataFrame(
        {
            "plain": ["alpha", "beta", None, "delta"],  # needs none of the steps
            "escaped": ["a & b", "<c>", "d", None],  # escapes only
            "edged": [" lead", "trail ", "none", "  both  "],  # edge spaces only
            "amount": [100, -250, None, 5],
        }
    )
    path = tmp_path / "book.xlsx"
    xlsx.write_workbook(path, [("sheet", frame, ("amount",), {})])
    read = fastexcel.read_excel(path).load_sheet("sheet").to_polars()
    for name in ("plain", "escaped", "edged"):
        assert read[name].cast(pl.String).to_list() == frame[name].to_list()
    assert read["amount"].to_list() == [1.0, -2.5, None, 0.05]


def test_repeated_texts_are_shared_and_read_back_as_written(monkeypatch, tmp_path):
    # Texts repeated down a column go through the workbook's shared strings; a column of
    # texts nearly all different stays inline. Either way a cell reads back as it was, the
    # hard cases included: edge spaces, escapes, a forbidden character, a cut cell, a blank.
    texts = [" lead", "a & <b>", "bad\x01char", "x" * 40_000, None, ""]
    frame = pl.DataFrame(
        {
            "repeated": texts * 30,
            "again": texts[::-1] * 30,  # the same texts in another column: stored once
            "distinct": [f"line {n}" for n in range(len(texts) * 30)],
        }
    )
    books = {}
    for label, shared_from in (("shared", 2), ("inline", 10**9)):
        monkeypatch.setattr(xlsx, "SHARED_FROM_CELLS_PER_TEXT", shared_from)
        books[label] = tmp_path / f"{label}.xlsx"
        xlsx.write_workbook(books[label], [("sheet", frame, (), {})])
    with zipfile.ZipFile(books["shared"]) as book:
        sheet = book.read("xl/worksheets/sheet1.xml").decode()
        strings = book.read("xl/sharedStrings.xml").decode()
    assert '<c t="s">' in sheet and "line 7" in sheet and "line 7" not in strings
    # Each distinct text once in the workbook (the blank is a null cell, not a text).
    assert strings.count("<si>") == len(texts) - 1 and 'uniqueCount="5"' in strings
    shared, inline = (
        fastexcel.read_excel(books[label]).load_sheet("sheet").to_polars() for label in books
    )
    assert shared.equals(inline)
    assert shared["again"].to_list() == shared["repeated"].to_list()[len(texts) - 1 :: -1] * 30
    read = shared["repeated"].cast(pl.String).to_list()
    assert read[:3] == [" lead", "a & <b>", "badchar"]
    assert read[3].startswith("x" * 100) and len(read[3]) <= xlsx.EXCEL_CELL_CHARACTERS
    assert read[4] is None


def test_texts_that_show_the_same_once_formula_safe_share_one_string(tmp_path):
    # `=1` shows as `'=1`, which is also a text of its own: one shared string, both cells.
    frame = pl.DataFrame({"text": ["=1", "'=1", "-2", "plain"] * 30})
    path = tmp_path / "book.xlsx"
    xlsx.write_workbook(path, [("sheet", frame, (), {})])
    with zipfile.ZipFile(path) as book:
        strings = book.read("xl/sharedStrings.xml").decode()
    assert strings.count("<si>") == 3
    read = fastexcel.read_excel(path).load_sheet("sheet").to_polars()["text"].to_list()
    assert read[:4] == ["'=1", "'=1", "'-2", "plain"]
