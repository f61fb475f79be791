"""The scheme's conditions where the money turns on them (docs/scheme.md): the link-worker fee,
effective-dated rates and missing rates, number limits by effective WTE, per-person
reimbursement start, and training conditions as data."""

from __future__ import annotations

import csv

from tests.helpers import agreements, claims, projection, register, run_case, run_cli


def line_money(result, line=2):
    row = result.every_line.filter(result.every_line["source_line"] == line).row(0, named=True)
    return row["amount_claimed"], row["amount_allowed"]


LINK_WORKER = {
    "role": "social_prescribing_link_worker",
    "training_status": "qualified",
    "splw_online_programme": "Y",
    "peer_support": "Y",
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


def test_a_start_given_on_a_line_never_reimbursed_still_counts(tmp_path):
    """The PCN states on April's line (not additional to baseline: ELG-03) that the paramedic
    was first reimbursed in October 2020: that date sets the deadline (1 April 2021), so the
    May and June claims are past it, though April's own month starts no clock."""
    paramedic = {
        "role": "paramedic",
        "rotational_model": "Y",
        "staff_id": "P1",
        "employment_start": "2020-10-01",
    }
    lines = [
        {
            **paramedic,
            "claim_month": "2021-04",
            "additional_to_baseline": "N",
            "reimbursement_start": "2020-10-01",
        },
        {**paramedic, "claim_month": "2021-05"},
        {**paramedic, "claim_month": "2021-06"},
    ]
    result = run_case(tmp_path, lines, month="2021-06")
    assert projection(result, "PAR-01") == [(3, "PAR-01", "open"), (4, "PAR-01", "open")]


def test_a_part_months_effective_wte_is_marked_where_it_is_cut_short(tmp_path):
    # 20 of October's 31 days: 0.645161... WTE, which no decimal ends (so '…'); the PCN's
    # total 1.145161... likewise. The 0.5 within the limit is exact, and shown so.
    october = {**MHP, "claim_month": "2021-10", "amount_claimed": "800.00"}
    lines = [
        {**october, "wte": "0.5", "reimbursement_start": "2021-04-01"},
        {**october, "staff_id": "S002", "employment_start": "2021-10-12"},
    ]
    result = run_case(tmp_path, lines)
    assert projection(result) == [(3, "LIM-01", "open")]
    message = result.findings["message"][0]
    assert "come to 1.145161… effective WTE" in message
    assert "0.5 of this line's 0.645161… WTE is within it" in message


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


def test_an_extended_deadline_for_someone_who_is_no_paramedic_moves_nothing(tmp_path):
    """Only a paramedic has a Level 7 deadline: an extension agreed for the PCN's pharmacist
    (a typing slip, say) moved no deadline, so it is reported as unmatched."""
    paramedic = {"role": "paramedic", "rotational_model": "Y", "staff_id": "P1"}
    result = run_case(
        tmp_path,
        [{}, {**paramedic, "claim_month": "2021-06", "employment_start": "2021-06-01"}],
        agreement_rows=[
            {"rule_id": "PAR-01", "staff_id": "S001", "extended_deadline": "2022-01-31"},
            {"rule_id": "PAR-01", "staff_id": "P1", "extended_deadline": "2022-01-31"},
        ],
    )
    assert projection(result) == []
    assert result.unmatched_agreements["agreement_id"].to_list() == ["AG-1"]


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


def test_a_claim_never_reimbursed_does_not_start_a_paramedics_clock(tmp_path):
    """A claim for March, a month before the paramedic was in post (ELG-02), was never
    reimbursed: the clock starts with April's claim, so September is within the six months
    (deadline 1 October) and only October, past it, is rejected."""
    paramedic = {
        "role": "paramedic",
        "rotational_model": "Y",
        "staff_id": "P1",
        "employment_start": "2021-04-01",
    }
    lines = [{**paramedic, "claim_month": f"2021-{m:02d}"} for m in range(3, 11)]
    result = run_case(tmp_path, lines, [{"financial_year": "2020/21"}, {}], month="2021-10")
    assert projection(result) == [
        (2, "ELG-01", "open"),
        (2, "ELG-02", "open"),
        (9, "PAR-01", "open"),
    ]


def test_explain_lists_every_roles_training_conditions_and_no_1900():
    explained = run_cli("explain", "TRN-01")
    assert explained.returncode == 0, explained.stderr
    for text in (
        "social_prescribing_link_worker: must: attends the peer support networks",
        "physician_associate: recommended: on the PAMVR",
        "source: PCN Additional Roles overview (Aug 2021), Clinical pharmacist entry",
        "applies to every claim month",
    ):
        assert text in explained.stdout
    for rule_id in ("PAR-01", "MHP-01", "CAP-01"):
        assert "1900" not in run_cli("explain", rule_id).stdout


def test_a_version_1_roles_file_is_refused_with_where_the_columns_moved(tmp_path):
    reference = tmp_path / "ref"
    reference.mkdir()
    (reference / "roles.csv").write_text(
        "role,title,claimable_from,cost_share,training_condition,accepted_statuses\n"
        "dietitian,Dietitian,2020-04-01,1.0,,\n"
    )
    files = claims(tmp_path / "c.csv", {})
    pcns = register(tmp_path / "p.csv")
    completed = run_cli(
        "run",
        str(files),
        "--pcns",
        str(pcns),
        "--reference",
        str(reference),
        "--out",
        str(tmp_path / "out"),
    )
    assert completed.returncode == 2
    assert "training_condition, accepted_statuses have moved" in completed.stderr
    assert "training.csv" in completed.stderr
    assert not (tmp_path / "out").exists()


def test_a_user_training_file_adds_a_condition(tmp_path):
    reference = tmp_path / "ref"
    reference.mkdir()
    (reference / "training.csv").write_text(
        "role,condition,column,accepted,level,source\n"
        "dietitian,registered with the HCPC,training_status,qualified,must,local policy\n"
    )
    result = run_case(tmp_path, [{"role": "dietitian", "training_status": ""}], reference=reference)
    assert projection(result) == [(2, "TRN-01", "open")]
    assert "'registered with the HCPC'" in result.findings["message"][0]


def test_role_titles_and_hours_to_three_decimals_are_read(tmp_path):
    result = run_case(
        tmp_path,
        [
            {
                "role": "Clinical Pharmacist",
                "wte": "",
                "hours_per_week": "9.375",
                "monthly_salary": "875.00",
                "employer_ni": "100.00",
                "employer_pension": "125.00",
                "amount_claimed": "1100.00",
            },
            {
                "role": "  SOCIAL PRESCRIBING LINK WORKER ",
                "staff_id": "S2",
                "training_status": "qualified",
                "splw_online_programme": "y",
                "peer_support": "Y",
                "amount_claimed": "2700.00",
                "monthly_salary": "2300.00",
                "employer_ni": "200.00",
                "employer_pension": "200.00",
            },
        ],
    )
    assert projection(result) == []
    wte = dict(result.every_line.select("source_line", "wte_units").iter_rows())
    assert wte == {2: 750_000, 3: 3_000_000}  # 0.25 and 1.0 WTE, exactly
    assert result.every_line["role"].to_list() == [
        "clinical_pharmacist",
        "social_prescribing_link_worker",
    ]


def test_a_link_worker_enrolled_alone_is_not_paid_and_each_condition_is_named(tmp_path):
    result = run_case(
        tmp_path,
        [
            {
                **LINK_WORKER,
                "training_status": "enrolled",
                "splw_online_programme": "N",
                "peer_support": "",
                "amount_claimed": "2700.00",
            }
        ],
    )
    assert projection(result) == [(2, "TRN-01", "open"), (2, "TRN-03", "open")]
    messages = " ".join(result.findings["message"].to_list())
    assert "online learning programme" in messages and "peer support" in messages
    assert line_money(result) == (270000, 0)


def test_an_mhp_line_with_no_band_and_a_waived_elg_01_does_not_stop_the_run(tmp_path):
    march = {
        **MHP,
        "afc_band": "",
        "claim_month": "2021-03",
        "employment_start": "2021-03-01",
        "amount_claimed": "1500.00",
    }
    files = claims(tmp_path / "c.csv", march, {})
    pcns = register(tmp_path / "p.csv", {"financial_year": "2020/21"}, {})
    agreed = agreements(tmp_path / "a.csv", {"rule_id": "ELG-01", "from_month": "2021-03"})
    out = tmp_path / "out"
    completed = run_cli(
        "run", str(files), "--pcns", str(pcns), "--agreements", str(agreed), "--out", str(out)
    )
    assert completed.returncode == 1, completed.stderr
    with (out / "exceptions.csv").open(encoding="utf-8", newline="") as handle:
        rows = sorted((r["rule_id"], r["status"]) for r in csv.DictReader(handle))
    assert rows == [("ELG-01", "waived"), ("MHP-01", "open")]


def test_paramedic_rules_apply_to_months_before_april_2021(tmp_path):
    """A role made claimable earlier by --reference: PAR-01 and PAR-02 judge those months too
    (the scheme dates the role, not the rules)."""
    reference = tmp_path / "ref"
    reference.mkdir()
    (reference / "roles.csv").write_text(
        "role,title,claimable_from,cost_share\nparamedic,Paramedic,2020-04-01,1.0\n"
    )
    (reference / "rates.csv").write_text(
        "role,afc_band,area,effective_from,effective_to,annual_maximum\n"
        "paramedic,,standard,2020-04-01,2021-03-31,54841.00\n"
    )
    paramedic = {
        "role": "paramedic",
        "claim_month": "2020-10",
        "employment_start": "2020-04-01",
        "reimbursement_start": "2020-04-01",
    }
    result = run_case(tmp_path, [paramedic], [{"financial_year": "2020/21"}], reference=reference)
    assert projection(result) == [(2, "PAR-01", "open"), (2, "PAR-02", "open")]


def test_a_waived_ref_01_is_paid_uncapped_but_the_rate_is_still_named(tmp_path):
    result = run_case(
        tmp_path,
        [{"role": "advanced_practitioner"}],
        [{"area": "inner_london"}],
        agreement_rows=[{"rule_id": "REF-01"}],
    )
    assert projection(result) == [(2, "REF-01", "waived")]
    assert line_money(result) == (440000, 440000)
    assert "area inner_london, month 2021-06" in result.missing_rates_message
