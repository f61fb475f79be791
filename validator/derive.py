"""Stage figures with Polars: every value a rule or the money needs, computed once, exactly.

The figures of docs/scheme.md: days in post, effective WTE, the effective-dated pro-rata
monthly maximum (or none: REF-01), the fee that counts, actual and reimbursable cost, the fee
limit and cost cap, each line's share within a number limit, the training conditions of each
line, and the aggregates the rules compare (lines per person and role, a person's total WTE,
year-to-date allowed).
Money is integer pence and WTE integer units; rounding is half-up to the penny. The fields
handed to the engine are exactly those declared in catalogue.RECORD_FIELDS, without nulls.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from validator import money
from validator import values as v
from validator.reference import CONDITION_COLUMNS, Reference

# A sub-contracted link worker's fee contribution is at most £200 per month per WTE
# (docs/scheme.md).
SUBCONTRACT_FEE_CAP_PER_WTE = 20_000


def _beside(lines: pl.DataFrame, table: pl.DataFrame, on: list[str]) -> pl.DataFrame:
    """`lines` with the other columns of `table` (one row per key) looked up by `on`: the
    lookup is joined to the keys alone and set beside the lines, never copying them (a join
    of the lines themselves would copy every column of every line)."""
    found = lines.select(on).join(table, on=on, how="left", maintain_order="left")
    return pl.concat([lines, found.drop(on)], how="horizontal")


def line_fields(
    typed: pl.DataFrame, reference: Reference, register: pl.DataFrame, review: dt.date
) -> pl.DataFrame:
    """Stage B figures for every schema-valid line (and the aggregates DUP-01/02 compare)."""
    month = pl.col("month_date")
    month_last = pl.col("month_last_day")
    in_post_from = pl.max_horizontal(pl.col("employment_start"), month)
    in_post_to = pl.min_horizontal(pl.col("employment_end").fill_null(month_last), month_last)
    days_in_post = ((in_post_to - in_post_from).dt.total_days() + 1).clip(lower_bound=0)
    # A batch spans a few months: their figures are computed once each and joined on.
    months = (
        typed.select(pl.col("claim_month").unique().alias("month_date"))
        .with_columns(month.dt.month_end().alias("month_last_day"))
        .with_columns(
            v.yyyymm(month).alias("claim_month"),
            v.yyyymmdd(month).alias("month_start"),
            v.yyyymmdd(month_last).alias("month_end"),
            month.dt.days_in_month().cast(pl.Int64).alias("days_in_month"),
            v.financial_year_expr(month).alias("financial_year"),
        )
    )
    lines = _beside(typed.rename({"claim_month": "month_date"}), months, ["month_date"])
    lines = _beside(
        lines.with_columns(
            days_in_post.cast(pl.Int64).alias("days_in_post"),
            pl.lit(review.year * 100 + review.month, dtype=pl.Int64).alias("review_month"),
        ).drop("month_last_day"),
        reference.roles.select(
            "role",
            pl.col("title").cast(pl.Categorical).alias("role_title"),  # 4 bytes a line
            v.yyyymmdd(pl.col("claimable_from")).alias("claimable_from"),
            pl.col("claimable_from").alias("claimable_from_date"),
            "cost_share",
        ),
        ["role"],
    )
    lines = (
        _beside(
            lines,
            register.select("pcn_code", "financial_year", "area", "list_size", "arrs_sum"),
            ["pcn_code", "financial_year"],
        )
        .with_columns(
            # A trainee nursing associate's 2-year programme (blank start = employment_start).
            pl.coalesce("programme_start", "employment_start").alias("programme_began"),
            pl.col("area").is_not_null().cast(pl.Int8).alias("register_found"),
            pl.len()
            .over("staff_id", "role", "claim_month")
            .cast(pl.Int32)
            .alias("lines_for_staff_role_month"),
            # A person's effective WTE in the month over all lines and PCNs, exactly (wte
            # units x days in post; full time is WTE_UNITS x days in month): a move between
            # PCNs mid-month is not a duplicate.
            (pl.col("wte_units") * pl.col("days_in_post"))
            .sum()
            .over("staff_id", "claim_month")
            .alias("staff_month_effective"),
            (pl.col("days_in_month") * v.WTE_UNITS).alias("full_time_effective"),
            pl.col("reimbursement_start").is_not_null().cast(pl.Int8).alias("start_given"),
            v.yyyymmdd(pl.col("employment_start")).alias("employment_start_day"),
            v.yyyymmdd(pl.col("month_date").min()).alias("input_first_day"),
        )
        .with_columns(
            pl.col("programme_began").dt.offset_by("24mo").alias("programme_end_date"),
        )
        .with_columns(
            v.yyyymmdd(pl.col("programme_end_date")).alias("programme_end"),
            # For messages: WTE units, rounded down (shown with '…' when inexact).
            (pl.col("staff_month_effective") // pl.col("days_in_month")).alias("staff_month_wte"),
            _rounded_down("staff_month_effective").alias("staff_month_wte_rounded"),
        )
    )
    return lines


def reimbursement_starts(lines: pl.DataFrame, eligible: pl.Expr) -> pl.DataFrame:
    """`lines` with each person's reimbursement_start in the role, in any PCN (the scheme
    counts from the individual's reimbursement, not the PCN's): the earliest of the dates
    given, on any of their lines, and of the claim months of the lines that `eligible`
    holds — those without an open stage-B finding. A claim for a month the person was not
    in post, or before the role could be claimed, was never reimbursed, so its month starts
    no clock (a date the PCN gives on it still counts: it states when reimbursement began).
    A later date given cannot undo claims the input shows, so a deadline never restarts
    with a new PCN (docs/scheme.md, choices). A person with no eligible line in the role
    (whose lines stage C never assesses) takes their first claim month of all."""
    person = ("staff_id", "role")
    # The eligible lines' months (null elsewhere) are made first, as a column: `eligible`
    # evaluated inside the windows below would be evaluated once per person (gigabytes).
    dates = lines.select(
        *person,
        "reimbursement_start",
        "month_date",
        pl.when(eligible).then("month_date").alias("_month"),
    )
    given = pl.col("reimbursement_start").min().over(person)
    month = pl.coalesce(
        pl.col("_month").min().over(person), pl.col("month_date").min().over(person)
    )
    starts = dates.select(pl.min_horizontal(given, month)).to_series()
    return lines.with_columns(starts.alias("reimbursement_start"))


def _conditions(reference: Reference) -> pl.DataFrame:
    """The training conditions (reference/training.csv), numbered in its order."""
    return reference.training.with_row_index("condition_order").select(
        pl.col("condition_order").cast(pl.Int64),
        "role",
        pl.col("level").alias("condition_level"),
        "condition",
        pl.col("column").alias("condition_column"),
        pl.col("accepted").alias("condition_accepted"),
    )


def condition_texts(reference: Reference) -> pl.DataFrame:
    """Each condition's words, column and accepted values, by condition_order (a finding's
    message names them; the records carry only the number)."""
    return _conditions(reference).select(
        "condition_order", "condition", "condition_column", "condition_accepted"
    )


def training_records(lines: pl.DataFrame, where: pl.Expr, reference: Reference) -> pl.DataFrame:
    """One record per stage-C line (those of `lines` that `where` holds) and training
    condition of its role (reference/training.csv, in its order): the value the line records
    in the condition's column, whether that is `recorded` (not blank) and whether it is `met`
    (one of the accepted values).

    Built narrow (a million lines make about a million records): the conditions' words are
    joined to the findings only (condition_texts)."""
    conditions = _conditions(reference)
    accepted = (
        conditions.select(
            "condition_order",
            pl.col("condition_accepted").str.split(";").alias("condition_value"),
            pl.lit(1, dtype=pl.Int8).alias("met"),
        )
        .explode("condition_value")
        .unique()
    )  # an accepted value listed twice is one
    value = pl.lit(None, dtype=pl.String)
    for name in CONDITION_COLUMNS:  # (choices, held as categories: compared as text)
        value = (
            pl.when(pl.col("condition_column") == name)
            .then(pl.col(name).cast(pl.String))
            .otherwise(value)
        )
    # Lazy, so the joins carry only the columns the records keep; the lines come in row
    # order and each line's conditions in training.csv's order, so nothing is sorted.
    return (
        lines.lazy()
        .select("row_no", "role", "month_date", *CONDITION_COLUMNS)
        .filter(where)
        .join(
            conditions.lazy().select(
                "role", "condition_order", "condition_level", "condition_column"
            ),
            on="role",
            maintain_order="left_right",
        )
        .with_columns(value.alias("condition_value"))
        .join(
            accepted.lazy(),
            on=["condition_order", "condition_value"],
            how="left",
            maintain_order="left",
        )
        .with_row_index("check_no")
        .select(
            pl.col("check_no").cast(pl.Int64),
            "row_no",
            pl.col("role").cast(pl.Categorical),  # a million records: 4 bytes each, not text
            v.yyyymm(pl.col("month_date")).alias("claim_month"),
            "condition_level",
            pl.col("condition_value").is_not_null().cast(pl.Int8).alias("recorded"),
            pl.col("met").fill_null(0),
            "condition_value",
            "condition_order",
        )
        .collect()
    )


def _with_rate_band(lines: pl.DataFrame, reference: Reference) -> pl.DataFrame:
    """The band a line's rate is keyed by: its afc_band for roles whose rates have bands."""
    banded = reference.rates.filter(pl.col("afc_band") != "")["role"].unique().to_list()
    return lines.with_columns(
        pl.when(pl.col("role").is_in(banded))
        .then(pl.col("afc_band"))
        .otherwise(pl.lit(""))
        .alias("rate_band")
    )


