"""One validation run: load -> schema -> derive -> rules -> money -> findings.

The rules' stages (docs/scheme.md): A (schema) rows take no further part; B (eligibility)
findings keep a line out of stage C; C decides everything else. Agreements turn covered
findings into `waived` ones (never hidden). The money is money.py's, in integer pence.
The library never prints and never exits; the CLI decides what to show and the exit code.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import polars as pl

from validator import derive, findings, history, money, units
from validator import values as v
from validator.catalogue import Catalogue, Rule, load_catalogue
from validator.engine import RulesEngine
from validator.errors import ConfigError
from validator.load import ClaimBatches, ClaimFile, column_positions
from validator.profile import load_profile
from validator.reference import Reference, load_agreements, load_reference, load_register
from validator.schema import check_claims
from validator.timing import PhaseTimer
from validator.units import MAX_LINES

FINDING_COLUMNS = [
    "rule_id",
    "severity",
    "status",
    "agreement_id",
    "pcn_code",
    "staff_id",
    "role",
    "claim_month",
    "source_file",
    "source_line",
    "amount_claimed",
    "amount_allowed",
    "amount_at_risk",
    "message",
]
COST_CAP = "cost_cap"  # the cost a line may claim, its fee held to the fee limit
UNKNOWN_MONTH = 999_912  # a schema-rejected row whose claim month does not parse
# "Open findings", everywhere they are counted: open reject, adjust and query (not warnings).
OPEN_FINDING = (pl.col("status") == "open") & (pl.col("severity") != "warning")


class _Stages(NamedTuple):
    """What the stages found, for the findings and the money (_Run._findings)."""

    schema_found: pl.DataFrame
    line_found: pl.DataFrame | None
    pcn_found: pl.DataFrame | None
    line_details: pl.DataFrame  # what the messages read of the lines with findings
    raw: pl.DataFrame  # the schema-rejected rows' text
    failures: pl.DataFrame  # their schema failures
    caps: pl.DataFrame  # each adjust finding's cap on its line


@dataclass
class RunOptions:
    claims: list[str]
    pcns: Path
    agreements: Path | None = None
    reference: Path | None = None
    month: str | None = None
    show_names: bool = False
    columns: Path | None = None  # a column profile: another export's headers and spellings
    engine_mode: str = "fast"
    max_lines: int = MAX_LINES  # a batch of more claim lines is refused (bounded memory)
    # An earlier run's output folder, or a function of the review month that finds one.
    previous: Path | Callable[[str], Path | None] | None = None
    # Told of progress: ("file", {...}) after each claim file, ("phase", {"name": ...}).
    progress: Callable[[str, dict], None] | None = None


@dataclass
class RunResult:
    catalogue: Catalogue
    reference: Reference
    options: RunOptions
    files: list[ClaimFile]
    review_month: dt.date | None
    findings: pl.DataFrame
    summary: pl.DataFrame
    payments: pl.DataFrame
    # Every input row with its figures and outcome: lines.csv's columns, with row_no and
    # the exact wte_units (null for a schema-rejected row).
    every_line: pl.DataFrame
    unmatched_agreements: pl.DataFrame
    agreements: pl.DataFrame
    rows_read: int = 0
    rows_rejected_by_schema: int = 0
    rows_checked: int = 0
    records_evaluated: int = 0
    timings: PhaseTimer = field(default_factory=PhaseTimer)
    resolved: pl.DataFrame | None = None
    previous_folder: Path | None = None
    pcn_records: dict[str, pl.DataFrame] = field(default_factory=dict)
    # The register and agreements as the manifest records them (kind, path, SHA-256 ...).
    input_facts: list[dict] = field(default_factory=list)
    # Every (role, afc_band, area, claim_month) a line needed but the rates lack (REF-01).
    missing_rates: list[dict] = field(default_factory=list)

    @property
    def missing_rates_message(self) -> str:
        """One message listing every missing rate and the file to add it to ('' if none)."""
        return derive.missing_rates_message(self.missing_rates)

    @property
    def file_problems(self) -> list[ClaimFile]:
        return [file for file in self.files if file.problem]

    @property
    def open_findings(self) -> int:
        """Open reject, adjust and query findings: "open findings" wherever it is shown."""
        return self.findings.filter(OPEN_FINDING).height

    @property
    def money_totals(self) -> dict[str, int]:
        return money.totals(self.summary)


def _rows(found: pl.DataFrame | None) -> pl.Series:
    """The lines (row_no) of `found` findings."""
    return pl.Series("row_no", [], pl.Int64) if found is None else found["row_no"].unique()


def parse_review_month(text: str | None) -> dt.date | None:
    if text is None:
        return None
    if not re.fullmatch(units.MONTH_PATTERN, text):
        raise ConfigError(f"--month {text}: expected the review month as YYYY-MM, e.g. 2021-12")
    return dt.date(int(text[:4]), int(text[5:]), 1)


# An agreement covers a line or finding of its PCN (joined beforehand) when it names the same
# person or the whole PCN (blank staff_id), and the claim month is in its range.
_agreement_covers = (
    ((pl.col("agreed_staff") == "") | (pl.col("agreed_staff") == pl.col("staff_id")))
    & (pl.col("from_month") <= pl.col("month_date"))
    & (pl.col("month_date") <= pl.col("to_month"))
)


def _waive(found: pl.DataFrame, waivers: pl.DataFrame) -> tuple[pl.DataFrame, set[str]]:
    """status and agreement_id for each finding: `waived` where an agreement covers it (the
    first such agreement by ID is named); and every agreement that covered any finding, named
    or not, so none that did its work is reported as matching nothing."""
    covering = (
        found.select("finding_id", "rule_id", "pcn_code", "staff_id", "month_date")
        .join(
            waivers.select(
                "agreement_id",
                "rule_id",
                "pcn_code",
                pl.col("staff_id").alias("agreed_staff"),
                "from_month",
                "to_month",
            ),
            on=["rule_id", "pcn_code"],
        )
        .filter(_agreement_covers)
    )
    covered = (
        covering.sort("finding_id", "agreement_id")
        .group_by("finding_id", maintain_order=True)
        .agg(pl.col("agreement_id").first())
    )
    waived = found.join(covered, on="finding_id", how="left").with_columns(
        pl.when(pl.col("agreement_id").is_null())
        .then(pl.lit("open"))
        .otherwise(pl.lit("waived"))
        .alias("status"),
        pl.col("agreement_id").fill_null(""),
    )
    return waived, set(covering["agreement_id"].to_list())


class _Run:
    """The state of one run, stage by stage."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.catalogue = load_catalogue()
        self.reference = load_reference(options.reference)
        self.register, register_facts = load_register(options.pcns)
        self.agreements, agreement_facts = load_agreements(
            options.agreements, {rule.id for rule in self.catalogue.rules}
        )
        # What the manifest records of these inputs: the bytes this run read, hashed as read.
        self.input_facts = [{"kind": "pcns", **register_facts}]
        if agreement_facts is not None:
            self.input_facts.append({"kind": "agreements", **agreement_facts})
        self.profile = None
        if options.columns is not None:
            self.profile = load_profile(options.columns, self.reference.role_names)
            self.input_facts.append(self.profile.manifest_entry())
        self.review = parse_review_month(options.month)
        self.previous: pl.DataFrame | None = None
        self.previous_folder: Path | None = None
        self.waivers = self.agreements.filter(pl.col("extended_deadline").is_null())
        self.used_agreements: set[str] = set()
        self.found: list[pl.DataFrame] = []
        self.next_finding_id = 0
        self.timer = PhaseTimer()

    def _fires(
        self,
        engine: RulesEngine,
        rules: list[Rule],
        records: pl.DataFrame,
        key: str,
        where: pl.Expr | None = None,
    ):
        """(key, rule_id) for every rule that fires on a record (of those `where` holds)."""
        mask = None if where is None else records.select(where)[:, 0]
        with self.timer("rules"):
            verdicts = engine.evaluate_all(rules, records, mask)
        keys = records.select(key) if mask is None else records.select(key).filter(mask)
        hits = [
            keys.filter(verdicts[rule.id]).with_columns(pl.lit(rule.id).alias("rule_id"))
            for rule in rules
        ]
        return (
            pl.concat(hits) if hits else pl.DataFrame(schema={key: pl.Int64, "rule_id": pl.String})
        )

    def _record(self, found: pl.DataFrame) -> pl.DataFrame:
        """Number new findings, attach severity and agreement status, and keep them."""
        found = found.with_row_index("finding_id", offset=self.next_finding_id).with_columns(
            pl.col("finding_id").cast(pl.Int64)
        )
        self.next_finding_id += found.height
        severities = pl.DataFrame(
            {
                "rule_id": [rule.id for rule in self.catalogue.rules],
                "severity": [rule.severity for rule in self.catalogue.rules],
            }
        )
        found, used = _waive(found.join(severities, on="rule_id", how="left"), self.waivers)
        self.used_agreements |= used
        self.found.append(found)
        return found

    def _tell(self, event: str, **data: object) -> None:
        if self.options.progress is not None:
            self.options.progress(event, data)

    def _read_previous(self, review: dt.date) -> None:
        previous = self.options.previous
        if callable(previous):
            previous = previous(f"{review:%Y-%m}")
        if previous is not None:
            self.previous_folder = previous
            self.previous = history.read_previous(previous, self._yearly_rules())

    def _read_and_check(self):
        """Read the claims and check them against the schema a batch at a time (stage A):
        of each batch's text only the rejected rows are kept (their findings and sums need
        it), so a national batch's text is never all held at once. Returns the files, the
        rejected rows' text, the schema failures, the typed rows that passed, and the
        number of rows read."""

        def read(file: ClaimFile, number: int, total: int) -> None:
            self._tell(
                "file",
                path=file.path,
                number=number,
                total=total,
                rows=file.rows_read,
                problem=file.problem,
            )
            if number == total:  # the last batch is checked after this: the schema phase
                self._tell("phase", name="schema")

        batches = ClaimBatches(
            self.options.claims, read, self.profile, max_lines=self.options.max_lines
        )
        rejected, failures, typed = [], [], []
        rows_read = 0
        self.timer.add("read", 0.0)  # listed first, as the phases come
        started = time.perf_counter()
        checking = self.timer.seconds.get("schema", 0.0)
        for batch in batches:
            with self.timer("schema"):
                batch_failures, batch_typed = check_claims(
                    batch, self.reference.role_names, column_positions(batches.batch_files)
                )
                rows_read += batch.height
                rejected.append(
                    batch.filter(pl.col("row_no").is_in(batch_failures["row_no"].implode()))
                )
                failures.append(batch_failures)
                typed.append(batch_typed)
                del batch
        checking = self.timer.seconds["schema"] - checking
        self.timer.add("read", time.perf_counter() - started - checking)
        return (
            batches.files,
            *(pl.concat(parts, rechunk=True) for parts in (rejected, failures, typed)),
            rows_read,
        )

    def execute(self) -> RunResult:
        timer = self.timer
        self._tell("phase", name="read")
        files, raw, failures, typed, rows_read = self._read_and_check()
        rejected_rows = failures["row_no"].unique()
        if self.review is None:
            # The latest claim month of the input, schema-rejected rows' included where it
            # reads as a month (a batch of only bad rows still has a month to report on).
            self.review = pl.concat(
                [typed.select("claim_month"), raw.select(v.month_start("claim_month"))]
            )["claim_month"].max()
        review = self.review or dt.date.today().replace(day=1)
        self._read_previous(review)
        self._tell("phase", name="rules")

        block = time.perf_counter()
        with RulesEngine(self.catalogue.active, self.options.engine_mode) as engine:
            schema_found = self._schema_stage(engine, raw, failures)
            lines = derive.line_fields(typed, self.reference, self.register, review)
            rows_checked = typed.height
            del typed  # its values live on in `lines`; freed now, the peak is lower
            line_rules = self.catalogue.applying_to("checked_lines")
            stage_b = [rule for rule in line_rules if rule.stage == "B"]
            found_b = self._record(self._line_findings(engine, stage_b, lines))
            blocked = found_b.filter(pl.col("status") == "open")["row_no"].unique()
            eligible_rules = self.catalogue.applying_to("eligible_lines")
            # Stage C figures are computed for every line and set beside its columns (no
            # copy of them); the eligible lines are those without an open stage-B finding.
            is_eligible = ~pl.col("row_no").is_in(blocked.implode())
            lines = derive.reimbursement_starts(lines, is_eligible)
            extensions = self._deadline_extensions(lines, is_eligible)
            costed = pl.concat(
                [lines, derive.cost_fields(lines, self.reference, extensions).drop("row_no")],
                how="horizontal",
            )
            stage_c_all = [rule for rule in line_rules if rule.stage != "B"]
            self._record(self._line_findings(engine, stage_c_all, lines))
            self._record(self._line_findings(engine, eligible_rules, costed, where=is_eligible))
            conditions = derive.training_records(costed, is_eligible, self.reference)
            condition_rules = self.catalogue.applying_to("training_conditions")
            self._record(self._condition_findings(engine, condition_rules, conditions, lines))
            del conditions
            # The number limits count the lines left without an open reject, so they come last.
            limited = derive.limit_fields(
                costed, pl.concat([self._open_rejects(), blocked]), self.reference
            )
            limit_rules = self.catalogue.applying_to("limited_lines")
            self._record(self._line_findings(engine, limit_rules, limited, keys=lines))
            line_found = (
                pl.concat(self.found[1:], how="diagonal_relaxed") if len(self.found) > 1 else None
            )
            # The stage C figures of the eligible lines with findings, and the limits'.
            figures = [
                costed.filter(
                    is_eligible & pl.col("row_no").is_in(_rows(line_found).implode())
                ).select("row_no", *(name for name in costed.columns if name not in lines.columns)),
                limited.drop("claim_month", "role", "effective_wte", "limit_within"),
            ]
            caps = money.line_caps(self._caps(), line_found, *figures, lines)
            # What the rest of the run reads of every line: the money, the PCN figures and
            # the findings' own columns; what only the messages read is kept for the lines
            # with findings (a few of all), the rest let go.
            kept = {*money.LINE_INPUTS, *derive.PCN_INPUTS, *findings.LINE_COLUMNS_SHOWN}
            line_details = findings.line_details(
                self.catalogue, line_found, [lines, *figures], kept
            )
            del figures
            eligible = costed.select(
                list(dict.fromkeys([*money.ELIGIBLE_INPUTS, COST_CAP, *derive.RATE_KEY]))
            ).filter(is_eligible)
            del costed
            lines = lines.select(name for name in lines.columns if name in kept)
            lines = money.line_amounts(lines, eligible["row_no"], line_found, caps)
            pcn_found = self._pcn_stage(engine, lines, review)
            records_evaluated = engine.records_evaluated
        timer.add("derive", time.perf_counter() - block - timer.seconds.get("rules", 0.0))

        self._tell("phase", name="findings")
        with timer("findings"):
            ledger = self._findings(
                _Stages(schema_found, line_found, pcn_found, line_details, raw, failures, caps),
                lines,
                eligible,
                review,
            )
            all_findings = ledger.findings
            all_findings = history.with_fingerprints(all_findings, self._yearly_rules())
            resolved = None
            if self.previous is not None:
                all_findings, resolved = history.compare(all_findings, self.previous)
        unmatched = self.agreements.filter(
            ~pl.col("agreement_id").is_in(sorted(self.used_agreements))
        )
        return RunResult(
            catalogue=self.catalogue,
            reference=self.reference,
            options=self.options,
            files=files,
            review_month=self.review,
            findings=all_findings,
            summary=ledger.summary,
            payments=ledger.payments,
            every_line=ledger.lines,
            unmatched_agreements=unmatched,
            agreements=self.agreements,
            rows_read=rows_read,
            rows_rejected_by_schema=rejected_rows.len(),
            rows_checked=rows_checked,
            records_evaluated=records_evaluated,
            timings=timer,
            resolved=resolved,
            pcn_records=self.pcn_records,
            previous_folder=self.previous_folder,
            missing_rates=derive.missing_rates(eligible),
            input_facts=self.input_facts,
        )

    def _findings(
        self, stages: _Stages, lines: pl.DataFrame, eligible: pl.DataFrame, review: dt.date
    ) -> money.Ledger:
        """Every finding with its message, and the run's money (money.ledger)."""
        all_findings = findings.finalise(
            schema_found=stages.schema_found,
            line_found=stages.line_found,
            pcn_found=stages.pcn_found,
            pcn_records=self.pcn_records,
            lines=lines,
            line_details=stages.line_details,
            eligible=eligible,
            raw=stages.raw,
            failures=stages.failures,
            catalogue=self.catalogue,
            review=review,
        )
        return money.ledger(
            findings=all_findings,
            lines=lines,
            eligible=eligible,
            raw=stages.raw,
            rejected_rows=stages.failures["row_no"].unique(),
            caps=stages.caps,
            months=self.pcn_records["pcn_months"],
            budget_rules={
                rule.id: rule.at_risk_field
                for rule in self.catalogue.active
                if rule.at_risk_field and rule.applies_to == "pcn_months"
            },
            register=self.register,
            review=review,
            cost_cap=COST_CAP,
        )

    def _yearly_rules(self) -> frozenset[str]:
        """Rules whose findings are about the review month's financial year (history.py)."""
        return frozenset(
            rule.id for rule in self.catalogue.rules if rule.applies_to == "pcn_review_month"
        )

    def _caps(self) -> dict[str, str]:
        """Each line-level adjust rule's cap column (its `allowed_up_to`)."""
        return {rule.id: rule.allowed_up_to for rule in self.catalogue.active if rule.allowed_up_to}

    def _schema_stage(self, engine: RulesEngine, raw: pl.DataFrame, failures: pl.DataFrame):
        """Stage A: SCH-01 findings, one per bad field, through the engine like every rule."""
        records = (
            failures.with_row_index("failure_no")
            .join(
                raw.select("row_no", "pcn_code", "staff_id", "role", "claim_month"),
                on="row_no",
                how="left",
            )
            .with_columns(
                pl.col("failure_no").cast(pl.Int64),
                pl.lit(1, dtype=pl.Int64).alias("schema_failure"),
                v.month_start("claim_month").alias("month_date"),
            )
            .with_columns(
                v.yyyymm(pl.col("month_date")).fill_null(UNKNOWN_MONTH).alias("claim_month_number")
            )
        )
        rules = self.catalogue.applying_to("schema_failures")
        fired = self._fires(
            engine,
            rules,
            records.with_columns(pl.col("claim_month_number").alias("claim_month")),
            "failure_no",
        )
        found = fired.join(records, on="failure_no").select(
            "rule_id",
            "row_no",
            "failure_no",
            pl.col("pcn_code").fill_null("").str.strip_chars(),  # as summary.csv keys it
            pl.col("staff_id").fill_null(""),
            pl.col("role").fill_null(""),
            "month_date",
        )
        return self._record(found)

    def _line_findings(
        self,
        engine: RulesEngine,
        rules: list[Rule],
        records: pl.DataFrame,
        keys: pl.DataFrame | None = None,
        where: pl.Expr | None = None,
    ):
        """Findings of line rules on `records` (one per line; those `where` holds), with the
        keys of their lines (from `keys` when the records do not carry them)."""
        fired = self._fires(engine, rules, records, "row_no", where)
        keys = records if keys is None else keys
        return fired.join(
            keys.select("row_no", "pcn_code", "staff_id", "role", "month_date"), on="row_no"
        )

    def _condition_findings(
        self, engine: RulesEngine, rules: list[Rule], records: pl.DataFrame, lines: pl.DataFrame
    ):
        """Findings on a line's training conditions: one per unmet condition, naming it."""
        fired = self._fires(engine, rules, records, "check_no")
        return (
            fired.join(records.drop("role", "claim_month"), on="check_no")
            .join(derive.condition_texts(self.reference), on="condition_order")
            .join(
                lines.select("row_no", "pcn_code", "staff_id", "role", "month_date"),
                on="row_no",
            )
            .drop("check_no")
        )

    def _open_rejects(self) -> pl.Series:
        """The lines with an open reject finding so far."""
        rows = [
            found.filter((pl.col("status") == "open") & (pl.col("severity") == "reject"))["row_no"]
            for found in self.found
        ]
        return pl.concat(rows).drop_nulls().unique()

    def _deadline_extensions(self, lines: pl.DataFrame, where: pl.Expr) -> pl.DataFrame:
        """PAR-01 agreements with an extended deadline: the deadline each covered line (of
        those `where` holds) gets. Only a paramedic's line has a Level 7 deadline, so only
        an agreement covering one has moved a deadline (and counts as used)."""
        extensions = self.agreements.filter(
            (pl.col("rule_id") == "PAR-01") & pl.col("extended_deadline").is_not_null()
        )
        applied = (
            lines.select("row_no", "pcn_code", "staff_id", "month_date", "role")
            .filter(where & (pl.col("role") == "paramedic"))
            .join(
                extensions.select(
                    "agreement_id",
                    "pcn_code",
                    pl.col("staff_id").alias("agreed_staff"),
                    "from_month",
                    "to_month",
                    "extended_deadline",
                ),
                on="pcn_code",
            )
            .filter(_agreement_covers)
        )
        self.used_agreements |= set(applied["agreement_id"].to_list())
        # A person-specific agreement wins over a PCN-wide one; then the latest deadline.
        return (
            applied.sort(
                "row_no",
                pl.col("agreed_staff") == "",
                "extended_deadline",
                descending=[False, False, True],
            )
            .group_by("row_no", maintain_order=True)
            .agg(
                pl.col("extended_deadline").first(),
                pl.col("agreement_id").first().alias("deadline_agreement"),
            )
        )

    def _pcn_stage(self, engine, lines, review) -> pl.DataFrame | None:
        """PCN-level figures and findings: number limits and the ARRS sum."""
        records = derive.pcn_records(lines, self.reference, self.register, review)
        self.pcn_records = records
        found = []
        for applies_to, frame in records.items():
            rules = self.catalogue.applying_to(applies_to)
            if not rules or frame.height == 0:
                continue
            frame = frame.with_row_index("record_no").with_columns(
                pl.col("record_no").cast(pl.Int64)
            )
            fired = self._fires(engine, rules, frame, "record_no")
            found.append(
                fired.join(frame, on="record_no").select(
                    "rule_id",
                    pl.lit(None, dtype=pl.Int64).alias("row_no"),
                    "pcn_code",
                    pl.lit("").alias("staff_id"),
                    pl.col("role") if "role" in frame.columns else pl.lit("").alias("role"),
                    "month_date",
                    pl.lit(applies_to).alias("applies_to"),
                    "record_no",
                )
            )
        if not found:
            return None
        return self._record(pl.concat(found, how="diagonal_relaxed"))


def run_validation(options: RunOptions) -> RunResult:
    """Validate the claims named in `options`; raises ConfigError before any output."""
    return _Run(options).execute()
