"""Month over month with --previous: what persists, what is new and what was resolved, in
exceptions.csv and in the auditors' workbook (read back by calamine)."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from tests.helpers import claims, register, run_cli

MONTHS = ["2021-04", "2021-05", "2021-06", "2021-07", "2021-08", "2021-09", "2021-10"]


def _run(folder: Path, months: list[str], review: str, out: Path, *extra: str):
    # One pharmacist at £4,400 a month against an ARRS sum of £40,000: within the sum so
    # far, but the full-year forecast is over it (BUD-02) in every review month.
    lines = [{"claim_month": month} for month in months]
    lines.append({"claim_month": months[-1], "staff_id": "S9", "additional_to_baseline": "N"})
    return run_cli(
        "run",
        str(claims(folder / review / "claims.csv", *lines)),
        "--pcns",
        str(register(folder / "pcns.csv", {"arrs_sum": "40000.00"})),
        "--month",
        review,
        "--out",
        str(out),
        *extra,
    )


def _changes(out: Path) -> list[tuple[str, str, str]]:
    with (out / "exceptions.csv").open(encoding="utf-8", newline="") as handle:
        return [
            (row["rule_id"], row["claim_month"], row["change"]) for row in csv.DictReader(handle)
        ]


def test_the_full_year_forecast_persists_from_one_review_month_to_the_next(tmp_path):
    first = _run(tmp_path, MONTHS[:-1], "2021-09", tmp_path / "september")
    assert first.returncode == 1, first.stderr
    second = _run(
        tmp_path, MONTHS, "2021-10", tmp_path / "october", "--previous", str(tmp_path / "september")
    )
    assert second.returncode == 1, second.stderr
    changes = _changes(tmp_path / "october")
    assert ("BUD-02", "2021-10", "persisting") in changes
    assert ("ELG-03", "2021-10", "new") in changes
    book = tmp_path / "october" / "exceptions.xlsx"
    findings = pl.read_excel(book, sheet_name="findings", engine="calamine")
    assert findings.columns[-2:] == ["fingerprint", "change"]
    assert sorted(findings["change"].to_list()) == ["new", "persisting"]
    resolved = pl.read_excel(book, sheet_name="resolved", engine="calamine")
    assert resolved.select("rule_id", "claim_month").rows() == [("ELG-03", "2021-09")]
    # Its line number and money as numbers, like the findings sheet's (not the CSV's text).
    assert resolved.select("source_line", "amount_at_risk").rows() == [(8, 4400.0)]
    run = pl.read_excel(book, sheet_name="run", engine="calamine")
    facts = {(section, item): value for section, item, value in run.iter_rows()}
    assert facts["run", "review month"] == "2021-10"
    assert facts["reconciliation", "balanced"] == "True"
    assert facts["money", "payable"] == "30800.00"  # seven months at £4,400
    claim_file = str(tmp_path / "2021-10" / "claims.csv")
    assert len(facts["input: claims", claim_file]) == 64  # its SHA-256
    assert ("rule", "BUD-02") in facts
    index = (tmp_path / "october" / "index.html").read_text()
    schedule = index[index.index('id="schedule-table"') : index.index("</table>")]
    for column in ("New", "Persisting", "Resolved"):
        assert f'data-label="{column}"' in schedule


def test_without_previous_the_workbook_has_no_history(tmp_path):
    assert _run(tmp_path, MONTHS, "2021-10", tmp_path / "out").returncode == 1
    book = tmp_path / "out" / "exceptions.xlsx"
    findings = pl.read_excel(book, sheet_name="findings", engine="calamine")
    assert "change" not in findings.columns
    sheets = pl.read_excel(book, sheet_id=0, engine="calamine")
    assert list(sheets) == ["findings", "summary", "payments", "lines", "run", "rules"]
