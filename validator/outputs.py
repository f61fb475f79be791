"""The run's files: exceptions.csv, summary.csv, payments.csv, lines.csv, manifest.json,
exceptions.json, exceptions.xlsx and the HTML report. Their money is money.py's, read as it
is: nothing here adds a figure up again.

Everything is written into the run's staging folder (runner.Staging), which is then published
in one step, so a reader sees the previous run or this one, never half of one. CSV outputs are
deterministic: the same inputs give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import platform
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import polars as pl

from validator import __version__, history, xlsx
from validator import values as v
from validator.money import (
    LINE_COLUMNS,
    MONEY_LINES,
    MONEY_PAYMENTS,
    MONEY_SUMMARY,
    PAYMENT_COLUMNS,
    SUMMARY_COLUMNS,
)
from validator.pipeline import FINDING_COLUMNS, OPEN_FINDING, RunResult
from validator.xlsx import formula_safe

_MONEY_FINDING = ("amount_claimed", "amount_allowed", "amount_at_risk")


def money_text(pence: pl.Expr) -> pl.Expr:
    """Integer pence as `1234.56` (money in the CSV and JSON outputs; blank when there is
    none)."""
    return xlsx.pounds_text(pence)


def money_pounds(pence: int) -> str:
    """Integer pence as `1234.56`, as the CSV files write money."""
    sign = "-" if pence < 0 else ""
    return f"{sign}{abs(pence) // 100}.{abs(pence) % 100:02d}"


def _cells(frame: pl.DataFrame, columns: list[str], money: tuple[str, ...]) -> pl.DataFrame:
    """The frame's cells as the CSV files write them: money formatted, text formula-safe."""
    cells = []
    for name in columns:
        column = pl.col(name)
        if name in money:
            cells.append(money_text(column).alias(name))
        elif frame.schema[name] == pl.Categorical and not _any_formula(frame, name):
            cells.append(column)  # written as its text: no text of it begins like a formula
        elif frame.schema[name] in (pl.String, pl.Categorical):  # text, or text as categories
            cells.append(formula_safe(column.cast(pl.String)).alias(name))
        else:
            cells.append(column.cast(pl.String).alias(name))
    return frame.select(cells)


def _any_formula(frame: pl.DataFrame, name: str) -> bool:
    """Whether any of the distinct texts of column `name` begins like a formula."""
    texts = frame.select(pl.col(name).unique().cast(pl.String))
    return bool(texts.select(pl.col(name).str.contains(xlsx.FORMULA_START).any()).item())


CSV_ROWS_PER_SLICE = 100_000  # rows formatted at a time: a million lines' cells never whole


def _write_csv(path: Path, frame: pl.DataFrame, columns: list[str], money: tuple[str, ...]):
    """The frame as CSV into `path`: money formatted, text formula-safe, nothing as blank,
    LF endings; formatted a slice at a time."""
    with path.open("wb") as handle:
        for offset in range(0, max(frame.height, 1), CSV_ROWS_PER_SLICE):
            _cells(frame.slice(offset, CSV_ROWS_PER_SLICE), columns, money).write_csv(
                handle, include_header=not offset, line_terminator="\n", null_value=""
            )


def _csv_outputs(result: RunResult) -> list[tuple[str, pl.DataFrame, list[str], tuple[str, ...]]]:
    """(file name, frame, columns, money columns) of each CSV output."""
    return [
        ("exceptions.csv", result.findings, _finding_csv_columns(result), _MONEY_FINDING),
        ("summary.csv", result.summary, SUMMARY_COLUMNS, MONEY_SUMMARY),
        ("payments.csv", result.payments, PAYMENT_COLUMNS, MONEY_PAYMENTS),
        ("lines.csv", result.every_line, LINE_COLUMNS, MONEY_LINES),
    ]


def _finding_csv_columns(result: RunResult) -> list[str]:
    """exceptions.csv's columns (README "Outputs"); with --previous, `fingerprint` and
    `change` after them."""
    return FINDING_COLUMNS + (["fingerprint", "change"] if result.resolved is not None else [])


def _inputs(result: RunResult) -> list[dict]:
    """Each input file as the manifest lists it: path, SHA-256, encoding and rows."""
    inputs = []
    for file in result.files:
        inputs.append(
            {
                "kind": "claims",
                "path": file.path,
                "sha256": file.sha256 or None,
                "encoding": file.encoding or None,
                "rows_read": file.rows_read,
                "status": "error" if file.problem else "read",
                "problem": file.problem or None,
                "rows_not_read": file.unread_rows,
                "ignored_columns": file.extra_columns,
                "skipped_sheets": file.skipped_sheets,
            }
        )
    inputs.extend(result.input_facts)  # the register and agreements, hashed as read
    return inputs


