"""The HTML exception report: index.html (the ICB view) and one page per PCN.

Rendered with Jinja2, autoescape on and StrictUndefined, so every claim value is escaped and a
mistyped field fails loudly. Pages are self-contained: inline CSS, no scripts or assets from
anywhere. Staff names never appear unless --show-names is given.
"""

from __future__ import annotations

import datetime as dt

import jinja2
import polars as pl

from validator import __version__
from validator import values as v
from validator.paths import TEMPLATES_DIR
from validator.pipeline import RunResult

ON_SCREEN_FINDINGS = 500
SEVERITY_ORDER = {"reject": 0, "adjust": 1, "query": 2, "warning": 3}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pounds"] = v.display_pounds
    return env


def pcn_page_name(pcn_code: str) -> str:
    return f"pcn/{pcn_code}.html"


def render_pages(result: RunResult, started: dt.datetime) -> dict[str, str]:
    env = environment()
    summary = result.summary.to_dicts()
    totals = {
        name: sum(row[name] or 0 for row in summary)
        for name in ("lines", "claimed", "allowed", "at_risk")
    }
    rules = {rule.id: rule for rule in result.catalogue.rules}
    context = {
        "version": __version__,
        "review_month": result.review_month.strftime("%Y-%m") if result.review_month else "—",
        "started": started.isoformat(timespec="seconds"),
        "catalogue_digest": result.catalogue.digest,
        "files": result.files,
        "rows_read": result.rows_read,
        "rows_rejected": result.rows_rejected_by_schema,
        "rows_checked": result.rows_checked,
        "show_names": result.options.show_names,
    }
    by_rule = result.findings.group_by("rule_id", "status").len().sort("rule_id", "status")
    pages = {
        "index.html": env.get_template("index.html.j2").render(
            **context,
            pcns=summary,
            totals=totals,
            by_rule=by_rule.to_dicts(),
            rules=rules,
            unmatched=result.unmatched_agreements.to_dicts(),
            general=result.findings.filter(pl.col("pcn_code") == "")
            .head(ON_SCREEN_FINDINGS)
            .to_dicts(),
            page_name=pcn_page_name,
        )
    }
    agreements = {row["agreement_id"]: row for row in result.agreements.to_dicts()}
    template = env.get_template("pcn.html.j2")
    ordered = result.findings.with_columns(
        pl.col("severity").replace_strict(SEVERITY_ORDER, return_dtype=pl.Int64).alias("order")
    ).sort("pcn_code", "order", "rule_id", "claim_month", "staff_id", "source_file", "source_line")
    by_pcn = {key[0]: part for key, part in ordered.partition_by("pcn_code", as_dict=True).items()}
    empty = ordered.clear()
    for pcn in summary:
        found = by_pcn.get(pcn["pcn_code"], empty)
        open_found = found.filter(pl.col("status") == "open")
        waived = found.filter(pl.col("status") == "waived")
        pages[pcn_page_name(pcn["pcn_code"])] = template.render(
            **context,
            pcn=pcn,
            open_findings=open_found.head(ON_SCREEN_FINDINGS).to_dicts(),
            open_total=open_found.height,
            waived=waived.head(ON_SCREEN_FINDINGS).to_dicts(),
            waived_total=waived.height,
            agreements=agreements,
            rules=rules,
            limit=ON_SCREEN_FINDINGS,
        )
    return pages
