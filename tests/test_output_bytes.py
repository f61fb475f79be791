"""The quick ways the data files are written give the bytes the plain ones gave: exceptions.json's
rows (NDJSON stitched into an array) equal Polars' own JSON array, slice after slice, whatever
the text holds; money as pounds text is exact at every sign and size; the workbook, written
by a second thread, fails the data files as it would in the first."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest

from tests.helpers import run_case
from validator import outputs


def test_json_rows_are_polars_json_array_whatever_the_text_holds(monkeypatch):
    monkeypatch.setattr(outputs, "JSON_ROWS_PER_SLICE", 2)  # several slices, one row left over
    frame = pl.DataFrame(
        {
            "message": ["two\nlines", 'a "quote" and \\', None, "é \u2028 \x01 </x>", "💷"],
            "source_line": [1, None, 3, 4, 5],
            "amount_claimed": [-5, 0, None, 123456, 100],
        }
    )
    written = io.BytesIO()
    outputs._json_rows(frame, ("amount_claimed",), written)

    whole = io.BytesIO()
    outputs._money_cells(frame, ("amount_claimed",)).write_json(whole)
    assert written.getvalue() == whole.getvalue()
    rows = json.loads(written.getvalue())
    assert [row["message"] for row in rows] == frame["message"].to_list()
    assert [row["amount_claimed"] for row in rows] == ["-0.05", "0.00", None, "1234.56", "1.00"]


def test_json_rows_of_no_rows_are_an_empty_array():
    written = io.BytesIO()
    outputs._json_rows(pl.DataFrame({"amount": []}, schema={"amount": pl.Int64}), (), written)
    assert written.getvalue() == b"[]"


def test_money_text_is_exact_pounds_at_every_sign_and_size():
    pence = [0, 1, -1, 9, -10, 99, 100, -100, 123456, -123456, 1_000_000_000, -1_000_000_000, None]
    frame = pl.DataFrame({"pence": pence})
    written = frame.select(outputs.money_text(pl.col("pence")))["pence"].to_list()
    expected = [outputs.money_pounds(value) if value is not None else None for value in pence]
    assert written == expected
    assert written[:4] == ["0.00", "0.01", "-0.01", "0.09"]


def test_a_workbook_that_cannot_be_written_fails_the_data_files_after_the_others(tmp_path):
    result = run_case(tmp_path, [{}, {"staff_id": ""}])
    folder = tmp_path / "staging"
    (folder / "exceptions.xlsx").mkdir(parents=True)  # the workbook's thread cannot open it
    with pytest.raises(IsADirectoryError):
        outputs.data_files(result, "run", folder)
    # The CSV and JSON files were written meanwhile, whole.
    assert json.loads((folder / "exceptions.json").read_text())["findings"]
    assert (folder / "lines.csv").read_text().count("\n") == 3  # the header and two lines