def _reconciliation(result: RunResult) -> dict:
    return {
        "rows_read": result.rows_read,
        "rows_rejected_by_schema": result.rows_rejected_by_schema,
        "rows_checked": result.rows_checked,
        "balanced": result.rows_read == result.rows_rejected_by_schema + result.rows_checked,
    }


def manifest(result: RunResult, started: dt.datetime, finished: dt.datetime, exit_code: int):
    inputs = _inputs(result)
    reference = result.reference.files
    return {
        "tool": "arrs-validate",
        "tool_version": __version__,
        "python": platform.python_version(),
        "rule_catalogue_sha256": result.catalogue.digest,
        "rules": [rule.id for rule in result.catalogue.active],
        "review_month": result.review_month.strftime("%Y-%m") if result.review_month else None,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "exit_code": exit_code,
        "inputs": inputs,
        "reference_files": reference,
        "reconciliation": _reconciliation(result),
        "money": {name: money_pounds(pence) for name, pence in result.money_totals.items()},
        "findings": {
            "total": result.findings.height,
            "open": result.open_findings,
            "warnings": result.findings.filter((pl.col("status") == "open") & ~OPEN_FINDING).height,
            "waived": result.findings.filter(pl.col("status") == "waived").height,
            "by_rule": dict(sorted(result.findings.group_by("rule_id").len().iter_rows())),
        },
        "engine_records_evaluated": result.records_evaluated,
        "phase_seconds": result.timings.rounded(),
        "unmatched_agreements": result.unmatched_agreements["agreement_id"].to_list(),
    }


def data_files(
    result: RunResult, run_id: str, folder: Path, meanwhile: Callable[[], None] = lambda: None
) -> None:
    """Write the findings as data into `folder`: exceptions.csv, summary.csv, payments.csv,
    lines.csv, exceptions.json, exceptions.xlsx (the CLI builds them while child processes
    render the pages). Each is written to its file as it is built, a slice at a time where
    it is long: a national year's are 300 MB of text, and held whole, twice over (as text
    and as its bytes), they were most of a run's peak memory.

    The workbook, the longest to build, is written by a second thread while this one does
    `meanwhile` (the runner: the pages' data, sent to the page renderer) and then writes the
    CSV and JSON files: Polars and zlib do their work without Python's interpreter lock, so
    the two share the machine's cores (the pages' data, mostly Python, had left one idle:
    starting the workbook first saves ~0.15 s of a national year). Both are done when this
    returns, whether or not one of them failed."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="workbook") as second:
        workbook = second.submit(exceptions_xlsx, result, folder / "exceptions.xlsx")
        meanwhile()
        for name, frame, columns, money in _csv_outputs(result):
            _write_csv(folder / name, frame, columns, money)
        with (folder / "exceptions.json").open("wb") as handle:
            write_exceptions_json(result, run_id, handle)
        workbook.result()


def write_outputs(
    result: RunResult, folder: Path, started: dt.datetime, exit_code: int, run_id: str
) -> None:
    """Write the manifest into the staging `folder`, which holds every other output by then
    (data_files, and the pages): it is written last, when the run's finish is known."""
    finished = dt.datetime.now(dt.UTC)
    document = manifest(result, started, finished, exit_code)
    document["run_id"] = run_id
    (folder / "manifest.json").write_bytes((json.dumps(document, indent=2) + "\n").encode())


JSON_FORMAT = "arrs-validate exceptions"
JSON_FORMAT_VERSION = "1.1"


def _money_cells(frame: pl.DataFrame, money: tuple[str, ...]) -> pl.DataFrame:
    return frame.with_columns(money_text(pl.col(name)).alias(name) for name in money)


JSON_ROWS_PER_SLICE = 10_000  # rows serialised at a time: a few MB of text, copied a few times


def _json_rows(frame: pl.DataFrame, money: tuple[str, ...], handle: BinaryIO) -> None:
    """The frame as a JSON array of row objects (Polars' own serialisation, in column order),
    money as pounds text, written a slice at a time.

    Each row is encoded by Polars (`struct.json_encode`, the bytes its NDJSON writer gives)
    and the slice written out as a one-column CSV with nothing quoted and a comma after each
    row: the array's rows and their commas, in Polars' UTF-8 as it is. (The same rows as
    NDJSON with each line end replaced by a comma took 40% longer: the replacing alone was a
    sixth of a second on a national year's lines.)"""
    handle.write(b"[")
    for offset in range(0, frame.height, JSON_ROWS_PER_SLICE):
        rows = io.BytesIO()
        _money_cells(frame.slice(offset, JSON_ROWS_PER_SLICE), money).select(
            pl.struct(pl.all()).struct.json_encode()
        ).write_csv(rows, include_header=False, quote_style="never", line_terminator=",")
        if offset:
            handle.write(b",")
        with rows.getbuffer() as written:
            handle.write(written[:-1])  # (the slice's last row has no comma after it)
    handle.write(b"]")


