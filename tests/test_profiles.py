"""Column profiles (README, Inputs): another export's headers, spellings and date formats read
to the same findings as the canonical files; a profile that names what does not exist is
refused, never guessed."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
import tomllib
from pathlib import Path

import polars as pl
import pytest

from tests.helpers import PROJECT, claims, register, run_cli
from validator.errors import ConfigError
from validator.load import decode, normalise_header
from validator.pipeline import RunOptions, run_validation
from validator.unattended import load_config

SAMPLE = PROJECT / "sample_claims"
PROFILE = SAMPLE / "profiles" / "example-export.toml"


def as_export(source: Path, target: Path, profile: dict) -> None:
    """Rewrite one canonical claim file as the profile's export writes it: its header names,
    its spellings of values, its date and month formats. Text that is not a valid canonical
    value (a bad row's) is copied as it is, so the same rows stay bad."""
    columns = profile["columns"]
    rows = list(csv.reader(io.StringIO(decode(source.read_bytes())[0], newline="")))
    names = [normalise_header(name) for name in rows[0]]
    header = [
        columns.get(name, {}).get("headers", [written])[0]
        for name, written in zip(names, rows[0], strict=True)
    ]
    spellings = {
        name: {value: spelling for spelling, value in spec.get("values", {}).items()}
        for name, spec in columns.items()
    }
    out = [header]
    for row in rows[1:]:
        cells = []
        for name, cell in zip(names, row, strict=False):
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", cell):
                cell = dt.date.fromisoformat(cell).strftime(profile["date_format"])
            elif re.fullmatch(r"\d{2}/\d{2}/\d{4}", cell):
                day = dt.datetime.strptime(cell, "%d/%m/%Y")
                cell = day.strftime(profile["date_format"])
            elif name == "claim_month" and re.fullmatch(r"\d{4}-\d{2}", cell):
                cell = dt.date.fromisoformat(f"{cell}-01").strftime(profile["month_format"])
            cells.append(spellings.get(name, {}).get(cell, cell))
        out.append(cells + row[len(names) :])
    with target.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(out)


@pytest.fixture(scope="module")
def export_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    profile = tomllib.loads(PROFILE.read_text(encoding="utf-8"))
    for path in sorted((SAMPLE / "claims").glob("*.csv")):
        as_export(path, folder / path.name, profile)
    return folder


def sample_run(claims_folder: Path, columns: Path | None = None):
    return run_validation(
        RunOptions(
            claims=[str(claims_folder)],
            pcns=SAMPLE / "pcns.csv",
            agreements=SAMPLE / "agreements.csv",
            month="2021-12",
            columns=columns,
        )
    )


def comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """A result without where its rows came from, which differs by design."""
    frame = frame.drop(
        [name for name in ("source_file", "finding_id", "row_no") if name in frame.columns]
    )
    if "message" in frame.columns:  # messages begin with the file's path
        # (and DUP messages name other lines by path, so every path is cut to its name)
        frame = frame.with_columns(
            pl.col("message").str.replace_all(r"\S*/([^/ ]+) line", "$1 line")
        )
    return frame.sort(frame.columns, nulls_last=True)


def test_the_export_really_differs_from_the_canonical_files(export_folder):
    text = (export_folder / "2021-06.csv").read_text(encoding="utf-8")
    assert "Staff Member ID" in text and "Profession" in text and "staff_id" not in text
    assert ",Yes," in text and "Clinical Pharmacist (ARRS)" in text
    assert "01-Apr-2021" in text and "06/2021" in text and "2021-04-01" not in text


def test_another_exports_headers_and_spellings_give_the_same_findings(export_folder):
    canonical = sample_run(SAMPLE / "claims")
    exported = sample_run(export_folder, PROFILE)
    assert exported.rows_read == canonical.rows_read == 358
    assert exported.rows_rejected_by_schema == canonical.rows_rejected_by_schema == 2
    assert comparable(exported.findings).equals(comparable(canonical.findings))
    assert comparable(exported.summary).equals(comparable(canonical.summary))
    assert comparable(exported.every_line).equals(comparable(canonical.every_line))
    digest = hashlib.sha256(PROFILE.read_bytes()).hexdigest()
    assert exported.input_facts[-1] == {"kind": "columns", "path": str(PROFILE), "sha256": digest}


def test_check_with_the_profile_shows_the_same_table(export_folder):
    exported = run_cli("check", str(export_folder / "2021-09.csv"), "--columns", str(PROFILE))
    canonical = run_cli("check", "sample_claims/claims/2021-09.csv")
    assert exported.returncode == canonical.returncode == 1
    assert exported.stdout.split("\n", 1)[1] == canonical.stdout.split("\n", 1)[1]
    without = run_cli("check", str(export_folder / "2021-09.csv"))
    assert without.returncode == 2 and "lacks required column(s) pcn_code" in without.stderr


def test_the_manifest_records_the_profiles_path_and_hash(tmp_path, export_folder):
    completed = run_cli(
        "run",
        str(export_folder / "2021-06.csv"),
        "--pcns",
        str(SAMPLE / "pcns.csv"),
        "--columns",
        str(PROFILE),
        "--out",
        str(tmp_path / "out"),
    )
    assert completed.returncode in (0, 1), completed.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    digest = hashlib.sha256(PROFILE.read_bytes()).hexdigest()
    assert {"kind": "columns", "path": str(PROFILE), "sha256": digest} in manifest["inputs"]


def test_the_config_key_columns_is_a_path_relative_to_the_config(tmp_path):
    config = tmp_path / "arrs.toml"
    config.write_text('columns = "profiles/export.toml"\n', encoding="utf-8")
    assert load_config(config).columns == str(tmp_path / "profiles" / "export.toml")
    config.write_text("columns = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="columns = 5 is not valid"):
        load_config(config)


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ('[columns.staff_number]\nheaders = ["Staff No"]', "[columns.staff_number] is not a claim"),
        (
            '[columns.additional_to_baseline]\nvalues = { "Yes" = "Yes please" }',
            "'Yes please' is not a valid additional_to_baseline",
        ),
        (
            '[columns.role]\nvalues = { "Pharmacist" = "pharmacist" }',
            "'pharmacist' is not a valid role",
        ),
        ('[columns.staff_id]\nheaders = ["staff name"]', "is the name of the column staff_name"),
        ('date_format = "dd/mm/yyyy"', "is not a format"),
        ('[columns.wte]\nvalues = { "Full time" = "2" }', "'2' is not a valid wte"),
        ("colums = {}", "unknown key 'colums'"),
        ("[columns.role\n", "not valid TOML"),
    ],
)
def test_a_profile_naming_what_does_not_exist_is_refused(tmp_path, profile, message):
    path = tmp_path / "profile.toml"
    path.write_text(profile + "\n", encoding="utf-8")
    claim_file = claims(tmp_path / "c.csv", {})
    completed = run_cli("check", str(claim_file), "--columns", str(path))
    assert completed.returncode == 2 and message in completed.stderr, completed.stderr
    assert "Traceback" not in completed.stderr
    ran = run_cli(
        "run",
        str(claim_file),
        "--pcns",
        str(register(tmp_path / "p.csv")),
        "--columns",
        str(path),
        "--out",
        str(tmp_path / "out"),
    )
    assert ran.returncode == 2 and message in ran.stderr
    assert not (tmp_path / "out").exists()


