"""The scheme's conditions where the money turns on them (docs/scheme.md): the link-worker fee,
effective-dated rates and missing rates, number limits by effective WTE, per-person
reimbursement start, and training conditions as data."""

from __future__ import annotations

import csv

from tests.helpers import claims, projection, register, run_case, run_cli


def line_money(result, line=2):
    row = result.lines.filter(result.lines["source_line"] == line).row(0, named=True)
    return row["amount_claimed"], row["amount_allowed"]


LINK_WORKER = {
    "role": "social_prescribing_link_worker",
    "monthly_salary": "2300.00",
    "employer_ni": "200.00",
    "employer_pension": "200.00",
}


def test_a_practice_employed_link_workers_fee_is_not_paid(tmp_path):
    result = run_case(
        tmp_path, [{**LINK_WORKER, "subcontract_fee": "250.00", "amount_claimed": "2950.00"}]
    )
    assert projection(result) == [(2, "CST-01", "open"), (2, "SPL-02", "open")]
    assert line_money(result) == (295000, 270000)


def test_a_pharmacists_fee_is_not_paid(tmp_path):
    result = run_case(tmp_path, [{"subcontract_fee": "200.00", "amount_claimed": "4600.00"}])
    assert projection(result) == [(2, "CST-01", "open"), (2, "SPL-02", "open")]
    assert line_money(result) == (460000, 440000)


def test_a_sub_contracted_fee_of_exactly_200_pounds_a_wte_is_paid(tmp_path):
    half = {
        **LINK_WORKER,
        "employment_model": "subcontracted",
        "wte": "0.5",
        "monthly_salary": "1150.00",
        "employer_ni": "100.00",
        "employer_pension": "100.00",
        "subcontract_fee": "100.00",
        "amount_claimed": "1450.00",
    }
    result = run_case(tmp_path, [half])
    assert projection(result) == []
    assert line_money(result) == (145000, 145000)


def test_cst_and_spl_each_compare_with_their_own_cost(tmp_path):
    # cost 2,400 + fee 300 = 2,700 reimbursable; the fee limit is 200, so cost_cap is 2,600.
    fee = {
        **LINK_WORKER,
        "monthly_salary": "2000.00",
        "employment_model": "subcontracted",
        "subcontract_fee": "300.00",
    }
    within_cost = run_case(tmp_path / "a", [{**fee, "amount_claimed": "2700.00"}])
    assert projection(within_cost) == [(2, "SPL-01", "open")]
    assert line_money(within_cost) == (270000, 260000)
    above_cost = run_case(tmp_path / "b", [{**fee, "amount_claimed": "2750.00"}])
    assert projection(above_cost) == [(2, "CST-01", "open"), (2, "SPL-01", "open")]
    assert line_money(above_cost) == (275000, 260000)


def rates(
    folder, *rows: str, header="role,afc_band,area,effective_from,effective_to,annual_maximum"
):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rates.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def test_a_rate_applies_only_within_its_period(tmp_path):
    reference = rates(
        tmp_path / "ref",
        "clinical_pharmacist,,standard,2022-04-01,2022-06-30,60000.00",
    )
    months = ("2022-04", "2022-06", "2022-07")
    lines = [
        {"claim_month": m, "monthly_salary": "9000.00", "amount_claimed": "9900.00"} for m in months
    ]
    result = run_case(
        tmp_path, lines, [{"financial_year": "2022/23"}], month="2022-07", reference=reference
    )
    found = result.findings.select("rule_id", "claim_month", "amount_allowed").sort("claim_month")
    assert found.rows() == [
        ("CAP-01", "2022-04", 500000),
        ("CAP-01", "2022-06", 500000),
        ("REF-01", "2022-07", 0),
    ]
    assert result.missing_rates == [
        {
            "role": "clinical_pharmacist",
            "afc_band": "",
            "area": "standard",
            "claim_month": "2022-07",
        }
    ]


def test_missing_rates_do_not_stop_the_run_and_exit_2_with_one_message(tmp_path):
    practitioner = {"role": "advanced_practitioner", "staff_id": "AP1"}
    files = claims(
        tmp_path / "c.csv",
        {},
        practitioner,
        {**practitioner, "pcn_code": "U10002", "staff_id": "AP2"},
        {**practitioner, "claim_month": "2021-07", "staff_id": "AP3"},
    )
    pcns = register(
        tmp_path / "p.csv", {"area": "outer_london"}, {"pcn_code": "U10002", "area": "inner_london"}
    )
    out = tmp_path / "out"
    completed = run_cli("run", str(files), "--pcns", str(pcns), "--out", str(out))
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.count("no maximum reimbursable amount") == 1
    for combination in (
        "role advanced_practitioner, band (none), area inner_london, month 2021-06",
        "role advanced_practitioner, band (none), area outer_london, month 2021-06",
        "role advanced_practitioner, band (none), area outer_london, month 2021-07",
    ):
        assert combination in completed.stderr
    assert "rates.csv" in completed.stderr and "--reference" in completed.stderr
    with (out / "exceptions.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["source_line"], r["rule_id"], r["amount_allowed"]) for r in rows) == [
        ("3", "REF-01", "0.00"),
        ("4", "REF-01", "0.00"),
        ("5", "REF-01", "0.00"),
    ]
    assert (out / "summary.csv").exists() and (out / "index.html").exists()


