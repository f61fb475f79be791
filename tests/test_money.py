"""The money adds up, read back from the files the real CLI writes, as an auditor would.

For every PCN: the findings' amount_at_risk add up to summary.csv's at_risk, which is claimed
- payable; payments.csv adds up to summary.csv, lines.csv to both, and exceptions.json,
exceptions.xlsx and manifest.json carry the same figures. Each file is read independently
(the csv module, json, calamine for the workbook), never through the tool's own frames.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from tests.helpers import PROJECT, run_case, run_cli, run_sample
from validator.generate import generate

MONEY_PAYMENTS = ("claimed", "allowed", "budget_excess", "payable", "withheld")
MONEY_SUMMARY = ("claimed", "allowed", "budget_excess", "payable", "at_risk")


def pence(text: str | None) -> int:
    return int(Decimal(text or "0") * 100)


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def assert_money_adds_up(out: Path) -> dict:
    """Every identity of the money model, from the files in `out`; returns the batch totals."""
    findings = read_csv(out / "exceptions.csv")
    summary = {row["pcn_code"]: row for row in read_csv(out / "summary.csv")}
    payments = read_csv(out / "payments.csv")
    lines = read_csv(out / "lines.csv")
    manifest = json.loads((out / "manifest.json").read_text())

    at_risk: Counter = Counter()
    open_count: Counter = Counter()
    for row in findings:
        at_risk[row["pcn_code"]] += pence(row["amount_at_risk"])
        if row["status"] == "waived" or row["severity"] in ("query", "warning"):
            assert pence(row["amount_at_risk"]) == 0, row["message"]
        if row["status"] == "open" and row["severity"] != "warning":
            open_count[row["pcn_code"]] += 1

    by_pcn: dict[str, Counter] = defaultdict(Counter)
    excess_by_month = {}
    for row in payments:
        figures = {name: pence(row[name]) for name in MONEY_PAYMENTS}
        assert figures["payable"] == figures["allowed"] - figures["budget_excess"], row
        assert figures["withheld"] == figures["claimed"] - figures["payable"], row
        assert 0 <= figures["budget_excess"] <= figures["allowed"], row
        by_pcn[row["pcn_code"]].update(figures)
        by_pcn[row["pcn_code"]]["lines"] += int(row["lines"])
        by_pcn[row["pcn_code"]]["open_findings"] += int(row["open_findings"])
        excess_by_month[row["pcn_code"], row["claim_month"]] = figures["budget_excess"]

    # An open BUD-01 carries exactly what its month withholds.
    for row in findings:
        if row["rule_id"] == "BUD-01" and row["status"] == "open":
            assert (
                pence(row["amount_at_risk"]) == excess_by_month[row["pcn_code"], row["claim_month"]]
            )

    line_sums: dict[str, Counter] = defaultdict(Counter)
    for row in lines:
        claimed, allowed = pence(row["amount_claimed"]), pence(row["amount_allowed"])
        assert pence(row["amount_at_risk"]) == claimed - allowed
        expected = (
            "schema_rejected"
            if row["outcome"] == "schema_rejected"
            else "not_payable"
            if row["outcome"] == "not_payable"
            else ("reduced" if allowed < claimed else "paid")
        )
        assert row["outcome"] == expected, row
        if row["outcome"] in ("not_payable", "schema_rejected"):
            assert allowed == 0
        line_sums[row["pcn_code"]].update(claimed=claimed, allowed=allowed, lines=1)

    assert set(summary) == set(by_pcn)
    for code, row in summary.items():
        figures = {name: pence(row[name]) for name in MONEY_SUMMARY}
        assert at_risk[code] == figures["at_risk"] == figures["claimed"] - figures["payable"], code
        for name in ("claimed", "allowed", "budget_excess", "payable"):
            assert by_pcn[code][name] == figures[name], (code, name)
        assert by_pcn[code]["lines"] == int(row["lines"]) == line_sums[code]["lines"]
        assert line_sums[code]["claimed"] == figures["claimed"]
        assert line_sums[code]["allowed"] == figures["allowed"]
        opened = sum(int(row[name]) for name in ("open_reject", "open_adjust", "open_query"))
        assert opened == open_count[code] == by_pcn[code]["open_findings"], code

    totals = {name: sum(pence(row[name]) for row in summary.values()) for name in MONEY_SUMMARY}
    assert {name: pence(text) for name, text in manifest["money"].items()} == totals
    assert manifest["findings"]["open"] == sum(open_count.values())
    # Rows with no valid PCN code are in no summary row: they, and only they, make the
    # difference between the findings' and the summary's batch totals.
    unplaced = sum(
        pence(row["amount_at_risk"]) for row in findings if row["pcn_code"] not in summary
    )
    assert sum(at_risk.values()) == totals["at_risk"] + unplaced

    # exceptions.json: the same rows and figures as the CSV files.
    document = json.loads((out / "exceptions.json").read_text())
    assert document["payments"] == payments_as_json(payments)
    assert [row["pcn_code"] for row in document["summary"]] == list(summary)
    for row in document["summary"]:
        for name in MONEY_SUMMARY:
            assert row[name] == summary[row["pcn_code"]][name]
    assert len(document["lines"]) == len(lines)
    assert [row["amount_allowed"] for row in document["lines"]] == [
        row["amount_allowed"] for row in lines
    ]
    assert [row["amount_at_risk"] for row in document["findings"]] == [
        row["amount_at_risk"] or None for row in findings
    ]

    # exceptions.xlsx, read by calamine: the same money, as numbers.
    book = out / "exceptions.xlsx"
    sheet = pl.read_excel(book, sheet_name="payments", engine="calamine")
    assert sheet.height == len(payments)
    assert [round(value * 100) for value in sheet["payable"].to_list()] == [
        pence(row["payable"]) for row in payments
    ]
    sheet = pl.read_excel(book, sheet_name="summary", engine="calamine")
    assert [round(value * 100) for value in sheet["at_risk"].to_list()] == [
        pence(row["at_risk"]) for row in summary.values()
    ]
    sheet = pl.read_excel(book, sheet_name="lines", engine="calamine")
    assert sheet.height == len(lines)
    assert round(sum(sheet["amount_allowed"].to_list()) * 100) == sum(
        pence(row["amount_allowed"]) for row in lines
    )
    return totals


def pounds(text: str) -> str:
    """summary.csv's `1234.56` as the report shows it: `£1,234.56`."""
    whole, pence_part = text.split(".")
    return f"£{int(whole):,}.{pence_part}"


