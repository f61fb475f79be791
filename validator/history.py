"""Month over month: a stable fingerprint per finding, and what changed since a previous run.

A finding's fingerprint is a hash of what it is about — rule, PCN, staff, role and claim
month — not of its wording or line number, so the same problem found again next month (in a
resubmitted file, on another line) is recognised as `persisting`. A finding about the review
month itself (BUD-02's full-year forecast) is about the financial year, not the month: its
fingerprint takes the year, so it persists from one review month to the next. Given the
previous run's output folder, every finding is `new` or `persisting`, and the previous
findings no longer found are `resolved`.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import polars as pl

from validator import values as v
from validator.errors import ConfigError

FINGERPRINT_KEYS = ("rule_id", "pcn_code", "staff_id", "role", "claim_month")
# What is kept of a previous run's findings: enough to list them as resolved.
PREVIOUS_COLUMNS = (
    *FINGERPRINT_KEYS,
    "severity",
    "status",
    "source_file",
    "source_line",
    "amount_at_risk",
    "message",
)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _fingerprint_month(yearly_rules: frozenset[str]) -> pl.Expr:
    """The claim month, or its financial year (`2021/22`) for a rule in `yearly_rules`."""
    month = pl.col("claim_month").fill_null("")
    first_day = (month + "-01").str.to_date("%Y-%m-%d", strict=False)
    return (
        pl.when(pl.col("rule_id").is_in(sorted(yearly_rules)) & first_day.is_not_null())
        .then(v.financial_year_expr(first_day))
        .otherwise(month)
    )


def with_fingerprints(
    findings: pl.DataFrame, yearly_rules: frozenset[str] = frozenset()
) -> pl.DataFrame:
    """Each finding's fingerprint; `yearly_rules`: the rules whose findings are about the
    review month's financial year rather than one claim month."""
    parts = [
        _fingerprint_month(yearly_rules) if name == "claim_month" else pl.col(name).fill_null("")
        for name in FINGERPRINT_KEYS
    ]
    keys = findings.select(pl.concat_str(parts, separator="|")).to_series()
    return findings.with_columns(
        pl.Series("fingerprint", [_digest(key) for key in keys], dtype=pl.String)
    )


def read_previous(folder: Path, yearly_rules: frozenset[str] = frozenset()) -> pl.DataFrame:
    """The findings of an earlier run (its exceptions.csv), with their fingerprints."""
    path = folder / "exceptions.csv"
    where = f"--previous {folder}: {path.name}"
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
    except OSError as error:
        raise ConfigError(
            f"--previous {folder}: cannot read {path.name} ({error.strerror or error}); "
            "give the output folder of an earlier run"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{where} is not UTF-8 text, so it is not an arrs-validate output (was it saved "
            "again from a spreadsheet?); give the output folder of an earlier run"
        ) from None
    except csv.Error as error:
        raise ConfigError(
            f"{where} is not a CSV this tool wrote ({error}); give the output folder of an "
            "earlier run"
        ) from None
    if rows and not set(FINGERPRINT_KEYS) <= set(rows[0]):
        raise ConfigError(f"{where} is not an arrs-validate output")
    for number, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise ConfigError(
                f"{where} line {number}: has a different number of fields from its header; "
                "it is not as this tool wrote it. Give the output folder of an earlier run"
            )

    def unsafe(text: str) -> str:  # undo the formula-safety prefix of the CSV
        return text[1:] if text[:2] in {"'=", "'+", "'-", "'@", "'\t", "'\r"} else text

    frame = pl.DataFrame(
        {name: [unsafe(row.get(name, "")) for row in rows] for name in PREVIOUS_COLUMNS},
        schema=dict.fromkeys(PREVIOUS_COLUMNS, pl.String),
    )
    return with_fingerprints(frame, yearly_rules)


def compare(findings: pl.DataFrame, previous: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`change` (new or persisting) for each finding, and the previous findings resolved.

    Fingerprints are matched as multisets: two findings with one fingerprint now and one
    before are one persisting and one new.
    """
    ranked = findings.with_columns(pl.int_range(pl.len()).over("fingerprint").alias("_occurrence"))
    before = previous.group_by("fingerprint").agg(pl.len().alias("_before"))
    marked = (
        ranked.join(before, on="fingerprint", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("_occurrence") < pl.col("_before").fill_null(0))
            .then(pl.lit("persisting"))
            .otherwise(pl.lit("new"))
            .alias("change")
        )
        .drop("_occurrence", "_before")
    )
    now = findings.group_by("fingerprint").agg(pl.len().alias("_now"))
    resolved = (
        previous.with_columns(pl.int_range(pl.len()).over("fingerprint").alias("_occurrence"))
        .join(now, on="fingerprint", how="left", maintain_order="left")
        .filter(pl.col("_occurrence") >= pl.col("_now").fill_null(0))
        .drop("_occurrence", "_now")
    )
    return marked, resolved
