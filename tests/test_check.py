"""`arrs-validate check`: the real CLI, as a subprocess, on real files; it writes nothing."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from pathlib import Path

from tests.helpers import PROJECT, claims, register, run_cli, run_sample

SAMPLE = PROJECT / "sample_claims"
# One table row of `check`'s output: line, column, value, what was expected.
TABLE_ROW = re.compile(r"^ +(\d+)  (\S+) +(.*?)  +(\S.*)$")


def table(stdout: str) -> list[tuple[str, int, str]]:
    """(file, line, column) for every table row printed, under its file's heading."""
    rows, current = [], ""
    for text in stdout.splitlines():
        if not text.startswith(" "):
            current = text.split(": ", 1)[0]
        elif (match := TABLE_ROW.match(text)) is not None:
            rows.append((current, int(match[1]), match[2]))
    return rows


def tree(folder: Path) -> dict[str, int]:
    """Every file and folder under `folder`, with its modification time."""
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*")}


def test_a_good_file_exits_0_and_nothing_is_written(tmp_path):
    shutil.copytree(SAMPLE, tmp_path / "sample")
    before = tree(tmp_path)
    completed = run_cli(
        "check",
        "sample/claims/2021-06.csv",
        "--pcns",
        "sample/pcns.csv",
        "--agreements",
        "sample/agreements.csv",
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "sample/claims/2021-06.csv: 39 rows, no schema findings\n"
    assert completed.stderr == ""
    assert tree(tmp_path) == before  # no output folder, no lock, no log


def test_bad_rows_are_tabled_per_file_with_line_column_value_and_expectation():
    completed = run_cli("check", "sample_claims/claims")
    assert completed.returncode == 1, completed.stderr
    september = "sample_claims/claims/2021-09.csv"
    assert table(completed.stdout) == [
        (september, 30, "amount_claimed"),
        (september, 33, "claim_month"),
        (september, 33, "wte"),
    ]
    assert "  30  amount_claimed  4,6O4.25" in completed.stdout
    assert "a claim month as YYYY-MM, e.g. 2021-06" in completed.stdout
    assert "sample_claims/claims/2021-12.csv: 44 rows, no schema findings" in completed.stdout


def test_check_finds_exactly_the_schema_findings_of_a_run(tmp_path):
    """The same reading and schema as a run: every SCH-01 of the sample run, no more."""
    assert run_sample(tmp_path / "out").returncode in (1, 2)
    with (tmp_path / "out" / "exceptions.csv").open(encoding="utf-8") as handle:
        run_rows = {
            (row["source_file"], int(row["source_line"]))
            for row in csv.DictReader(handle)
            if row["rule_id"] == "SCH-01"
        }
    checked = {
        (file, line)
        for file, line, _ in table(
            run_cli(
                "check",
                *sorted(
                    str(path.relative_to(PROJECT)) for path in (SAMPLE / "claims").glob("*.csv")
                ),
            ).stdout
        )
    }
    assert checked == run_rows and run_rows


def test_a_short_row_and_a_bad_field_each_show_their_line(tmp_path):
    path = claims(tmp_path / "c.csv", {}, {"pcn_code": "X1", "wte": ""}, {})
    with path.open("a", encoding="utf-8") as handle:
        handle.write("U10001,2021-06\n")
    completed = run_cli("check", str(path))
    assert completed.returncode == 1
    assert table(completed.stdout) == [
        (str(path), 3, "pcn_code"),
        (str(path), 3, "wte"),
        (str(path), 5, "(row)"),
    ]
    assert "has 2 fields but the header has 25" in completed.stdout


def test_a_file_whose_name_is_not_utf8_is_checked_like_any_other(tmp_path):
    """Its findings are found by row number, not by matching a name Polars cannot hold."""
    good = claims(tmp_path / "ok.csv", {"amount_claimed": "lots"})
    latin1 = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.csv"))
    latin1.write_bytes(good.read_bytes())
    good.unlink()
    checked = run_cli("check", str(latin1))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert [(line, column) for _, line, column in table(checked.stdout)] == [(2, "amount_claimed")]


def test_a_missing_column_follows_every_column_of_a_wide_file(tmp_path):
    """A file of 300 columns without `wte` (hours blank too): the bad amount, which the file
    has, comes first, so it is the finding that carries the claim."""
    path = claims(tmp_path / "wide.csv", {"amount_claimed": "lots", "wte": ""})
    header, line = path.read_text().splitlines()
    names, cells = header.split(","), next(csv.reader([line]))
    keep = [i for i, name in enumerate(names) if name != "wte"]
    extra = [f"note_{n}" for n in range(300)]
    wide = ",".join(extra + [names[i] for i in keep])
    row = ",".join([""] * 300 + [cells[i] for i in keep])
    path.write_text(f"{wide}\n{row}\n")
    checked = run_cli("check", str(path))
    assert [column for _, _, column in table(checked.stdout)] == ["amount_claimed", "wte"]


def test_an_unreadable_file_is_exit_2_and_the_others_are_still_checked(tmp_path):
    good = claims(tmp_path / "good.csv", {})
    bad = claims(tmp_path / "bad.csv", {"amount_claimed": "lots"})
    missing = tmp_path / "missing.csv"
    headless = tmp_path / "headless.csv"
    headless.write_text("pcn_code,claim_month\nU10001,2021-06\n", encoding="utf-8")
    completed = run_cli("check", str(good), str(missing), str(bad), str(headless))
    assert completed.returncode == 2
    assert f"{good}: 1 rows, no schema findings" in completed.stdout
    assert table(completed.stdout) == [(str(bad), 2, "amount_claimed")]
    assert f"{missing}: cannot be read" in completed.stderr
    assert f"{headless}: lacks required column(s) staff_id" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_a_bad_register_is_named_and_the_claims_still_checked(tmp_path):
    pcns = register(tmp_path / "pcns.csv", {"area": "seaside"})
    completed = run_cli("check", str(claims(tmp_path / "c.csv", {})), "--pcns", str(pcns))
    assert completed.returncode == 2
    assert (
        "the PCN register (--pcns) has errors" in completed.stderr and "seaside" in completed.stderr
    )
    assert "1 rows, no schema findings" in completed.stdout


def test_reference_data_decides_which_roles_are_valid(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    shipped = (PROJECT / "reference" / "roles.csv").read_text(encoding="utf-8")
    header = shipped.splitlines()[0]
    row = dict.fromkeys(next(csv.reader(io.StringIO(header))), "")
    row.update(role="digital_lead", title="Digital lead", claimable_from="2021-04-01")
    row.update(cost_share="1.0")
    (reference / "roles.csv").write_text(
        f"{header}\n" + ",".join(row.values()) + "\n", encoding="utf-8"
    )
    path = claims(tmp_path / "c.csv", {"role": "Digital Lead"})
    assert run_cli("check", str(path)).returncode == 1
    assert run_cli("check", str(path), "--reference", str(reference)).returncode == 0
