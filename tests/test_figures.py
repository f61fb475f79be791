"""The figures of docs/scheme.md, exact to the penny, and the money each finding carries."""

from __future__ import annotations

import pytest

from tests.helpers import projection, run_case

# A claim above every maximum, for a post that cost more than that.
EXPENSIVE = {"monthly_salary": "9000.00", "amount_claimed": "9999.99"}


def line_money(result, line=2):
    row = result.every_line.filter(result.every_line["source_line"] == line).row(0, named=True)
    return row["amount_claimed"], row["amount_allowed"], row["amount_at_risk"]


@pytest.mark.parametrize(
    ("changes", "register_row", "maximum"),
    [
        ({}, {}, 473575),  # £56,829 full-time, full month: £4,735.75
        (
            {"role": "pharmacy_technician", "wte": "0.8", "employment_start": "2021-06-16"},
            {},
            120380,
        ),  # docs/scheme.md's £1,203.80
        ({"wte": "", "hours_per_week": "30", "employment_start": "2021-06-16"}, {}, 189430),
        ({"claim_month": "2022-02", "employment_start": "2022-02-15"}, {}, 236788),  # 14/28
        ({"claim_month": "2021-06", "employment_end": "2021-06-10"}, {}, 157858),  # leaver
        ({"claim_month": "2021-07", "employment_end": "2021-07-31"}, {}, 473575),  # 31 days
        ({}, {"area": "outer_london"}, 525083),
        (
            {"role": "mental_health_practitioner", "afc_band": "8a"},
            {"area": "inner_london"},
            298067,
        ),
    ],
)
def test_monthly_maximum(tmp_path, changes, register_row, maximum):
    result = run_case(tmp_path, [{**EXPENSIVE, **changes}], [register_row])
    found = result.findings.filter(result.findings["rule_id"] == "CAP-01")
    assert found["amount_allowed"].to_list() == [maximum]


def test_leap_year_february_has_29_days(tmp_path):
    reference = tmp_path / "ref"
    reference.mkdir()
    (reference / "rates.csv").write_text(
        "role,afc_band,area,effective_from,effective_to,annual_maximum\n"
        "clinical_pharmacist,,standard,2023-04-01,2024-03-31,56829.00\n"
    )
    result = run_case(
        tmp_path,
        [{**EXPENSIVE, "claim_month": "2024-02", "employment_start": "2024-02-15"}],
        [{"financial_year": "2023/24"}],
        reference=reference,
    )
    found = result.findings.filter(result.findings["rule_id"] == "CAP-01")
    assert found["amount_allowed"][0] == 244953  # 5,682,900p * 15/29 / 12 = 244,953.45


def test_rates_are_effective_dated_through_reference(tmp_path):
    reference = tmp_path / "ref"
    reference.mkdir()
    (reference / "rates.csv").write_text(
        "role,afc_band,area,effective_from,annual_maximum\n"
        "clinical_pharmacist,,standard,2021-10-01,60000.00\n"
    )
    lines = [{**EXPENSIVE, "claim_month": month} for month in ("2021-09", "2021-10")]
    result = run_case(tmp_path, lines, reference=reference)
    allowed = result.findings.filter(result.findings["rule_id"] == "CAP-01")["amount_allowed"]
    assert allowed.to_list() == [473575, 500000]


def test_allowed_is_the_least_of_claimed_maximum_and_cost(tmp_path):
    result = run_case(tmp_path, [{"amount_claimed": "5000.00"}])  # cost 4,400, max 4,735.75
    assert line_money(result) == (500000, 440000, 60000)
    at_risk = dict(result.findings.select("rule_id", "amount_at_risk").iter_rows())
    assert at_risk == {"CAP-01": 26425, "CST-01": 33575}  # a waterfall: highest cap first


def test_reject_allows_nothing_and_waiver_does_not_reduce(tmp_path):
    result = run_case(tmp_path, [{"training_status": "not_started"}])
    assert line_money(result) == (440000, 0, 440000)
    waived = run_case(
        tmp_path / "w",
        [{"training_status": "not_started"}],
        agreement_rows=[{"rule_id": "TRN-01", "staff_id": "S001"}],
    )
    assert projection(waived, "TRN-01") == [(2, "TRN-01", "waived")]
    assert line_money(waived) == (440000, 440000, 0)


def test_mental_health_practitioner_is_half_cost(tmp_path):
    result = run_case(
        tmp_path,
        [{"role": "mental_health_practitioner", "afc_band": "6", "amount_claimed": "2200.00"}],
    )
    # 50% of £4,400 actual = £2,200.00, above the band 6 maximum £1,870.25
    assert line_money(result) == (220000, 187025, 32975)


def test_sub_contract_fee_excess_comes_off_the_cost(tmp_path):
    result = run_case(
        tmp_path,
        [
            {
                "role": "social_prescribing_link_worker",
                "employment_model": "subcontracted",
                "monthly_salary": "2000.00",
                "employer_ni": "200.00",
                "employer_pension": "200.00",
                "subcontract_fee": "300.00",
                "amount_claimed": "2700.00",
                "splw_online_programme": "Y",
                "peer_support": "Y",
            }
        ],
    )
    assert projection(result) == [(2, "SPL-01", "open")]
    assert line_money(result) == (270000, 260000, 10000)


def test_budget_excess_is_counted_once_per_month(tmp_path):
    lines = [{"claim_month": m} for m in ("2021-04", "2021-05", "2021-06")]
    result = run_case(tmp_path, lines, [{"arrs_sum": "10000.00"}])
    budget = result.findings.filter(result.findings["rule_id"] == "BUD-01")
    # 4,400 a month: 8,800 by May (under), 13,200 by June: June's excess 3,200.00
    assert budget.select("claim_month", "amount_at_risk").rows() == [("2021-06", 320000)]
    assert result.summary["at_risk"].to_list() == [320000]


def test_a_budget_finding_claims_what_its_month_claims_with_rejected_rows(tmp_path):
    # June also holds a row the schema rejects (no staff ID): its claim is the month's too.
    lines = [{"claim_month": m} for m in ("2021-04", "2021-05", "2021-06")]
    lines.append({"claim_month": "2021-06", "staff_id": ""})
    result = run_case(tmp_path, lines, [{"arrs_sum": "10000.00"}])
    budget = result.findings.filter(result.findings["rule_id"] == "BUD-01").row(0, named=True)
    june = result.payments.filter(result.payments["claim_month"] == "2021-06").row(0, named=True)
    assert june["claimed"] == 880000  # the checked line and the rejected row, 4,400 each
    assert (
        (budget["amount_claimed"], budget["amount_allowed"], budget["amount_at_risk"])
        == (
            june["claimed"],
            june["payable"],
            june["budget_excess"],
        )
        == (880000, 120000, 320000)
    )
