"""The shipped sample batch, run by the real CLI exactly as `make run` does, must produce
exactly the findings listed in sample_claims/README.md — and do it the same way twice."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import PROJECT, run_sample
from validator.catalogue import load_catalogue

SAMPLE = PROJECT / "sample_claims"


def expected_from_readme() -> Counter:
    rows = Counter()
    for line in (SAMPLE / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 7 and re.fullmatch(r"[A-Z]{3}-\d\d", cells[0]):
            rule, status, pcn, month, file, source_line, _ = cells
            source = "" if file == "—" else f"sample_claims/{file}"
            rows[(rule, status, pcn, month, source, "" if source_line == "—" else source_line)] += 1
    return rows


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "out"
    completed = run_sample(out)
    return out, completed


def test_sample_batch_writes_everything_then_exits_2_for_its_missing_rate(sample_run):
    out, completed = sample_run
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    assert completed.stderr.count("no maximum reimbursable amount") == 1
    assert "role advanced_practitioner, band (none), area outer_london, month 2021-12" in (
        completed.stderr
    )
    assert (out / "exceptions.csv").exists() and (out / "index.html").exists()


def test_sample_batch_findings_are_exactly_those_listed_in_its_readme(sample_run):
    out, _ = sample_run
    with (out / "exceptions.csv").open(encoding="utf-8", newline="") as handle:
        found = Counter(
            (
                r["rule_id"],
                r["status"],
                r["pcn_code"],
                r["claim_month"],
                r["source_file"],
                r["source_line"],
            )
            for r in csv.DictReader(handle)
        )
    assert found == expected_from_readme()


def test_sample_batch_seeds_every_rule(sample_run):
    seeded = {key[0] for key in expected_from_readme()}
    assert seeded == {rule.id for rule in load_catalogue().active}


def test_sample_outputs_reconcile_and_rerun_byte_identical(sample_run, tmp_path):
    out, _ = sample_run
    manifest = json.loads((out / "manifest.json").read_text())
    reconciliation = manifest["reconciliation"]
    assert reconciliation == {
        "rows_read": 358,
        "rows_rejected_by_schema": 2,
        "rows_checked": 356,
        "balanced": True,
    }
    encodings = {
        Path(i["path"]).name: i["encoding"] for i in manifest["inputs"] if i["kind"] == "claims"
    }
    assert encodings["2021-10.csv"] == "windows-1252"
    assert encodings["2021-11.csv"] == "utf-8-sig"
    assert manifest["unmatched_agreements"] == ["AG-2021-003"]
    again = tmp_path / "again"
    assert run_sample(again).returncode == 2
    for name in ("exceptions.csv", "summary.csv"):
        assert (out / name).read_bytes() == (again / name).read_bytes()


def test_sample_summary_money_adds_up(sample_run):
    out, _ = sample_run
    with (out / "summary.csv").open(encoding="utf-8", newline="") as handle:
        summary = {row["pcn_code"]: row for row in csv.DictReader(handle)}
    meadowbank = summary["U71004"]
    # Meadowbank's lines are all payable; what is at risk is what passes its ARRS sum.
    assert meadowbank["claimed"] == meadowbank["allowed"] == meadowbank["ytd_allowed"]
    assert meadowbank["at_risk"] == "59891.25"  # 209,891.25 allowed - 150,000.00 ARRS sum
    assert summary["U71006"]["waived"] == "2"
    assert (out / "index.html").exists() and (out / "pcn" / "U71004.html").exists()


def test_manifest_describes_every_input_and_reference_file(sample_run):
    out, _ = sample_run
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = {i["kind"]: i for i in manifest["inputs"] if i["kind"] != "claims"}
    assert kinds["pcns"]["rows"] == 7 and kinds["pcns"]["encoding"] == "utf-8"
    assert kinds["agreements"]["rows"] == 5
    reference = {Path(r["path"]).name: r for r in manifest["reference_files"]}
    assert reference["roles.csv"]["rows"] == 16 and reference["limits.csv"]["rows"] == 2
    assert reference["training.csv"]["rows"] == 10 and reference["rates.csv"]["rows"] == 64
    assert all(len(r["sha256"]) == 64 for r in reference.values())
    claims = [i for i in manifest["inputs"] if i["kind"] == "claims"]
    assert sum(i["rows_read"] for i in claims) == 358
    assert manifest["tool_version"] and manifest["rule_catalogue_sha256"]
    assert manifest["review_month"] == "2021-12" and manifest["started_at"]
