"""Synthetic claim batches for benchmarks and tests: realistic, seeded, deterministic.

`generate(folder, pcns=1250, months=12, seed=1)` writes `claims/YYYY-MM.csv` (one file per
month), `pcns.csv` and `agreements.csv`. PCNs get a realistic mix of areas and list sizes
(15,000-260,000) and ARRS sums from weighted list size; staff follow a realistic role mix,
with starters and leavers mid-month; and every rule's exception is seeded at a controlled
rate. The same arguments always give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import random
from calendar import monthrange
from dataclasses import dataclass, field
from pathlib import Path

from validator.load import CLAIM_COLUMNS

HEADER = list(CLAIM_COLUMNS)
# Role mix (share of staff) and full-time monthly gross salary, a little under each maximum
# once employer NI (~10%) and pension (~14.38%) are added.
ROLES = {
    "clinical_pharmacist": (0.22, 3750),
    "social_prescribing_link_worker": (0.13, 2300),
    "care_coordinator": (0.12, 1950),
    "pharmacy_technician": (0.08, 2350),
    "health_and_wellbeing_coach": (0.06, 2300),
    "first_contact_physiotherapist": (0.08, 3700),
    "physician_associate": (0.05, 3600),
    "paramedic": (0.05, 3600),
    "mental_health_practitioner": (0.05, 0),
    "mental_health_practitioner_cyp": (0.02, 0),
    "nursing_associate": (0.03, 1950),
    "trainee_nursing_associate": (0.02, 1700),
    "dietitian": (0.02, 3550),
    "podiatrist": (0.02, 3500),
    "occupational_therapist": (0.02, 3500),
    "advanced_practitioner": (0.01, 4100),
}
MHP_BAND_SALARY = {"5": 2300, "6": 2900, "7": 3500, "8a": 4000}
TRAINED = {
    "clinical_pharmacist": "enrolled",
    "social_prescribing_link_worker": "qualified",
    "pharmacy_technician": "qualified",
    "care_coordinator": "qualified",
    "health_and_wellbeing_coach": "qualified",
    "physician_associate": "qualified",
    "nursing_associate": "qualified",
    "trainee_nursing_associate": "enrolled",
}
AREAS = (("standard", 0.8), ("outer_london", 0.1), ("inner_london", 0.1))
ARRS_POUNDS_PER_PATIENT = 12.2  # about £746m over about 61m registered patients in 2021/22
# Line-level exceptions seeded at `exception_rate` each (PCN-level ones arise from these and
# from the budgets and MHP numbers drawn).
EXCEPTIONS = (
    "SCH-01",
    "ELG-01",
    "ELG-02",
    "ELG-03",
    "ELG-05",
    "CST-01",
    "CAP-01",
    "SPL-01",
    "SPL-02",
    "REF-01",
    "MHP-01",
    "PAR-02",
    "PAR-03",
    "TRN-01",
    "TRN-02",
    "TRN-03",
    "TRN-04",
    "DUP-01",
    "DUP-02",
)


@dataclass
class Person:
    staff_id: str
    role: str
    wte: str
    start: dt.date
    end: dt.date | None
    band: str = ""
    model: str = "practice"
    fee: int = 0
    signoff: dt.date | None = None
    extra: dict = field(default_factory=dict)


def _money(pence: int) -> str:
    return f"{pence // 100}.{pence % 100:02d}"


def _months(first: dt.date, count: int) -> list[dt.date]:
    months = []
    year, month = first.year, first.month
    for _ in range(count):
        months.append(dt.date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def _line(person: Person, pcn: str, month: dt.date) -> dict:
    days = monthrange(month.year, month.month)[1]
    last = month.replace(day=days)
    first_day = max(person.start, month)
    last_day = min(person.end or last, last)
    in_post = max(0, (last_day - first_day).days + 1)
    base = MHP_BAND_SALARY.get(person.band, 0) or ROLES[person.role][1]
    salary = round(base * 100 * float(person.wte) * in_post / days)
    ni, pension = salary // 10, round(salary * 0.1438)
    share_half = person.role.startswith("mental_health")
    cost = salary + ni + pension + person.fee
    claimed = (cost + 1) // 2 if share_half else cost
    link_worker = person.role == "social_prescribing_link_worker"
    return {
        "pcn_code": pcn,
        "claim_month": f"{month:%Y-%m}",
        "staff_id": person.staff_id,
        "staff_name": "",
        "role": person.role,
        "afc_band": person.band,
        "wte": person.wte,
        "hours_per_week": "",
        "employment_start": person.start.isoformat(),
        "employment_end": person.end.isoformat() if person.end else "",
        "employment_model": person.model,
        "monthly_salary": _money(salary),
        "employer_ni": _money(ni),
        "employer_pension": _money(pension),
        "subcontract_fee": _money(person.fee) if person.fee else "",
        "amount_claimed": _money(claimed),
        "additional_to_baseline": "Y",
        "training_status": TRAINED.get(person.role, ""),
        "reimbursement_start": "",
        "splw_online_programme": "Y" if link_worker else "",
        "peer_support": "Y" if link_worker else "",
        "pamvr_registered": "Y" if person.role == "physician_associate" else "",
        "programme_start": "",
        "level7_signoff_date": person.signoff.isoformat() if person.signoff else "",
        "rotational_model": "Y" if person.role == "paramedic" else "",
    }


def _seed_exception(
    kind: str, row: dict, rng: random.Random, month: dt.date, next_month: dt.date, area: str
) -> list[dict]:
    """Change one line so that it raises `kind`; returns the lines to write."""
    if kind == "SCH-01":
        row["amount_claimed"] = rng.choice(["n/a", "12.3.4", "-10.00", "1.234"])
    elif kind == "ELG-01":
        row["claim_month"] = "2021-03"
        row["role"] = "paramedic"
        row["rotational_model"] = "Y"
    elif kind == "ELG-02":
        row["employment_end"] = (month - dt.timedelta(days=1)).isoformat()
    elif kind == "ELG-03":
        row["additional_to_baseline"] = "N"
    elif kind == "ELG-05":
        row["claim_month"] = f"{next_month:%Y-%m}"  # claimed in advance of the review month
    elif kind == "CST-01":
        row["amount_claimed"] = _money(int(row["amount_claimed"].replace(".", "")) + 5000)
    elif kind == "CAP-01":
        salary = 600_000
        row.update(monthly_salary=_money(salary), amount_claimed=_money(salary))
    elif kind == "SPL-01" and row["role"] == "social_prescribing_link_worker":
        claimed = int(row["amount_claimed"].replace(".", "")) + 30_000
        row.update(
            employment_model="subcontracted",
            subcontract_fee="300.00",
            amount_claimed=_money(claimed),
        )
    elif kind == "SPL-02" and row["employment_model"] == "practice":
        row["subcontract_fee"] = "150.00"
    elif kind == "REF-01" and area != "standard":
        row["role"] = "advanced_practitioner"  # no London rate ships for this role
        row["training_status"] = ""
    elif kind == "MHP-01" and row["role"].startswith("mental_health"):
        row["afc_band"] = ""
    elif kind == "PAR-03":  # in post before the batch's first month, no sign-off yet
        row.update(
            role="paramedic",
            rotational_model="Y",
            training_status="",
            afc_band="",
            employment_start="2021-01-15",
            level7_signoff_date="",
        )
    elif kind == "PAR-02":
        row.update(role="paramedic", rotational_model="N", training_status="", afc_band="")
    elif kind == "TRN-01":  # a care coordinator whose training has not started
        row.update(role="care_coordinator", training_status="not_started", afc_band="")
    elif kind == "TRN-02":  # a physician associate not on the PAMVR
        row.update(role="physician_associate", pamvr_registered="N", afc_band="")
    elif kind == "TRN-03":  # a link worker whose peer support is not recorded
        row.update(
            role="social_prescribing_link_worker",
            training_status="qualified",
            splw_online_programme="Y",
            peer_support="",
            afc_band="",
        )
    elif kind == "TRN-04":  # a trainee nursing associate enrolled since 2018
        row.update(
            role="trainee_nursing_associate",
            training_status="enrolled",
            employment_start="2018-01-10",
            afc_band="",
        )
    elif kind == "DUP-01":
        return [row, dict(row)]
    elif kind == "DUP-02":
        twin = dict(row, pcn_code=row["pcn_code"], role="dietitian", wte="0.5")
        return [row, twin]
    return [row]


def generate(
    folder: Path,
    pcns: int = 1250,
    months: int = 12,
    seed: int = 1,
    exception_rate: float = 0.002,
    first_month: dt.date = dt.date(2021, 4, 1),
    missing_rates: bool = False,
) -> dict[str, int]:
    """Write a synthetic batch into `folder`; returns counts (lines, files, pcns).

    With `missing_rates`, REF-01 is seeded too (London advanced practitioners, whose rates do
    not ship), and a run of the batch exits 2 after writing its outputs.
    """
    rng = random.Random(seed)
    kinds = [kind for kind in EXCEPTIONS if missing_rates or kind != "REF-01"]
    claims_dir = folder / "claims"
    claims_dir.mkdir(parents=True, exist_ok=True)
    calendar = _months(first_month, months + 1)
    next_month = calendar.pop()
    roles, weights = zip(*((role, share) for role, (share, _) in ROLES.items()), strict=True)
    register = ["pcn_code,pcn_name,financial_year,area,list_size,arrs_sum"]
    years = sorted(
        {f"{m.year - (m.month < 4)}/{(m.year - (m.month < 4) + 1) % 100:02d}" for m in calendar}
    )
    rosters: dict[str, list[Person]] = {}
    areas: dict[str, str] = {}
    for number in range(1, pcns + 1):
        code = f"U{10000 + number:05d}"
        area = rng.choices([a for a, _ in AREAS], [w for _, w in AREAS])[0]
        areas[code] = area
        list_size = int(min(260_000, max(15_000, rng.lognormvariate(10.8, 0.45))))
        tight = rng.random() < 0.03
        arrs_sum = round(list_size * ARRS_POUNDS_PER_PATIENT * (0.55 if tight else 1.6) * 100)
        for year in years:
            register.append(f"{code},PCN {number},{year},{area},{list_size},{_money(arrs_sum)}")
        staff = []
        for index in range(max(3, round(list_size / 1_550 * rng.uniform(0.8, 1.2)))):
            role = rng.choices(roles, weights)[0]
            if role == "advanced_practitioner" and area != "standard":
                role = "clinical_pharmacist"  # no London rates are published for this role
            start = (
                first_month
                if rng.random() < 0.75
                else rng.choice(calendar) + dt.timedelta(days=rng.randrange(0, 28))
            )
            end = None
            if rng.random() < 0.08:
                end = rng.choice(calendar) + dt.timedelta(days=rng.randrange(0, 28))
                end = max(end, start)
            person = Person(
                staff_id=f"{code}-{index:03d}",
                role=role,
                wte=rng.choice(["1.0", "1.0", "1.0", "0.8", "0.6", "0.5"]),
                start=start,
                end=end,
            )
            if role.startswith("mental_health"):
                person.band = rng.choice(["5", "6", "6", "7", "8a"])
            if role == "paramedic" and rng.random() < 0.85:
                person.signoff = start + dt.timedelta(days=rng.randrange(30, 170))
            if role == "social_prescribing_link_worker" and rng.random() < 0.2:
                person.model, person.fee = "subcontracted", round(20_000 * float(person.wte))
            staff.append(person)
        rosters[code] = staff
    (folder / "pcns.csv").write_text("\n".join(register) + "\n")
    (folder / "agreements.csv").write_text(
        "agreement_id,rule_id,pcn_code,staff_id,from_month,to_month,extended_deadline,"
        "approved_by,reason\n"
        f"AG-1,TRN-01,U10001,,{calendar[0]:%Y-%m},{calendar[-1]:%Y-%m},,Contracts manager,"
        "training booked for every new starter\n"
    )
    total = 0
    waivable_seeded = False
    for month in calendar:
        month_end = month.replace(day=monthrange(month.year, month.month)[1])
        lines = [",".join(HEADER)]
        for code, staff in rosters.items():
            for person in staff:
                if person.start > month_end or (person.end and person.end < month):
                    continue
                row = _line(person, code, month)
                rows = [row]
                if code == "U10001" and not waivable_seeded:
                    # Always one finding for the agreement AG-1 to waive.
                    rows = _seed_exception("TRN-01", row, rng, month, next_month, areas[code])
                    waivable_seeded = True
                elif rng.random() < exception_rate * len(kinds):
                    rows = _seed_exception(
                        rng.choice(kinds), row, rng, month, next_month, areas[code]
                    )
                for out in rows:
                    lines.append(",".join(out[name] for name in HEADER))
        body = "\n".join(lines) + "\n"
        (claims_dir / f"{month:%Y-%m}.csv").write_text(body)
        total += len(lines) - 1
    return {
        "lines": total,
        "files": len(calendar),
        "pcns": pcns,
        "review_month": f"{calendar[-1]:%Y-%m}",
    }
