"""The HTML exception report: index.html (the ICB view), one page per PCN, and rules.html.

Rendered with Jinja2, autoescape on and StrictUndefined, so every claim value is escaped and a
mistyped field fails loudly. Pages are self-contained: inline CSS, inline SVG charts and a
little inline JavaScript for sorting and searching; nothing is fetched from anywhere. Staff
names never appear unless --show-names is given. A national run stays usable: the index
holds one row per PCN, detail lives on the PCN pages, and long lists are capped on screen
with the full list in exceptions.csv.
"""

from __future__ import annotations

import datetime as dt
from collections import namedtuple

import jinja2
import polars as pl

from validator import __version__
from validator import values as v
from validator.catalogue import Catalogue
from validator.paths import TEMPLATES_DIR
from validator.pipeline import RunResult

ON_SCREEN_FINDINGS = 500  # per PCN page; the rest are in exceptions.csv
CHART_BARS = 30
SEVERITIES = ("reject", "adjust", "query", "warning")
SEVERITY_ORDER = {severity: number for number, severity in enumerate(SEVERITIES)}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pounds"] = v.display_pounds
    env.filters["thousands"] = lambda number: f"{number:,}"
    return env


def pcn_page_name(pcn_code: str) -> str:
    return f"pcn/{pcn_code}.html"


def _budget(row: dict) -> tuple[str, str]:
    """(status, wording) of a PCN's year-to-date and forecast against its ARRS sum."""
    arrs_sum, ytd, forecast = row["arrs_sum"], row["ytd_allowed"], row["forecast_allowed"]
    if arrs_sum is None:
        return "unknown", "no ARRS sum"
    if ytd > arrs_sum:
        return "over", "over budget"
    if forecast is not None and forecast > arrs_sum:
        return "forecast-over", "forecast over"
    return "within", "within budget"


def _pcn_rows(result: RunResult) -> list[dict]:
    forecast = result.pcn_records.get("pcn_review_month")
    summary = result.summary
    if forecast is not None and forecast.height:
        summary = summary.join(
            forecast.select("pcn_code", "forecast_allowed"), on="pcn_code", how="left"
        )
    else:
        summary = summary.with_columns(pl.lit(None, dtype=pl.Int64).alias("forecast_allowed"))
    rows = summary.to_dicts()
    for row in rows:
        row["budget_status"], row["budget_text"] = _budget(row)
        row["budget_use"] = (
            round(100 * row["ytd_allowed"] / row["arrs_sum"]) if row["arrs_sum"] else None
        )
    return rows


def _month_series(result: RunResult) -> list[dict]:
    lines = result.lines
    if lines.height == 0:
        return []
    months = (
        lines.group_by("month_date")
        .agg(pl.col("amount_claimed").sum(), pl.col("amount_allowed").sum())
        .sort("month_date")
    )
    return [
        {
            "label": f"{row['month_date']:%b %Y}",
            "claimed": row["amount_claimed"],
            "allowed": row["amount_allowed"],
        }
        for row in months.iter_rows(named=True)
    ]


def _charts(pcns: list[dict], by_rule: list[dict], months: list[dict]) -> dict:
    budgeted = sorted(
        (row for row in pcns if row["budget_use"] is not None),
        key=lambda row: (-row["budget_use"], row["pcn_code"]),
    )
    open_by_rule = sorted(
        ({"label": row["rule_id"], "value": row["open"]} for row in by_rule if row["open"]),
        key=lambda row: (-row["value"], row["label"]),
    )
    return {
        "budget": budgeted[:CHART_BARS],
        "budget_total": len(budgeted),
        "budget_max": max([100, *(row["budget_use"] for row in budgeted[:CHART_BARS])]),
        "rules": open_by_rule,
        "rules_max": max([1, *(row["value"] for row in open_by_rule)]),
        "months": months,
        "months_max": max([1, *(row["claimed"] for row in months)]),
    }


def _by_rule(result: RunResult) -> list[dict]:
    counts = {
        (rule_id, status): count
        for rule_id, status, count in result.findings.group_by("rule_id", "status")
        .len()
        .iter_rows()
    }
    return _rule_rows(result.catalogue, counts)


def _rule_rows(catalogue: Catalogue, counts: dict[tuple[str, str], int]) -> list[dict]:
    return [
        {
            "rule_id": rule.id,
            "title": rule.title,
            "severity": rule.severity,
            "clause": rule.clause,
            "rationale": " ".join(rule.rationale.split()),
            "retired": rule.retired,
            "open": counts.get((rule.id, "open"), 0),
            "waived": counts.get((rule.id, "waived"), 0),
        }
        for rule in catalogue.rules
    ]


