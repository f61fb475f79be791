"""Stage A: the claim-file schema (SPEC section 2) as a Pandera schema, and typed parsing.

The schema is built from schemas/claims.toml. Each column carries named checks that are
single Polars expressions over the text cells; validation is lazy, so every failed field of
every row is collected (rule SCH-01), never just the first. Rows that pass are then parsed
into exact types: pence, WTE units and dates.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaErrors

from validator import values as v
from validator.load import CLAIM_COLUMNS

SCHEMA_FAILURE_COLUMNS = {
    "row_no": pl.Int64,
    "column": pl.String,
    "value": pl.String,
    "problem": pl.String,
}


def _parsed(name: str, spec: dict, roles: list[str]) -> pl.Expr | None:
    """The column's value parsed, null where the text does not parse (None: free text)."""
    kind = spec["kind"]
    if kind == "pattern":
        return pl.when(v.stripped(name).str.contains(spec["pattern"])).then(v.stripped(name))
    if kind == "role":
        return pl.when(v.stripped(name).is_in(roles)).then(v.stripped(name))
    if kind == "month":
        return v.month_start(name)
    if kind == "date":
        return v.date_value(name)
    if kind == "money":
        return v.money_pence(name)
    if kind == "choice":
        return v.choice(name, spec["choices"])
    if kind == "wte":
        return v.wte_units(name)
    if kind == "hours":
        return v.hours_wte_units(name)
    return None


def _column_checks(name: str, spec: dict, roles: list[str]) -> list[tuple[str, pl.Expr, str]]:
    """(check name, expression that is true where the cell is fine, what was expected)."""
    parsed = _parsed(name, spec, roles)
    expected = spec.get("expected", "")
    checks: list[tuple[str, pl.Expr, str]] = []
    if spec["required"]:
        checks.append(("required", ~v.blank(name), f"a value is required: {expected}"))
    if parsed is not None:
        checks.append(("format", v.blank(name) | parsed.is_not_null(), expected))
    if spec["kind"] in ("wte", "hours"):
        checks.append(("range", v.blank(name) | (parsed.fill_null(1) > 0), expected))
        checks.append(("range", v.blank(name) | (parsed.fill_null(1) <= v.WTE_UNITS), expected))
    if name == "wte":
        checks.append(
            (
                "one_of",
                ~(v.blank("wte") & v.blank("hours_per_week")),
                "one of wte or hours_per_week is required (wte = hours / 37.5)",
            )
        )
    if name == "hours_per_week":
        difference = (v.wte_units("wte") - v.hours_wte_units("hours_per_week")).abs()
        checks.append(
            (
                "agreement",
                (difference <= v.WTE_AGREEMENT_UNITS).fill_null(True),
                "hours_per_week / 37.5 to agree with wte to within 0.01",
            )
        )
    if name == "employment_end":
        in_order = v.date_value("employment_end") >= v.date_value("employment_start")
        checks.append(
            ("order", in_order.fill_null(True), "a last day on or after employment_start")
        )
    return checks


def build_schema(roles: list[str]) -> tuple[pa.DataFrameSchema, dict[tuple[str, str], str]]:
    """The Pandera schema for claim text cells, and the expectation text of each check."""
    columns = {}
    expectations: dict[tuple[str, str], str] = {}
    for name, spec in CLAIM_COLUMNS.items():
        checks = []
        for check_name, ok, expected in _column_checks(name, spec, roles):
            checks.append(pa.Check(lambda data, ok=ok: data.lazyframe.select(ok), name=check_name))
            expectations.setdefault((name, check_name), expected)
        columns[name] = pa.Column(pl.String, nullable=True, checks=checks)
    return pa.DataFrameSchema(columns, coerce=False, strict=False), expectations


def schema_failures(claims: pl.DataFrame, roles: list[str]) -> pl.DataFrame:
    """One row per bad field of every claim row: row_no, column, value as read, problem."""
    shaped = claims.filter(pl.col("row_problem").is_null())
    failures = [
        claims.filter(pl.col("row_problem").is_not_null()).select(
            "row_no",
            pl.lit("").alias("column"),
            pl.lit("").alias("value"),
            ("the row " + pl.col("row_problem")).alias("problem"),
        )
    ]
    schema, expectations = build_schema(roles)
    try:
        schema.validate(shaped.select(list(CLAIM_COLUMNS)), lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases.filter(pl.col("index").is_not_null())
        expected = pl.DataFrame(
            {
                "column": [column for column, _ in expectations],
                "check": [check for _, check in expectations],
                "expected": list(expectations.values()),
            }
        )
        found = (
            cases.select(pl.col("index").cast(pl.Int64), "column", "check")
            .join(expected, on=["column", "check"], how="left")
            .join(
                shaped.select("row_no")
                .with_row_index("index")
                .with_columns(pl.col("index").cast(pl.Int64)),
                on="index",
            )
            .unique(subset=["row_no", "column"], keep="first", maintain_order=True)
        )
        raw = shaped.select("row_no", *CLAIM_COLUMNS).unpivot(
            index="row_no", variable_name="column", value_name="value"
        )
        failures.append(
            found.join(raw, on=["row_no", "column"], how="left").select(
                "row_no",
                "column",
                pl.col("value").fill_null(""),
                ("expected " + pl.col("expected")).alias("problem"),
            )
        )
    return pl.concat(failures).cast(SCHEMA_FAILURE_COLUMNS).sort("row_no", "column")


def parse_claims(claims: pl.DataFrame, roles: list[str]) -> pl.DataFrame:
    """Typed values of rows that passed the schema: pence, WTE units, dates, canonical codes."""
    typed = {}
    for name, spec in CLAIM_COLUMNS.items():
        parsed = _parsed(name, spec, roles)
        typed[name] = (parsed if parsed is not None else v.stripped(name)).alias(name)
    wte = pl.coalesce(v.wte_units("wte"), v.hours_wte_units("hours_per_week"))
    return claims.select(
        "row_no",
        "source_file",
        "source_line",
        *[expr for name, expr in typed.items() if name not in ("wte", "hours_per_week")],
        wte.alias("wte_units"),
    ).with_columns(
        pl.col("subcontract_fee").fill_null(0),
        pl.col("training_status").fill_null("not_started"),
        pl.col("rotational_model").fill_null("N"),
        pl.col("afc_band").fill_null("").str.to_lowercase(),
        pl.col("staff_name").fill_null(""),
    )
