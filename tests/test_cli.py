"""The real CLI as a subprocess: exit codes, messages, outputs and the catalogue commands."""

from __future__ import annotations

import csv
import json

import fastexcel
import pytest

from tests.helpers import PROJECT, agreements, claims, register, run_cli
from validator import __version__, cli, pipeline
from validator.catalogue import load_catalogue


def run(tmp_path, *lines, register_rows=None, extra=(), out="out"):
    claim_file = claims(tmp_path / "claims.csv", *lines)
    pcns = register(tmp_path / "pcns.csv", *(register_rows or [{}]))
    return run_cli(
        "run", str(claim_file), "--pcns", str(pcns), "--out", str(tmp_path / out), *extra
    )


def read_exceptions(folder):
    with (folder / "exceptions.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_clean_claims_exit_0_with_every_output(tmp_path):
    completed = run(tmp_path, {})
    assert completed.returncode == 0, completed.stderr
    out = tmp_path / "out"
    for name in ("exceptions.csv", "summary.csv", "manifest.json", "index.html", "pcn/U10001.html"):
        assert (out / name).is_file(), name
    assert (out / "exceptions.csv").read_text().splitlines() == [
        "rule_id,severity,status,agreement_id,pcn_code,staff_id,role,claim_month,source_file,"
        "source_line,amount_claimed,amount_allowed,amount_at_risk,message"
    ]
    assert (out / "summary.csv").read_text().splitlines()[1] == (
        "U10001,Example PCN,1,4400.00,4400.00,0.00,4400.00,0.00,500000.00,4400.00,0,0,0,0,0"
    )


def test_open_findings_exit_1_and_warnings_alone_exit_0(tmp_path):
    assert run(tmp_path, {"amount_claimed": "5000.00"}).returncode == 1
    warning_only = run(
        tmp_path, {"role": "physician_associate", "training_status": "enrolled"}, out="warn"
    )
    assert warning_only.returncode == 0
    assert [r["rule_id"] for r in read_exceptions(tmp_path / "warn")] == ["TRN-02"]


def test_waived_findings_alone_exit_0(tmp_path):
    pcns = register(tmp_path / "pcns.csv")
    claim_file = claims(tmp_path / "claims.csv", {"additional_to_baseline": "N"})
    agreed = agreements(tmp_path / "agreements.csv", {"rule_id": "ELG-03"})
    completed = run_cli(
        "run",
        str(claim_file),
        "--pcns",
        str(pcns),
        "--agreements",
        str(agreed),
        "--out",
        str(tmp_path / "out"),
    )
    assert completed.returncode == 0, completed.stdout
    [row] = read_exceptions(tmp_path / "out")
    assert (row["status"], row["agreement_id"], row["amount_allowed"]) == (
        "waived",
        "AG-1",
        "4400.00",
    )


def test_unreadable_claim_file_exits_2_but_the_rest_is_validated(tmp_path):
    good = claims(tmp_path / "good.csv", {"amount_claimed": "5000.00"})
    bad = tmp_path / "bad.csv"
    bad.write_text("pcn_code,claim_month,staff_id\nU10001,2021-06,S1\n")
    pcns = register(tmp_path / "pcns.csv")
    completed = run_cli(
        "run", str(bad), str(good), "--pcns", str(pcns), "--out", str(tmp_path / "out")
    )
    assert completed.returncode == 2
    assert "bad.csv" in completed.stderr and "role" in completed.stderr
    assert {r["rule_id"] for r in read_exceptions(tmp_path / "out")} == {"CAP-01", "CST-01"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"][0]["status"] == "error" and manifest["exit_code"] == 2


@pytest.mark.parametrize(
    ("register_rows", "extra", "message"),
    [
        ([{"area": "moon"}], (), "column area: 'moon'"),
        ([{}, {}], (), "more than one row"),
        ([{}], ("--month", "June"), "--month June"),
    ],
)
def test_configuration_errors_exit_2_before_any_output(tmp_path, register_rows, extra, message):
    # (A missing rate is a line finding, REF-01: tests/test_scheme_fidelity.py.)
    completed = run(tmp_path, {}, register_rows=register_rows, extra=extra)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert message in completed.stderr
    assert not (tmp_path / "out").exists()


def test_previous_outputs_survive_a_configuration_error(tmp_path):
    assert run(tmp_path, {}).returncode == 0
    before = (tmp_path / "out" / "summary.csv").read_bytes()
    assert run(tmp_path, {}, extra=("--month", "2021-13")).returncode == 2
    assert (tmp_path / "out" / "summary.csv").read_bytes() == before


def test_internal_error_is_exit_3_without_a_traceback(monkeypatch, capsys, tmp_path):
    def broken(options):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(pipeline, "run_validation", broken)
    code = cli.main(["run", "x.csv", "--pcns", "p.csv", "--out", str(tmp_path / "o")])
    assert code == 3
    assert "internal error (RuntimeError: unexpected)" in capsys.readouterr().err


def test_text_cells_are_formula_safe(tmp_path):
    completed = run(tmp_path, {"staff_id": "-S1", "pcn_code": "=HYPERLINK(1)"})
    assert completed.returncode == 1
    rows = read_exceptions(tmp_path / "out")
    assert {row["pcn_code"] for row in rows} == {"'=HYPERLINK(1)"}
    # The workbook's text cells too (a cell stored as text, re-saved as CSV, would run).
    book = fastexcel.read_excel(tmp_path / "out" / "exceptions.xlsx")
    cells = book.load_sheet("findings", dtypes="string").to_polars()
    assert set(cells["pcn_code"]) == {"'=HYPERLINK(1)"}


def test_a_claim_file_named_like_a_formula_is_formula_safe_in_every_csv(tmp_path):
    # The file's name is a line's source_file (held as a category, not text, in the run):
    # it is prefixed wherever a CSV shows it, on checked lines and on their findings alike.
    claims(tmp_path / "=SUM(1).csv", {}, {"amount_claimed": "999999.00"})
    register(tmp_path / "p.csv")
    completed = run_cli("run", "=SUM(1).csv", "--pcns", "p.csv", "--out", "o", cwd=tmp_path)
    assert completed.returncode == 1, completed.stderr
    for name in ("lines.csv", "exceptions.csv"):
        with (tmp_path / "o" / name).open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert rows and {row["source_file"] for row in rows} == {"'=SUM(1).csv"}, name
    book = fastexcel.read_excel(tmp_path / "o" / "exceptions.xlsx")
    for sheet in ("lines", "findings"):
        cells = book.load_sheet(sheet, dtypes="string").to_polars()
        assert set(cells["source_file"]) == {"'=SUM(1).csv"}, sheet


def test_reference_adds_a_years_rates_and_limits(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "rates.csv").write_text(
        "role,afc_band,area,effective_from,annual_maximum\n"
        "mental_health_practitioner,6,standard,2022-04-01,24000.00\n"
    )
    (reference / "limits.csv").write_text(
        "financial_year,role,list_size_min,list_size_max,max_wte\n"
        "2022/23,mental_health_practitioner,0,,1.5\n"
    )
    mhp = {
        "role": "mental_health_practitioner",
        "afc_band": "6",
        "claim_month": "2022-05",
        "amount_claimed": "2100.00",
        "monthly_salary": "4000.00",
    }
    lines = [mhp, {**mhp, "staff_id": "S2"}]
    year = [{"financial_year": "2022/23"}]
    without = run(tmp_path, *lines, register_rows=year, out="plain")
    assert without.returncode == 2
    # Shipped data only: the 2021/22 rates ended on 31 March 2022, so no rate applies.
    assert sorted(
        (r["rule_id"], r["amount_allowed"]) for r in read_exceptions(tmp_path / "plain")
    ) == [("REF-01", "0.00"), ("REF-01", "0.00")]
    completed = run(tmp_path, *lines, register_rows=year, extra=("--reference", str(reference)))
    assert completed.returncode == 1, completed.stderr
    rows = read_exceptions(tmp_path / "out")
    # £24,000 / 12 = £2,000.00 caps the £2,100.00 claims; 2.0 WTE passes the 1.5 limit, so
    # the second line (by staff_id, both starting in May) is paid for its 0.5 WTE within it.
    assert sorted((r["rule_id"], r["staff_id"], r["amount_allowed"]) for r in rows) == [
        ("CAP-01", "S001", "2000.00"),
        ("CAP-01", "S2", "1000.00"),
        ("LIM-01", "S2", "1000.00"),
    ]


def test_rules_lists_every_rule_and_explain_shows_one():
    rules = len(load_catalogue().rules)
    listing = run_cli("rules")
    assert listing.returncode == 0
    assert len(listing.stdout.strip().splitlines()) == 1 + rules  # header + the rules
    explained = run_cli("explain", "par-01")
    assert explained.returncode == 0
    for part in ("PAR-01", "clause:", "rationale:", "failing example", "passing example"):
        assert part in explained.stdout
    page = PROJECT / "test-output" / "rules-reference.html"
    page.parent.mkdir(exist_ok=True)
    assert run_cli("rules", "--html", str(page)).returncode == 0
    html = page.read_text()
    assert html.count('<tr id="') == rules and 'id="PAR-01"' in html
    missing = run_cli("explain", "XYZ-99")
    assert missing.returncode == 2 and "arrs-validate rules" in missing.stderr


def test_every_command_has_help_and_is_in_the_readme():
    readme = (PROJECT / "README.md").read_text()
    for command in ("run", "check", "rules", "explain"):
        completed = run_cli(command, "--help")
        assert completed.returncode == 0 and "usage:" in completed.stdout
        assert f"arrs-validate {command}" in readme
    for option in ("--pcns", "--agreements", "--reference", "--month", "--out", "--show-names"):
        assert option in readme


def test_names_only_with_show_names_and_always_escaped(tmp_path):
    line = {"staff_name": "Zed <script>alert(1)</script>", "amount_claimed": "5000.00"}
    assert run(tmp_path, line).returncode == 1
    hidden = (tmp_path / "out" / "pcn" / "U10001.html").read_text()
    assert "Zed" not in hidden and "Zed" not in (tmp_path / "out" / "exceptions.csv").read_text()
    assert run(tmp_path, line, extra=("--show-names",), out="named").returncode == 1
    shown = (tmp_path / "named" / "pcn" / "U10001.html").read_text()
    assert "Zed &lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "<script>alert(1)" not in shown


def test_version_shows_the_tool_and_the_rule_catalogue_hash():
    completed = run_cli("--version")
    assert completed.returncode == 0, completed.stderr
    catalogue = load_catalogue()
    assert completed.stdout.splitlines() == [
        f"arrs-validate {__version__}",
        f"rule catalogue sha256 {catalogue.digest} ({len(catalogue.active)} active rules)",
    ]