def render_rule_reference(catalogue: Catalogue) -> str:
    """The rule reference page on its own (`arrs-validate rules --html FILE`): the same
    template and Jinja environment as a run's rules.html, without a run's counts."""
    return (
        environment()
        .get_template("rules.html.j2")
        .render(
            version=__version__,
            run_id="—",
            review_month="—",
            started="—",
            catalogue_digest=catalogue.digest,
            root="",
            by_rule=_rule_rows(catalogue, {}),
        )
    )


def render_pages(result: RunResult, started: dt.datetime, run_id: str) -> dict[str, str]:
    env = environment()
    pcns = _pcn_rows(result)
    by_rule = _by_rule(result)
    has_history = result.resolved is not None
    context = {
        "version": __version__,
        "run_id": run_id,
        "review_month": result.review_month.strftime("%Y-%m") if result.review_month else "—",
        "started": started.isoformat(timespec="seconds"),
        "catalogue_digest": result.catalogue.digest,
        "show_names": result.options.show_names,
        "has_history": has_history,
        "severities": SEVERITIES,
    }
    totals = {
        name: sum(row[name] or 0 for row in pcns)
        for name in (
            "lines",
            "claimed",
            "allowed",
            "at_risk",
            "open_reject",
            "open_adjust",
            "open_query",
            "warnings",
            "waived",
        )
    }
    resolved_counts: dict[str, int] = {}
    if has_history:
        resolved_counts = dict(result.resolved.group_by("pcn_code").len().iter_rows())
    pages = {
        "index.html": env.get_template("index.html.j2").render(
            **context,
            root="",
            files=result.files,
            rows_read=result.rows_read,
            rows_rejected=result.rows_rejected_by_schema,
            rows_checked=result.rows_checked,
            pcns=pcns,
            totals=totals,
            by_rule=by_rule,
            charts=_charts(pcns, by_rule, _month_series(result)),
            unmatched=result.unmatched_agreements.to_dicts(),
            unplaced=result.findings.filter(pl.col("pcn_code") == "")
            .head(ON_SCREEN_FINDINGS)
            .to_dicts(),
            resolved_counts=resolved_counts,
            page_name=pcn_page_name,
        ),
        "rules.html": env.get_template("rules.html.j2").render(**context, root="", by_rule=by_rule),
    }
    agreements = {row["agreement_id"]: row for row in result.agreements.to_dicts()}
    rules = {rule.id: rule for rule in result.catalogue.rules}
    ordered = result.findings.with_columns(
        pl.col("severity").replace_strict(SEVERITY_ORDER, return_dtype=pl.Int64).alias("order"),
        *(
            v.display_pounds_expr(pl.col(name)).alias(f"{name}_text")
            for name in ("amount_claimed", "amount_allowed", "amount_at_risk")
        ),
        *([] if has_history else [pl.lit("").alias("change")]),
    ).sort("pcn_code", "order", "rule_id", "claim_month", "staff_id", "source_file", "source_line")
    # Rows as named tuples: Jinja reads their attributes directly (a dict's keys it must
    # first fail to find as attributes), which matters at 35,000 rows.
    Finding = namedtuple("Finding", ordered.columns)
    by_pcn: dict[str, list] = {}
    for row in ordered.iter_rows():
        finding = Finding(*row)
        by_pcn.setdefault(finding.pcn_code, []).append(finding)
    resolved_by_pcn: dict[str, list[dict]] = {}
    if has_history:
        for row in result.resolved.iter_rows(named=True):
            resolved_by_pcn.setdefault(row["pcn_code"], []).append(row)
    template = env.get_template("pcn.html.j2")
    for pcn in pcns:
        found = by_pcn.get(pcn["pcn_code"], [])
        open_found = [f for f in found if f.status == "open"]
        shown = open_found[:ON_SCREEN_FINDINGS]
        groups: list[dict] = []
        for finding in shown:
            if not groups or groups[-1]["rule_id"] != finding.rule_id:
                groups.append(
                    {
                        "rule_id": finding.rule_id,
                        "severity": finding.severity,
                        "rule": rules[finding.rule_id],
                        "findings": [],
                    }
                )
            groups[-1]["findings"].append(finding)
        pages[pcn_page_name(pcn["pcn_code"])] = template.render(
            **context,
            root="../",
            pcn=pcn,
            groups=groups,
            open_total=len(open_found),
            shown_total=len(shown),
            waived=[f for f in found if f.status == "waived"][:ON_SCREEN_FINDINGS],
            agreements=agreements,
            resolved=resolved_by_pcn.get(pcn["pcn_code"], [])[:ON_SCREEN_FINDINGS],
            limit=ON_SCREEN_FINDINGS,
        )
    return pages