def assert_pages_show_the_same_money(out: Path) -> None:
    """The index's totals and every PCN page's payment are summary.csv's and payments.csv's."""
    summary = read_csv(out / "summary.csv")
    index = (out / "index.html").read_text(encoding="utf-8")
    table = index[index.index('id="pcn-table"') :]
    foot = table[table.index("<tfoot>") : table.index("</tfoot>")]
    for name in ("claimed", "allowed", "budget_excess", "payable", "at_risk"):
        total = sum(Decimal(row[name]) for row in summary)
        assert pounds(f"{total:.2f}") in foot, name
    review = json.loads((out / "manifest.json").read_text())["review_month"]
    this_month = {
        row["pcn_code"]: row
        for row in read_csv(out / "payments.csv")
        if row["claim_month"] == review
    }
    for row in summary:
        page = (out / "pcn" / f"{row['pcn_code']}.html").read_text(encoding="utf-8")
        letter = page[page.index('class="letter"') : page.index("</section>")]
        payable = this_month.get(row["pcn_code"], {}).get("payable", "0.00")
        assert f"<dt>Payable</dt><dd><strong>{pounds(payable)}</strong></dd>" in letter
        months = page[page.index('id="months"') :]
        assert f"{pounds(row['at_risk'])}</td>" in months[: months.index("</tfoot>")]


