"""Findings as the outputs show them: keys, money, status and a message that explains itself.

Every finding says where (file, line and keys, or PCN and month), what, the expected against
the actual figures, and the rule (STYLE.md point 7). Which finding carries the money at risk
is money.py's to decide: here each finding has its line's (or PCN month's) claimed and
allowed amounts only.
"""

from __future__ import annotations

import datetime as dt
import string
from collections.abc import Callable

import polars as pl

from validator import values as v
from validator.catalogue import Catalogue

_KEYS = ["finding_id", "rule_id", "severity", "status", "agreement_id"]


class _Columns:
    """A frame's columns for message fields: a column it lacks reads as null."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)

    def __call__(self, name: str, dtype: pl.DataType | type = pl.String) -> pl.Expr:
        return pl.col(name) if name in self.names else pl.lit(None, dtype=dtype)


_Field = Callable[[_Columns], pl.Expr]


def _title(c: _Columns) -> pl.Expr:
    return pl.coalesce(c("role_title"), c("role"), pl.lit("")).str.to_lowercase()


def _with_article(title: pl.Expr) -> pl.Expr:
    article = pl.when(title.str.contains("^[aeiou]")).then(pl.lit("an ")).otherwise(pl.lit("a "))
    return pl.when(title == "").then(pl.lit("")).otherwise(article + title)


def _pounds(name: str) -> _Field:
    return lambda c: v.display_pounds_expr(c(name, pl.Int64))


def _wte(name: str, rounded: str | None = None) -> _Field:
    """WTE units as a decimal; `rounded`: the flag column saying where they were rounded down."""
    if rounded is None:
        return lambda c: v.display_wte_expr(c(name, pl.Int64)).fill_null("")
    return lambda c: v.display_wte_expr(c(name, pl.Int64), c(rounded, pl.Int8) == 1).fill_null("")


def _date(name: str) -> _Field:
    return lambda c: v.display_date_expr(c(name, pl.Date))


def _text(name: str, blank: str = "") -> _Field:
    """A text column as it is; `blank` for null or empty."""
    return lambda c: pl.when(c(name).fill_null("") == "").then(pl.lit(blank)).otherwise(c(name))


def _count(c: _Columns) -> pl.Expr:
    return v.thousands_expr(c("list_size", pl.Int64)).fill_null("")


def _share(c: _Columns) -> pl.Expr:
    """Hundredths of a per cent as Python's `{parts / 100:g}%`: 5000 -> 50%, 3333 -> 33.33%."""
    parts = c("cost_share", pl.Int64)
    decimals = (parts % 100).cast(pl.String).str.pad_start(2, "0").str.strip_chars_end("0")
    whole = (parts // 100).cast(pl.String)
    text = pl.when(decimals == "").then(whole).otherwise(whole + "." + decimals)
    return (text + "%").fill_null("")


def _from_day(c: _Columns) -> pl.Expr:
    """' from 16 Jun 2021' / ' to 10 Jun 2021' for a part month in post, else ''."""
    month, start, end = pl.col("month_date"), pl.col("employment_start"), pl.col("employment_end")
    started = pl.when(start > month).then(" from " + v.display_date_expr(start))
    ended = pl.when(end.is_not_null() & (end < month.dt.month_end())).then(
        " to " + v.display_date_expr(end)
    )
    return started.fill_null("") + ended.fill_null("")


def _deadline_basis(c: _Columns) -> pl.Expr:
    return (
        pl.when(c("extended_deadline", pl.Date).is_not_null())
        .then("the extended deadline agreed in " + c("deadline_agreement").fill_null(""))
        .otherwise(
            "six months after reimbursement started on "
            + v.display_date_expr(c("reimbursement_start", pl.Date))
        )
    )


def _where_line(c: _Columns) -> pl.Expr:
    return pl.format(
        "{} line {} ({} / {} / {})",
        "source_file",
        "source_line",
        "pcn_code",
        "staff_id",
        pl.col("month_date").dt.strftime("%Y-%m"),
    )


# Message fields for a finding on a claim line, as Polars expressions over its columns.
_LINE_FIELDS: dict[str, _Field] = {
    "where": _where_line,
    "role_title": _title,
    "a_role": lambda c: _with_article(_title(c)),
    "review_month": lambda c: v.month_text_expr(
        (c("review_month", pl.Int64) * 100 + 1).cast(pl.String).str.to_date("%Y%m%d")
    ).fill_null(""),
    "wte": _wte("wte_units"),
    "from_day": _from_day,
    "claim_month": lambda c: v.month_text_expr(pl.col("month_date")),
    "claimed": _pounds("amount_claimed"),
    "monthly_maximum": _pounds("monthly_maximum"),
    "annual_maximum": _pounds("annual_maximum"),
    "actual_cost": _pounds("actual_cost"),
    "reimbursable_cost": _pounds("reimbursable_cost"),
    "share": _share,
    "fee": _pounds("subcontract_fee"),
    "employment_model": _text("employment_model"),
    "area": lambda c: c("area").fill_null("").str.replace("_london", " London", literal=True),
    "band_text": lambda c: (
        pl.when(c("rate_band").fill_null("") == "")
        .then(pl.lit(""))
        .otherwise(" at band " + c("rate_band"))
    ),
    "fee_limit": _pounds("fee_limit"),
    "claimable_from": _date("claimable_from_date"),
    "employment_start": _date("employment_start"),
    "employment_end": lambda c: v.display_date_expr(c("employment_end", pl.Date)).replace(
        "—", "no end"
    ),
    "financial_year": _text("financial_year"),
    "afc_band": _text("afc_band", "(blank)"),
    "reimbursement_start": _date("reimbursement_start"),
    "deadline": _date("deadline_date"),
    "input_first_month": lambda c: v.month_text_expr(
        (c("input_first_day", pl.Int64)).cast(pl.String).str.to_date("%Y%m%d")
    ).fill_null(""),
    "deadline_basis": _deadline_basis,
    "signoff": lambda c: v.display_date_expr(c("level7_signoff_date", pl.Date)).replace(
        "—", "none"
    ),
    "rotational_model": _text("rotational_model"),
    "training_status": _text("training_status"),
    "condition": _text("condition"),
    "condition_column": _text("condition_column"),
    "condition_value": _text("condition_value", "(blank)"),
    "condition_accepted": lambda c: (
        c("condition_accepted").fill_null("").str.replace_all(";", " or ")
    ),
    "programme_start": _date("programme_began"),
    "programme_end": _date("programme_end_date"),
    "duplicate_lines": lambda c: (
        c("lines_for_staff_role_month", pl.Int64).cast(pl.String).fill_null("")
    ),
    "staff_total_wte": _wte("staff_month_wte", "staff_month_wte_rounded"),
    "pcn_role_wte": _wte("pcn_role_wte", "pcn_role_wte_rounded"),
    "max_wte": _wte("max_wte"),
    "effective_wte": _wte("effective_wte_units", "effective_wte_rounded"),
    "within_wte": _wte("within_wte_units", "within_wte_rounded"),
    "limit_cap": _pounds("limit_cap"),
    "other_lines": _text("other_lines"),
    "other_month_lines": _text("other_month_lines"),
    "list_size": _count,
    "arrs_sum": _pounds("arrs_sum"),
}

# Message fields for a PCN-level finding (`review`: the review month, for every record).
_PCN_FIELDS: dict[str, _Field] = {
    "where": lambda c: pl.format("{} {}", "pcn_code", pl.col("month_date").dt.strftime("%Y-%m")),
    "role_title": lambda c: c("role").fill_null("").str.replace_all("_", " "),
    "claim_month": lambda c: v.month_text_expr(pl.col("month_date")),
    "review_month": lambda c: v.month_text_expr(pl.col("review")),
    "financial_year": lambda c: pl.coalesce(
        c("financial_year"), v.financial_year_expr(pl.col("month_date"))
    ),
    "pcn_role_wte": _wte("pcn_role_wte"),
    "max_wte": _wte("max_wte"),
    "list_size": _count,
    "ytd_allowed": _pounds("ytd_allowed"),
    "arrs_sum": _pounds("arrs_sum"),
    "excess": _pounds("month_excess"),
    "month_allowed": lambda c: v.display_pounds_expr(
        pl.coalesce(c("month_allowed", pl.Int64), c("review_allowed", pl.Int64))
    ),
    "forecast": _pounds("forecast_allowed"),
    "ytd_before": lambda c: v.display_pounds_expr(
        c("ytd_allowed", pl.Int64) - c("month_allowed", pl.Int64)
    ),
    "excess_before": lambda c: v.display_pounds_expr(
        (c("ytd_allowed", pl.Int64) - c("month_allowed", pl.Int64) - c("arrs_sum", pl.Int64)).clip(
            lower_bound=0
        )
    ),
    "over_sum": lambda c: v.display_pounds_expr(
        c("ytd_allowed", pl.Int64) - c("arrs_sum", pl.Int64)
    ),
    "forecast_over": lambda c: v.display_pounds_expr(
        c("forecast_allowed", pl.Int64) - c("arrs_sum", pl.Int64)
    ),
    "months_remaining": lambda c: c("months_remaining", pl.Int64).fill_null(0).cast(pl.String),
    "claimed": _pounds("amount_claimed"),
}


def _shown(value: pl.Expr, limit: int = 80) -> pl.Expr:
    """A value as read, cut short if it is long (a 1 MB cell must not make a 1 MB message)."""
    length = value.str.len_chars()
    cut = pl.format("{}… ({} characters)", value.str.slice(0, 60), v.thousands_expr(length))
    return pl.when(length <= limit).then(value).otherwise(cut)


def _schema_problem(c: _Columns) -> pl.Expr:
    column, value = pl.col("column").fill_null(""), _shown(pl.col("value").fill_null(""))
    return (
        pl.when(column == "")
        .then(pl.col("problem"))
        .when(value.str.strip_chars() != "")
        .then(pl.format("column {} is '{}'; {}", column, value, "problem"))
        .otherwise(pl.format("column {} is blank; {}", column, "problem"))
    )


def _key_or_unknown(name: str) -> pl.Expr:
    return pl.when(pl.col(name).fill_null("") == "").then(pl.lit("?")).otherwise(pl.col(name))


# Message fields for an SCH-01 finding: keys as read, since they may not parse.
_SCHEMA_FIELDS: dict[str, _Field] = {
    "where": lambda c: pl.format(
        "{} line {} ({} / {} / {})",
        "source_file",
        "source_line",
        *(_key_or_unknown(name) for name in ("pcn_code", "staff_id", "raw_claim_month")),
    ),
    "column": _text("column", "(whole row)"),
    "value": lambda c: _shown(pl.col("value").fill_null("")),
    "problem": _schema_problem,
}


def _with_messages(
    catalogue: Catalogue, frame: pl.DataFrame, fields: dict[str, _Field]
) -> pl.DataFrame:
    """`frame` with each finding's message: its rule's template filled from its own columns,
    by Polars for all of a rule's findings at once. A field no builder knows reads as ''."""
    columns = _Columns(frame.columns)
    templates = {rule.id: rule.message for rule in catalogue.rules}
    parts = []
    for (rule_id,), found in frame.partition_by("rule_id", as_dict=True).items():
        pieces: list[pl.Expr] = []
        for literal, name, _, _ in string.Formatter().parse(templates[rule_id]):
            if literal:
                pieces.append(pl.lit(literal))
            if name is not None and name in fields:
                pieces.append(fields[name](columns).fill_null(""))
        parts.append(found.with_columns(pl.concat_str(pieces).alias("message")))
    return pl.concat(parts)


def _columns_read(
    catalogue: Catalogue, found: pl.DataFrame, sources: list[pl.DataFrame]
) -> set[str]:
    """The columns, of those `sources` hold, that the messages of the line findings `found`
    read: a finding needs only these of its line's many columns (hundreds of thousands of
    findings each joined with every column of its line would be the run's largest frame)."""
    rule_ids = set(found["rule_id"].unique().to_list())
    columns = _Columns([name for source in sources for name in source.columns])
    read: set[str] = set()
    for rule in catalogue.rules:
        if rule.id in rule_ids:
            for _, name, _, _ in string.Formatter().parse(rule.message):
                if name is not None and name in _LINE_FIELDS:
                    read.update(_LINE_FIELDS[name](columns).meta.root_names())
    return read


def line_details(
    catalogue: Catalogue,
    line_found: pl.DataFrame | None,
    sources: list[pl.DataFrame],
    kept: set[str],
) -> pl.DataFrame:
    """For each line with a finding: the columns its findings' messages read (from the first
    of `sources` with each, by row_no), other than `kept` (what the run keeps of every
    line). Taken once the rules are done, so that the run need not keep these columns for
    every line only to word the findings of a few."""
    found = line_found if line_found is not None else pl.DataFrame(schema=_NO_FINDINGS)
    wanted = _columns_read(catalogue, found, sources) - (kept | {"row_no"})
    return _with_first_of(found.select("row_no").unique(maintain_order=True), sources, wanted)


def _with_first_of(
    frame: pl.DataFrame, sources: list[pl.DataFrame], wanted: set[str], first: str = "left"
) -> pl.DataFrame:
    """`frame` with each `wanted` column, by row_no, from the first of `sources` that has it
    (joined `first` to the first source, left to the others). Only the wanted columns of a
    source, on the rows of `frame`, are taken: never the whole of a source of every line.
    Categories (kept so on every line for their size) come as text, as messages read it."""
    wanted = set(wanted)
    rows = frame["row_no"].unique().implode()
    for number, source in enumerate(sources):
        columns = [name for name in source.columns if name in wanted]
        wanted -= set(columns)
        frame = frame.join(
            source.select("row_no", *columns)
            .filter(pl.col("row_no").is_in(rows))
            .with_columns(pl.col(pl.Categorical).cast(pl.String)),
            on="row_no",
            how=first if number == 0 else "left",
            maintain_order="left",
        )
    return frame


_NO_FINDINGS = {"row_no": pl.Int64, "rule_id": pl.String}


# Evidence fields listing a line's companions: field -> the keys the lines share.
_COMPANIONS = {
    "other_lines": ("staff_id", "role", "month_date"),
    "other_month_lines": ("staff_id", "month_date"),
}
COMPANIONS_SHOWN = 5


def _companions(
    catalogue: Catalogue, line_found: pl.DataFrame, lines: pl.DataFrame
) -> pl.DataFrame:
    """row_no and, for each field of _COMPANIONS a rule's message names, the other lines
    sharing the line's keys: `claims/2021-06.csv line 18 (U71002)`, the first few of them.

    Only the first COMPANIONS_SHOWN + 1 lines of a group are ever named, so every line
    outside them shows the same text, built once per group: five million lines of one
    person cost one text and five million references to it, not five million texts."""
    result = line_found.select("row_no").unique()
    for name, keys in _COMPANIONS.items():
        rules = [rule.id for rule in catalogue.rules if "{" + name + "}" in rule.message]
        rows = line_found.filter(pl.col("rule_id").is_in(rules)).select("row_no").unique()
        if not rows.height:
            continue
        wanted = lines.join(rows, on="row_no").select(*keys).unique()
        ranked = (
            lines.join(wanted, on=list(keys))
            .select(
                *keys,
                "row_no",
                pl.format("{} line {} ({})", "source_file", "source_line", "pcn_code").alias(
                    "label"
                ),
            )
            .sort("row_no")
            .with_columns(
                pl.int_range(pl.len()).over(keys).alias("_rank"),
                (pl.len().over(keys).cast(pl.Int64) - 1).alias("_others"),
            )
        )
        heads = ranked.filter(pl.col("_rank") <= COMPANIONS_SHOWN)
        more = pl.col("_others") - COMPANIONS_SHOWN
        named = (
            pl.when(more > 0)
            .then(pl.format("{} and {} more", "label", more))
            .otherwise(pl.col("label"))
            .alias(name)
        )
        # A line among the first few: the first few of the others (itself left out).
        among_heads = (
            heads.select(*keys, "row_no", "_others")
            .join(heads.select(*keys, pl.col("row_no").alias("other"), "label"), on=list(keys))
            .filter(pl.col("row_no") != pl.col("other"))
            .sort("row_no", "other")
            .group_by("row_no", "_others", maintain_order=True)
            .agg(pl.col("label").head(COMPANIONS_SHOWN).str.join("; "))
            .select("row_no", named)
        )
        # Any other line: the group's first few, one text shared by all of them.
        shared = (
            heads.filter(pl.col("_rank") < COMPANIONS_SHOWN)
            .group_by(keys, maintain_order=True)
            .agg(pl.col("label").str.join("; "), pl.col("_others").first())
            .select(*keys, named)
        )
        beyond = (
            ranked.filter(pl.col("_rank") > COMPANIONS_SHOWN)
            .select(*keys, "row_no")
            .join(shared, on=list(keys), how="left")
            .select("row_no", name)
        )
        others = pl.concat([among_heads, beyond])
        result = result.join(others, on="row_no", how="left")
    return result


# A line finding's own columns in exceptions.csv (beside its message).
LINE_COLUMNS_SHOWN = (
    "pcn_code",
    "staff_id",
    "role",
    "source_file",
    "source_line",
    "amount_claimed",
    "amount_allowed",
    "staff_name",
)


def finalise(
    *,
    schema_found: pl.DataFrame,
    line_found: pl.DataFrame | None,
    pcn_found: pl.DataFrame | None,
    pcn_records: dict[str, pl.DataFrame],
    lines: pl.DataFrame,
    line_details: pl.DataFrame,
    eligible: pl.DataFrame,
    raw: pl.DataFrame,
    failures: pl.DataFrame,
    catalogue: Catalogue,
    review: dt.date,
) -> pl.DataFrame:
    """Every finding with its figures and message, in the order of exceptions.csv."""
    parts = []

    schema = (
        schema_found.join(
            failures.with_row_index("failure_no").with_columns(pl.col("failure_no").cast(pl.Int64)),
            on=["failure_no", "row_no"],
        )
        .join(
            raw.filter(pl.col("row_no").is_in(schema_found["row_no"].implode())).select(
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
            # (Several findings of one row: in the order of its columns in its file, as the
            # schema check numbered them in `position`.)
            pl.when(pl.col("amount_claimed").is_not_null()).then(0).alias("amount_allowed"),
        )
    )
    if schema.height:
        parts.append(
            _with_messages(catalogue, schema, _SCHEMA_FIELDS).with_columns(
                pl.col("raw_claim_month").alias("claim_month"),
            )
        )

    if line_found is not None and line_found.height:
        companions = _companions(catalogue, line_found, lines)
        found = line_found.drop("pcn_code", "staff_id", "role", "month_date")
        sources = [lines, line_details, eligible, companions]
        read = _columns_read(catalogue, found, sources)
        # Each column a finding shows or its message reads, from the first source with it.
        wanted = {"month_date", *LINE_COLUMNS_SHOWN, *read} - set(found.columns)
        detail = _with_first_of(found, sources, wanted, first="inner")
        parts.append(
            _with_messages(catalogue, detail, _LINE_FIELDS).with_columns(
                pl.col("month_date").dt.strftime("%Y-%m").alias("claim_month"),
                # Several TRN findings of one line: in the order of training.csv.
                (
                    pl.col("condition_order")
                    if "condition_order" in detail.columns
                    else pl.lit(None, dtype=pl.Int64)
                ).alias("position"),
            )
        )

    if pcn_found is not None and pcn_found.height:
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
            detail = detail.with_columns(
                pl.lit("").alias("staff_id"),
                pl.lit(None, dtype=pl.String).alias("source_file"),
                pl.lit(None, dtype=pl.Int64).alias("source_line"),
                (pl.col("role") if "role" in detail.columns else pl.lit("")).alias("role"),
                pl.lit(review).alias("review"),
            )
            parts.append(
                _with_messages(catalogue, detail, _PCN_FIELDS).with_columns(
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
        "amount_at_risk": pl.Int64,  # money.ledger attributes it
        "message": pl.String,
        "row_no": pl.Int64,
        "position": pl.Int64,
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
            "position",
            "column",
            "message",
            nulls_last=False,
        )
    )
