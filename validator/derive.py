"""Stage figures with Polars: every value a rule or the money needs, computed once, exactly.

SPEC section 5: days in post, the effective-dated pro-rata monthly maximum, actual and
reimbursable cost, the sub-contract fee limit, and the aggregates the rules compare (lines per
person and role, a person's total WTE, a PCN's WTE in a limited role, year-to-date allowed).
Money is integer pence and WTE integer units; rounding is half-up to the penny. The fields
handed to the engine are exactly those declared in catalogue.RECORD_FIELDS, without nulls.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from validator import money
from validator import values as v
from validator.errors import ConfigError
from validator.reference import Reference

# SPEC section 1: a sub-contracted link worker's fee contribution is at most £200 per month
# per WTE.
SUBCONTRACT_FEE_CAP_PER_WTE = 20_000


def line_fields(
    typed: pl.DataFrame, reference: Reference, register: pl.DataFrame, review: dt.date
) -> pl.DataFrame:
    """Stage B figures for every schema-valid line (and the aggregates DUP-01/02 compare)."""
    month = pl.col("month_date")
    month_last = pl.col("month_last_day")
    in_post_from = pl.max_horizontal(pl.col("employment_start"), month)
    in_post_to = pl.min_horizontal(pl.col("employment_end").fill_null(month_last), month_last)
    days_in_post = ((in_post_to - in_post_from).dt.total_days() + 1).clip(lower_bound=0)
    accepted = (
        reference.roles.select(
            "role", pl.col("accepted_statuses").str.split(";").alias("training_status")
        )
        .explode("training_status")
        .filter(pl.col("training_status") != "")
        .with_columns(pl.lit(1, dtype=pl.Int64).alias("training_accepted"))
    )
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
    lines = (
        typed.rename({"claim_month": "month_date"})
        .join(months, on="month_date", how="left", maintain_order="left")
        .with_columns(
            days_in_post.cast(pl.Int64).alias("days_in_post"),
            pl.lit(review.year * 100 + review.month, dtype=pl.Int64).alias("review_month"),
        )
        .drop("month_last_day")
        .join(
            reference.roles.select(
                "role",
                pl.col("title").alias("role_title"),
                v.yyyymmdd(pl.col("claimable_from")).alias("claimable_from"),
                pl.col("claimable_from").alias("claimable_from_date"),
                "cost_share",
                "training_condition",
                "accepted_statuses",
            ),
            on="role",
            how="left",
            maintain_order="left",
        )
        .join(accepted, on=["role", "training_status"], how="left", maintain_order="left")
        .join(
            register.select(
                "pcn_code", "financial_year", "pcn_name", "area", "list_size", "arrs_sum"
            ),
            on=["pcn_code", "financial_year"],
            how="left",
            maintain_order="left",
        )
        .with_columns(
            pl.col("training_accepted").fill_null(0),
            pl.col("area").is_not_null().cast(pl.Int64).alias("register_found"),
            pl.len()
            .over("staff_id", "role", "claim_month")
            .cast(pl.Int64)
            .alias("lines_for_staff_role_month"),
            pl.col("wte_units").sum().over("staff_id", "claim_month").alias("staff_month_wte"),
            pl.col("month_date")
            .min()
            .over("pcn_code", "staff_id", "role")
            .alias("first_claim_month"),
        )
        .with_columns(
            pl.coalesce("reimbursement_start", "first_claim_month").alias("reimbursement_start")
        )
    )
    return lines


def _with_rate_band(lines: pl.DataFrame, reference: Reference) -> pl.DataFrame:
    """The band a line's rate is keyed by: its afc_band for roles whose rates have bands."""
    banded = reference.rates.filter(pl.col("afc_band") != "")["role"].unique().to_list()
    return lines.with_columns(
        pl.when(pl.col("role").is_in(banded))
        .then(pl.col("afc_band"))
        .otherwise(pl.lit(""))
        .alias("rate_band")
    )


