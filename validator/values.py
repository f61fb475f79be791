"""Text-to-value parsing as Polars expressions, and the exact formatting of money and dates.

Every parser returns null for text it cannot read, so the schema can report the field rather
than guess. Money is integer pence, whole-time equivalents are integer WTE units (see
WTE_UNITS), dates are Polars dates: nothing numeric is ever a binary float.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from validator import units
from validator.units import (  # noqa: F401 (the exact units, read by every layer as v.NAME)
    FULL_TIME_MILLIHOURS,
    MAX_MONEY_PENCE,
    NEVER,
    UNITS_PER_MILLIHOUR,
    WTE_AGREEMENT_UNITS,
    WTE_UNITS,
)

_MONEY = f"^{units.MONEY_PATTERN}$"
_ISO_DATE = f"^{units.ISO_DATE_PATTERN}$"
_UK_DATE = f"^{units.UK_DATE_PATTERN}$"
_MONTH = f"^{units.MONTH_PATTERN}$"
_WTE = r"^([0-9])(?:\.([0-9]{1,18}))?$"
_HOURS = r"^([0-9]{1,2})(?:\.([0-9]{1,3}))?$"


def blank(column: str) -> pl.Expr:
    """True where the cell is missing or only white space."""
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")


def stripped(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars()


def _decimal_parts(digits: pl.Expr, places: int) -> tuple[pl.Expr, pl.Expr]:
    """A decimal's whole part, and its fraction as an integer of 1/10**places (the digits
    after the point padded to `places`; null where they are not digits). The text is split
    at the point, which is faster than regex captures at a million rows."""
    parts = digits.str.split_exact(".", 1)
    whole = parts.struct.field("field_0").cast(pl.Int64, strict=False)
    fraction = (
        parts.struct.field("field_1")
        .fill_null("")
        .str.pad_end(places, "0")
        .cast(pl.Int64, strict=False)
    )
    return whole, fraction


def _decimal_scaled(text: pl.Expr, pattern: str, places: int) -> pl.Expr:
    """A decimal matching `pattern` as one integer in units of 1/10**places (else null);
    the pattern decides validity."""
    digits = text.str.strip_prefix("£").str.replace_all(",", "", literal=True)
    whole, fraction = _decimal_parts(digits, places)
    return pl.when(text.str.contains(pattern)).then(whole * 10**places + fraction)


def money_pence(column: str) -> pl.Expr:
    """`1234.5`, `1,234.56` or `£1,234.56` as integer pence; null if not money or more than
    MAX_MONEY_PENCE."""
    pence = _decimal_scaled(stripped(column), _MONEY, 2)
    return pl.when(pence <= MAX_MONEY_PENCE).then(pence)


def date_value(column: str) -> pl.Expr:
    """`2021-06-16` or UK `16/06/2021` as a date; null if not a real date."""
    text = stripped(column)
    return (
        pl.when(text.str.contains(_ISO_DATE))
        .then(text.str.to_date("%Y-%m-%d", strict=False))
        .when(text.str.contains(_UK_DATE))
        .then(text.str.to_date("%d/%m/%Y", strict=False))
    )


def month_start(column: str) -> pl.Expr:
    """`YYYY-MM` as the first day of that month; null if not a month."""
    text = stripped(column)
    return pl.when(text.str.contains(_MONTH)).then((text + "-01").str.to_date("%Y-%m-%d"))


def wte_units(column: str) -> pl.Expr:
    """A WTE written as a decimal, in WTE units; null if not a decimal of up to 18 places.

    Exact to six places (and hours to three). A longer decimal, as a spreadsheet writes
    hours / 37.5 (0.333333333333333), is taken to the nearest unit, half up — a third
    exactly — in integers: 18 places are below 10**18, and six times that still fits in 64
    bits. The rounding never takes a WTE across 0 < wte <= 1: one above 1 stays above it,
    one above 0 stays above it (the schema then judges the WTE written)."""
    text = stripped(column)
    whole, fraction = _decimal_parts(text, 18)  # the fraction in 10**-18 WTE
    nearest = whole * WTE_UNITS + (fraction * 6 + 10**12) // (2 * 10**12)
    above_one = (whole > 1) | ((whole == 1) & (fraction > 0))
    above_zero = (whole > 0) | (fraction > 0)
    units = (
        pl.when(above_one & (nearest <= WTE_UNITS))
        .then(WTE_UNITS + 1)
        .when(above_zero & (nearest == 0))
        .then(1)
        .otherwise(nearest)
    )
    return pl.when(text.str.contains(_WTE)).then(units)


def hours_wte_units(column: str) -> pl.Expr:
    """Hours per week converted to WTE units (hours / 37.5); null if not hours."""
    return _decimal_scaled(stripped(column), _HOURS, 3) * UNITS_PER_MILLIHOUR


def choice(column: str, choices: list[str]) -> pl.Expr:
    """The canonical spelling of a choice, matched case-insensitively; null if none matches."""
    text = stripped(column).str.to_lowercase()
    expr = pl.lit(None, dtype=pl.String)
    for option in reversed(choices):
        expr = pl.when(text == option.lower()).then(pl.lit(option)).otherwise(expr)
    return expr


def yyyymmdd(date: pl.Expr) -> pl.Expr:
    """A date as the integer yyyymmdd, the only date form the rules engine compares safely
    (four bytes: a million lines carry several of these)."""
    return (
        date.dt.year().cast(pl.Int32) * 10_000
        + date.dt.month().cast(pl.Int32) * 100
        + date.dt.day().cast(pl.Int32)
    )


def yyyymm(date: pl.Expr) -> pl.Expr:
    return date.dt.year().cast(pl.Int32) * 100 + date.dt.month().cast(pl.Int32)


def per_value(frame: pl.DataFrame, column: str, text: pl.Expr) -> pl.Expr:
    """`text` (an expression of `column` alone) for each row of `frame`, worked out once per
    distinct value of the column and looked up: a national year's lines hold 14 claim
    months and 4 WTEs in 444,654 rows. Null where the column is."""
    distinct = frame.select(pl.col(column).unique().drop_nulls())
    return pl.col(column).replace_strict(
        distinct[column], distinct.select(text).to_series(), default=None, return_dtype=pl.String
    )


def round_half_up_div(numerator: pl.Expr, denominator: pl.Expr | int) -> pl.Expr:
    """numerator / denominator rounded half-up, for non-negative integers."""
    return (numerator * 2 + denominator) // (denominator * 2)


def thousands_expr(number: pl.Expr) -> pl.Expr:
    """A non-negative integer with thousands separators (`1,234,567`), as Python's `:,`."""
    groups = [(number // 1000**level % 1000).cast(pl.String) for level in range(5)]
    padded = [group.str.pad_start(3, "0") for group in groups]
    text = groups[0]
    for level in range(1, 5):  # 1,234 / 1,234,567 / ... up to trillions
        grouped = pl.concat_str([groups[level], *reversed(padded[:level])], separator=",")
        text = pl.when(number >= 1000**level).then(grouped).otherwise(text)
    return text


def display_pounds_expr(pence: pl.Expr) -> pl.Expr:
    """Integer pence for people, as pounds.display_pounds: `£1,234.56`, `—` for null."""
    sign = pl.when(pence < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    pennies = (pence.abs() % 100).cast(pl.String).str.pad_start(2, "0")
    text = sign + "£" + thousands_expr(pence.abs() // 100) + "." + pennies
    return pl.when(pence.is_null()).then(pl.lit("—")).otherwise(text)


def display_wte_expr(units: pl.Expr, rounded: pl.Expr | None = None) -> pl.Expr:
    """WTE units as a short decimal: 0.8, 1, 0.533333… (null stays null). `…` marks a figure
    cut short: at the sixth decimal, or where `rounded` holds (the units themselves were
    rounded down, e.g. an effective WTE's units x days divided by the month's days)."""
    micro = units * 1_000_000 // WTE_UNITS
    rest = (micro % 1_000_000).cast(pl.String).str.pad_start(6, "0").str.strip_chars_end("0")
    whole = (micro // 1_000_000).cast(pl.String)
    text = pl.when(rest == "").then(whole).otherwise(whole + "." + rest)
    exact = units * 1_000_000 % WTE_UNITS == 0
    if rounded is not None:
        exact = exact & ~rounded.fill_null(False)
    return pl.when(exact).then(text).otherwise(text + "…")


def display_date_expr(date: pl.Expr) -> pl.Expr:
    """A date for people: `16 Jun 2021`, `—` for null."""
    return date.dt.strftime("%-d %b %Y").fill_null("—")


def month_text_expr(date: pl.Expr) -> pl.Expr:
    """A month for people: `Jun 2021` (null stays null)."""
    return date.dt.strftime("%b %Y")


def financial_year(month: dt.date) -> str:
    """The financial year (1 April – 31 March) a month falls in, as `2021/22`."""
    start = month.year if month.month >= 4 else month.year - 1
    return f"{start}/{(start + 1) % 100:02d}"


def financial_year_expr(date: pl.Expr) -> pl.Expr:
    start = date.dt.year().cast(pl.Int64) - (date.dt.month() < 4).cast(pl.Int64)
    return pl.format("{}/{}", start, ((start + 1) % 100).cast(pl.String).str.pad_start(2, "0"))
