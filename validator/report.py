"""The HTML exception report: index.html (the ICB view), one page per PCN, and rules.html.

Rendered with Jinja2, autoescape on and StrictUndefined, so every claim value is escaped and a
mistyped field fails loudly. Pages are self-contained: inline CSS, inline SVG charts and a
little inline JavaScript for sorting and searching; nothing is fetched from anywhere. Staff
names never appear unless --show-names is given. A national run stays usable: the index
holds one row per PCN, detail lives on the PCN pages, and long lists are capped on screen
with the full list in exceptions.csv.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import polars as pl

from validator import __version__, money
from validator import values as v
from validator.catalogue import Catalogue
from validator.pages import SEVERITIES, Rendering, environment
from validator.pipeline import OPEN_FINDING, RunResult

ON_SCREEN_FINDINGS = 500  # per PCN page; the rest are in exceptions.csv
CHART_BARS = 30
SEVERITY_ORDER = {severity: number for number, severity in enumerate(SEVERITIES)}


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


_MONTH_FIGURES = ("claimed", "allowed", "budget_excess", "payable", "withheld", "open_findings")


def _pcn_rows(result: RunResult) -> list[dict]:
    """Each PCN's summary row, its forecast, its review month's payment (`month`: the
    payments.csv row, zeros if it claimed nothing that month) and, with --previous, its
    findings new, persisting and resolved since the previous run."""
    forecast = result.pcn_records.get("pcn_review_month")
    summary = result.summary
    if forecast is not None and forecast.height:
        summary = summary.join(
            forecast.select("pcn_code", "forecast_allowed"), on="pcn_code", how="left"
        )
    else:
        summary = summary.with_columns(pl.lit(None, dtype=pl.Int64).alias("forecast_allowed"))
    review = result.review_month.strftime("%Y-%m") if result.review_month else ""
    month = {
        row["pcn_code"]: row
        for row in result.payments.filter(pl.col("claim_month") == review).to_dicts()
    }
    changes: dict[tuple[str, str], int] = {}
    resolved_all: dict[str, int] = {}  # every finding resolved, warnings and waived included
    if result.resolved is not None:
        resolved_all = dict(result.resolved.group_by("pcn_code").len().iter_rows())
        changes = {
            (code, change): count
            for code, change, count in result.findings.filter(OPEN_FINDING)
            .group_by("pcn_code", "change")
            .len()
            .iter_rows()
        }
        # Resolved as the others are counted: the previous run's open findings (reject,
        # adjust, query) no longer found; a warning that went is not one.
        resolved = result.resolved.filter(OPEN_FINDING).group_by("pcn_code").len()
        for code, count in resolved.iter_rows():
            changes[code, "resolved"] = count
    open_counts = dict(result.findings.filter(OPEN_FINDING).group_by("pcn_code").len().iter_rows())
    rows = summary.to_dicts()
    for row in rows:
        code = row["pcn_code"]
        row["budget_status"], row["budget_text"] = _budget(row)
        row["budget_use"] = (
            round(100 * row["ytd_allowed"] / row["arrs_sum"]) if row["arrs_sum"] else None
        )
        row["month"] = {name: month.get(code, {}).get(name, 0) for name in _MONTH_FIGURES}
        row["open_findings"] = open_counts.get(code, 0)
        row["changes"] = {
            change: changes.get((code, change), 0) for change in ("new", "persisting", "resolved")
        }
        row["resolved_all"] = resolved_all.get(code, 0)
    return rows


def _month_rows(result: RunResult) -> dict[str, str]:
    """Each PCN's month-by-month table rows (its payments.csv rows), as HTML built by Polars
    for every PCN at once: the rows pcn.html.j2 documents, escaped as autoescape would (a
    national year's 16,000 rows took a third of the page renderer's time in Jinja)."""

    def cell(text: pl.Expr) -> pl.Expr:
        return pl.format('<td class="num">{}</td>', text)

    rows = result.payments.select(
        "pcn_code",
        pl.concat_str(
            pl.format('<tr><th scope="row">{}</th>', _escaped(pl.col("claim_month"))),
            cell(pl.col("lines")),
            *(
                cell(_escaped(v.display_pounds_expr(pl.col(name))))
                for name in ("claimed", "allowed", "budget_excess", "payable", "withheld")
            ),
            cell(pl.col("open_findings")),
            pl.lit("</tr>\n"),
        ).alias("row"),
    )
    by_pcn = rows.group_by("pcn_code", maintain_order=True).agg(pl.col("row").str.join(""))
    return dict(by_pcn.iter_rows())


def _month_series(result: RunResult) -> list[dict]:
    """Claimed, allowed and payable per claim month, from payments.csv's rows."""
    months = (
        result.payments.filter(pl.col("claim_month") != money.UNKNOWN_MONTH)
        .group_by("claim_month")
        .agg(pl.col("claimed").sum(), pl.col("allowed").sum(), pl.col("payable").sum())
        .sort("claim_month")
    )
    return [
        {
            "label": dt.date(int(row["claim_month"][:4]), int(row["claim_month"][5:]), 1).strftime(
                "%b %Y"
            ),
            "claimed": row["claimed"],
            "allowed": row["allowed"],
            "payable": row["payable"],
        }
        for row in months.iter_rows(named=True)
    ]


