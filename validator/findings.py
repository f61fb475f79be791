"""Findings as the outputs show them: keys, money, status and a message that explains itself.

Every finding says where (file, line and keys, or PCN and month), what, the expected against
the actual figures, and the rule (STYLE.md point 7). Money per finding follows SPEC section 5:
a reject puts the whole claim at risk, an adjust the excess over its cap, a query or warning
nothing; totals are taken per line so the same pounds are never counted twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import polars as pl

from validator import values as v
from validator.catalogue import Catalogue

_KEYS = ["finding_id", "rule_id", "severity", "status", "agreement_id"]


def _month_text(value: dt.date | None) -> str:
    return value.strftime("%b %Y") if value else ""


def _share_text(parts: int | None) -> str:
    return f"{parts / 100:g}%" if parts is not None else ""


def _with_article(title: str) -> str:
    return ("an " if title[:1] in "aeiou" else "a ") + title if title else ""


def _from_day(row: dict) -> str:
    """' from 16 Jun 2021' / ' to 10 Jun 2021' for a part month in post, else ''."""
    month, start, end = row["month_date"], row["employment_start"], row["employment_end"]
    text = f" from {v.display_date(start)}" if start > month else ""
    if end is not None and end < month.replace(day=row["days_in_month"]):
        text += f" to {v.display_date(end)}"
    return text


def _deadline_basis(row: dict) -> str:
    if row.get("extended_deadline"):
        return f"the extended deadline agreed in {row['deadline_agreement']}"
    started = v.display_date(row.get("reimbursement_start"))
    return f"six months after reimbursement started on {started}"


def _title(row: dict) -> str:
    return (row.get("role_title") or row.get("role") or "").lower()


def _wte(name: str) -> Callable[[dict], str]:
    return lambda row: v.display_wte(row[name]) if row.get(name) is not None else ""


def _pounds(name: str) -> Callable[[dict], str]:
    return lambda row: v.display_pounds(row.get(name))


def _count(row: dict) -> str:
    return f"{row['list_size']:,}" if row.get("list_size") is not None else ""


# Message fields for a finding on a claim line, each built only if its template names it.
_LINE_FIELDS: dict[str, Callable[[dict], str]] = {
    "where": lambda row: (
        f"{row['source_file']} line {row['source_line']} "
        f"({row['pcn_code']} / {row['staff_id']} / {row['month_date']:%Y-%m})"
    ),
    "role_title": _title,
    "a_role": lambda row: _with_article(_title(row)),
    "review_month": lambda row: _month_text(_month_of(row.get("review_month"))),
    "wte": _wte("wte_units"),
    "from_day": _from_day,
    "claim_month": lambda row: _month_text(row["month_date"]),
    "claimed": _pounds("amount_claimed"),
    "monthly_maximum": _pounds("monthly_maximum"),
    "annual_maximum": _pounds("annual_maximum"),
    "actual_cost": _pounds("actual_cost"),
    "reimbursable_cost": _pounds("reimbursable_cost"),
    "share": lambda row: _share_text(row.get("cost_share")),
    "fee": _pounds("subcontract_fee"),
    "fee_limit": _pounds("fee_limit"),
    "claimable_from": lambda row: v.display_date(row.get("claimable_from_date")),
    "employment_start": lambda row: v.display_date(row["employment_start"]),
    "employment_end": lambda row: (
        v.display_date(row["employment_end"]) if row["employment_end"] else "no end"
    ),
    "financial_year": lambda row: row.get("financial_year") or "",
    "afc_band": lambda row: row.get("afc_band") or "(blank)",
    "reimbursement_start": lambda row: v.display_date(row.get("reimbursement_start")),
    "deadline": lambda row: v.display_date(row.get("deadline_date")),
    "deadline_basis": _deadline_basis,
    "signoff": lambda row: (
        v.display_date(row["level7_signoff_date"]) if row.get("level7_signoff_date") else "none"
    ),
    "rotational_model": lambda row: row.get("rotational_model") or "",
    "training_status": lambda row: row.get("training_status") or "",
    "accepted_statuses": lambda row: (row.get("accepted_statuses") or "").replace(";", ", "),
    "duplicate_lines": lambda row: str(row.get("lines_for_staff_role_month") or ""),
    "staff_total_wte": _wte("staff_month_wte"),
    "list_size": _count,
    "arrs_sum": _pounds("arrs_sum"),
}

# Message fields for a PCN-level finding.
_PCN_FIELDS: dict[str, Callable[[dict], str]] = {
    "where": lambda row: f"{row['pcn_code']} {row['month_date']:%Y-%m}",
    "role_title": lambda row: (row.get("role") or "").replace("_", " "),
    "claim_month": lambda row: _month_text(row["month_date"]),
    "review_month": lambda row: _month_text(row["review"]),
    "financial_year": lambda row: row.get("financial_year") or v.financial_year(row["month_date"]),
    "pcn_role_wte": _wte("pcn_role_wte"),
    "max_wte": _wte("max_wte"),
    "list_size": _count,
    "ytd_allowed": _pounds("ytd_allowed"),
    "arrs_sum": _pounds("arrs_sum"),
    "excess": _pounds("month_excess"),
    "month_allowed": lambda row: v.display_pounds(
        row.get("month_allowed") or row.get("review_allowed")
    ),
    "forecast": _pounds("forecast_allowed"),
    "months_remaining": lambda row: str(row.get("months_remaining") or 0),
    "claimed": _pounds("amount_claimed"),
}


class _Context(dict):
    """The fields of one message, each built the first time the template asks for it."""

    def __init__(self, row: dict, fields: dict[str, Callable[[dict], str]]) -> None:
        super().__init__()
        self.row = row
        self.fields = fields

    def __missing__(self, key: str) -> str:
        build = self.fields.get(key)
        value = build(self.row) if build else ""
        self[key] = value
        return value


def _month_of(number: int | None) -> dt.date | None:
    return dt.date(number // 100, number % 100, 1) if number else None


def _shown(value: str, limit: int = 80) -> str:
    """A value as read, cut short if it is long (a 1 MB cell must not make a 1 MB message)."""
    if len(value) <= limit:
        return value
    return f"{value[:60]}… ({len(value):,} characters)"


def _schema_problem(row: dict) -> str:
    column, value = row["column"], _shown(row["value"] or "")
    if not column:
        return row["problem"]
    if value.strip():
        return f"column {column} is '{value}'; {row['problem']}"
    return f"column {column} is blank; {row['problem']}"


# Message fields for an SCH-01 finding: keys as read, since they may not parse.
_SCHEMA_FIELDS: dict[str, Callable[[dict], str]] = {
    "where": lambda row: (
        f"{row['source_file']} line {row['source_line']} ("
        + " / ".join(row[name] or "?" for name in ("pcn_code", "staff_id", "raw_claim_month"))
        + ")"
    ),
    "column": lambda row: row["column"] or "(whole row)",
    "value": lambda row: _shown(row["value"] or ""),
    "problem": _schema_problem,
}


# Every column a message field reads; only these are handed to the templates.
_MESSAGE_COLUMNS = {
    "accepted_statuses",
    "actual_cost",
    "afc_band",
    "amount_claimed",
    "annual_maximum",
    "arrs_sum",
    "claimable_from_date",
    "column",
    "cost_share",
    "days_in_month",
    "deadline_agreement",
    "deadline_date",
    "employment_end",
    "employment_start",
    "extended_deadline",
    "fee_limit",
    "financial_year",
    "forecast_allowed",
    "level7_signoff_date",
    "lines_for_staff_role_month",
    "list_size",
    "max_wte",
    "month_allowed",
    "month_date",
    "month_excess",
    "monthly_maximum",
    "months_remaining",
    "pcn_code",
    "pcn_role_wte",
    "problem",
    "raw_claim_month",
    "reimbursable_cost",
    "reimbursement_start",
    "review_allowed",
    "review_month",
    "role",
    "role_title",
    "rotational_model",
    "rule_id",
    "source_file",
    "source_line",
    "staff_id",
    "staff_month_wte",
    "subcontract_fee",
    "training_status",
    "value",
    "wte_units",
    "ytd_allowed",
}


def _render(catalogue: Catalogue, frame: pl.DataFrame, fields: dict, **extra) -> pl.Series:
    templates = {rule.id: rule.message for rule in catalogue.rules}
    narrow = frame.select(name for name in frame.columns if name in _MESSAGE_COLUMNS)
    return pl.Series(
        "message",
        [
            templates[row["rule_id"]].format_map(_Context({**row, **extra}, fields))
            for row in narrow.iter_rows(named=True)
        ],
        pl.String,
    )


def finalise(
    *,
    schema_found: pl.DataFrame,
    line_found: pl.DataFrame | None,
    pcn_found: pl.DataFrame | None,
    pcn_records: dict[str, pl.DataFrame],
    lines: pl.DataFrame,
    eligible: pl.DataFrame,
    raw: pl.DataFrame,
    failures: pl.DataFrame,
    catalogue: Catalogue,
    review: dt.date,
) -> pl.DataFrame:
    """Every finding with its figures and message, in the output order of SPEC section 7."""
    parts = []

    schema = (
        schema_found.join(
            failures.with_row_index("failure_no").with_columns(pl.col("failure_no").cast(pl.Int64)),
            on=["failure_no", "row_no"],
        )
        .join(
            raw.select(
                "row_no",
                "source_file",
                "source_line",
                pl.col("claim_month").fill_null("").alias("raw_claim_month"),
                pl.col("staff_name").fill_null("").str.strip_chars(),
                v.money_pence("amount_claimed").alias("amount_claimed"),
            ),
            on="row_no",
        )
        .with_columns(
            pl.col("amount_claimed").alias("amount_at_risk"),
            pl.when(pl.col("amount_claimed").is_not_null()).then(0).alias("amount_allowed"),
        )
    )
    if schema.height:
        parts.append(
            schema.with_columns(
                _render(catalogue, schema, _SCHEMA_FIELDS),
                pl.col("raw_claim_month").alias("claim_month"),
            )
        )

    if line_found is not None and line_found.height:
        caps = {rule.id: rule.allowed_up_to for rule in catalogue.rules if rule.allowed_up_to}
        cost_columns = [c for c in eligible.columns if c not in lines.columns] + ["row_no"]
        detail = (
            line_found.drop("pcn_code", "staff_id", "role", "month_date")
            .join(lines, on="row_no")
            .join(eligible.select(cost_columns), on="row_no", how="left")
        )
        cap = pl.lit(None, dtype=pl.Int64)
        for rule_id, cap_field in caps.items():
            cap = pl.when(pl.col("rule_id") == rule_id).then(pl.col(cap_field)).otherwise(cap)
        detail = detail.with_columns(
            pl.when(pl.col("severity") == "reject")
            .then(pl.col("amount_claimed"))
            .when(pl.col("severity") == "adjust")
            .then((pl.col("amount_claimed") - cap).clip(lower_bound=0))
            .otherwise(0)
            .alias("amount_at_risk_own"),
        )
        parts.append(
            detail.with_columns(
                _render(catalogue, detail, _LINE_FIELDS),
                pl.col("month_date").dt.strftime("%Y-%m").alias("claim_month"),
                pl.col("amount_at_risk_own").alias("amount_at_risk"),
            )
        )

    if pcn_found is not None and pcn_found.height:
        excess_fields = {
            rule.id: rule.at_risk_field for rule in catalogue.rules if rule.at_risk_field
        }
        for applies_to, records in pcn_records.items():
            found = pcn_found.filter(pl.col("applies_to") == applies_to)
            if not found.height:
                continue
            detail = found.select(*_KEYS, "record_no").join(
                records.with_row_index("record_no").with_columns(
                    pl.col("record_no").cast(pl.Int64)
                ),
                on="record_no",
            )
            at_risk = pl.lit(0, dtype=pl.Int64)
            for rule_id, excess_field in excess_fields.items():
                if excess_field in detail.columns:
                    at_risk = (
                        pl.when(pl.col("rule_id") == rule_id)
                        .then(pl.col(excess_field))
                        .otherwise(at_risk)
                    )
            detail = detail.with_columns(at_risk.alias("amount_at_risk")).with_columns(
                (pl.col("amount_allowed") - pl.col("amount_at_risk")).alias("amount_allowed"),
                pl.lit("").alias("staff_id"),
                pl.lit(None, dtype=pl.String).alias("source_file"),
                pl.lit(None, dtype=pl.Int64).alias("source_line"),
                (pl.col("role") if "role" in detail.columns else pl.lit("")).alias("role"),
            )
            parts.append(
                detail.with_columns(
                    _render(catalogue, detail, _PCN_FIELDS, review=review),
                    pl.col("month_date").dt.strftime("%Y-%m").alias("claim_month"),
                )
            )

    columns = {
        "rule_id": pl.String,
        "severity": pl.String,
        "status": pl.String,
        "agreement_id": pl.String,
        "pcn_code": pl.String,
        "staff_id": pl.String,
        "role": pl.String,
        "claim_month": pl.String,
        "source_file": pl.String,
        "source_line": pl.Int64,
        "amount_claimed": pl.Int64,
        "amount_allowed": pl.Int64,
        "amount_at_risk": pl.Int64,
        "message": pl.String,
        "row_no": pl.Int64,
        "column": pl.String,
        "staff_name": pl.String,
    }
    selected = [
        part.with_columns(
            *(
                pl.lit(None, dtype=dtype).alias(name)
                for name, dtype in columns.items()
                if name not in part.columns
            )
        ).select([pl.col(name).cast(dtype) for name, dtype in columns.items()])
        for part in parts
    ]
    if not selected:
        return pl.DataFrame(schema=columns)
    return (
        pl.concat(selected)
        .with_columns(
            pl.col(name).fill_null("")
            for name in ("pcn_code", "staff_id", "role", "claim_month", "agreement_id")
        )
        .sort(
            "pcn_code",
            "claim_month",
            "staff_id",
            "rule_id",
            "source_file",
            "source_line",
            "column",
            "message",
            nulls_last=False,
        )
    )


def summary(
    lines: pl.DataFrame,
    raw: pl.DataFrame,
    failures: pl.DataFrame,
    findings: pl.DataFrame,
    register: pl.DataFrame,
    review: dt.date,
) -> pl.DataFrame:
    """One row per PCN (SPEC section 7); lines rejected by the schema count as claimed."""
    review_year = v.financial_year(review)
    rejected = (
        raw.filter(pl.col("row_no").is_in(failures["row_no"].implode()))
        .select(
            pl.col("pcn_code").str.strip_chars(),
            v.money_pence("amount_claimed").fill_null(0).alias("amount_claimed"),
            pl.lit(0, dtype=pl.Int64).alias("amount_allowed"),
            pl.lit(0, dtype=pl.Int64).alias("ytd"),
        )
        .filter(pl.col("pcn_code").str.contains(r"^U\d{5}$"))
    )
    checked = lines.select(
        "pcn_code",
        "amount_claimed",
        "amount_allowed",
        pl.when((pl.col("financial_year") == review_year) & (pl.col("month_date") <= review))
        .then(pl.col("amount_allowed"))
        .otherwise(0)
        .alias("ytd"),
    )
    per_line = (
        pl.concat([checked, rejected])
        .group_by("pcn_code")
        .agg(
            pl.len().cast(pl.Int64).alias("lines"),
            pl.col("amount_claimed").sum().alias("claimed"),
            pl.col("amount_allowed").sum().alias("allowed"),
            pl.col("ytd").sum().alias("ytd_allowed"),
        )
    )
    open_ = pl.col("status") == "open"
    counts = (
        findings.filter(pl.col("pcn_code") != "")
        .group_by("pcn_code")
        .agg(
            (open_ & (pl.col("severity") == "reject")).sum().alias("open_reject"),
            (open_ & (pl.col("severity") == "adjust")).sum().alias("open_adjust"),
            (open_ & (pl.col("severity") == "query")).sum().alias("open_query"),
            (open_ & (pl.col("severity") == "warning")).sum().alias("warnings"),
            (pl.col("status") == "waived").sum().alias("waived"),
            pl.col("amount_at_risk")
            .filter(open_ & (pl.col("severity") == "adjust") & pl.col("source_line").is_null())
            .sum()
            .alias("budget_at_risk"),
        )
    )
    names = (
        register.sort(pl.col("financial_year") == review_year, "financial_year")
        .group_by("pcn_code")
        .agg(pl.col("pcn_name").last())
    )
    sums = register.filter(pl.col("financial_year") == review_year).select("pcn_code", "arrs_sum")
    count_columns = ["open_reject", "open_adjust", "open_query", "warnings", "waived"]
    return (
        per_line.join(counts, on="pcn_code", how="left")
        .join(names, on="pcn_code", how="left")
        .join(sums, on="pcn_code", how="left")
        .with_columns(
            *(pl.col(name).fill_null(0).cast(pl.Int64) for name in count_columns),
            pl.col("pcn_name").fill_null(""),
            (pl.col("claimed") - pl.col("allowed") + pl.col("budget_at_risk").fill_null(0)).alias(
                "at_risk"
            ),
        )
        .select(
            "pcn_code",
            "pcn_name",
            "lines",
            "claimed",
            "allowed",
            "at_risk",
            "arrs_sum",
            "ytd_allowed",
            *count_columns,
        )
        .sort("pcn_code")
    )