def payments_as_json(rows: list[dict]) -> list[dict]:
    return [
        {**row, "lines": int(row["lines"]), "open_findings": int(row["open_findings"])}
        for row in rows
    ]


def test_sample_batch_money_adds_up(tmp_path):
    out = tmp_path / "out"
    assert run_sample(out).returncode == 2  # its REF-01 line: every output written
    totals = assert_money_adds_up(out)
    assert totals == {
        "claimed": 116319229,
        "allowed": 111269799,
        "budget_excess": 5989125,
        "payable": 105280674,
        "at_risk": 11038555,
    }
    summary = {row["pcn_code"]: row for row in read_csv(out / "summary.csv")}
    # The ARRS sum holds: U71004 is paid its £150,000 and no more.
    assert summary["U71004"]["payable"] == "150000.00"
    assert summary["U71004"]["budget_excess"] == "59891.25"
    # Two SCH-01 findings of one row carry its claim once (the first carries it all).
    assert summary["U71005"]["at_risk"] == "6406.35"
    line_33 = [
        row["amount_at_risk"]
        for row in read_csv(out / "exceptions.csv")
        if row["source_file"].endswith("2021-09.csv") and row["source_line"] == "33"
    ]
    assert sorted(line_33) == ["0.00", "2114.46"]
    assert_pages_show_the_same_money(out)
    unknown = [row for row in read_csv(out / "payments.csv") if row["claim_month"] == "unknown"]
    assert [(row["pcn_code"], row["claimed"], row["payable"]) for row in unknown] == [
        ("U71005", "2114.46", "0.00")
    ]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated")
    generate(folder, pcns=30, months=9, seed=3, exception_rate=0.01)
    return folder


def _run_generated(folder: Path, out: Path, agreements: Path):
    return run_cli(
        "run",
        str(folder / "claims"),
        "--pcns",
        str(folder / "pcns.csv"),
        "--agreements",
        str(agreements),
        "--month",
        "2021-12",
        "--out",
        str(out),
    )


def test_generated_batch_with_every_kind_of_finding_adds_up(generated, tmp_path):
    out = tmp_path / "out"
    completed = _run_generated(generated, out, generated / "agreements.csv")
    assert completed.returncode == 1, completed.stderr
    findings = read_csv(out / "exceptions.csv")
    fired = {row["rule_id"] for row in findings}
    assert {"SCH-01", "ELG-01", "ELG-02", "ELG-03", "ELG-04", "ELG-05", "MHP-01"} <= fired
    assert {"CAP-01", "CST-01", "SPL-01", "BUD-01", "BUD-02", "DUP-01", "DUP-02"} <= fired
    assert {"PAR-01", "PAR-02", "TRN-01", "TRN-02", "LIM-01"} <= fired
    assert any(row["status"] == "waived" for row in findings)
    # Lines with several open adjust findings: the waterfall carries claimed - allowed once.
    assert_money_adds_up(out)
    assert_pages_show_the_same_money(out)


def test_a_waived_budget_finding_withholds_nothing(generated, tmp_path):
    first = _run_generated(generated, tmp_path / "first", generated / "agreements.csv")
    assert first.returncode == 1
    budget = [
        row for row in read_csv(tmp_path / "first" / "exceptions.csv") if row["rule_id"] == "BUD-01"
    ]
    code = budget[0]["pcn_code"]
    agreements = tmp_path / "agreements.csv"
    agreements.write_text(
        (generated / "agreements.csv").read_text()
        + f"AG-BUD,BUD-01,{code},,2021-04,2022-03,,Director of finance,budget uplift agreed\n"
    )
    out = tmp_path / "waived"
    assert _run_generated(generated, out, agreements).returncode == 1
    assert_money_adds_up(out)
    summary = {row["pcn_code"]: row for row in read_csv(out / "summary.csv")}
    assert summary[code]["budget_excess"] == "0.00"
    assert summary[code]["payable"] == summary[code]["allowed"]
    waived = [row for row in read_csv(out / "exceptions.csv") if row["rule_id"] == "BUD-01"]
    assert {row["status"] for row in waived if row["pcn_code"] == code} == {"waived"}


