"""Property-based: generated claim files, valid and otherwise. Every run either completes
with the reconciliation intact and the same outputs twice, or exits 2 naming the file (and
publishes nothing when the review month has no claim line) — never exit 3. Runs `cli.main`
in process (the engine, files and outputs are all real)."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import BASE_LINE, CLAIM_HEADER, register
from validator import cli

MONEY = st.one_of(
    st.integers(0, 10_000_000).map(lambda p: f"{p // 100}.{p % 100:02d}"),
    st.integers(0, 99_999).map(lambda p: f"£{p:,}"),
    st.text(max_size=8),
)
FIELD_VALUES = {
    "pcn_code": st.sampled_from(["U10001", "U10002", "u10001", "X", ""]),
    "claim_month": st.sampled_from(["2021-04", "2021-06", "2021-13", "2022-03", "June", ""]),
    "staff_id": st.from_regex(r"[A-Za-z0-9_-]{0,6}", fullmatch=True),
    "staff_name": st.text(max_size=12),
    "role": st.sampled_from(
        [
            "clinical_pharmacist",
            "paramedic",
            "mental_health_practitioner",
            "social_prescribing_link_worker",
            "nobody",
            "",
        ]
    ),
    "afc_band": st.sampled_from(["", "5", "6", "8a", "9"]),
    "wte": st.sampled_from(["1.0", "0.5", "0.123456", "1.5", "0", "", "abc"]),
    "hours_per_week": st.sampled_from(["", "37.5", "18.75", "40"]),
    "employment_start": st.sampled_from(["2021-04-01", "16/06/2021", "2021-02-30", ""]),
    "employment_end": st.sampled_from(["", "2021-06-15", "2020-01-01"]),
    "employment_model": st.sampled_from(["practice", "subcontracted", "Lead_Provider", "x"]),
    "monthly_salary": MONEY,
    "employer_ni": MONEY,
    "employer_pension": MONEY,
    "subcontract_fee": st.one_of(st.just(""), MONEY),
    "amount_claimed": MONEY,
    "additional_to_baseline": st.sampled_from(["Y", "N", "y", "maybe"]),
    "training_status": st.sampled_from(["", "enrolled", "qualified", "not_started", "x"]),
    "reimbursement_start": st.sampled_from(["", "2021-04-01"]),
    "level7_signoff_date": st.sampled_from(["", "2021-08-01"]),
    "rotational_model": st.sampled_from(["", "Y", "N"]),
}
LINE = st.fixed_dictionaries(
    {name: st.one_of(st.just(BASE_LINE[name]), values) for name, values in FIELD_VALUES.items()}
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINE, min_size=0, max_size=12), crlf=st.booleans(), bom=st.booleans())
def test_any_claim_file_completes_or_exits_2(lines, crlf, bom):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n" if crlf else "\n")
        writer.writerow(CLAIM_HEADER)
        writer.writerows([line[name] for name in CLAIM_HEADER] for line in lines)
        claim_file = root / "claims.csv"
        claim_file.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode())
        pcns = register(root / "pcns.csv", {}, {"pcn_code": "U10002"})
        outputs = []
        for run in ("a", "b"):
            code = cli.main(
                [
                    "run",
                    str(claim_file),
                    "--pcns",
                    str(pcns),
                    "--month",
                    "2022-03",
                    "--out",
                    str(root / run),
                ]
            )
            assert code in (0, 1, 2)
            outputs.append(root / run)
        if not (outputs[0] / "manifest.json").exists():
            # No claim line in the review month (none written for it, or the file refused
            # whole): an input error, and nothing is published, not even an empty folder.
            assert code == 2 and not outputs[0].exists() and not outputs[1].exists()
            return
        assert any(line["claim_month"] == "2022-03" for line in lines)
        manifest = json.loads((outputs[0] / "manifest.json").read_text())
        assert manifest["reconciliation"]["balanced"]
        [claim_input] = [i for i in manifest["inputs"] if i["kind"] == "claims"]
        if code == 2:  # the file itself was refused, with the reason recorded against it
            assert claim_input["path"] == str(claim_file) and claim_input["problem"]
        else:  # as many rows as the csv module finds (a bare CR in a value is a line break)
            records = list(csv.reader(io.StringIO(buffer.getvalue(), newline="")))[1:]
            while records and not any(cell.strip() for cell in records[-1]):
                records.pop()  # blank trailing lines are ignored
            assert manifest["reconciliation"]["rows_read"] == len(records) >= len(lines)
        for name in ("exceptions.csv", "summary.csv"):
            assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes()
