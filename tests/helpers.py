"""Builders for real claim, register and agreement files on disk, and ways to run them."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from validator.load import CLAIM_COLUMNS
from validator.pipeline import RunOptions, RunResult, run_validation

PROJECT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "validator.cli"]

CLAIM_HEADER = list(CLAIM_COLUMNS)  # the spec order, from schemas/claims.toml
# A valid, unremarkable line: a full-time clinical pharmacist in June 2021 claiming actual cost
# (£4,400.00) under the £4,735.75 monthly maximum.
BASE_LINE = {
    "pcn_code": "U10001",
    "claim_month": "2021-06",
    "staff_id": "S001",
    "staff_name": "Alex Example",
    "role": "clinical_pharmacist",
    "afc_band": "",
    "wte": "1.0",
    "hours_per_week": "",
    "employment_start": "2021-04-01",
    "employment_end": "",
    "employment_model": "practice",
    "monthly_salary": "3500.00",
    "employer_ni": "400.00",
    "employer_pension": "500.00",
    "subcontract_fee": "",
    "amount_claimed": "4400.00",
    "additional_to_baseline": "Y",
    "training_status": "enrolled",
    "reimbursement_start": "",
    "splw_online_programme": "",
    "peer_support": "",
    "pamvr_registered": "",
    "programme_start": "",
    "level7_signoff_date": "",
    "rotational_model": "",
}
REGISTER_HEADER = ["pcn_code", "pcn_name", "financial_year", "area", "list_size", "arrs_sum"]
BASE_REGISTER = {
    "pcn_code": "U10001",
    "pcn_name": "Example PCN",
    "financial_year": "2021/22",
    "area": "standard",
    "list_size": "50000",
    "arrs_sum": "500000.00",
}
AGREEMENT_HEADER = [
    "agreement_id",
    "rule_id",
    "pcn_code",
    "staff_id",
    "from_month",
    "to_month",
    "extended_deadline",
    "approved_by",
    "reason",
]
BASE_AGREEMENT = {
    "agreement_id": "AG-1",
    "rule_id": "",
    "pcn_code": "U10001",
    "staff_id": "",
    "from_month": "2021-04",
    "to_month": "2022-03",
    "extended_deadline": "",
    "approved_by": "Head of Primary Care",
    "reason": "agreed at contract review",
}


def write_csv(path: Path, header: list[str], rows: list[dict], base: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**(base or {}), **row})
    return path


def claims(path: Path, *lines: dict) -> Path:
    return write_csv(path, CLAIM_HEADER, list(lines), BASE_LINE)


def register(path: Path, *rows: dict) -> Path:
    return write_csv(path, REGISTER_HEADER, list(rows or [{}]), BASE_REGISTER)


def agreements(path: Path, *rows: dict) -> Path:
    numbered = [{"agreement_id": f"AG-{n}", **row} for n, row in enumerate(rows, start=1)]
    return write_csv(path, AGREEMENT_HEADER, numbered, BASE_AGREEMENT)


def run_case(
    folder: Path,
    lines: list[dict],
    register_rows: list[dict] | None = None,
    agreement_rows: list[dict] | None = None,
    month: str | None = None,
    reference: Path | None = None,
) -> RunResult:
    """Write the files of one case and validate them with the real pipeline and engine."""
    claim_file = claims(folder / "claims.csv", *lines)
    pcns = register(folder / "pcns.csv", *(register_rows or [{}]))
    agreed = agreements(folder / "agreements.csv", *agreement_rows) if agreement_rows else None
    return run_validation(
        RunOptions(
            claims=[str(claim_file)], pcns=pcns, agreements=agreed, month=month, reference=reference
        )
    )


def projection(result: RunResult, rule_id: str | None = None) -> list[tuple]:
    """Findings as (source_line or 0, rule_id, status): what tests assert on, not wording."""
    rows = result.findings
    if rule_id:
        rows = rows.filter(rows["rule_id"] == rule_id)
    return sorted(
        (row["source_line"] or 0, row["rule_id"], row["status"])
        for row in rows.iter_rows(named=True)
    )


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=cwd or PROJECT, timeout=300
    )


# The shipped sample batch, exactly as `make run` validates it (paths relative to the checkout).
SAMPLE_ARGS = [
    "run",
    "sample_claims/claims",
    "--pcns",
    "sample_claims/pcns.csv",
    "--agreements",
    "sample_claims/agreements.csv",
    "--month",
    "2021-12",
]


def run_sample(out: Path) -> subprocess.CompletedProcess:
    """The shipped sample batch, exactly as `make run` validates it."""
    return run_cli(*SAMPLE_ARGS, "--out", str(out))


def run_small(folder: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """One clean claim line (written into `folder`) validated into `out`."""
    return run_cli(
        "run",
        str(claims(folder / "c.csv", {})),
        "--pcns",
        str(register(folder / "p.csv")),
        "--out",
        str(out),
        *extra,
    )