def _charts(pcns: list[dict], by_rule: list[dict], months: list[dict]) -> dict:
    budgeted = sorted(
        (row for row in pcns if row["budget_use"] is not None),
        key=lambda row: (-row["budget_use"], row["pcn_code"]),
    )
    open_by_rule = sorted(
        # "Open findings" are open reject, adjust and query findings, here as everywhere.
        (
            {"label": row["rule_id"], "value": row["open"]}
            for row in by_rule
            if row["open"] and row["severity"] != "warning"
        ),
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


def _escaped(text: pl.Expr) -> pl.Expr:
    """HTML-escaped text, exactly as Jinja's autoescape (markupsafe) writes it."""
    return text.cast(pl.String).fill_null("").str.replace_many(_ESCAPES)


_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"}


def _finding_rows(show_names: bool, has_history: bool) -> pl.Expr:
    """Each open finding's table row on its PCN page, as HTML built by Polars for every
    finding at once (Jinja, row by row, took seconds for a national run). The markup is
    the row the template pcn.html.j2 documents, escaped as autoescape would."""
    source = (
        pl.when(pl.col("source_file").is_not_null() & (pl.col("source_file") != ""))
        .then(pl.format("{} line {}", _escaped(pl.col("source_file")), pl.col("source_line")))
        .otherwise(pl.lit("PCN-level"))
    )
    cells = [
        pl.format(
            "<tr>\n<td>{}</td><td>{}</td>\n",
            _escaped(pl.col("claim_month")),
            _escaped(pl.col("staff_id")),
        )
    ]
    if show_names:
        cells.append(pl.format("<td>{}</td>\n", _escaped(pl.col("staff_name"))))
    cells.append(
        pl.format(
            '<td class="role">{}</td>\n<td class="src">{}</td>\n', _escaped(pl.col("role")), source
        )
    )
    for name in ("amount_claimed", "amount_allowed", "amount_at_risk"):
        cells.append(
            pl.format(
                '<td class="num" data-value="{}">{}</td>\n',
                pl.col(name).fill_null(0),
                _escaped(v.display_pounds_expr(pl.col(name))),
            )
        )
    if has_history:
        change = _escaped(pl.col("change"))
        cells.append(
            pl.format('<td><span class="badge change-{}">{}</span></td>\n', change, change)
        )
    cells.append(pl.format('<td class="message">{}</td>\n</tr>\n', _escaped(pl.col("message"))))
    return pl.concat_str(cells)


def _open_groups(result: RunResult, ordered: pl.DataFrame) -> dict[str, list[dict]]:
    """Per PCN, its first ON_SCREEN_FINDINGS open findings grouped by rule (in page order),
    each group with its count and its table rows as ready HTML."""
    shown = (
        ordered.filter(pl.col("status") == "open")
        .filter(pl.int_range(pl.len()).over("pcn_code") < ON_SCREEN_FINDINGS)
        .with_columns(
            _finding_rows(result.options.show_names, result.resolved is not None).alias("row")
        )
        .group_by("pcn_code", "rule_id", maintain_order=True)
        .agg(
            pl.col("severity").first(),
            pl.len().alias("count"),
            pl.col("amount_at_risk").sum().alias("at_risk"),
            pl.col("row").str.join(""),
        )
    )
    rules = {
        rule.id: {"title": rule.title, "clause": rule.clause} for rule in result.catalogue.rules
    }
    groups: dict[str, list[dict]] = {}
    for pcn_code, rule_id, severity, count, at_risk, rows in shown.iter_rows():
        groups.setdefault(pcn_code, []).append(
            {
                "rule_id": rule_id,
                "severity": severity,
                "rule": rules[rule_id],
                "count": count,
                "at_risk": at_risk,
                "rows": rows,  # HTML, escaped: pages.py marks it safe
            }
        )
    return groups


def _pcn_pages_job(result: RunResult, pcns: list[dict], context: dict) -> dict:
    """What the PCN pages show, as plain Python values for pages.render_job."""
    has_history = result.resolved is not None
    ordered = result.findings.with_columns(
        pl.col("severity").replace_strict(SEVERITY_ORDER, return_dtype=pl.Int64).alias("order"),
        *([] if has_history else [pl.lit("").alias("change")]),
    ).sort("pcn_code", "order", "rule_id", "claim_month", "staff_id", "source_file", "source_line")
    first = pl.int_range(pl.len()).over("pcn_code") < ON_SCREEN_FINDINGS
    waived: dict[str, list[dict]] = {}
    for row in ordered.filter(pl.col("status") == "waived").filter(first).to_dicts():
        waived.setdefault(row["pcn_code"], []).append(row)
    resolved: dict[str, list[dict]] = {}
    if has_history:
        for row in result.resolved.filter(first).to_dicts():
            resolved.setdefault(row["pcn_code"], []).append(row)
    return {
        "context": context,
        "pcns": pcns,
        "groups": _open_groups(result, ordered),
        "open_totals": dict(ordered.filter(OPEN_FINDING).group_by("pcn_code").len().iter_rows()),
        "month_rows": _month_rows(result),  # HTML, escaped: pages.py marks it safe
        "waived": waived,
        "agreements": {row["agreement_id"]: row for row in result.agreements.to_dicts()},
        "resolved": resolved,
        "limit": ON_SCREEN_FINDINGS,
    }


def start_pages(
    result: RunResult, started: dt.datetime, run_id: str, folder: Path, rendering: Rendering
) -> None:
    """Begin writing index.html, rules.html and a page per PCN into `folder`: the child
    process of `rendering` renders them from plain Python values (pages.py) while this
    process goes on with the data files; rendering.wait() waits for it."""
    pcns = _pcn_rows(result)
    by_rule = _by_rule(result)
    context = {
        "version": __version__,
        "run_id": run_id,
        "review_month": result.review_month.strftime("%Y-%m") if result.review_month else "—",
        "started": started.isoformat(timespec="seconds"),
        "catalogue_digest": result.catalogue.digest,
        "show_names": result.options.show_names,
        "has_history": result.resolved is not None,
    }
    job = _pcn_pages_job(result, pcns, context)
    index = _index_job(result, context, pcns, by_rule)
    rendering.send({**job, "index": index}, folder)


def _index_job(result: RunResult, context: dict, pcns: list[dict], by_rule: list[dict]) -> dict:
    """What index.html and rules.html show, as plain Python values."""
    # The totals of summary.csv's and payments.csv's rows, as money.py adds them up.
    counts = ("lines", "open_reject", "open_adjust", "open_query", "warnings", "waived")
    totals = {**money.totals(result.summary, counts), **money.totals(result.summary)}
    review = context["review_month"]
    month_totals = money.totals(
        result.payments.filter(pl.col("claim_month") == review), _MONTH_FIGURES
    )
    change_totals = {
        change: sum(row["changes"][change] for row in pcns)
        for change in ("new", "persisting", "resolved")
    }
    return {
        **context,
        "root": "",
        "files": [dataclasses.asdict(file) for file in result.files],
        "rows_read": result.rows_read,
        "rows_rejected": result.rows_rejected_by_schema,
        "rows_checked": result.rows_checked,
        "pcns": pcns,
        "totals": totals,
        "month_totals": month_totals,
        "change_totals": change_totals,
        "open_findings": result.open_findings,
        "by_rule": by_rule,
        "charts": _charts(pcns, by_rule, _month_series(result)),
        "unmatched": result.unmatched_agreements.to_dicts(),
        # Rows without a valid PCN code: on no PCN's page, so listed here.
        "unplaced": result.findings.filter(
            ~pl.col("pcn_code").is_in(result.summary["pcn_code"].implode())
        )
        .head(ON_SCREEN_FINDINGS)
        .to_dicts(),
    }