# What a line's maximum reimbursable amount is looked up by (REF-01 names these when missing).
RATE_KEY = ("role", "rate_band", "area", "month_date")


def _annual_maxima(lines: pl.DataFrame, reference: Reference) -> pl.DataFrame:
    """The annual maximum in force for each (role, band, area, month) the lines need.

    The rate for a month is the latest row whose period contains the month's first day: the
    latest effective_from on or before it, with effective_to blank or on or after it. A
    combination with none keeps a null maximum: its lines get REF-01 (docs/scheme.md).
    """
    key = list(RATE_KEY)
    keys = lines.select(key).unique()
    chosen = (
        keys.join(reference.rates.rename({"afc_band": "rate_band"}), on=key[:3])
        .filter(
            (pl.col("effective_from") <= pl.col("month_date"))
            & (pl.col("effective_to").is_null() | (pl.col("effective_to") >= pl.col("month_date")))
        )
        .sort("effective_from")
        .group_by(key)
        .agg(pl.col("annual_maximum").last())
    )
    return keys.join(chosen, on=key, how="left")


def missing_rates(eligible: pl.DataFrame) -> list[dict]:
    """Every (role, band, area, month) a stage-C line needed but the rates do not hold."""
    return (
        eligible.filter(pl.col("rate_found") == 0)
        .select(
            "role",
            pl.col("rate_band").alias("afc_band"),
            "area",
            pl.col("month_date").dt.strftime("%Y-%m").alias("claim_month"),
        )
        .unique()
        .sort("role", "afc_band", "area", "claim_month")
        .to_dicts()
    )


