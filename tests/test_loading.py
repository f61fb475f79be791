"""Claim-file intake (README, Inputs): encodings, headers, money and date forms, bad rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import BASE_LINE, CLAIM_HEADER, claims, projection, register, write_csv
from validator.pipeline import RunOptions, run_validation


def run_files(tmp_path, *paths):
    return run_validation(
        RunOptions(claims=[str(p) for p in paths], pcns=register(tmp_path / "pcns.csv"))
    )


def excel_bytes(encoding: str, bom: bool = False) -> bytes:
    header = ",".join(f" {name.replace('_', ' ').title()} " for name in CLAIM_HEADER)
    values = {**BASE_LINE, "amount_claimed": '"£1,234.56"', "employment_start": "16/06/2021"}
    line = ",".join(values[name] for name in CLAIM_HEADER)
    text = f"{header}\r\n{line}\r\n\r\n\r\n"
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding)


@pytest.mark.parametrize(
    ("encoding", "bom", "recorded"),
    [
        ("utf-8", True, "utf-8-sig"),
        ("utf-8", False, "utf-8"),
        ("windows-1252", False, "windows-1252"),
        ("windows-1252", True, "windows-1252"),  # a UTF-8 mark before Windows-1252 bytes
    ],
)
def test_excel_style_file_loads_cleanly(tmp_path, encoding, bom, recorded):
    path = tmp_path / "claims.csv"
    path.write_bytes(excel_bytes(encoding, bom))
    result = run_files(tmp_path, path)
    assert result.files[0].encoding == recorded
    assert result.rows_read == 1 and result.rows_checked == 1  # trailing blank lines ignored
    assert projection(result) == []
    line = result.every_line.row(0, named=True)
    assert line["amount_claimed"] == 123456
    assert line["days_in_post"] == 15  # in post from 16/06/2021, read as 16 June


def test_each_bad_field_is_one_finding_and_the_rest_is_validated(tmp_path):
    path = claims(
        tmp_path / "claims.csv",
        {},
        {"staff_id": "S002", "wte": "2", "employment_start": "31/02/2021", "role": "wizard"},
        {"staff_id": "S003", "amount_claimed": "-5.00"},
        {"staff_id": "S004", "additional_to_baseline": "N"},
    )
    result = run_files(tmp_path, path)
    assert projection(result) == [
        (3, "SCH-01", "open"),
        (3, "SCH-01", "open"),
        (3, "SCH-01", "open"),
        (4, "SCH-01", "open"),
        (5, "ELG-03", "open"),
    ]
    columns = sorted(result.findings.filter(result.findings["source_line"] == 3)["message"])
    assert any("column role is 'wizard'" in message for message in columns)
    assert any("column wte is '2'" in message for message in columns)
    assert any("column employment_start is '31/02/2021'" in message for message in columns)
    assert (result.rows_read, result.rows_rejected_by_schema, result.rows_checked) == (4, 2, 2)


def test_ragged_and_interior_blank_rows_are_reported_not_dropped(tmp_path):
    path = claims(tmp_path / "claims.csv", {}, {"staff_id": "S002"})
    text = path.read_text().splitlines()
    text.insert(2, "")  # a blank line between data rows
    text.append(text[1] + ",extra")  # one field too many
    text.append(",".join(text[1].split(",")[:5]))  # too few
    path.write_text("\n".join(text) + "\n\n")
    result = run_files(tmp_path, path)
    assert projection(result) == [
        (3, "SCH-01", "open"),
        (5, "SCH-01", "open"),
        (6, "SCH-01", "open"),
    ]
    assert result.rows_read == 5 and result.rows_checked == 2
    assert result.rows_rejected_by_schema == 3


def test_missing_column_reports_the_file_and_validates_the_others(tmp_path):
    good = claims(tmp_path / "good.csv", {})
    bad = tmp_path / "bad.csv"
    bad.write_text("pcn_code,claim_month\nU10001,2021-06\n")
    result = run_files(tmp_path, bad, good)
    assert "bad.csv" in result.files[0].path
    assert "lacks required column(s) staff_id" in result.files[0].problem
    assert result.files[1].problem == "" and result.rows_checked == 1


def test_unreadable_and_binary_files_are_file_problems(tmp_path):
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\x00\x01\x02PK")
    result = run_files(tmp_path, binary, tmp_path / "missing.csv")
    assert "NUL" in result.files[0].problem
    assert "cannot be read" in result.files[1].problem


def test_duplicate_header_names_are_a_file_problem(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("pcn_code,PCN Code\nU10001,U10001\n")
    result = run_files(tmp_path, path)
    assert "both named 'pcn_code'" in result.files[0].problem


def test_two_unknown_columns_of_one_name_are_ignored_like_any_unknown_column(tmp_path):
    path = claims(tmp_path / "claims.csv", {})
    header, line = path.read_text().splitlines()
    path.write_text(f"Notes,{header},notes\nfirst,{line},second\n")
    result = run_files(tmp_path, path)
    assert result.files[0].problem == ""
    assert result.files[0].extra_columns == ["notes", "notes"]
    assert result.rows_checked == 1 and projection(result) == []


def test_folder_means_every_csv_in_name_order(tmp_path):
    folder = tmp_path / "claims"
    claims(folder / "b.csv", {"staff_id": "B"})
    claims(folder / "a.csv", {"staff_id": "A"})
    (folder / "notes.txt").write_text("not a claim")
    result = run_files(tmp_path, folder)
    assert [f.path.rsplit("/", 1)[1] for f in result.files] == ["a.csv", "b.csv"]


def test_hours_per_week_gives_wte_and_must_agree_with_wte(tmp_path):
    path = claims(
        tmp_path / "claims.csv",
        {"wte": "", "hours_per_week": "22.5", "amount_claimed": "2000.00"},
        {"staff_id": "S2", "wte": "0.6", "hours_per_week": "22.6", "amount_claimed": "2000.00"},
        {"staff_id": "S3", "wte": "0.6", "hours_per_week": "23", "amount_claimed": "2000.00"},
    )
    result = run_files(tmp_path, path)
    assert projection(result) == [(4, "SCH-01", "open")]  # 23 h = 0.6133 WTE, off by > 0.01
    assert result.every_line["wte_units"].to_list()[0] == 1_800_000  # 22.5 h = 0.6 WTE exactly


def test_several_bad_fields_of_a_row_follow_its_columns_in_its_file(tmp_path):
    """The file lists the claim columns last to first: a row's findings follow the file
    (the first of them carries the claim), in `run` and in `check` alike."""
    bad = {"staff_id": "S2", "wte": "3", "employment_start": "2021-02-30"}
    path = write_csv(tmp_path / "claims.csv", CLAIM_HEADER[::-1], [bad], BASE_LINE)
    result = run_files(tmp_path, path)
    found = result.findings.filter(result.findings["rule_id"] == "SCH-01")
    in_file = sorted(["wte", "employment_start"], key=CLAIM_HEADER[::-1].index)
    assert [message.split("column ")[1].split(" ")[0] for message in found["message"]] == in_file
    assert found["amount_at_risk"].to_list() == [440000, 0]
    from validator.check import check_files

    checked = check_files([str(path)])
    assert [column for _, column, *_ in checked.files[0].findings] == in_file


def test_a_wte_of_many_decimal_places_is_read_to_the_nearest_unit(tmp_path):
    """hours / 37.5 as a spreadsheet writes it: a third, exactly (1,000,000 units); the
    rounding never takes a WTE over 1, and past 18 places it is not read at all."""
    path = claims(
        tmp_path / "claims.csv",
        {"wte": "0.333333333333333", "amount_claimed": "1000.00"},
        {"staff_id": "S2", "wte": "0.3333333", "amount_claimed": "1000.00"},
        {"staff_id": "S3", "wte": "1.0000001"},
        {"staff_id": "S4", "wte": "0.1234567890123456789"},
    )
    result = run_files(tmp_path, path)
    assert projection(result) == [(4, "SCH-01", "open"), (5, "SCH-01", "open")]
    lines = result.every_line.sort("source_line")
    assert lines["wte_units"].to_list()[:2] == [1_000_000, 1_000_000]
    assert lines["wte"].to_list()[:2] == ["0.333333", "0.333333"]


def test_quoted_newline_keeps_true_line_numbers(tmp_path):
    path = claims(
        tmp_path / "claims.csv",
        {"staff_name": "Two\nLines"},
        {"staff_id": "S2", "amount_claimed": "bad"},
        {"staff_id": "S3", "staff_name": "Three\nmore\nlines", "wte": "3"},
    )
    result = run_files(tmp_path, path)
    # Line 2 spans lines 2 and 3; a row spanning lines is numbered by the line it starts on.
    assert projection(result) == [(4, "SCH-01", "open"), (5, "SCH-01", "open")]


def test_fast_and_exact_readers_agree(tmp_path):
    from validator import load

    path = claims(
        tmp_path / "claims.csv",
        {"staff_name": 'Quoted "nick", name', "amount_claimed": '"£1,234.56"'},
        {"staff_id": "S2"},
    )
    text = path.read_text().replace("\n", "\r\n") + ",,,\r\n" + "x,y\r\n" + "\r\n"
    path.write_text(text, newline="")
    data = path.read_bytes()
    fast = load._cells_with_polars(data)
    exact = load._cells_with_csv_module(data.decode())
    assert fast is not None
    assert fast[0] == exact[0]
    assert fast[1].equals(exact[1])


def test_claims_checked_a_batch_at_a_time_give_the_same_run(monkeypatch):
    """The schema stage takes the claims a batch of files at a time (bounded memory); batches
    of any size give the same findings, money and lines as one batch of everything."""
    from validator import load, pipeline, schema

    sample = Path(__file__).resolve().parent.parent / "sample_claims"
    options = {
        "claims": [str(sample / "claims")],
        "pcns": sample / "pcns.csv",
        "agreements": sample / "agreements.csv",
        "month": "2021-12",
    }
    monkeypatch.setattr(load, "BATCH_ROWS", load.ALL_ROWS)
    whole = run_validation(RunOptions(**options))
    monkeypatch.setattr(load, "BATCH_ROWS", 1)  # a batch per file
    batches = []
    checked = schema.check_claims
    monkeypatch.setattr(
        pipeline,
        "check_claims",
        lambda batch, *rest: batches.append(batch.height) or checked(batch, *rest),
    )
    batched = run_validation(RunOptions(**options))
    assert len(batches) == len(whole.files) and sum(batches) == whole.rows_read
    assert len(batched.files) == len(whole.files) > 1
    assert batched.rows_read == whole.rows_read and batched.rows_rejected_by_schema > 0
    for name in ("findings", "summary", "payments", "every_line"):
        assert getattr(batched, name).equals(getattr(whole, name)), name
