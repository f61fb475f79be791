"""The money model: what each line allows, what the ARRS sum withholds, what is payable, and
which finding carries each pound at risk. Every output reads its figures from here.

In integer pence, as the README's "Outputs" section sets out for an auditor:

- a line allows £0 with an open reject finding, else the least of its claim and the caps of
  its open adjust findings (each adjust rule names its cap column, `allowed_up_to`); a waived
  finding never reduces it;
- a PCN's cumulative budget excess E(month) = max(0, ytd_allowed - ARRS sum), and the month's
  budget_excess = E(month) - E(month before, same financial year);
- a month's payable = its allowed total - its budget_excess where its budget finding (BUD-01)
  is open (waived: nothing is withheld, and the withheld excess shows as 0);
- a line's at-risk amount is carried by exactly one finding: the first open reject carries the
  whole claim; otherwise its open adjust findings carry it as a waterfall, highest cap first;
  an open budget finding carries its month's withheld excess; all else carries 0.

So for every PCN: the findings' amount_at_risk add up to its at_risk = claimed - payable.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from validator import values as v
from validator.load import CLAIM_COLUMNS

UNKNOWN_MONTH = "unknown"  # payments.csv's month for a schema-rejected row whose month is unread
PCN_CODE = CLAIM_COLUMNS["pcn_code"]["pattern"]  # the schema's own: a valid PCN code

# The columns of summary.csv, payments.csv and lines.csv (README "Outputs"), and which of
# them are money.
SUMMARY_COLUMNS = [
    "pcn_code",
    "pcn_name",
    "lines",
    "claimed",
    "allowed",
    "budget_excess",
    "payable",
    "at_risk",
    "arrs_sum",
    "ytd_allowed",
    "open_reject",
    "open_adjust",
    "open_query",
    "warnings",
    "waived",
]
MONEY_SUMMARY = (
    "claimed",
    "allowed",
    "budget_excess",
    "payable",
    "at_risk",
    "arrs_sum",
    "ytd_allowed",
)
PAYMENT_COLUMNS = [
    "pcn_code",
    "pcn_name",
    "claim_month",
    "lines",
    "claimed",
    "allowed",
    "budget_excess",
    "payable",
    "withheld",
    "open_findings",
]
MONEY_PAYMENTS = ("claimed", "allowed", "budget_excess", "payable", "withheld")
LINE_COLUMNS = [
    "source_file",
    "source_line",
    "pcn_code",
    "staff_id",
    "role",
    "claim_month",
    "wte",
    "days_in_post",
    "monthly_maximum",
    "cost_cap",
    "amount_claimed",
    "amount_allowed",
    "amount_at_risk",
    "outcome",
    "rules",
]
MONEY_LINES = ("monthly_maximum", "cost_cap", "amount_claimed", "amount_allowed", "amount_at_risk")


# A line's place and keys in lines.csv.
_LINE_KEYS = ("row_no", "source_file", "source_line", "pcn_code", "staff_id", "role")
# The columns of the checked lines this module reads (line_amounts, ledger).
LINE_INPUTS = (
    *_LINE_KEYS,
    "financial_year",
    "month_date",
    "wte_units",
    "days_in_post",
    "amount_claimed",
    "amount_allowed",
    "arrs_sum",
    "register_found",
)


# The columns of the eligible lines' figures ledger reads (besides the cost cap's).
ELIGIBLE_INPUTS = ("row_no", "rate_found", "monthly_maximum")


def line_caps(caps: dict[str, str], found: pl.DataFrame | None, *frames: pl.DataFrame):
    """(row_no, rule_id, cap): each adjust rule's cap on each line it was found on (`found`:
    line findings with row_no and rule_id; the caps of other lines are never read).
    `caps`: rule ID -> the line column it caps the line to (its `allowed_up_to`), found in
    the first of `frames` that has it. A cap no frame has is an error, never a line paid
    in full in silence."""
    parts = []
    for rule_id, column in caps.items():
        frame = next((frame for frame in frames if column in frame.columns), None)
        if frame is None:
            raise ValueError(f"{rule_id} caps a line by {column}, which no stage computes")
        rows = pl.Series("row_no", [], dtype=pl.Int64)
        if found is not None:
            rows = found.filter(pl.col("rule_id") == rule_id)["row_no"]
        parts.append(
            frame.select(
                "row_no",
                pl.lit(rule_id).alias("rule_id"),
                pl.col(column).cast(pl.Int64).alias("cap"),
            ).filter(pl.col("row_no").is_in(rows.implode()))
        )
    if not parts:
        return pl.DataFrame(schema={"row_no": pl.Int64, "rule_id": pl.String, "cap": pl.Int64})
    return pl.concat(parts)


def _open(found: pl.DataFrame | None) -> pl.DataFrame:
    if found is None:
        return pl.DataFrame(
            schema={"row_no": pl.Int64, "rule_id": pl.String, "severity": pl.String}
        )
    return found.filter(pl.col("status") == "open").select("row_no", "rule_id", "severity")


def line_amounts(
    lines: pl.DataFrame, eligible_row_nos: pl.Series, line_found, caps: pl.DataFrame
) -> pl.DataFrame:
    """`lines` with amount_allowed, amount_at_risk and `eligible` (reached stage C)."""
    open_found = _open(line_found)
    rejected = open_found.filter(pl.col("severity") == "reject")["row_no"].unique()
    # The least cap of each line's open adjust findings (a line without a cap column keeps
    # its claim: a null cap caps nothing).
    capped = (
        open_found.filter(pl.col("severity") == "adjust")
        .join(caps, on=["row_no", "rule_id"])
        .group_by("row_no")
        .agg(pl.col("cap").min().alias("least_cap"))
    )
    money = (
        lines.select("row_no", "amount_claimed")
        .join(capped, on="row_no", how="left", maintain_order="left")
        .select(
            pl.when(pl.col("row_no").is_in(rejected.implode()))
            .then(0)
            .otherwise(pl.min_horizontal("amount_claimed", "least_cap"))
            .cast(pl.Int64)
            .alias("amount_allowed"),
            pl.col("row_no").is_in(eligible_row_nos.implode()).alias("eligible"),
        )
    )
    return lines.with_columns(money).with_columns(
        (pl.col("amount_claimed") - pl.col("amount_allowed")).alias("amount_at_risk")
    )


def pcn_months(lines: pl.DataFrame) -> pl.DataFrame:
    """Per PCN and claim month of a PCN with a register row: claimed, the month's allowed
    total, ytd_allowed since April, the ARRS sum and the month's budget excess
    E(month) - E(month before), where E = max(0, ytd_allowed - arrs_sum)."""
    return (
        lines.filter(pl.col("register_found") == 1)
        .group_by("pcn_code", "financial_year", "month_date")
        .agg(
            pl.col("amount_claimed").sum(),
            pl.col("amount_allowed").sum().alias("month_allowed"),
            pl.col("arrs_sum").first(),
        )
        .sort("pcn_code", "month_date")
        .with_columns(
            pl.col("month_allowed")
            .cum_sum()
            .over("pcn_code", "financial_year")
            .alias("ytd_allowed")
        )
        .with_columns(
            (pl.col("ytd_allowed") - pl.col("arrs_sum")).clip(lower_bound=0).alias("_excess")
        )
        .with_columns(
            (
                pl.col("_excess")
                - pl.col("_excess").shift(1).over("pcn_code", "financial_year").fill_null(0)
            ).alias("month_excess")
        )
        .drop("_excess")
    )


@dataclass
class Ledger:
    """The run's money, every figure once: the findings with their attributed at-risk
    amounts, payments (PCN x claim month), the summary (per PCN) and every input line."""

    findings: pl.DataFrame
    payments: pl.DataFrame
    summary: pl.DataFrame
    lines: pl.DataFrame


TOTALS = ("claimed", "allowed", "budget_excess", "payable", "at_risk")


def totals(rows: pl.DataFrame, names: tuple[str, ...] = TOTALS) -> dict[str, int]:
    """Columns of summary or payments rows added up (the run's money: its PCNs' rows)."""
    return {name: int(rows[name].sum() or 0) for name in names}


def _schema_rows(raw: pl.DataFrame, rejected_rows: pl.Series) -> pl.DataFrame:
    """The schema-rejected rows as lines: claimed as read (0 if unreadable), allowed 0."""
    month = v.month_start("claim_month")
    return raw.filter(pl.col("row_no").is_in(rejected_rows.implode())).select(
        "row_no",
        "source_file",
        "source_line",
        pl.col("pcn_code").fill_null("").str.strip_chars(),
        pl.col("staff_id").fill_null("").str.strip_chars(),
        pl.col("role").fill_null("").str.strip_chars(),
        pl.col("claim_month").fill_null("").str.strip_chars().alias("claim_month"),
        pl.lit(None, dtype=pl.Int64).alias("wte_units"),
        pl.col("wte").fill_null("").str.strip_chars().alias("wte"),
        pl.lit(None, dtype=pl.Int64).alias("days_in_post"),
        pl.lit(None, dtype=pl.Int64).alias("monthly_maximum"),
        pl.lit(None, dtype=pl.Int64).alias("cost_cap"),
        v.money_pence("amount_claimed").fill_null(0).alias("amount_claimed"),
        pl.lit(0, dtype=pl.Int64).alias("amount_allowed"),
        month.dt.strftime("%Y-%m").fill_null(UNKNOWN_MONTH).alias("payment_month"),
        pl.lit(True).alias("schema_rejected"),
    )


def _wte_text(units: pl.Expr) -> pl.Expr:
    """WTE units as a decimal of at most six places, rounded half-up (1.0, 0.8, 0.266667)."""
    micro = v.round_half_up_div(units * 1_000_000, v.WTE_UNITS)
    rest = (micro % 1_000_000).cast(pl.String).str.pad_start(6, "0").str.strip_chars_end("0")
    whole = (micro // 1_000_000).cast(pl.String)
    return pl.when(rest == "").then(whole + ".0").otherwise(whole + "." + rest)


def _checked_rows(lines: pl.DataFrame, eligible: pl.DataFrame, cost_cap: str) -> pl.DataFrame:
    """The checked lines as lines.csv shows them; `cost_cap`: the column of the cost with the
    fee held to its limit."""
    figures = eligible.select(
        "row_no",
        # Blank, not £0.00, where no rate was found (REF-01): there is no maximum to show.
        pl.when(pl.col("rate_found") == 1)
        .then(pl.col("monthly_maximum"))
        .cast(pl.Int64)
        .alias("monthly_maximum"),
        pl.col(cost_cap).cast(pl.Int64).alias("cost_cap"),
    )
    # The figures are aligned to the lines on their own, then set beside the lines' columns:
    # a join would copy every column of every line.
    aligned = lines.select("row_no").join(figures, on="row_no", how="left", maintain_order="left")
    month = v.per_value(lines, "month_date", pl.col("month_date").dt.strftime("%Y-%m"))
    return pl.concat(
        [
            lines.select(
                *_LINE_KEYS,
                month.alias("payment_month"),
                "wte_units",
                v.per_value(lines, "wte_units", _wte_text(pl.col("wte_units"))).alias("wte"),
                "days_in_post",
                "amount_claimed",
                "amount_allowed",
                pl.lit(False).alias("schema_rejected"),
            ).with_columns(
                # The month's text once; as lines.csv's claim_month, like the role and the WTE,
                # a category (4 bytes a line, not 16+); the payment month stays text (joined).
                pl.col("payment_month").cast(pl.Categorical).alias("claim_month"),
                pl.col("role", "wte").cast(pl.Categorical),
            ),
            aligned.drop("row_no"),
        ],
        how="horizontal",
    )


def _attribute(
    findings: pl.DataFrame, claims: pl.DataFrame, caps: pl.DataFrame, months: pl.DataFrame
) -> pl.DataFrame:
    """amount_at_risk of every finding (findings in output order, numbered by `order`).
    `claims`: row_no -> amount_claimed of every input row; `months`: the month_excess
    of each PCN month whose budget finding is open (withheld)."""
    is_open = pl.col("status") == "open"
    # Only the columns the attribution reads: every filter below would otherwise copy each
    # finding's message (at a million lines, a gigabyte more at this step's peak).
    keys = findings.select(
        "order",
        "row_no",
        "rule_id",
        "status",
        "severity",
        "pcn_code",
        "claim_month",
        "amount_claimed",
    )
    by_line = keys.filter(pl.col("row_no").is_not_null()).join(
        claims, on="row_no", how="left", suffix="_line"
    )
    # The first open reject of a line (in output order) carries its whole claim; if a row
    # the schema rejected has only waived findings, its first still carries it: such a
    # row is never payable, whatever is agreed.
    reject = is_open & (pl.col("severity") == "reject")
    carrier = (
        by_line.filter(reject | pl.col("schema_rejected"))
        .sort("row_no", ~reject, "order")
        .group_by("row_no", maintain_order=True)
        .agg(pl.col("order").first())
        .select("order", pl.lit(True).alias("_carries"))
    )
    rejected_rows = by_line.filter(reject | pl.col("schema_rejected"))["row_no"].unique()
    # A line without an open reject: its open adjust findings, highest cap first (then
    # rule ID), each remove max(0, running - cap) from a running amount starting at the claim.
    adjusted = by_line.filter(
        is_open
        & (pl.col("severity") == "adjust")
        & ~pl.col("row_no").is_in(rejected_rows.implode())
    )
    # The caps of these lines only: joined whole, the caps of every line (a row per adjust
    # rule per line) made the run's largest hash table.
    adjusted_caps = caps.filter(pl.col("row_no").is_in(adjusted["row_no"].implode()))
    waterfall = (
        adjusted.join(adjusted_caps, on=["row_no", "rule_id"], how="left")
        .with_columns(pl.col("cap").fill_null(pl.col("amount_claimed_line")))
        .sort("row_no", "cap", "rule_id", "order", descending=[False, True, False, False])
        .with_columns(
            pl.min_horizontal(
                "amount_claimed_line",
                pl.col("cap")
                .cum_min()
                .shift(1)
                .over("row_no")
                .fill_null(pl.col("amount_claimed_line")),
            ).alias("_running")
        )
        .select("order", (pl.col("_running") - pl.col("cap")).clip(lower_bound=0).alias("_cut"))
    )
    budget = (
        keys.filter(pl.col("row_no").is_null() & is_open)
        .join(months, on=["pcn_code", "claim_month", "rule_id"])
        .sort("order")
        .group_by("pcn_code", "claim_month", maintain_order=True)
        .agg(pl.col("order").first(), pl.col("month_excess").first().alias("_excess"))
        .select("order", "_excess")
    )
    at_risk = (
        findings.select("order", "row_no")
        .join(claims, on="row_no", how="left")
        .join(carrier, on="order", how="left")
        .join(waterfall, on="order", how="left")
        .join(budget, on="order", how="left")
        .select(
            "order",
            pl.when(pl.col("_carries"))
            .then(pl.col("amount_claimed"))
            .otherwise(pl.coalesce("_cut", "_excess", pl.lit(0)))
            .cast(pl.Int64)
            .alias("amount_at_risk"),
        )
    )
    return findings.drop("amount_at_risk").join(at_risk, on="order", how="left")


def ledger(
    *,
    findings: pl.DataFrame,
    lines: pl.DataFrame,
    eligible: pl.DataFrame,
    raw: pl.DataFrame,
    rejected_rows: pl.Series,
    caps: pl.DataFrame,
    months: pl.DataFrame,
    budget_rules: dict[str, str],
    register: pl.DataFrame,
    review: dt.date,
    cost_cap: str,
) -> Ledger:
    """The run's money from its findings (in output order, each with its `row_no`; status
    and severity final), its lines with their allowed amounts (line_amounts), the rows the
    schema rejected, and the budget of each PCN month (pcn_months). `budget_rules`: the
    PCN-level adjust rules that withhold a month's excess, rule ID -> the excess column."""
    # Both parts are in row order: merged, not concatenated and sorted (a copy fewer of
    # every line).
    checked = _checked_rows(lines, eligible, cost_cap)
    schema_rows = _schema_rows(raw, rejected_rows).select(
        pl.col(name).cast(dtype) for name, dtype in checked.schema.items()
    )
    every_line = checked.merge_sorted(schema_rows, key="row_no") if schema_rows.height else checked
    if not every_line["row_no"].is_sorted():  # (both parts come in row order; never assumed)
        every_line = every_line.sort("row_no")
    del checked, schema_rows
    claims = every_line.select("row_no", "amount_claimed", "schema_rejected")
    excess_parts = [
        months.select(
            "pcn_code",
            pl.col("month_date").dt.strftime("%Y-%m").alias("claim_month"),
            pl.lit(rule_id).alias("rule_id"),
            pl.col(column).alias("month_excess"),
        )
        for rule_id, column in budget_rules.items()
    ]
    excess = (
        pl.concat(excess_parts)
        if excess_parts
        else pl.DataFrame(
            schema={
                "pcn_code": pl.String,
                "claim_month": pl.String,
                "rule_id": pl.String,
                "month_excess": pl.Int64,
            }
        )
    )
    numbered = findings.with_row_index("order")
    attributed = _attribute(numbered, claims, caps, excess)
    pcn_level = pl.col("row_no").is_null()
    # A PCN-level finding's allowed: what its month allows after what it withholds.
    attributed = attributed.with_columns(
        pl.when(pcn_level)
        .then(pl.col("amount_allowed") - pl.col("amount_at_risk"))
        .otherwise(pl.col("amount_allowed"))
        .alias("amount_allowed")
    )
    is_open = (pl.col("status") == "open") & (pl.col("severity") != "warning")
    withheld = (
        attributed.filter(pcn_level & pl.col("rule_id").is_in(list(budget_rules)))
        .group_by("pcn_code", pl.col("claim_month").alias("payment_month"))
        .agg(pl.col("amount_at_risk").sum().alias("budget_excess"))
    )
    open_rules = (
        attributed.filter(is_open & ~pcn_level)
        .sort("order")
        .group_by("row_no", maintain_order=True)
        .agg(pl.col("rule_id").unique(maintain_order=True).str.join(";").alias("rules"))
    )
    rejected_lines = attributed.filter(
        (pl.col("status") == "open") & (pl.col("severity") == "reject") & ~pcn_level
    )["row_no"].unique()
    # Aligned to the lines on its own and set beside them (a join would copy every line).
    rules = every_line.select("row_no").join(
        open_rules, on="row_no", how="left", maintain_order="left"
    )["rules"]
    every_line = every_line.with_columns(
        rules.fill_null(""),
        (pl.col("amount_claimed") - pl.col("amount_allowed")).alias("amount_at_risk"),
        pl.when(pl.col("schema_rejected"))
        .then(pl.lit("schema_rejected"))
        .when(pl.col("row_no").is_in(rejected_lines.implode()))
        .then(pl.lit("not_payable"))
        .when(pl.col("amount_allowed") < pl.col("amount_claimed"))
        .then(pl.lit("reduced"))
        .otherwise(pl.lit("paid"))
        .cast(pl.Categorical)
        .alias("outcome"),
    )
    finding_month = (
        attributed.filter(is_open)
        .join(every_line.select("row_no", "payment_month"), on="row_no", how="left")
        .select("pcn_code", pl.coalesce("payment_month", "claim_month").alias("payment_month"))
        .group_by("pcn_code", "payment_month")
        .agg(pl.len().cast(pl.Int64).alias("open_findings"))
    )
    names = _names(register, review)
    payments = (
        every_line.select("pcn_code", "payment_month", "amount_claimed", "amount_allowed")
        .filter(pl.col("pcn_code").str.contains(PCN_CODE))
        .group_by("pcn_code", "payment_month")
        .agg(
            pl.len().cast(pl.Int64).alias("lines"),
            pl.col("amount_claimed").sum().alias("claimed"),
            pl.col("amount_allowed").sum().alias("allowed"),
        )
        .join(withheld, on=["pcn_code", "payment_month"], how="left")
        .join(finding_month, on=["pcn_code", "payment_month"], how="left")
        .join(names, on="pcn_code", how="left")
        .with_columns(
            pl.col("budget_excess").fill_null(0),
            pl.col("open_findings").fill_null(0),
            pl.col("pcn_name").fill_null(""),
        )
        .with_columns((pl.col("allowed") - pl.col("budget_excess")).alias("payable"))
        .with_columns((pl.col("claimed") - pl.col("payable")).alias("withheld"))
        .rename({"payment_month": "claim_month"})
        .select(PAYMENT_COLUMNS)
        # `unknown` sorts after every YYYY-MM month.
        .sort("pcn_code", "claim_month")
    )
    # A PCN-level finding's claimed: its month's claim as payments.csv shows it, the rows the
    # schema rejected in that month included (their claims count, and are withheld whole).
    month_claimed = attributed.select("pcn_code", "claim_month").join(
        payments.select("pcn_code", "claim_month", "claimed"),
        on=["pcn_code", "claim_month"],
        how="left",
        maintain_order="left",
    )["claimed"]
    attributed = attributed.with_columns(
        pl.when(pcn_level)
        .then(pl.coalesce(pl.lit(month_claimed), "amount_claimed"))
        .otherwise(pl.col("amount_claimed"))
        .alias("amount_claimed")
    )
    summary = _summary(payments, attributed, lines, register, review, names)
    return Ledger(
        findings=attributed.drop("order"),
        payments=payments,
        summary=summary,
        lines=every_line.select("row_no", "wte_units", *LINE_COLUMNS),
    )


