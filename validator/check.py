"""`check`: read claim files and judge them against the claim schema only, writing nothing.

For a PCN before it sends its file, and for a commissioner before a run: the same reading
(validator/load.py) and the same schema (validator/schema.py) as a run, so a file `check`
passes is never refused by the schema of a run, and every problem it shows is one a run would
report as SCH-01 or as a file that cannot be read. The scheme's rules are not applied: they
need the whole batch, the register and the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from validator.errors import ConfigError
from validator.load import ClaimFile, column_positions, read_claims, with_file_of_row
from validator.reference import load_agreements, load_reference, load_register
from validator.schema import check_claims
from validator.units import MAX_LINES

EXIT_CLEAN, EXIT_FINDINGS, EXIT_INPUT = 0, 1, 2
VALUE_WIDTH = 40  # a value longer than this is cut, with an ellipsis, in the table


@dataclass
class FileCheck:
    """One claim file: how it was read, and its schema findings (line, column, value,
    problem), in line order."""

    file: ClaimFile
    findings: list[tuple[int, str, str, str]] = field(default_factory=list)


@dataclass
class CheckResult:
    files: list[FileCheck]
    # Problems with --pcns or --agreements: named, and the claim files still checked.
    input_problems: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.input_problems or any(check.file.problem for check in self.files):
            return EXIT_INPUT
        if any(check.findings for check in self.files):
            return EXIT_FINDINGS
        return EXIT_CLEAN


def check_files(
    claims: list[str],
    pcns: Path | None = None,
    agreements: Path | None = None,
    reference: Path | None = None,
    columns: Path | None = None,
    max_lines: int = MAX_LINES,
) -> CheckResult:
    """Read the claim files and check them against the schema. A bad --reference or
    --columns raises ConfigError (nothing can be judged without them); a bad register or
    agreements file is listed in the result and the claim files are still checked."""
    reference_data = load_reference(reference)
    profile = None
    if columns is not None:
        from validator.profile import load_profile

        profile = load_profile(columns, reference_data.role_names)
    input_problems = []
    if pcns is not None:
        try:
            load_register(pcns)
        except ConfigError as error:
            input_problems.append(str(error))
    if agreements is not None:
        from validator.catalogue import load_catalogue

        try:
            load_agreements(agreements, {rule.id for rule in load_catalogue().rules})
        except ConfigError as error:
            input_problems.append(str(error))
    files, raw = read_claims(claims, profile=profile, max_lines=max_lines)
    failures, _ = check_claims(raw, reference_data.role_names, column_positions(files))
    read = [index for index, file in enumerate(files) if not file.problem and file.rows_read]
    starts = pl.DataFrame(
        {"first_row_no": [files[i].first_row_no for i in read], "file": read},
        schema={"first_row_no": pl.Int64, "file": pl.Int64},
    )
    located = with_file_of_row(
        failures.join(raw.select("row_no", "source_line"), on="row_no").sort(
            "row_no", maintain_order=True
        ),
        starts,
    ).partition_by("file", as_dict=True, maintain_order=True)
    by_file = {key[0]: frame for key, frame in located.items()}
    checks = []
    for index, file in enumerate(files):
        found = by_file.get(index) if not file.problem else None
        rows = (
            found.select("source_line", "column", "value", "problem") if found is not None else None
        )
        checks.append(
            FileCheck(file, [] if rows is None else [tuple(row) for row in rows.iter_rows()])
        )
    return CheckResult(checks, input_problems)


def _cut(value: str) -> str:
    return value if len(value) <= VALUE_WIDTH else value[: VALUE_WIDTH - 1] + "…"


def file_report(check: FileCheck) -> str:
    """One file's account for the terminal: a heading, then a table of its findings (line,
    column, value as read, what was expected), or the problem that kept it from being read."""
    file = check.file
    if file.problem:
        return f"{file.path}: {file.problem}"
    if not check.findings:
        return f"{file.path}: {file.rows_read} rows, no schema findings"
    heading = (
        f"{file.path}: {file.rows_read} rows, {len(check.findings)} schema finding(s) in "
        f"{len({line for line, *_ in check.findings})} row(s)"
    )
    rows = [("LINE", "COLUMN", "VALUE", "EXPECTED")]
    for line, column, value, problem in check.findings:
        expected = problem.removeprefix("expected ")
        rows.append((str(line), column or "(row)", _cut(value), expected))
    widths = [max(len(row[index]) for row in rows) for index in range(3)]
    table = [
        f"  {a:>{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip()
        for a, b, c, d in rows
    ]
    return "\n".join([heading, *table])
