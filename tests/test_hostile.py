"""Hostile input: every case of tests/hostile/ (and the ones only a test can make: a 1 MB
field, 500 columns, awkward file names, a symlink loop, a FIFO, a folder named like a CSV, an
unreadable file) is answered with exit 2 or SCH-01 findings and a message naming the file and
what to fix — never exit 3, never a traceback, and the reconciliation always holds."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import BASE_LINE, CLAIM_HEADER, CLI, PROJECT, claims, register, run_cli

HOSTILE = PROJECT / "tests" / "hostile"


def validate(tmp_path: Path, *paths: Path | str) -> subprocess.CompletedProcess:
    completed = run_cli(
        "run",
        *map(str, paths),
        "--pcns",
        str(register(tmp_path / "p.csv")),
        "--out",
        str(tmp_path / "out"),
    )
    assert completed.returncode in (0, 1, 2), completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    manifest = tmp_path / "out" / "manifest.json"
    if manifest.exists():
        reconciliation = json.loads(manifest.read_text())["reconciliation"]
        assert reconciliation["balanced"], reconciliation
    return completed


def findings(tmp_path: Path) -> list[dict]:
    with (tmp_path / "out" / "exceptions.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("name", "code", "says"),
    [
        ("empty.csv", 2, "is empty"),
        ("header_only.csv", 2, "has a header but no claim rows"),
        ("utf16.csv", 2, "UTF-16"),
        ("binary.csv", 2, "NUL bytes"),
        ("unterminated_quote.csv", 2, "cannot be parsed as CSV from line 3: unexpected end"),
        ("duplicate_headers.csv", 2, "both named 'wte'"),
    ],
)
def test_unreadable_files_exit_2_naming_file_and_fix(tmp_path, name, code, says):
    completed = validate(tmp_path, HOSTILE / name)
    assert completed.returncode == code
    assert f"{name}: " in completed.stderr and says in completed.stderr


def test_windows_1252_with_pound_signs_loads(tmp_path):
    assert validate(tmp_path, HOSTILE / "windows1252_pound.csv").returncode == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"][0]["encoding"] == "windows-1252"


def test_ragged_rows_are_sch01_findings(tmp_path):
    assert validate(tmp_path, HOSTILE / "ragged.csv").returncode == 1
    rows = [row for row in findings(tmp_path) if row["rule_id"] == "SCH-01"]
    assert [row["source_line"] for row in rows] == ["3", "4"]
    assert "has 10 fields but the header has 21" in rows[0]["message"]


def test_injection_in_every_text_column_is_neutralised(tmp_path):
    assert validate(tmp_path, HOSTILE / "injection.csv").returncode == 1
    for row in findings(tmp_path):
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row
    for page in (tmp_path / "out").rglob("*.html"):
        html = page.read_text()
        assert "<script>alert(1)</script>" not in html
        assert "http://example.invalid" not in html.replace("&#34;http://example.invalid", "")


def test_a_one_megabyte_field_gives_a_short_message(tmp_path):
    path = claims(tmp_path / "big.csv", {"role": "x" * 1_048_576})
    assert validate(tmp_path, path).returncode == 1
    [row] = findings(tmp_path)
    assert row["rule_id"] == "SCH-01" and len(row["message"]) < 400
    assert "(1,048,576 characters)" in row["message"]


def test_five_hundred_columns(tmp_path):
    path = tmp_path / "wide.csv"
    extra = [f"extra_{n}" for n in range(500 - len(CLAIM_HEADER))]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CLAIM_HEADER, *extra])
        writer.writerow([*(BASE_LINE[name] for name in CLAIM_HEADER), *("v" for _ in extra)])
    assert validate(tmp_path, path).returncode == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["inputs"][0]["ignored_columns"]) == len(extra)


def test_awkward_file_names(tmp_path):
    folder = tmp_path / "claims"
    names = [
        "ünïcödé claims £.csv",
        "-rf.csv",
        "new\nline.csv",
        "$(touch pwned).csv",
        "..csv",
        "a;b&c|d.csv",
    ]
    for number, name in enumerate(names):
        claims(folder / name, {"staff_id": f"S{number}"})
    assert validate(tmp_path, folder).returncode == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sorted(Path(i["path"]).name for i in manifest["inputs"] if i["kind"] == "claims") == (
        sorted(names)
    )
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_symlink_loop_folder_named_csv_and_fifo_are_reported(tmp_path):
    folder = tmp_path / "claims"
    claims(folder / "good.csv", {})
    (folder / "loop.csv").symlink_to(folder / "loop.csv")
    (folder / "folder.csv").mkdir()
    os.mkfifo(folder / "pipe.csv")
    completed = validate(tmp_path, folder)
    assert completed.returncode == 2
    assert "loop.csv: cannot be read" in completed.stderr
    assert "folder.csv: is a folder" in completed.stderr
    assert "pipe.csv: is not a regular file" in completed.stderr
    assert (
        json.loads((tmp_path / "out" / "manifest.json").read_text())["reconciliation"][
            "rows_checked"
        ]
        == 1
    )


def test_unreadable_file(tmp_path):
    """A claim file the run may not read: exit 2 naming it, never a traceback.

    Root reads any file whatever its mode, so as root the run is made without the two
    capabilities that let it (setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH). It stays
    root, so it still reaches the checkout and its interpreter wherever the repo was cloned,
    but a file of mode 000 is now closed to it as to any other user."""
    secret = claims(tmp_path / "secret.csv", {})
    secret.chmod(0o000)
    command = [
        *CLI,
        "run",
        str(secret),
        "--pcns",
        str(register(tmp_path / "p.csv")),
        "--out",
        str(tmp_path / "out"),
    ]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to take root's right to read anything"
        drop = "--bounding-set=-dac_override,-dac_read_search"
        command = [setpriv, "--inh-caps=-all", drop, *command]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT, timeout=300)
    assert completed.returncode == 2, completed.stderr
    assert "secret.csv: cannot be read (Permission denied)" in completed.stderr
    assert "Traceback" not in completed.stderr