def test_adjust_findings_carry_a_waterfall_highest_cap_first(tmp_path):
    # Cost £4,400, maximum £4,735.75, claim £5,000: CAP-01 removes £264.25 down to the
    # maximum, CST-01 the next £335.75 down to the cost; together claimed - allowed.
    result = run_case(tmp_path, [{"amount_claimed": "5000.00"}])
    carried = dict(result.findings.select("rule_id", "amount_at_risk").iter_rows())
    assert carried == {"CAP-01": 26425, "CST-01": 33575}
    assert result.summary["at_risk"].to_list() == [60000]


def test_a_reject_carries_the_claim_and_the_adjust_findings_nothing(tmp_path):
    result = run_case(tmp_path, [{"amount_claimed": "5000.00", "additional_to_baseline": "N"}])
    carried = dict(result.findings.select("rule_id", "amount_at_risk").iter_rows())
    assert carried["ELG-03"] == 500000
    assert sum(carried.values()) == 500000


def test_two_mhps_over_the_number_limit(tmp_path):
    """docs: the README's money example. Two band-6 adult MHPs at 1.0 WTE in October 2021
    for a PCN of 85,000 patients: the second is wholly over the 1.0 WTE limit."""
    mhp = {
        "role": "mental_health_practitioner",
        "afc_band": "6",
        "claim_month": "2021-10",
        "monthly_salary": "3200.00",
        "employer_ni": "350.00",
        "employer_pension": "450.00",
        "amount_claimed": "1870.25",
    }
    result = run_case(
        tmp_path,
        [
            {**mhp, "staff_id": "M1", "employment_start": "2021-04-01"},
            {**mhp, "staff_id": "M2", "employment_start": "2021-09-01"},
        ],
        register_rows=[{"list_size": "85000", "arrs_sum": "100000.00"}],
        month="2021-10",
    )
    october = result.payments.row(0, named=True)
    assert (october["claimed"], october["allowed"], october["payable"]) == (
        374050,
        187025,
        187025,
    )
    assert october["withheld"] == 187025
    limit = result.findings.filter(pl.col("rule_id") == "LIM-01")
    assert limit["amount_at_risk"].to_list() == [187025]


def test_the_json_schema_names_the_new_arrays():
    schema = json.loads((PROJECT / "schemas" / "exceptions.schema.json").read_text())
    assert {"payments", "lines"} <= set(schema["required"])


def test_several_unmet_conditions_of_one_line_follow_training_csv(tmp_path):
    """A link worker missing all three conditions: TRN-01 three times, in the order of
    reference/training.csv, and the first (the Personalised Care Institute training) carries
    the whole claim."""
    worker = {
        "role": "social_prescribing_link_worker",
        "training_status": "not_started",
        "splw_online_programme": "N",
        "peer_support": "N",
        "amount_claimed": "2500.00",
    }
    result = run_case(tmp_path, [worker])
    trn = result.findings.filter(pl.col("rule_id") == "TRN-01")
    assert trn.height == 3
    messages = trn["message"].to_list()
    assert "training_status" in messages[0]
    assert "splw_online_programme" in messages[1] and "peer_support" in messages[2]
    assert trn["amount_at_risk"].to_list() == [250_000, 0, 0]


def test_the_readmes_sample_figures_are_the_sample_runs(tmp_path):
    out = tmp_path / "out"
    assert run_sample(out).returncode == 2
    money = json.loads((out / "manifest.json").read_text())["money"]
    readme = " ".join((PROJECT / "README.md").read_text().split())
    for name in ("claimed", "allowed", "budget_excess", "payable", "at_risk"):
        assert f"£{Decimal(money[name]):,.2f}" in readme, name