def _annual_maxima(lines: pl.DataFrame, reference: Reference) -> pl.DataFrame:
    """The annual maximum in force for each (role, band, area, month) the lines need.

    The rate for a month is the row with the latest effective_from on or before its first
    day; a combination with none is a configuration error listing every one missing.
    """
    key = ["role", "rate_band", "area", "month_date"]
    keys = lines.select(key).unique()
    chosen = (
        keys.join(reference.rates.rename({"afc_band": "rate_band"}), on=key[:3])
        .filter(pl.col("effective_from") <= pl.col("month_date"))
        .sort("effective_from")
        .group_by(key)
        .agg(pl.col("annual_maximum").last())
    )
    found = keys.join(chosen, on=key, how="left")
    missing = found.filter(pl.col("annual_maximum").is_null()).sort(key)
    if missing.height:
        listed = "\n  ".join(
            f"role {row['role']}, band {row['rate_band'] or '(none)'}, area {row['area']}, "
            f"month {row['month_date']:%Y-%m}"
            for row in missing.iter_rows(named=True)
        )
        raise ConfigError(
            "no maximum reimbursable amount for:\n  "
            + listed
            + "\nAdd rows (role, afc_band, area, effective_from, annual_maximum) to rates.csv "
            "in a folder given with --reference DIR."
        )
    return found


# The line columns cost_fields reads, and those the run keeps with each eligible line
# (its keys and its claim); the eligible lines carry these and their rules' fields only.
COST_INPUTS = (
    "row_no",
    "pcn_code",
    "staff_id",
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
    "cost_share",
    "reimbursement_start",
    "level7_signoff_date",
    "amount_claimed",
)


def cost_fields(
    eligible: pl.DataFrame, reference: Reference, deadline_extensions: pl.DataFrame
) -> pl.DataFrame:
    """Stage C figures for lines with no open stage-B finding."""
    banded = _with_rate_band(eligible, reference)
    maxima = _annual_maxima(banded, reference)
    units = pl.col("wte_units")
    days = pl.col("days_in_post")
    days_in_month = pl.col("days_in_month")
    actual = (
        pl.col("monthly_salary")
        + pl.col("employer_ni")
        + pl.col("employer_pension")
        + pl.col("subcontract_fee")
    )
    lines = (
        banded.join(
            maxima,
            on=["role", "rate_band", "area", "month_date"],
            how="left",
            maintain_order="left",
        )
        .join(deadline_extensions, on="row_no", how="left", maintain_order="left")
        .with_columns(
            v.round_half_up_div(
                pl.col("annual_maximum") * units * days, days_in_month * v.WTE_UNITS * 12
            ).alias("monthly_maximum"),
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
            (pl.col("subcontract_fee") - pl.col("fee_limit"))
            .clip(lower_bound=0)
            .alias("fee_excess"),
            v.yyyymmdd(pl.col("deadline_date")).alias("level7_deadline"),
            v.yyyymmdd(pl.col("level7_signoff_date")).fill_null(v.NEVER).alias("level7_signoff"),
        )
        .with_columns(
            (
                pl.col("reimbursable_cost")
                - v.round_half_up_div(pl.col("fee_excess") * pl.col("cost_share"), 10_000)
            ).alias("fee_adjusted_cost")
        )
    )
    return lines


def months_remaining_after(review: dt.date) -> int:
    """Months after the review month up to March: December -> 3, March -> 0, April -> 11."""
    return (3 - review.month) % 12


def pcn_records(
    lines: pl.DataFrame,
    reference: Reference,
    register: pl.DataFrame,
    review: dt.date,
) -> dict[str, pl.DataFrame]:
    """PCN-level records for LIM-01, BUD-01 and BUD-02, keyed by what the rules apply to.

    `lines` are all schema-valid lines with their money; the number limit counts only lines
    that reached stage C (`eligible`), the budget counts every line's allowed amount.
    """
    review_number = review.year * 100 + review.month
    review_year = v.financial_year(review)
    lines = lines.select(
        "pcn_code",
        "financial_year",
        "month_date",
        "role",
        "wte_units",
        "amount_claimed",
        "amount_allowed",
        "list_size",
        "arrs_sum",
        "eligible",
        "register_found",
    )
    counted = lines.filter(pl.col("eligible"))
    role_months = (
        counted.group_by("pcn_code", "financial_year", "month_date", "role")
        .agg(
            pl.col("wte_units").sum().alias("pcn_role_wte"),
            pl.col("amount_claimed").sum(),
            pl.col("amount_allowed").sum(),
            pl.col("list_size").first(),
        )
        .join(reference.limits, on=["financial_year", "role"])
        .filter(
            (pl.col("list_size_min") <= pl.col("list_size"))
            & (pl.col("list_size") <= pl.col("list_size_max").fill_null(pl.col("list_size")))
        )
        .with_columns(v.yyyymm(pl.col("month_date")).alias("claim_month"))
        .sort("pcn_code", "month_date", "role")
    )
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
        "pcn_role_months": role_months,
        "pcn_months": months,
        "pcn_review_month": forecast,
    }