def missing_rates_message(missing: list[dict]) -> str:
    """The one message a run with missing rates ends with: every combination, and the fix."""
    if not missing:
        return ""
    listed = "\n  ".join(
        f"role {row['role']}, band {row['afc_band'] or '(none)'}, area {row['area']}, "
        f"month {row['claim_month']}"
        for row in missing
    )
    return (
        "no maximum reimbursable amount for (their lines have REF-01 and allow £0.00):\n  "
        + listed
        + "\nAdd rows (role, afc_band, area, effective_from, effective_to, annual_maximum) to "
        "rates.csv in a folder given with --reference DIR, and run again."
    )


# The line columns cost_fields reads.
COST_INPUTS = (
    "row_no",
    "role",
    "afc_band",
    "area",
    "month_date",
    "wte_units",
    "days_in_post",
    "days_in_month",
    "monthly_salary",
    "employer_ni",
    "employer_pension",
    "subcontract_fee",
    "employment_model",
    "cost_share",
    "reimbursement_start",
    "level7_signoff_date",
)


def cost_fields(
    lines: pl.DataFrame, reference: Reference, deadline_extensions: pl.DataFrame
) -> pl.DataFrame:
    """Stage C figures of each of `lines`, in their order: `row_no` and the figures only.
    The lines' own columns stay in `lines`; pl.concat(how="horizontal") sets the two side by
    side without copying either (a copy of nearly every line's columns was the run's
    largest frame)."""
    banded = _with_rate_band(lines.select(COST_INPUTS), reference)
    maxima = _annual_maxima(banded, reference)
    units = pl.col("wte_units")
    days = pl.col("days_in_post")
    days_in_month = pl.col("days_in_month")
    # The fee counts only for a link worker sub-contracted to another provider.
    fee = (
        pl.when(
            (pl.col("role") == "social_prescribing_link_worker")
            & (pl.col("employment_model") == "subcontracted")
        )
        .then(pl.col("subcontract_fee"))
        .otherwise(0)
    )
    actual = pl.col("monthly_salary") + pl.col("employer_ni") + pl.col("employer_pension") + fee
    costed = (
        banded.join(
            maxima,
            on=list(RATE_KEY),
            how="left",
            maintain_order="left",
        )
        .join(deadline_extensions, on="row_no", how="left", maintain_order="left")
        .with_columns(
            pl.col("annual_maximum").is_not_null().cast(pl.Int8).alias("rate_found"),
            v.round_half_up_div(
                pl.col("annual_maximum").fill_null(0) * units * days,
                days_in_month * v.WTE_UNITS * 12,
            ).alias("monthly_maximum"),
            fee.alias("fee"),
            actual.alias("actual_cost"),
            v.round_half_up_div(actual * pl.col("cost_share"), 10_000).alias("reimbursable_cost"),
            v.round_half_up_div(
                pl.lit(SUBCONTRACT_FEE_CAP_PER_WTE) * units * days, days_in_month * v.WTE_UNITS
            ).alias("fee_limit"),
            pl.coalesce(
                "extended_deadline",
                pl.col("reimbursement_start").dt.offset_by("6mo"),
            ).alias("deadline_date"),
        )
        .with_columns(
            (pl.col("fee") - pl.col("fee_limit")).clip(lower_bound=0).alias("fee_excess"),
            v.yyyymmdd(pl.col("deadline_date")).alias("level7_deadline"),
            v.yyyymmdd(pl.col("level7_signoff_date")).fill_null(v.NEVER).alias("level7_signoff"),
        )
        .with_columns(
            (
                pl.col("reimbursable_cost")
                - v.round_half_up_div(pl.col("fee_excess") * pl.col("cost_share"), 10_000)
            ).alias("cost_cap")
        )
    )
    return costed.select(
        name for name in costed.columns if name == "row_no" or name not in COST_INPUTS
    )