def write_exceptions_json(result: RunResult, run_id: str, handle: BinaryIO) -> None:
    """exceptions.json: findings, summary and (with --previous) resolved findings, in the
    documented, versioned format of schemas/exceptions.schema.json. Money is a string of
    pounds with two decimals, exact."""
    finding_columns = [*FINDING_COLUMNS, "fingerprint"]
    if result.resolved is not None:
        finding_columns.append("change")
    resolved = None
    if result.resolved is not None:
        resolved = result.resolved.select("fingerprint", *history.PREVIOUS_COLUMNS).to_dicts()
    head = {
        "format": JSON_FORMAT,
        "format_version": JSON_FORMAT_VERSION,
        "tool_version": __version__,
        "run_id": run_id,
        "review_month": result.review_month.strftime("%Y-%m") if result.review_month else None,
        "rule_catalogue_sha256": result.catalogue.digest,
    }
    handle.write(json.dumps(head, ensure_ascii=False)[:-1].encode("utf-8"))
    for key, frame, columns, money in (
        ("findings", result.findings, finding_columns, _MONEY_FINDING),
        ("summary", result.summary, SUMMARY_COLUMNS, MONEY_SUMMARY),
        ("payments", result.payments, PAYMENT_COLUMNS, MONEY_PAYMENTS),
        ("lines", result.every_line, LINE_COLUMNS, MONEY_LINES),
    ):
        handle.write(f', "{key}": '.encode())
        _json_rows(frame.select(columns), money, handle)
    handle.write(f', "resolved": {json.dumps(resolved, ensure_ascii=False)}}}\n'.encode())


def _run_sheet(result: RunResult) -> pl.DataFrame:
    """The manifest's facts for the workbook's `run` sheet, as (section, item, value) rows:
    review month, tool and rule catalogue, reconciliation, money totals, inputs with their
    SHA-256, and the rules that ran."""
    review = result.review_month.strftime("%Y-%m") if result.review_month else ""
    rows = [
        ("run", "review month", review),
        ("run", "tool version", f"arrs-validate {__version__}"),
        ("run", "rule catalogue SHA-256", result.catalogue.digest),
        ("run", "previous run", str(result.previous_folder or "")),
        *(("reconciliation", name, str(value)) for name, value in _reconciliation(result).items()),
        *(("money", name, money_pounds(pence)) for name, pence in result.money_totals.items()),
        ("findings", "open (reject, adjust, query)", str(result.open_findings)),
    ]
    for item in _inputs(result):
        rows.append((f"input: {item['kind']}", item["path"], item.get("sha256") or ""))
    for described in result.reference.files:
        rows.append(("reference file", described["path"], described.get("sha256") or ""))
    for rule in result.catalogue.active:
        rows.append(("rule", rule.id, f"{rule.severity}: {rule.title}"))
    return pl.DataFrame(rows, schema=["section", "item", "value"], orient="row")


def exceptions_xlsx(result: RunResult, path: Path) -> None:
    """Write exceptions.xlsx for auditors to `path`: findings, summary and rules sheets,
    money as numbers in £ format, headers frozen and filterable."""
    rules = pl.DataFrame(
        [
            {
                "rule_id": rule.id,
                "severity": rule.severity,
                "title": rule.title,
                "clause": rule.clause,
                "rationale": " ".join(rule.rationale.split()),
                "retired": "yes" if rule.retired else "",
            }
            for rule in result.catalogue.rules
        ]
    )
    history_columns = ["fingerprint", "change"] if result.resolved is not None else []
    resolved = []
    if result.resolved is not None:
        # The previous run's findings as its exceptions.csv gave them (text): its line
        # numbers as numbers and its money as money, like the findings sheet's.
        previous = result.resolved.select("fingerprint", *history.PREVIOUS_COLUMNS).with_columns(
            pl.col("source_line").cast(pl.Int64, strict=False),
            v.money_pence("amount_at_risk").alias("amount_at_risk"),
        )
        resolved = [("resolved", previous, ("amount_at_risk",), {"message": 90, "source_file": 30})]
    xlsx.write_workbook(
        path,
        [
            (
                "findings",
                result.findings.select(*FINDING_COLUMNS, *history_columns),
                _MONEY_FINDING,
                {"message": 90, "role": 28, "source_file": 30, "rule_id": 9, "severity": 9},
            ),
            ("summary", result.summary.select(SUMMARY_COLUMNS), MONEY_SUMMARY, {"pcn_name": 30}),
            (
                "payments",
                result.payments.select(PAYMENT_COLUMNS),
                MONEY_PAYMENTS,
                {"pcn_name": 30},
            ),
            (
                "lines",
                result.every_line.select(LINE_COLUMNS),
                MONEY_LINES,
                {"source_file": 30, "role": 28, "rules": 30},
            ),
            *resolved,
            ("run", _run_sheet(result), (), {"section": 18, "item": 40, "value": 70}),
            ("rules", rules, (), {"title": 50, "clause": 80, "rationale": 100}),
        ],
    )
