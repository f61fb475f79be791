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
from collections.abc import Callable
from pathlib import Path

from validator import __version__
from validator.catalogue import Catalogue, Rule, load_catalogue
from validator.errors import ConfigError, EngineError
from validator.outputs import Staging, clear_leftovers, data_files, write_outputs
from validator.pages import Rendering
from validator.pipeline import RunOptions, run_validation
from validator.reference import load_reference, training_conditions_text
from validator.report import render_rule_reference, start_pages
from validator.runlog import RunLog
from validator.unattended import (
    LockHeld,
    OutputLock,
    RunConfig,
    Stopped,
    latest_previous,
    load_config,
    month_for_policy,
    out_folder,
    stop_on_signals,
)

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
        "claims", nargs="*", metavar="CLAIMS", help="claim CSV files, or folders of *.csv files"
    )
    run.add_argument(
        "--pcns",
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
    run.add_argument("--out", type=Path, metavar="DIR", help="output folder, replaced atomically")
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
        "--config",
        type=Path,
        metavar="FILE",
        help="a TOML file with the run's settings (see the README); options given on the "
        "command line win",
    )
    run.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="if another run holds the output folder's lock, wait this long for it (default 0)",
    )
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="progress and log lines on stderr: text (a progress bar on a terminal, plain "
        "lines otherwise) or json (one object per line, for log collectors)",
    )
    run.add_argument(
        "--show-names",
        action="store_true",
        help="show staff names in the report (otherwise only staff_id)",
    )

    rules = commands.add_parser(
        "rules",
        help="list the rule catalogue: ID, severity, title, clause",
        description="List every rule: ID, severity, title and clause.",
    )
    rules.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write the rule reference page (the report's rules.html) to FILE",
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


def _run_settings(args: argparse.Namespace) -> tuple[RunConfig, str | None]:
    """The run's settings: the config file's, overridden by what the command line gives."""
    config = load_config(args.config) if args.config else RunConfig()
    if args.claims:
        config.claims = list(args.claims)
    for name in ("pcns", "agreements", "reference", "out", "previous"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, str(value))
    if args.month is not None:
        config.month = args.month
    if args.show_names:
        config.show_names = True
    if args.log_format is not None:
        config.log_format = args.log_format
    if args.wait is not None:
        config.wait = args.wait
    missing = [
        flag
        for flag, value in (
            ("CLAIMS", config.claims),
            ("--pcns", config.pcns),
            ("--out", config.out),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"run needs {', '.join(missing)}: give them on the command line or in --config"
        )
    return config, month_for_policy(config.month)


def command_run(args: argparse.Namespace) -> int:
    started = dt.datetime.now(dt.UTC)
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    config, month = _run_settings(args)
    log = RunLog(config.log_format, run_id)
    pattern = config.out
    out = out_folder(pattern, month)
    # With {review_month} left to the input, lock the folder that will hold the months.
    lock = OutputLock(out if out is not None else Path(pattern).parent / ".arrs-validate-runs")
    previous: Path | Callable[[str], Path | None] | None = None
    if config.previous == "auto":
        previous = lambda review_month: latest_previous(pattern, review_month)  # noqa: E731
    elif config.previous:
        previous = Path(config.previous)
    options = RunOptions(
        claims=config.claims,
        pcns=Path(config.pcns),
        agreements=Path(config.agreements) if config.agreements else None,
        reference=Path(config.reference) if config.reference else None,
        month=month,
        show_names=config.show_names,
        engine_mode=args.engine,
        previous=previous,
        progress=log.progress,
    )
    try:
        lock.acquire(config.wait)
    except OSError as error:
        raise ConfigError(
            f"--out {pattern}: cannot create the lock file {lock.path} "
            f"({error.strerror or error}); choose a writable output folder"
        ) from None
    clearing = rendering = None
    try:
        if lock.stale_holder:
            log.event("stale_lock_cleared", holder=lock.stale_holder, lock=str(lock.path))
        log.event("start", claims=config.claims, pcns=config.pcns, out=pattern, month=month)
        if out is not None:
            clearing = clear_leftovers(out)
        rendering = Rendering()  # the page renderer starts while the run validates
        result = run_validation(options)
        review = f"{result.review_month:%Y-%m}" if result.review_month else None
        if out is None:
            out = out_folder(pattern, review or f"{dt.date.today():%Y-%m}")
        for file in result.file_problems:
            _say(f"arrs-validate: {file.path}: {file.problem}", err=True)
        if result.missing_rates:
            _say(f"arrs-validate: {result.missing_rates_message}", err=True)
        if result.file_problems or result.missing_rates:
            exit_code = EXIT_INPUT
        elif result.open_findings:
            exit_code = EXIT_FINDINGS
        else:
            exit_code = EXIT_CLEAN
        log.progress("phase", {"name": "report"})
        staging = None
        try:
            staging = Staging(out, clearing)
            with result.timings("report"):
                # A child process renders the pages while this one builds the data files.
                start_pages(result, started, run_id, staging.folder, rendering)
                data = data_files(result, run_id)
                rendering.wait()
            log.progress("phase", {"name": "outputs"})
            with result.timings("outputs"):
                write_outputs(result, staging, started, exit_code, run_id, data)
        except BaseException as error:
            rendering.stop()
            if staging is not None:
                staging.discard()  # the previous outputs stay as they were
            if not isinstance(error, OSError):
                raise
            _say(
                f"arrs-validate: cannot write the output folder {out}: "
                f"{error.strerror or error}; choose a writable --out with free space "
                "(nothing was changed there)",
                err=True,
            )
            log.event("finish", exit_code=EXIT_INPUT, error=str(error))
            return EXIT_INPUT
    finally:
        if rendering is not None:
            rendering.stop()  # (a no-op once it has finished)
        if clearing is not None:
            clearing.join()  # removal is done before the lock is let go
        lock.release()
        log.close()
    counts = result.findings.group_by("severity", "status").len().sort("severity", "status")
    _say(f"review month {review}" if review else "no claim lines")
    _say(
        f"rows read {result.rows_read} = rejected by schema {result.rows_rejected_by_schema} "
        f"+ checked {result.rows_checked}"
    )
    for severity, status, count in counts.iter_rows():
        _say(f"  {count:6d} {status} {severity}")
    for agreement in result.unmatched_agreements["agreement_id"].to_list():
        _say(f"agreement {agreement} matched no claim line or finding", err=True)
    _say(f"outputs written to {out}/ (exit code {exit_code})")
    log.event(
        "finish",
        exit_code=exit_code,
        out=str(out),
        review_month=review,
        rows_read=result.rows_read,
        rows_rejected_by_schema=result.rows_rejected_by_schema,
        rows_checked=result.rows_checked,
        findings=result.findings.height,
        open_findings=result.open_findings,
        previous=str(result.previous_folder) if result.previous_folder else None,
        seconds=result.timings.rounded(),
    )
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
        f"applies to {rule.months}",
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
            stop_on_signals()
            return command_run(args)
        catalogue = load_catalogue()
        if args.command == "rules":
            _say(_rule_table(catalogue))
            if args.html:
                args.html.write_text(render_rule_reference(catalogue), encoding="utf-8")
            return EXIT_CLEAN
        rule = catalogue.get(args.rule_id.strip().upper())
        if rule is None:
            _say(
                f"arrs-validate: no rule {args.rule_id}; `arrs-validate rules` lists them",
                err=True,
            )
            return EXIT_INPUT
        _say(explain_rule(rule))
        if rule.applies_to == "training_conditions":
            _say(training_conditions_text(load_reference(None)))
        return EXIT_CLEAN
    except ConfigError as error:
        _say(f"arrs-validate: configuration error: {error}", err=True)
        return EXIT_INPUT
    except EngineError as error:
        _say(f"arrs-validate: internal error in the rules engine: {error}", err=True)
        return EXIT_INTERNAL
    except LockHeld as error:
        _say(f"arrs-validate: {error}", err=True)
        return EXIT_INPUT
    except (Stopped, KeyboardInterrupt) as error:
        _say(
            f"arrs-validate: stopped by {error or 'SIGINT'} before finishing; "
            "the previous outputs were left as they were",
            err=True,
        )
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


def entry() -> None:
    """The console script: main(), then exit without tearing the heap down object by
    object (a national run's frames take a quarter of a second to free; the kernel frees
    them at once). Everything main opened is closed and flushed by then."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