def limit_fields(eligible: pl.DataFrame, rejected: pl.Series, reference: Reference) -> pl.DataFrame:
    """LIM-01's figures for the lines of number-limited roles (docs/scheme.md, number limits).

    For each PCN, claim month and limited role, the lines without an open reject are taken
    in order of reimbursement_start, staff_id, source_file and source_line. A line's
    effective WTE is wte x days_in_post / days_in_month, kept exact: within a month every line
    shares days_in_month, so `effective_wte` holds wte units x days in post and the limit is
    max_wte x days_in_month in the same units. `limit_within` is the part of the line inside
    the limit after the lines ahead of it; `limit_cap` is the line's least cap (claimed,
    monthly maximum, cost cap) times within / effective, rounded half-up to the penny.
    """
    effective = pl.col("wte_units") * pl.col("days_in_post")
    group = ["pcn_code", "month_date", "role"]
    limited = (
        # The number-limited roles' lines first: a few of all, so nothing wide is copied.
        eligible.filter(
            pl.col("role").is_in(reference.limits["role"].unique().implode())
            & ~pl.col("row_no").is_in(rejected.implode())
        )
        .select(
            "row_no",
            *group,
            "financial_year",
            "list_size",
            "reimbursement_start",
            "staff_id",
            "source_file",
            "source_line",
            "days_in_month",
            "amount_claimed",
            pl.when(pl.col("rate_found") == 1).then(pl.col("monthly_maximum")).alias("rate_cap"),
            "cost_cap",
            effective.alias("effective_wte"),
        )
        .join(reference.limits, on=["financial_year", "role"])
        .filter(
            (pl.col("list_size_min") <= pl.col("list_size"))
            & (pl.col("list_size") <= pl.col("list_size_max").fill_null(pl.col("list_size")))
        )
        .sort(*group, "reimbursement_start", "staff_id", "source_file", "source_line")
    )
    limit = pl.col("max_wte") * pl.col("days_in_month")
    before = pl.col("effective_wte").cum_sum().over(group) - pl.col("effective_wte")
    least_cap = pl.min_horizontal("amount_claimed", "rate_cap", "cost_cap")
    return (
        limited.with_columns(
            pl.min_horizontal("effective_wte", (limit - before).clip(lower_bound=0)).alias(
                "limit_within"
            ),
            pl.col("effective_wte").sum().over(group).alias("pcn_role_effective"),
        )
        .with_columns(
            pl.when(pl.col("effective_wte") > 0)
            .then(v.round_half_up_div(least_cap * pl.col("limit_within"), pl.col("effective_wte")))
            .otherwise(0)
            .alias("limit_cap"),
            # For messages, in WTE units (rounded down; shown with '…' when inexact).
            (pl.col("pcn_role_effective") // pl.col("days_in_month")).alias("pcn_role_wte"),
            (pl.col("effective_wte") // pl.col("days_in_month")).alias("effective_wte_units"),
            (pl.col("limit_within") // pl.col("days_in_month")).alias("within_wte_units"),
            _rounded_down("pcn_role_effective").alias("pcn_role_wte_rounded"),
            _rounded_down("effective_wte").alias("effective_wte_rounded"),
            _rounded_down("limit_within").alias("within_wte_rounded"),
            v.yyyymm(pl.col("month_date")).alias("claim_month"),
        )
        .select(
            "row_no",
            "claim_month",
            "role",
            "effective_wte",
            "limit_within",
            "limit_cap",
            "max_wte",
            "pcn_role_wte",
            "effective_wte_units",
            "within_wte_units",
            "pcn_role_wte_rounded",
            "effective_wte_rounded",
            "within_wte_rounded",
        )
    )


def _rounded_down(effective: str) -> pl.Expr:
    """Whether an effective WTE (WTE units x days) loses a remainder when it is divided by
    the month's days for a message: a byte flag."""
    return (pl.col(effective) % pl.col("days_in_month") != 0).cast(pl.Int8)


def months_remaining_after(review: dt.date) -> int:
    """Months after the review month up to March: December -> 3, March -> 0, April -> 11."""
    return (3 - review.month) % 12


# The columns of the lines pcn_records reads.
PCN_INPUTS = (
    "pcn_code",
    "financial_year",
    "month_date",
    "amount_claimed",
    "amount_allowed",
    "arrs_sum",
    "register_found",
)


def pcn_records(
    lines: pl.DataFrame,
    reference: Reference,
    register: pl.DataFrame,
    review: dt.date,
) -> dict[str, pl.DataFrame]:
    """PCN-level records for BUD-01 and BUD-02, keyed by what the rules apply to.

    `lines` are all schema-valid lines with their money: the budget counts every line's
    allowed amount.
    """
    review_number = review.year * 100 + review.month
    review_year = v.financial_year(review)
    lines = lines.select(PCN_INPUTS)
    months = money.pcn_months(lines).with_columns(
        v.yyyymm(pl.col("month_date")).alias("claim_month"),
        pl.lit(review_number, dtype=pl.Int64).alias("review_month"),
        pl.col("month_allowed").alias("amount_allowed"),
    )
    remaining = months_remaining_after(review)
    review_year_months = months.filter(
        (pl.col("financial_year") == review_year) & (pl.col("month_date") <= review)
    )
    forecast = (
        review_year_months.group_by("pcn_code")
        .agg(
            pl.col("month_allowed").sum().alias("ytd_allowed"),
            pl.col("month_allowed")
            .filter(pl.col("month_date") == review)
            .sum()
            .alias("review_allowed"),
            pl.col("amount_claimed").filter(pl.col("month_date") == review).sum(),
            pl.col("arrs_sum").first(),
        )
        .with_columns(
            (pl.col("ytd_allowed") + pl.col("review_allowed") * remaining).alias(
                "forecast_allowed"
            ),
            pl.lit(review_number, dtype=pl.Int64).alias("claim_month"),
            pl.lit(review).alias("month_date"),
            pl.lit(remaining, dtype=pl.Int64).alias("months_remaining"),
            pl.col("review_allowed").alias("amount_allowed"),
        )
        .sort("pcn_code")
    )
    return {
        "pcn_months": months,
        "pcn_review_month": forecast,
    }
