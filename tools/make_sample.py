"""Writes the fictional sample batch in sample_claims/ (kept for editing it; its output is
committed). Deterministic: no randomness, every exception seeded on purpose.

    .venv/bin/python tools/make_sample.py && make run
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from calendar import monthrange
from pathlib import Path

from validator.generate import MHP_BAND_SALARY, ROLES
from validator.load import CLAIM_COLUMNS

# Full-time monthly salaries by role (a little under each maximum once NI and pension are
# added) and by AfC band: the benchmark generator's, so the two never drift apart.
SALARY = {role: salary for role, (_, salary) in ROLES.items()}

ROOT = Path(__file__).resolve().parent.parent / "sample_claims"
MONTHS = [dt.date(2021, m, 1) for m in range(4, 13)]
HEADER = list(CLAIM_COLUMNS)  # the spec order, from schemas/claims.toml
PCNS = [
    # code, name, area, list size, ARRS sum 2021/22
    ("U71001", "Riverside PCN", "standard", 45_210, "520000.00"),
    ("U71002", "Northgate PCN", "outer_london", 68_400, "610000.00"),
    ("U71003", "Canal Street PCN", "inner_london", 112_950, "980000.00"),
    ("U71004", "Meadowbank PCN", "standard", 31_120, "150000.00"),
    ("U71005", "Hillside PCN", "standard", 99_999, "700000.00"),
    ("U71006", "Harbour PCN", "standard", 58_760, "560000.00"),
]
# The sample's training statuses (its pharmacy technicians are still enrolled).
STATUS = {
    "clinical_pharmacist": "enrolled",
    "social_prescribing_link_worker": "qualified",
    "pharmacy_technician": "enrolled",
    "care_coordinator": "qualified",
    "health_and_wellbeing_coach": "qualified",
    "physician_associate": "qualified",
    "nursing_associate": "qualified",
    "trainee_nursing_associate": "enrolled",
}
FIRST = [
    "Amara",
    "Ben",
    "Chloe",
    "Dev",
    "Ella",
    "Farid",
    "Grace",
    "Hamza",
    "Isla",
    "Jon",
    "Kiran",
    "Leah",
    "Marek",
    "Nia",
    "Owen",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tomas",
]
LAST = [
    "Adeyemi",
    "Brennan",
    "Chowdhury",
    "Davies",
    "Evans",
    "Fletcher",
    "Gill",
    "Hughes",
    "Iqbal",
    "Jones",
    "Khan",
    "Lewis",
    "Morgan",
    "Nowak",
    "Okafor",
    "Patel",
]


def pence(amount: float) -> str:
    return f"{amount:.2f}"


class Staff:
    def __init__(self, pcn, number, role, wte="1.0", start="2021-04-01", **extra):
        self.pcn, self.role, self.wte, self.start = pcn, role, wte, start
        self.staff_id = f"{pcn[-2:]}-{number:03d}"
        self.name = (
            f"{FIRST[(number * 7 + int(pcn[-1])) % 20]} {LAST[(number * 5 + int(pcn[-1])) % 16]}"
        )
        self.extra = extra

    def line(self, month: dt.date, **changes) -> dict:
        wte = float(self.wte or 0) or float(self.extra.get("hours_per_week", 37.5)) / 37.5
        days = monthrange(month.year, month.month)[1]
        first = max(dt.date.fromisoformat(self.start), month)
        end = self.extra.get("employment_end")
        last = (
            min(dt.date.fromisoformat(end), month.replace(day=days))
            if end
            else month.replace(day=days)
        )
        in_post = max(0, (last - first).days + 1) or days
        base = MHP_BAND_SALARY.get(self.extra.get("afc_band", ""), 0) or SALARY[self.role]
        salary = round(base * wte * in_post / days, 2)
        ni, pension = round(salary * 0.10, 2), round(salary * 0.1438, 2)
        fee = float(self.extra.get("subcontract_fee", 0) or 0)
        share = 0.5 if self.role.startswith("mental_health") else 1.0
        row = {
            "pcn_code": self.pcn,
            "claim_month": f"{month:%Y-%m}",
            "staff_id": self.staff_id,
            "staff_name": self.name,
            "role": self.role,
            "afc_band": "",
            "wte": self.wte,
            "hours_per_week": "",
            "employment_start": self.start,
            "employment_end": "",
            "employment_model": "practice",
            "monthly_salary": pence(salary),
            "employer_ni": pence(ni),
            "employer_pension": pence(pension),
            "subcontract_fee": "",
            "amount_claimed": pence(round((salary + ni + pension + fee) * share, 2)),
            "additional_to_baseline": "Y",
            "training_status": STATUS.get(self.role, ""),
            "reimbursement_start": "",
            "splw_online_programme": "Y" if self.role == "social_prescribing_link_worker" else "",
            "peer_support": "Y" if self.role == "social_prescribing_link_worker" else "",
            "pamvr_registered": "Y" if self.role == "physician_associate" else "",
            "programme_start": "",
            "level7_signoff_date": "",
            "rotational_model": "",
        }
        row.update({k: v for k, v in self.extra.items() if k in row})
        row.update(changes)
        return row


def staff_lists():
    teams = {
        "U71001": [
            ("clinical_pharmacist",),
            ("social_prescribing_link_worker",),
            ("pharmacy_technician", "0.8"),
            ("care_coordinator",),
            ("first_contact_physiotherapist", "0.6"),
            ("paramedic",),
            ("mental_health_practitioner", "1.0", {"afc_band": "6"}),
        ],
        "U71002": [
            ("clinical_pharmacist",),
            ("clinical_pharmacist", "0.6"),
            ("social_prescribing_link_worker",),
            ("health_and_wellbeing_coach",),
            ("dietitian", "0.5"),
            ("mental_health_practitioner", "1.0", {"afc_band": "6"}),
            ("nursing_associate",),
        ],
        "U71003": [
            ("clinical_pharmacist",),
            ("clinical_pharmacist",),
            ("pharmacy_technician",),
            (
                "social_prescribing_link_worker",
                "1.0",
                {"employment_model": "subcontracted", "subcontract_fee": "200.00"},
            ),
            ("care_coordinator",),
            ("physician_associate",),
            ("podiatrist", "0.4"),
            ("mental_health_practitioner", "1.0", {"afc_band": "7"}),
            ("mental_health_practitioner", "1.0", {"afc_band": "6"}),
            ("mental_health_practitioner_cyp", "0.5", {"afc_band": "6"}),
            ("paramedic", "1.0", {"rotational_model": "Y"}),
        ],
        "U71004": [
            ("clinical_pharmacist",),
            ("first_contact_physiotherapist",),
            ("paramedic", "1.0", {"rotational_model": "Y"}),
            ("advanced_practitioner",),
            ("physician_associate",),
        ],
        "U71005": [
            ("clinical_pharmacist",),
            ("social_prescribing_link_worker", "", {"hours_per_week": "30"}),
            ("occupational_therapist", "0.8"),
            ("trainee_nursing_associate",),
            ("mental_health_practitioner", "1.0", {"afc_band": "5"}),
        ],
        "U71006": [
            ("clinical_pharmacist",),
            ("pharmacy_technician",),
            ("health_and_wellbeing_coach", "0.5"),
            ("care_coordinator",),
            ("paramedic", "1.0", {"rotational_model": "Y"}),
            ("advanced_practitioner", "1.0"),
        ],
    }
    staff = {}
    for pcn, team in teams.items():
        staff[pcn] = []
        for number, member in enumerate(team, start=1):
            role = member[0]
            wte = member[1] if len(member) > 1 else "1.0"
            extra = member[2] if len(member) > 2 else {}
            staff[pcn].append(Staff(pcn, number, role, wte or "", **extra))
    return staff


def find(staff, staff_id) -> Staff:
    return next(p for team in staff.values() for p in team if p.staff_id == staff_id)


def build() -> dict[str, list[dict]]:
    """The month files, each exception seeded on purpose (listed in sample_claims/README.md)."""
    staff = staff_lists()
    # U71001's pharmacy technician starts on 16 June 2021 (CAP-01 in June, the style example).
    find(staff, "01-003").start = "2021-06-16"
    # U71002's dietitian leaves on 16 July 2021 but is claimed for August too (ELG-02).
    find(staff, "02-005").extra["employment_end"] = "2021-07-16"
    # U71004's paramedic is signed off in September; U71006's has an extended deadline.
    find(staff, "04-003").extra["level7_signoff_date"] = "2021-09-15"
    find(staff, "01-006").extra["rotational_model"] = "Y"
    # U71003's children and young people's MHP starts in November (LIM-02: agreed for
    # November by two agreements, open in December).
    find(staff, "03-010").start = "2021-11-01"
    # U71003's paramedic has been in post since January 2021 but is first claimed in
    # December, with no reimbursement_start given (PAR-03).
    find(staff, "03-011").start = "2021-12-01"
    # U71005's trainee nursing associate began the 2-year programme on 15 November 2019:
    # still enrolled in November 2021 (24 months) is fine, in December (25) it is TRN-04.
    find(staff, "05-004").extra["programme_start"] = "2019-11-15"
    files: dict[str, list[dict]] = {}
    for month in MONTHS:
        key = f"{month:%Y-%m}"
        rows = []
        for team in staff.values():
            for person in team:
                if person.start > f"{month:%Y-%m}-31":
                    continue
                end = person.extra.get("employment_end")
                if end and end < f"{month:%Y-%m}-01" and key != "2021-08":
                    continue
                changes: dict = {}
                sid = person.staff_id
                if sid == "01-003" and key == "2021-06":
                    changes = {
                        "monthly_salary": "1100.00",
                        "employer_ni": "100.00",
                        "employer_pension": "100.00",
                        "amount_claimed": "1250.00",
                    }
                if sid == "01-006" and key == "2021-05":
                    changes = {"rotational_model": ""}  # PAR-02
                if sid == "02-001" and key == "2021-07":
                    actual = float(person.line(month)["amount_claimed"])
                    changes = {"amount_claimed": pence(actual + 50)}  # CST-01
                if sid == "05-003" and key == "2021-10":
                    changes = {
                        "monthly_salary": "3400.00",
                        "employer_ni": "340.00",
                        "employer_pension": "489.00",
                        "amount_claimed": "4229.00",
                    }
                if sid == "03-004" and key == "2021-11":
                    claimed = float(person.line(month)["amount_claimed"]) + 60
                    changes = {"subcontract_fee": "260.00", "amount_claimed": pence(claimed)}
                if sid == "05-005" and key == "2021-08":
                    changes = {"afc_band": ""}  # MHP-01
                if sid == "06-004" and key in ("2021-04", "2021-05", "2021-06"):
                    changes = {"training_status": "not_started"}  # TRN-01, two months waived
                if sid == "04-005" and key in ("2021-04", "2021-05"):
                    changes = {"pamvr_registered": "N"}  # TRN-02
                if sid == "03-011":
                    changes = {"employment_start": "2021-01-04"}  # PAR-03
                if sid == "05-002" and key == "2021-10":
                    changes = {"splw_online_programme": "N"}  # TRN-01: one condition unmet
                if sid == "01-002" and key == "2021-07":
                    changes = {"peer_support": ""}  # TRN-03: not recorded
                if sid == "06-002" and key == "2021-08":
                    # SPL-02: a sub-contract fee on a practice-employed pharmacy technician,
                    # included in the claim, which CST-01 then withholds.
                    claimed = float(person.line(month)["amount_claimed"]) + 150
                    changes = {"subcontract_fee": "150.00", "amount_claimed": pence(claimed)}
                if sid == "05-001" and key == "2021-09":
                    changes = {"amount_claimed": "4,6O4.25"}  # SCH-01: letter O
                if sid == "05-004" and key == "2021-09":
                    changes = {"claim_month": "Sep-21", "wte": "1.5"}  # SCH-01 twice
                rows.append(person.line(month, **changes))
                if sid == "02-004" and key == "2021-09":
                    rows.append(person.line(month))  # resubmitted twice: DUP-01 (and DUP-02)
        if key == "2021-04":  # a backdated March paramedic claim: ELG-01
            rows.append(
                Staff("U71001", 8, "paramedic", start="2021-03-01", rotational_model="Y").line(
                    dt.date(2021, 3, 1)
                )
            )
        if key == "2021-11":
            # The same physiotherapist claimed by two PCNs at 0.6 WTE each: DUP-02.
            physio = find(staff, "01-005")
            rows.append(
                Staff("U71006", 5, "first_contact_physiotherapist", "0.6", start="2021-11-01").line(
                    month, staff_id=physio.staff_id, staff_name=physio.name
                )
            )
            # A PCN missing from the register: ELG-04.
            rows.append(Staff("U71009", 1, "clinical_pharmacist").line(month))
        if key in ("2021-10", "2021-11", "2021-12"):
            # A second adult MHP for Northgate (list 68,400, limit 1 WTE): LIM-01.
            rows.append(
                Staff(
                    "U71002",
                    8,
                    "mental_health_practitioner",
                    "0.5",
                    start="2021-10-01",
                    afc_band="5",
                ).line(month)
            )
        if key == "2021-12":
            # An outer London advanced practitioner: no London rate ships (REF-01).
            rows.append(Staff("U71002", 9, "advanced_practitioner", start="2021-12-01").line(month))
            # A baseline pharmacist (ELG-03) and a claim made in advance for January (ELG-05).
            rows.append(
                Staff(
                    "U71006",
                    7,
                    "clinical_pharmacist",
                    start="2021-12-01",
                    additional_to_baseline="N",
                ).line(month)
            )
            rows.append(find(staff, "01-001").line(dt.date(2022, 1, 1)))
        files[key] = rows
    return files


def write(path: Path, rows: list[dict], header=HEADER, encoding="utf-8", newline="\n"):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator=newline)
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))


def uk_date(text: str) -> str:
    return f"{text[8:10]}/{text[5:7]}/{text[:4]}" if len(text) == 10 and text[4] == "-" else text


TITLES = {
    "clinical_pharmacist": "Clinical Pharmacist",
    "social_prescribing_link_worker": "Social Prescribing Link Worker",
    "first_contact_physiotherapist": "First Contact Physiotherapist",
}


def excel_style(rows: list[dict]) -> tuple[list[str], list[dict]]:
    """October as Excel would save it: Windows-1252, CRLF, spaced title-case headers, UK
    dates and £1,234.56 amounts."""
    header = [name.replace("_", " ").title() for name in HEADER]
    converted = []
    for row in rows:
        out = {}
        for name, title in zip(HEADER, header, strict=True):
            value = row[name]
            if name.endswith(("_start", "_end", "_date")):
                value = uk_date(value)
            if name == "amount_claimed":
                value = f"£{float(value):,.2f}"
            if name == "role":
                value = TITLES.get(value, value)  # what workforce exports carry
            out[title] = value
        converted.append(out)
    return header, converted


if __name__ == "__main__":
    (ROOT / "claims").mkdir(parents=True, exist_ok=True)
    for month, rows in build().items():
        path = ROOT / "claims" / f"{month}.csv"
        if month == "2021-10":
            header, converted = excel_style(rows)
            write(path, converted, header, encoding="windows-1252", newline="\r\n")
        elif month == "2021-11":
            write(path, rows, encoding="utf-8-sig")
        elif month == "2021-07":
            extra = [{**row, "notes": "July submission"} for row in rows]
            write(path, extra, [*HEADER, "notes"])
        else:
            write(path, rows)
