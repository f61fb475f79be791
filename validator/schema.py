"""Stage A: the claim-file schema (README, Inputs) as a Pandera schema, and typed parsing.

The schema is built from schemas/claims.toml. Each column carries named checks that are
single Polars expressions over the text cells; validation is lazy, so every failed field of
every row is collected (rule SCH-01), never just the first. Rows that pass are then parsed
into exact types: pence, WTE units and dates.
"""

from __future__ import annotations

import functools
import sys

import polars as pl


def _import_pandera():
    """Import Pandera's Polars API and its built-in checks without Hypothesis.

    Pandera imports Hypothesis, when it is installed, for the data synthesis this tool never
    uses: that alone took 80 ms of every run's start (more than reading a month of claims).
    Hiding it while Pandera loads leaves Pandera's own fallback in place; anything that has
    imported Hypothesis already (a test) keeps it, and it stays importable afterwards."""
    hide = "hypothesis" not in sys.modules
    if hide:
        sys.modules["hypothesis"] = None  # type: ignore[assignment]  (an ImportError)
    try:
        import pandera.backends.polars.builtin_checks
        import pandera.polars
    finally:
        if hide:
            del sys.modules["hypothesis"]
    return pandera.polars


pa = _import_pandera()
from pandera.errors import SchemaErrors  # noqa: E402  (after Pandera's import above)

from validator import values as v  # noqa: E402
from validator.load import CLAIM_COLUMNS, with_file_of_row  # noqa: E402

SCHEMA_FAILURE_COLUMNS = {
    "row_no": pl.Int64,
    "column": pl.String,
    "value": pl.String,
    "problem": pl.String,
    # The row's findings in order: the whole row's first, then by the column's position in
    # its file (a column the file lacks after those it has, in the claim columns' order).
    "position": pl.Int64,
}


def _parsed(name: str, spec: dict, roles: dict[str, str]) -> pl.Expr | None:
    """The column's value parsed, null where the text does not parse (None: free text).

    `roles` maps each role's code and title, in lower case, to its code: a claim may give
    either, in any case (`Clinical Pharmacist`)."""
    kind = spec["kind"]
    if kind == "pattern":
        return pl.when(v.stripped(name).str.contains(spec["pattern"])).then(v.stripped(name))
    if kind == "role":
        return v.stripped(name).str.to_lowercase().replace_strict(roles, default=None)
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


def _value(name: str) -> pl.Expr:
    return pl.col(f"{name}__value")


def _blank(name: str) -> pl.Expr:
    return pl.col(f"{name}__blank")


# The names of the field checks: a column's first failed check is one of these (an Enum takes
# a byte a row where text would take sixteen, for each of the 21 columns).
_CHECK_NAMES = pl.Enum(["required", "format", "range", "one_of", "agreement", "order"])


def _column_checks(name: str, spec: dict) -> list[tuple[str, pl.Expr, str]]:
    """(check name, expression that is true where the cell is fine, what was expected).

    Checks read the columns `with_values` adds: each cell parsed once, and whether it is blank.
    """
    expected = spec.get("expected", "")
    parsed = spec["kind"] != "text"
    checks: list[tuple[str, pl.Expr, str]] = []
    if spec["required"]:
        checks.append(("required", ~_blank(name), f"a value is required: {expected}"))
    if parsed:
        checks.append(("format", _blank(name) | _value(name).is_not_null(), expected))
    if spec["kind"] in ("wte", "hours"):
        in_range = (_value(name) > 0) & (_value(name) <= v.WTE_UNITS)
        checks.append(("range", _blank(name) | in_range.fill_null(True), expected))
    if name == "wte":
        checks.append(
            (
                "one_of",
                ~(_blank("wte") & _blank("hours_per_week")),
                "one of wte or hours_per_week is required (wte = hours / 37.5)",
            )
        )
    if name == "hours_per_week":
        difference = (_value("wte") - _value("hours_per_week")).abs()
        checks.append(
            (
                "agreement",
                (difference <= v.WTE_AGREEMENT_UNITS).fill_null(True),
                "hours_per_week / 37.5 to agree with wte to within 0.01",
            )
        )
    if name == "employment_end":
        in_order = _value("employment_end") >= _value("employment_start")
        checks.append(
            ("order", in_order.fill_null(True), "a last day on or after employment_start")
        )
    return checks


# Kinds whose parsing costs more than a hash join, in groups whose columns are parsed together
# once per distinct combination of their texts (salary, NI and pension go together).
_PARSED_ONCE = {
    "money": "money",
    "date": "dates",
    "month": "codes",
    "choice": "codes",
    "wte": "codes",
    "hours": "codes",
}


