"""The command line: parse arguments, call the library, print a short account, pick the exit code.

Exit codes (SPEC section 8): 0 no open reject/adjust/query findings; 1 open findings; 2 input
or configuration error (a claim file that cannot be read is reported and the rest still
validated; a configuration error stops before any output); 3 internal error, never a bare
traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import sys
import textwrap
import traceback
from pathlib import Path

from validator import __version__
from validator.catalogue import Catalogue, Rule, load_catalogue
from validator.errors import ConfigError, EngineError
from validator.outputs import write_outputs
from validator.pipeline import RunOptions, run_validation
from validator.report import render_pages

EXIT_CLEAN, EXIT_FINDINGS, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit code is already 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="arrs-validate",
        description="Validate ARRS (Additional Roles Reimbursement Scheme) claim files.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="validate claim files and write the exception report",
        description="Validate claim files against the scheme and write exceptions.csv, "
        "summary.csv, manifest.json and the HTML report to --out.",
    )
    run.add_argument(
        "claims", nargs="+", metavar="CLAIMS", help="claim CSV files, or folders of *.csv files"
    )
    run.add_argument(
        "--pcns",
        required=True,
        type=Path,
        metavar="FILE",
        help="the PCN register: one row per PCN per financial year",
    )
    run.add_argument(
        "--agreements",
        type=Path,
        metavar="FILE",
        help="commissioner agreements that waive findings",
    )
    run.add_argument(
        "--reference",
        type=Path,
        metavar="DIR",
        help="folder of roles.csv / rates.csv / limits.csv rows that replace or add "
        "to the shipped reference data",
    )
    run.add_argument(
        "--month",
        metavar="YYYY-MM",
        help="the review month (default: the latest claim month in the input)",
    )
    run.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder, replaced atomically"
    )
    run.add_argument(
        "--engine",
        choices=["fast", "plain"],
        default="fast",
        help="how records reach the rules engine: fast (each distinct decision once, the "
        "default) or plain (every line as it is; same findings, slower; for checking)",
    )
    run.add_argument(
        "--previous",
        type=Path,
        metavar="DIR",
        help="an earlier run's output folder: mark each finding new or persisting and "
        "list the ones resolved since",
    )
    run.add_argument(
        "--timings",
        type=Path,
        metavar="FILE",
        help="also write the seconds each phase took (read, schema, derive, rules, findings, "
        "report, outputs) to FILE as JSON",
    )
    run.add_argument(
        "--show-names",
        action="store_true",
        help="show staff names in the report (otherwise only staff_id)",
    )

    commands.add_parser(
        "rules",
        help="list the rule catalogue: ID, severity, title, clause",
        description="List every rule: ID, severity, title and clause.",
    )
    explain = commands.add_parser(
        "explain",
        help="explain one rule in full",
        description="Show one rule in full, with its cases.",
    )
    explain.add_argument("rule_id", metavar="RULE_ID", help="e.g. CAP-01")
    return parser


def _say(text: str = "", *, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout)


def command_run(args: argparse.Namespace) -> int:
    started = dt.datetime.now(dt.UTC)
    options = RunOptions(
        claims=args.claims,
        pcns=args.pcns,
        agreements=args.agreements,
        reference=args.reference,
        month=args.month,
        show_names=args.show_names,
        engine_mode=args.engine,
        previous=args.previous,
    )
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    result = run_validation(options)
    for file in result.file_problems:
        _say(f"arrs-validate: {file.path}: {file.problem}", err=True)
    if result.file_problems:
        exit_code = EXIT_INPUT
    elif result.open_findings:
        exit_code = EXIT_FINDINGS
    else:
        exit_code = EXIT_CLEAN
    with result.timings("report"):
        pages = render_pages(result, started, run_id)
    try:
        with result.timings("outputs"):
            write_outputs(result, args.out, started, exit_code, pages, run_id)
    except OSError as error:
        _say(
            f"arrs-validate: cannot write the output folder {args.out}: "
            f"{error.strerror or error}; choose a writable --out with free space",
            err=True,
        )
        return EXIT_INPUT
    counts = result.findings.group_by("severity", "status").len().sort("severity", "status")
    _say(f"review month {result.review_month:%Y-%m}" if result.review_month else "no claim lines")
    _say(
        f"rows read {result.rows_read} = rejected by schema {result.rows_rejected_by_schema} "
        f"+ checked {result.rows_checked}"
    )
    for severity, status, count in counts.iter_rows():
        _say(f"  {count:6d} {status} {severity}")
    for agreement in result.unmatched_agreements["agreement_id"].to_list():
        _say(f"agreement {agreement} matched no claim line or finding", err=True)
    _say(f"outputs written to {args.out}/ (exit code {exit_code})")
    if args.timings:
        args.timings.write_text(json.dumps(result.timings.rounded(), indent=2) + "\n")
    return exit_code


def _rule_table(catalogue: Catalogue) -> str:
    rows = [("ID", "SEVERITY", "TITLE", "CLAUSE")]
    for rule in catalogue.rules:
        title = rule.title + (" (retired)" if rule.retired else "")
        rows.append((rule.id, rule.severity, title, rule.clause))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows
    )


def _case_text(case: dict) -> str:
    parts = []
    for number, line in enumerate(case.get("lines", []), start=2):
        changes = ", ".join(f"{key}={value!r}" for key, value in line.items()) or "as usual"
        parts.append(f"      line {number}: {changes}")
    for key in ("register", "agreements"):
        for row in case.get(key, []):
            parts.append(f"      {key}: " + ", ".join(f"{k}={v!r}" for k, v in row.items()))
    if "month" in case:
        parts.append(f"      review month: {case['month']}")
    return "\n".join(parts)


def explain_rule(rule: Rule) -> str:
    def wrap(text: str) -> str:
        return textwrap.fill(
            " ".join(text.split()), 88, initial_indent="  ", subsequent_indent="  "
        )

    lines = [
        f"{rule.id} — {rule.title}" + (" (retired)" if rule.retired else ""),
        f"severity: {rule.severity}    stage: {rule.stage}    evaluated on: {rule.applies_to}",
        f"applies to claim months from {rule.effective_from}"
        + (f" to {rule.effective_until}" if rule.effective_until else ""),
        "clause:",
        wrap(rule.clause),
        "fires when:",
        f"  {rule.when}",
        "message:",
        f"  {rule.message}",
        "rationale:",
        wrap(rule.rationale),
    ]
    for fires, heading in ((True, "failing example"), (False, "passing example")):
        cases = [case for case in rule.cases if bool(case.get("fires")) is fires]
        for case in cases:
            lines.append(f"{heading}: {case['name']}")
            lines.append("    a valid claim line, except:")
            lines.append(_case_text(case))
    lines.append(f"defined in {rule.path.relative_to(rule.path.parents[2])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return command_run(args)
        catalogue = load_catalogue()
        if args.command == "rules":
            _say(_rule_table(catalogue))
            return EXIT_CLEAN
        rule = catalogue.get(args.rule_id.strip().upper())
        if rule is None:
            _say(
                f"arrs-validate: no rule {args.rule_id}; `arrs-validate rules` lists them",
                err=True,
            )
            return EXIT_INPUT
        _say(explain_rule(rule))
        return EXIT_CLEAN
    except ConfigError as error:
        _say(f"arrs-validate: configuration error: {error}", err=True)
        return EXIT_INPUT
    except EngineError as error:
        _say(f"arrs-validate: internal error in the rules engine: {error}", err=True)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        _say("arrs-validate: interrupted; no outputs were changed", err=True)
        return EXIT_INTERNAL
    except Exception as error:  # the last line of defence: never a bare traceback
        if os.environ.get("ARRS_VALIDATE_DEBUG"):
            traceback.print_exc()
        _say(
            f"arrs-validate: internal error ({type(error).__name__}: {error}); "
            "please report it with the manifest of the last good run",
            err=True,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