def test_a_spelling_no_alias_covers_is_reported_as_written(tmp_path):
    path = tmp_path / "profile.toml"
    path.write_text(
        '[columns.additional_to_baseline]\nvalues = { "Yes" = "Y", "No" = "N" }\n',
        encoding="utf-8",
    )
    claim_file = claims(
        tmp_path / "c.csv",
        {"additional_to_baseline": " yes "},
        {"additional_to_baseline": "Maybe"},
    )
    completed = run_cli("check", str(claim_file), "--columns", str(path))
    assert completed.returncode == 1
    assert "  3  additional_to_baseline  Maybe" in completed.stdout
    assert "  2  " not in completed.stdout


def test_a_profile_applies_to_a_workbooks_sheets(tmp_path, export_folder):
    from tests.test_workbooks import csv_frame
    from validator.xlsx import workbook

    book = tmp_path / "2021-09.xlsx"
    book.write_bytes(workbook([("Claims", csv_frame(export_folder / "2021-09.csv"), (), {})]))
    exported = run_cli("check", str(book), "--columns", str(PROFILE))
    canonical = run_cli("check", "sample_claims/claims/2021-09.csv")
    assert exported.returncode == canonical.returncode == 1, exported.stderr
    assert exported.stdout.split("\n", 1)[1] == canonical.stdout.split("\n", 1)[1]
    assert exported.stdout.startswith(f"{book}[Claims]: 39 rows, 3 schema finding(s)")
