"""The command line: parse arguments, call the library, print a short account, pick the exit code.

Exit codes: 0 no open finding at or above --fail-on (default: open reject, adjust or query
findings); 1 there are; 2 input or configuration error (a claim file that cannot be read is
reported and the rest still validated; a configuration error stops before any output); 3
internal error or a stop by signal, never a bare traceback. The life of the run in its output
folder (lock, staging, publish) is runner.py's; the libraries are imported only by the
command that needs them, so `rules`, `explain` and `--help` start quickly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from validator import __version__
from validator.errors import ConfigError, EngineError
from validator.runlog import RunLog, printable
from validator.runner import (
    EXIT_CLEAN,
    EXIT_INPUT,
    EXIT_INTERNAL,
    LockHeld,
    check_timings,
    month_before_lines,
)
from validator.unattended import (
    FAIL_ON,
    LOG_FORMATS,
    RunConfig,
    Stopped,
    check_max_lines,
    check_month_policy,
    check_wait,
    latest_previous,
    load_config,
    month_for_policy,
    out_folder,
    stop_on_signals,
)
from validator.units import MAX_LINES

if TYPE_CHECKING:
    from validator.catalogue import Catalogue, Rule


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit code is already 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message}\n")


class _Version(argparse.Action):
    """`--version`: the tool's version and the hash of the rule catalogue it applies."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from validator.catalogue import load_catalogue

        try:
            catalogue = load_catalogue()
        except (ConfigError, OSError) as error:
            parser.exit(EXIT_INPUT, f"{parser.prog} {__version__}\nrule catalogue: {error}\n")
        sys.stdout.write(
            f"{parser.prog} {__version__}\n"
            f"rule catalogue sha256 {catalogue.digest} ({len(catalogue.active)} active rules)\n"
        )
        parser.exit(EXIT_CLEAN)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="arrs-validate",
        description="Validate ARRS (Additional Roles Reimbursement Scheme) claim files.",
    )
    parser.add_argument(
        "--version", action=_Version, help="show the version and the rule-catalogue hash, then exit"
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="validate claim files and write the exception report",
        description="Validate claim files against the scheme and write exceptions.csv, "
        "summary.csv, manifest.json and the HTML report to --out.",
    )
    run.add_argument(
        "claims",
        nargs="*",
        metavar="CLAIMS",
        help="claim CSV files or .xlsx workbooks, or folders of them",
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
        "--columns",
        type=Path,
        metavar="PROFILE",
        help="a column profile (TOML) mapping another export's headers and spellings onto "
        "the claim columns (see the README)",
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
        "--max-lines",
        type=int,
        metavar="N",
        help="refuse a batch of more than N claim lines, before it is all read, so that one "
        "huge file cannot exhaust the machine's memory (default 1,000,000)",
    )
    run.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        help="the least severity of an open finding that makes the exit code 1 (default "
        "query: open reject, adjust or query findings; never: exit 0 whatever is found)",
    )
    run.add_argument(
        "--quiet",
        action="store_true",
        help="print nothing but errors (for cron mail that should hold only what needs a person)",
    )
    run.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="progress and log lines on stderr: text (a progress bar on a terminal, plain "
        "lines otherwise) or json (one object per line, for log collectors)",
    )
    run.add_argument(
        "--show-names",
        action="store_true",
        help="show staff names in the report (otherwise only staff_id)",
    )

    check = commands.add_parser(
        "check",
        help="check claim files against the claim schema only, writing nothing",
        description="Read claim files and show, per file, every row the claim schema refuses "
        "(line, column, value, what was expected) and every file that cannot be read. The "
        "scheme's rules are not applied and nothing is written. Exit 0: no findings; 1: schema "
        "findings; 2: a file, the register, agreements, reference data or profile cannot be used.",
    )
    check.add_argument(
        "claims", nargs="+", metavar="CLAIMS", help="claim files, or folders of them"
    )
    check.add_argument("--pcns", type=Path, metavar="FILE", help="also check the PCN register")
    check.add_argument(
        "--max-lines",
        type=int,
        metavar="N",
        help="refuse claim files of more than N lines in all (default 1,000,000)",
    )
    check.add_argument(
        "--agreements", type=Path, metavar="FILE", help="also check the agreements file"
    )
    check.add_argument(
        "--reference",
        type=Path,
        metavar="DIR",
        help="reference data that replaces or adds to the shipped data (roles it names are valid)",
    )
    check.add_argument(
        "--columns",
        type=Path,
        metavar="PROFILE",
        help="a column profile (TOML) mapping another export's headers and spellings",
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


class Console:
    """What the command prints. stdout: the account of the run (nothing with --quiet). stderr:
    errors and warnings, and the run's log lines (RunLog); with `--log-format json`, every
    line there is one JSON object, errors included. Text never carries control characters
    from file names or data (a forged line in cron mail)."""

    def __init__(self, quiet: bool = False, log: RunLog | None = None) -> None:
        self.quiet = quiet
        self.log = log

    def say(self, text: str = "") -> None:
        if not self.quiet:
            print(printable(text, keep_newlines=True))

    def error(self, text: str, event: str = "error") -> None:
        """An error (always told) or, with event="warning", a warning (not with --quiet)."""
        if self.quiet and event == "warning":
            return
        if self.log is not None and self.log.format == "json":
            self.log.event(event, message=text)
        else:
            print(f"arrs-validate: {printable(text, keep_newlines=True)}", file=sys.stderr)


def _run_settings(args: argparse.Namespace) -> RunConfig:
    """The run's settings: the config file's, overridden by what the command line gives."""
    config = load_config(args.config) if args.config else RunConfig()
    if args.claims:
        config.claims = list(args.claims)
    for name in ("pcns", "agreements", "reference", "columns", "out", "previous"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, str(value))
    if args.month is not None:
        config.month = check_month_policy(args.month, "--month")
    for name in ("show_names", "quiet"):
        if getattr(args, name):
            setattr(config, name, True)
    for name in ("log_format", "fail_on"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if args.wait is not None:
        config.wait = check_wait(args.wait, "--wait")
    if args.max_lines is not None:
        config.max_lines = check_max_lines(args.max_lines, "--max-lines")
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
    if args.timings is not None and not args.timings.parent.is_dir():
        raise ConfigError(
            f"--timings {args.timings}: the folder {args.timings.parent} does not exist; "
            "create it or name a file in an existing folder"
        )
    return config


def _inputs(config: RunConfig, args: argparse.Namespace) -> list[tuple[str, Path]]:
    """Every input file and folder of the run, with the option that named it."""
    named = [("CLAIMS", Path(claim)) for claim in config.claims]
    for option, value in (
        ("--pcns", config.pcns),
        ("--agreements", config.agreements),
        ("--reference", config.reference),
        ("--columns", config.columns),
        ("--config", args.config),
    ):
        if value:
            named.append((option, Path(value)))
    return named


def _previous(config: RunConfig):
    """--previous: a folder, or for "auto" a function of the review month that finds one."""
    if config.previous == "auto":
        pattern = config.out
        return lambda review_month: latest_previous(pattern, review_month)
    return Path(config.previous) if config.previous else None


def command_run(args: argparse.Namespace, console: Console, started: dt.datetime) -> int:
    from validator.load import skipped_sheets_text
    from validator.pipeline import RunOptions
    from validator.runner import OutputRun

    run_id = f"{started:%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"  # (secrets: 7 ms to import)
    config = _run_settings(args)
    console.quiet = config.quiet
    log = console.log = RunLog(config.log_format, run_id, quiet=config.quiet)
    options = RunOptions(
        claims=config.claims,
        pcns=Path(config.pcns),
        agreements=Path(config.agreements) if config.agreements else None,
        reference=Path(config.reference) if config.reference else None,
        columns=Path(config.columns) if config.columns else None,
        month=month_for_policy(config.month),
        show_names=config.show_names,
        engine_mode=args.engine,
        max_lines=config.max_lines,
        previous=_previous(config),
        progress=log.progress,
    )
    log.event("start", claims=config.claims, pcns=config.pcns, out=config.out, month=options.month)
    run = OutputRun(
        options,
        config.out,
        _inputs(config, args),
        wait=config.wait,
        fail_on=config.fail_on,
        event=log.event,
        started=started,
        run_id=run_id,
    )
    console.run = run
    if args.timings is not None:
        check_timings(args.timings, run.inputs, out_folder(config.out, options.month))
    outcome = run.execute()
    result, exit_code, out = outcome.result, outcome.exit_code, outcome.out
    review = f"{result.review_month:%Y-%m}"
    for file in result.file_problems:
        console.error(f"{file.path}: {file.problem}")
    for file in result.files:  # a workbook's sheets that hold no claim table
        if file.skipped_sheets:
            console.error(skipped_sheets_text(file), "warning")
    if result.missing_rates:
        console.error(result.missing_rates_message)
    for agreement in result.unmatched_agreements["agreement_id"].to_list():
        console.error(f"agreement {agreement} covered no finding and moved no deadline", "warning")
    counts = result.findings.group_by("severity", "status").len().sort("severity", "status")
    if options.month is None:
        console.say(
            f"review month {review} ({outcome.review_lines} claim lines): the latest claim "
            "month in the input; give --month to choose another"
        )
        before = month_before_lines(result)
        if before and outcome.review_lines * 2 < before[1]:
            console.error(
                f"the review month {review} holds {outcome.review_lines} claim line(s), under "
                f"half the {before[1]} of {before[0]}: if they are advance claims, give "
                f"--month {before[0]}",
                "warning",
            )
    else:
        console.say(f"review month {review} ({outcome.review_lines} claim lines)")
    console.say(
        f"rows read {result.rows_read} = rejected by schema {result.rows_rejected_by_schema} "
        f"+ checked {result.rows_checked}"
    )
    for severity, status, count in counts.iter_rows():
        console.say(f"  {count:6d} {status} {severity}")
    console.say(f"outputs written to {out}/ (exit code {exit_code})")
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
        try:
            check_timings(args.timings, run.inputs, out)
        except ConfigError as error:
            console.error(f"{error} (the outputs in {out} are complete)")
            return EXIT_INPUT
        try:
            args.timings.write_text(json.dumps(result.timings.rounded(), indent=2) + "\n")
        except OSError as error:
            console.error(
                f"--timings {args.timings}: cannot write it ({error.strerror or error}); "
                f"the outputs in {out} are complete"
            )
            return EXIT_INPUT
    return exit_code


def command_check(args: argparse.Namespace, console: Console) -> int:
    from validator.check import check_files, file_report
    from validator.load import skipped_sheets_text

    max_lines = (
        MAX_LINES if args.max_lines is None else check_max_lines(args.max_lines, "--max-lines")
    )
    result = check_files(
        args.claims, args.pcns, args.agreements, args.reference, args.columns, max_lines
    )
    for problem in result.input_problems:
        console.error(problem)
    for check in result.files:
        if check.file.skipped_sheets:
            console.error(skipped_sheets_text(check.file), "warning")
        if check.file.problem:  # as a run reports it: the file, then why it cannot be read
            console.error(file_report(check))
        else:
            console.say(file_report(check))
    return result.exit_code


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


def _finish(console: Console, exit_code: int, text: str, event: str = "error") -> int:
    """An error: told on stderr, and with a run's log, its `finish` event."""
    console.error(text, event)
    if console.log is not None:  # (in text, the error line above already says why)
        reason = {"error": text} if console.log.format == "json" else {}
        console.log.event("finish", exit_code=exit_code, **reason)
    return exit_code


def _stopped_text(console: Console, error: BaseException) -> str:
    name = str(error) or "SIGINT"
    run = getattr(console, "run", None)
    if run is not None and run.published:
        return (
            f"stopped by {name} after publishing: the new outputs in {run.out} are complete, "
            "but the run did not finish its account"
        )
    return f"stopped by {name} before finishing; the previous outputs were left as they were"


def main(argv: list[str] | None = None) -> int:
    started = dt.datetime.now(dt.UTC)
    console = Console()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            if args.log_format == "json":  # errors before the run's log starts are JSON too
                console.log = RunLog("json", "-")
            return command_run(args, console, started)
        if args.command == "check":
            return command_check(args, console)
        from validator.catalogue import load_catalogue

        catalogue = load_catalogue()
        if args.command == "rules":
            if args.html is not None and not args.html.parent.is_dir():
                raise ConfigError(
                    f"--html {args.html}: the folder {args.html.parent} does not exist; "
                    "create it or name a file in an existing folder"
                )
            console.say(_rule_table(catalogue))
            if args.html:
                from validator.report import render_rule_reference

                try:
                    args.html.write_text(render_rule_reference(catalogue), encoding="utf-8")
                except OSError as error:
                    raise ConfigError(
                        f"--html {args.html}: cannot write it ({error.strerror or error})"
                    ) from None
            return EXIT_CLEAN
        rule = catalogue.get(args.rule_id.strip().upper())
        if rule is None:
            console.error(f"no rule {args.rule_id}; `arrs-validate rules` lists them")
            return EXIT_INPUT
        console.say(explain_rule(rule))
        if rule.applies_to == "training_conditions":
            from validator.reference import load_reference, training_conditions_text

            console.say(training_conditions_text(load_reference(None)))
        return EXIT_CLEAN
    except ConfigError as error:
        return _finish(console, EXIT_INPUT, f"configuration error: {error}")
    except EngineError as error:
        return _finish(console, EXIT_INTERNAL, f"internal error in the rules engine: {error}")
    except LockHeld as error:
        return _finish(console, EXIT_INPUT, str(error))
    except (Stopped, KeyboardInterrupt) as error:
        return _finish(console, EXIT_INTERNAL, _stopped_text(console, error), "stopped")
    except Exception as error:  # the last line of defence: never a bare traceback
        if os.environ.get("ARRS_VALIDATE_DEBUG"):
            import traceback

            traceback.print_exc()
        return _finish(
            console,
            EXIT_INTERNAL,
            f"internal error ({type(error).__name__}: {error}); "
            "please report it with the manifest of the last good run",
        )


def entry() -> None:
    """The console script: main(), then exit without tearing the heap down object by
    object (a national run's frames take a quarter of a second to free; the kernel frees
    them at once). Everything main opened is closed and flushed by then.

    SIGTERM and SIGINT are caught from the first moment (before the libraries are imported),
    so a stop at any time ends with a message and exit 3. If the account or the log cannot
    be written (stderr on a full disk), the exit code says so: 2, never a success code."""
    stop_on_signals()
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(errors="backslashreplace")  # a Latin-1 file name prints, escaped
    try:
        code = main()
    except (Stopped, KeyboardInterrupt):
        code = EXIT_INTERNAL  # stopped while telling how it stopped
    except OSError:
        code = EXIT_INPUT  # the account or the log could not be written (stderr is full)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = max(code, EXIT_INPUT)
    os._exit(code)


if __name__ == "__main__":
    entry()