def with_values(claims: pl.DataFrame, roles: dict[str, str]) -> pl.DataFrame:
    """The claim text cells plus, per column: its parsed `__value`, whether it is `__blank`,
    and `__problem`, the name of the first of its checks that fails (null where the cell is
    fine).

    Money, dates and codes hold far fewer distinct texts than a batch has rows (a national
    year: 444,792 lines, about 2,700 distinct combinations of its four money columns), so
    each distinct combination is parsed once and joined back to its rows.
    """
    direct: list[pl.Expr] = []
    groups: dict[str, tuple[list[str], list[pl.Expr]]] = {}
    for name, spec in CLAIM_COLUMNS.items():
        parsed = _parsed(name, spec, roles)
        values = [
            v.blank(name).alias(f"{name}__blank"),
            (parsed if parsed is not None else v.stripped(name)).alias(f"{name}__value"),
        ]
        group = _PARSED_ONCE.get(spec["kind"])
        if group is None:
            direct.extend(values)
        else:
            groups.setdefault(group, ([], []))
            groups[group][0].append(name)
            groups[group][1].extend(values)
    parsed_once = []
    for names, values in groups.values():
        texts = claims.select(names)
        distinct = texts.unique().with_columns(values)
        parsed_once.append(
            texts.join(
                distinct, on=names, how="left", nulls_equal=True, maintain_order="left"
            ).drop(names)
        )
    shaped = pl.concat([claims.with_columns(direct), *parsed_once], how="horizontal")
    problems = []
    for name, spec in CLAIM_COLUMNS.items():
        first_failure = pl.lit(None, dtype=_CHECK_NAMES)
        for check_name, ok, _ in reversed(_column_checks(name, spec)):
            first_failure = (
                pl.when(~ok).then(pl.lit(check_name, dtype=_CHECK_NAMES)).otherwise(first_failure)
            )
        problems.append(first_failure.alias(f"{name}__problem"))
    return shaped.with_columns(problems)


@functools.cache
def build_schema() -> tuple[pa.DataFrameSchema, dict[tuple[str, str], str]]:
    """The Pandera schema: each claim column is text whose one check is that none of its
    field checks failed; and the expectation text of every (column, field check). Built
    once per process (a run checks its claims a batch at a time)."""
    columns = {}
    expectations: dict[tuple[str, str], str] = {}
    for name, spec in CLAIM_COLUMNS.items():
        for check_name, _, expected in _column_checks(name, spec):
            expectations.setdefault((name, check_name), expected)
        problem = pl.col(f"{name}__problem")
        check = pa.Check(
            lambda data, problem=problem: data.lazyframe.select(problem.is_null()),
            name=f"{name}_is_valid",
        )
        columns[name] = pa.Column(pl.String, nullable=True, checks=[check])
    return pa.DataFrameSchema(columns, coerce=False, strict=False), expectations