def _names(register: pl.DataFrame, review: dt.date) -> pl.DataFrame:
    """Each PCN's name, from its review year's register row if it has one."""
    review_year = v.financial_year(review)
    return (
        register.sort(pl.col("financial_year") == review_year, "financial_year")
        .group_by("pcn_code")
        .agg(pl.col("pcn_name").last())
    )


def _summary(payments, findings, lines, register, review, names) -> pl.DataFrame:
    """One row per PCN: its payments rows added up, its ytd_allowed as of the review month,
    its ARRS sum for the review year and its findings counted."""
    review_year = v.financial_year(review)
    ytd = (
        lines.select("pcn_code", "financial_year", "month_date", "amount_allowed")
        .filter((pl.col("financial_year") == review_year) & (pl.col("month_date") <= review))
        .group_by("pcn_code")
        .agg(pl.col("amount_allowed").sum().alias("ytd_allowed"))
    )
    open_ = pl.col("status") == "open"
    counts = findings.group_by("pcn_code").agg(
        (open_ & (pl.col("severity") == "reject")).sum().alias("open_reject"),
        (open_ & (pl.col("severity") == "adjust")).sum().alias("open_adjust"),
        (open_ & (pl.col("severity") == "query")).sum().alias("open_query"),
        (open_ & (pl.col("severity") == "warning")).sum().alias("warnings"),
        (pl.col("status") == "waived").sum().alias("waived"),
    )
    sums = register.filter(pl.col("financial_year") == review_year).select("pcn_code", "arrs_sum")
    count_columns = ["open_reject", "open_adjust", "open_query", "warnings", "waived"]
    return (
        payments.group_by("pcn_code")
        .agg(
            pl.col("lines").sum(),
            pl.col("claimed").sum(),
            pl.col("allowed").sum(),
            pl.col("budget_excess").sum(),
            pl.col("payable").sum(),
        )
        .join(names, on="pcn_code", how="left")
        .join(sums, on="pcn_code", how="left")
        .join(ytd, on="pcn_code", how="left")
        .join(counts, on="pcn_code", how="left")
        .with_columns(
            *(pl.col(name).fill_null(0).cast(pl.Int64) for name in count_columns),
            pl.col("pcn_name").fill_null(""),
            pl.col("ytd_allowed").fill_null(0),
            (pl.col("claimed") - pl.col("payable")).alias("at_risk"),
        )
        .select(SUMMARY_COLUMNS)
        .sort("pcn_code")
    )