def test_a_rates_file_without_effective_to_is_open_ended(tmp_path):
    reference = rates(
        tmp_path / "ref",
        "advanced_practitioner,,outer_london,2021-04-01,70000.00",
        header="role,afc_band,area,effective_from,annual_maximum",
    )
    result = run_case(
        tmp_path,
        [{"role": "advanced_practitioner", "claim_month": "2022-05"}],
        [{"financial_year": "2022/23", "area": "outer_london"}],
        reference=reference,
    )
    assert projection(result) == []


MHP = {"role": "mental_health_practitioner", "afc_band": "6"}


def test_a_line_half_beyond_the_limit_is_paid_half(tmp_path):
    lines = [
        {**MHP, "wte": "0.5", "reimbursement_start": "2021-04-01", "amount_claimed": "900.00"},
        {
            **MHP,
            "staff_id": "S002",
            "reimbursement_start": "2021-05-01",
            "amount_claimed": "1500.00",
        },
    ]
    result = run_case(tmp_path, lines)
    assert projection(result) == [(3, "LIM-01", "open")]
    assert line_money(result, 3) == (150000, 75000)
    message = result.findings["message"][0]
    assert "1.5 effective WTE" in message and "0.5 of this line's 1 WTE" in message


def test_a_leaver_and_a_starter_in_one_month_are_one_wte(tmp_path):
    lines = [
        {**MHP, "claim_month": "2021-10", "employment_end": "2021-10-15"},
        {**MHP, "claim_month": "2021-10", "staff_id": "S002", "employment_start": "2021-10-16"},
    ]
    result = run_case(tmp_path, [{**line, "amount_claimed": "800.00"} for line in lines])
    assert projection(result) == []


def test_the_worked_example_of_the_scheme_document_to_the_penny(tmp_path):
    """docs/scheme.md's worked example, through the real CLI: two adult MHPs at band 6 for
    October 2021 at a PCN limited to 1.0 WTE; the later starter is wholly beyond the limit."""
    october = {
        **MHP,
        "claim_month": "2021-10",
        "monthly_salary": "3200.00",
        "employer_ni": "350.00",
        "employer_pension": "450.00",
        "amount_claimed": "1870.25",
    }
    files = claims(
        tmp_path / "c.csv",
        # The first in post is listed second and has the later staff_id: order is by start.
        {
            **october,
            "staff_id": "M2",
            "employment_start": "2021-09-01",
            "reimbursement_start": "2021-09-01",
        },
        {
            **october,
            "staff_id": "M9",
            "employment_start": "2021-04-01",
            "reimbursement_start": "2021-04-01",
        },
    )
    pcns = register(tmp_path / "p.csv", {"list_size": "85000", "arrs_sum": "100000.00"})
    out = tmp_path / "out"
    completed = run_cli(
        "run", str(files), "--pcns", str(pcns), "--month", "2021-10", "--out", str(out)
    )
    assert completed.returncode == 1, completed.stderr
    with (out / "exceptions.csv").open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["claim_month"] == "2021-10"]
    assert [
        (r["rule_id"], r["staff_id"], r["amount_claimed"], r["amount_allowed"], r["amount_at_risk"])
        for r in rows
    ] == [("LIM-01", "M2", "1870.25", "0.00", "1870.25")]
    with (out / "summary.csv").open(encoding="utf-8", newline="") as handle:
        (summary,) = list(csv.DictReader(handle))
    assert summary["claimed"] == "3740.50"
    assert summary["allowed"] == "1870.25"
    assert summary["at_risk"] == "1870.25"


def test_an_agreement_that_covered_a_finding_is_used_even_when_another_is_named(tmp_path):
    result = run_case(
        tmp_path,
        [{"training_status": "not_started"}],
        agreement_rows=[
            {"rule_id": "TRN-01"},  # AG-1, the PCN as a whole: named on the finding
            {"rule_id": "TRN-01", "staff_id": "S001"},  # AG-2 covers it too
            {"rule_id": "TRN-01", "staff_id": "S999"},  # AG-3 covers nothing
        ],
    )
    assert result.findings.filter(result.findings["rule_id"] == "TRN-01")[
        "agreement_id"
    ].to_list() == ["AG-1"]
    assert result.unmatched_agreements["agreement_id"].to_list() == ["AG-3"]


def test_a_paramedics_deadline_does_not_restart_in_a_new_pcn(tmp_path):
    paramedic = {"role": "paramedic", "rotational_model": "Y", "staff_id": "P1"}
    lines = [
        {**paramedic, "claim_month": f"2021-{m:02d}", "employment_start": "2021-04-01"}
        for m in range(4, 10)
    ] + [
        {
            **paramedic,
            "pcn_code": "U10002",
            "claim_month": "2021-10",
            "employment_start": "2021-10-01",
        }
    ]
    result = run_case(tmp_path, lines, [{}, {"pcn_code": "U10002"}], month="2021-10")
    assert projection(result) == [(8, "PAR-01", "open")]