def check_claims(
    claims: pl.DataFrame, roles: dict[str, str], positions: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stage A. Returns the schema failures (one row per bad field of every row: row_no,
    column, value as read, problem, and its position among the row's findings) and the
    typed values of the rows that passed. `positions`: where each claim column sits in each
    file (load.column_positions); without them a row's findings follow the claim columns."""
    # Every row is shaped (not a filtered copy of the text); a row with a row_problem is
    # reported as a whole and its fields are not, below.
    shaped = with_values(claims, roles)
    failures = [
        claims.filter(pl.col("row_problem").is_not_null()).select(
            "row_no",
            pl.lit("").alias("column"),
            pl.lit("").alias("value"),
            ("the row " + pl.col("row_problem")).alias("problem"),
        )
    ]
    schema, expectations = build_schema()
    try:
        schema.validate(shaped, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases.filter(pl.col("index").is_not_null())
        expected = pl.DataFrame(
            {
                "column": [column for column, _ in expectations],
                "check": [check for _, check in expectations],
                "expected": list(expectations.values()),
            }
        )
        found = cases.select(pl.col("index").cast(pl.Int64), "column").unique()
        bad = (
            shaped.with_row_index("index")
            .with_columns(pl.col("index").cast(pl.Int64))
            .filter(
                pl.col("index").is_in(found["index"].implode()) & pl.col("row_problem").is_null()
            )
        )
        found = found.filter(pl.col("index").is_in(bad["index"].implode()))
        cells = pl.concat(
            [
                bad.select(
                    "index",
                    "row_no",
                    pl.lit(name).alias("column"),
                    pl.col(name).alias("value"),
                    pl.col(f"{name}__problem").cast(pl.String).alias("check"),
                )
                for name in CLAIM_COLUMNS
            ]
        )
        failures.append(
            found.join(cells, on=["index", "column"], how="left")
            .join(expected, on=["column", "check"], how="left")
            .select(
                "row_no",
                "column",
                pl.col("value").fill_null(""),
                ("expected " + pl.col("expected")).alias("problem"),
            )
        )
    failures_frame = _capped(_positioned(pl.concat(failures), positions))
    typed = _typed(shaped).filter(~pl.col("row_no").is_in(failures_frame["row_no"].implode()))
    return failures_frame, typed


# A row with more bad fields than this gets a finding for each of the first ones (in the
# order of its columns in its file) and one more naming the rest: past a few, another finding
# per field is no more evidence, and a file of garbage rows must not make twenty findings a row.
FIELD_FINDINGS_PER_ROW = 3


def _positioned(failures: pl.DataFrame, positions: pl.DataFrame | None) -> pl.DataFrame:
    """`failures` with each one's `position`: 0 for the whole row, else the column's
    position in its file (`positions`, keyed by the row_no of each file's first row); a
    column the file lacks (or any, without `positions`) comes after every column a file can
    have, in the claim columns' order."""
    failures = failures.cast({"row_no": pl.Int64, "column": pl.String})
    claim_order = pl.DataFrame(
        {"column": list(CLAIM_COLUMNS), "_claim": range(1, len(CLAIM_COLUMNS) + 1)},
        schema={"column": pl.String, "_claim": pl.Int64},
    )
    located = failures.with_row_index("_failure").join(claim_order, on="column", how="left")
    if positions is not None and positions.height and failures.height:
        starts = positions.select(pl.col("first_row_no").unique().sort())
        located = (
            with_file_of_row(located.sort("row_no"), starts)
            .join(positions, on=["first_row_no", "column"], how="left")
            .sort("_failure")
        )
    else:
        located = located.with_columns(pl.lit(None, dtype=pl.Int64).alias("file_position"))
    position = (
        pl.when(pl.col("column") == "")
        .then(0)
        .otherwise(pl.coalesce("file_position", 2**31 + pl.col("_claim")))
        .cast(pl.Int64)
    )
    return (
        located.with_columns(position.alias("position"))
        .cast(dict(SCHEMA_FAILURE_COLUMNS))
        .select(*SCHEMA_FAILURE_COLUMNS)
    )


def _capped(failures: pl.DataFrame) -> pl.DataFrame:
    ranked = failures.sort("row_no", "position").with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).over("row_no").alias("_rank")
    )
    kept = ranked.filter(pl.col("_rank") < FIELD_FINDINGS_PER_ROW)
    rest = (
        ranked.filter(pl.col("_rank") >= FIELD_FINDINGS_PER_ROW)
        .group_by("row_no", maintain_order=True)
        .agg(
            pl.col("column").str.join(", ").alias("columns"),
            pl.len().alias("count"),
            pl.col("position").first(),
        )
        .select(
            "row_no",
            pl.lit("").alias("column"),
            pl.lit("").alias("value"),
            pl.format(
                "the row breaks the schema in {} more column(s) as well: {}; check the whole row",
                "count",
                "columns",
            ).alias("problem"),
            "position",
            pl.lit(FIELD_FINDINGS_PER_ROW, dtype=pl.Int64).alias("_rank"),
        )
    )
    return (
        pl.concat([kept.select(*SCHEMA_FAILURE_COLUMNS, "_rank"), rest])
        .sort("row_no", "_rank")
        .select(*SCHEMA_FAILURE_COLUMNS)
    )


def _typed(checked: pl.DataFrame) -> pl.DataFrame:
    """Typed values of rows that passed the schema: pence, WTE units, dates, canonical codes."""
    values = [name for name in CLAIM_COLUMNS if name not in ("wte", "hours_per_week")]
    return (
        checked.select(
            "row_no",
            # A file's name on each of its lines: 4 bytes a line as a category, not the text.
            pl.col("source_file").cast(pl.Categorical),
            "source_line",
            *(_value(name).alias(name) for name in values),
            pl.coalesce(_value("wte"), _value("hours_per_week")).alias("wte_units"),
        )
        .with_columns(
            pl.col("subcontract_fee").fill_null(0),
            pl.col("training_status").fill_null("not_started"),
            pl.col("rotational_model").fill_null("N"),
            pl.col("afc_band").fill_null("").str.to_lowercase(),
            pl.col("staff_name").fill_null(""),
        )
        .with_columns(
            # The choices (Y/N, the employment models, training statuses) as categories: a byte
            # or two of text each, but 16 bytes a line as text (Polars' string views).
            pl.col(name).cast(pl.Categorical)
            for name, spec in CLAIM_COLUMNS.items()
            if spec["kind"] == "choice"
        )
    )


def valid_cells(name: str, texts: list[str], roles: dict[str, str]) -> list[bool]:
    """Whether each text, as a cell of column `name`, passes that column's own checks (the
    ones that do not compare it with another column): how a column profile's value aliases
    are checked against this one schema."""
    frame = pl.DataFrame(
        {column: texts if column == name else [None] * len(texts) for column in CLAIM_COLUMNS},
        schema=dict.fromkeys(CLAIM_COLUMNS, pl.String),
    )
    return with_values(frame, roles)[f"{name}__problem"].is_null().to_list()
