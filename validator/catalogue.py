"""The rule catalogue: one TOML file per rule under rules/, loaded and checked at start.

A rule is data with an identity (STYLE.md): id, title, the scheme clause it enforces,
severity, stage, what it is evaluated on, the claim months it applies to, a condition, a
message template, a rationale, and passing and failing cases. The registry refuses to start
on a duplicate or mismatched ID, a missing key, an unknown field in a condition or template,
and shows the expected shape.

Conditions are Python-like expressions (`amount_claimed > monthly_maximum and role ==
'paramedic'`) over the fields of the records the rule sees. They are parsed with `ast` (never
evaluated) and compiled into durable-rules' JSON condition language, which the engine runs.
"""

from __future__ import annotations

import ast
import hashlib
import os
import pickle
import stat
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

from validator import units
from validator.errors import ConfigError
from validator.paths import RULES_DIR

SEVERITIES = ("reject", "adjust", "query", "warning")
STAGES = ("A", "B", "C")

# What each kind of record carries into the engine: field -> type. Polars derives every one of
# them (validator/derive.py) without nulls; money is pence, dates are yyyymmdd integers.
_LINE_FIELDS = {
    "claim_month": int,
    "month_start": int,
    "month_end": int,
    "role": str,
    "afc_band": str,
    "employment_model": str,
    "additional_to_baseline": str,
    "rotational_model": str,
    "training_status": str,
    "claimable_from": int,
    "review_month": int,
    "register_found": int,
    "days_in_post": int,
    "lines_for_staff_role_month": int,
    "staff_month_effective": int,
    "full_time_effective": int,
}
_ELIGIBLE_FIELDS = {
    **_LINE_FIELDS,
    "amount_claimed": int,
    "monthly_maximum": int,
    "reimbursable_cost": int,
    "subcontract_fee": int,
    "fee": int,
    "fee_limit": int,
    "cost_cap": int,
    "rate_found": int,
    "level7_deadline": int,
    "level7_signoff": int,
    "start_given": int,
    "employment_start_day": int,
    "input_first_day": int,
    "programme_end": int,
}
RECORD_FIELDS: dict[str, dict[str, type]] = {
    "schema_failures": {"schema_failure": int, "claim_month": int},
    "checked_lines": _LINE_FIELDS,
    "eligible_lines": _ELIGIBLE_FIELDS,
    "training_conditions": {
        "claim_month": int,
        "role": str,
        "condition_level": str,
        "recorded": int,
        "met": int,
    },
    "limited_lines": {
        "claim_month": int,
        "role": str,
        "effective_wte": int,
        "limit_within": int,
        "limit_cap": int,
    },
    "pcn_months": {
        "claim_month": int,
        "ytd_allowed": int,
        "arrs_sum": int,
        "review_month": int,
        "month_excess": int,
    },
    "pcn_review_month": {"claim_month": int, "forecast_allowed": int, "arrs_sum": int},
}
CONSTANTS = {"WHOLE_TIME": units.WTE_UNITS, "NEVER": units.NEVER}

# Fields a message template may name: each finding's context (validator/findings.py).
MESSAGE_FIELDS = {
    "where": "file, line and keys (or PCN and month for PCN-level findings)",
    "column": "SCH-01: the column",
    "value": "SCH-01: the value as read",
    "problem": "SCH-01: what was expected",
    "role_title": "the role's title, lower case",
    "a_role": "the role's title with its article: 'a pharmacy technician'",
    "wte": "the line's WTE",
    "from_day": "' from 16 Jun 2021' when the person was in post for part of the month",
    "claim_month": "the claim month, e.g. Jun 2021",
    "claimed": "amount claimed",
    "monthly_maximum": "pro-rata maximum for the month",
    "annual_maximum": "the annual maximum per WTE used",
    "actual_cost": "salary + NI + pension + fee",
    "reimbursable_cost": "actual cost times the role's share",
    "share": "the role's cost share, e.g. 50%",
    "fee": "sub-contract fee as claimed",
    "employment_model": "practice, lead_provider or subcontracted",
    "area": "the PCN's area: standard, outer London or inner London",
    "band_text": "' at band 6' for a line whose rate is by AfC band, else ''",
    "fee_limit": "£200 per month per WTE, pro-rata",
    "claimable_from": "first day the role is claimable",
    "employment_start": "employment start",
    "employment_end": "employment end or 'no end'",
    "review_month": "the review month",
    "financial_year": "financial year of the claim month",
    "afc_band": "AfC band as read",
    "reimbursement_start": "first day reimbursed in the role",
    "deadline": "the Level 7 sign-off deadline",
    "input_first_month": "the earliest claim month of the whole input",
    "deadline_basis": "'six months after ...' or 'agreed extension ...'",
    "signoff": "Level 7 sign-off date or 'none'",
    "rotational_model": "Y or N",
    "training_status": "training status",
    "condition": "TRN-*: the training condition, as training.csv words it",
    "condition_column": "TRN-*: the claim column that evidences it",
    "condition_value": "TRN-*: the value the line records there, or (blank)",
    "condition_accepted": "TRN-*: the values that meet it",
    "programme_start": "TRN-04: the day the programme began",
    "programme_end": "TRN-04: two years after it began",
    "duplicate_lines": "number of lines for the same person, role and month",
    "staff_total_wte": "the person's total effective WTE in the month",
    "pcn_role_wte": "LIM-01: the PCN's total effective WTE in the role in the month",
    "max_wte": "LIM-01: the number limit",
    "effective_wte": "LIM-01: the line's effective WTE (wte x days in post / days in month)",
    "within_wte": "LIM-01: the part of the line's effective WTE within the limit",
    "limit_cap": "LIM-01: what the line is paid up to",
    "list_size": "the PCN's list size",
    "ytd_allowed": "allowed so far this financial year",
    "arrs_sum": "the PCN's ARRS sum",
    "excess": "BUD-01: this month's excess",
    "month_allowed": "the month's allowed total",
    "forecast": "BUD-02: full-year forecast",
    "months_remaining": "BUD-02: months after the review month to March",
    "other_lines": "DUP-01: the other lines for the same person, role and month (file, line, PCN)",
    "other_month_lines": "DUP-02: the person's other lines in the month (file, line, PCN)",
    "ytd_before": "BUD-01: allowed this financial year up to the month before",
    "excess_before": "BUD-01: the excess over the ARRS sum up to the month before",
    "over_sum": "BUD-01: allowed so far minus the ARRS sum",
    "forecast_over": "BUD-02: the forecast minus the ARRS sum",
}

RULE_SHAPE = """\
id = "CAP-01"                         # equals the file name, e.g. rules/cap/CAP-01.toml
title = "Claim above the pro-rata maximum reimbursable amount"
clause = "which part of the scheme it enforces"
severity = "adjust"                   # reject | adjust | query | warning
stage = "C"                           # A | B | C (docs/scheme.md, Stages)
applies_to = "eligible_lines"         # schema_failures | checked_lines | eligible_lines |
                                      # training_conditions | limited_lines |
                                      # pcn_months | pcn_review_month
effective_from = ""                   # only for a rule the scheme itself dates: first
effective_until = ""                  # and last claim month (blank: every month)
when = "amount_claimed > monthly_maximum"
allowed_up_to = "monthly_maximum"     # adjust rules on lines: the field that caps the line
                                      # (PCN-level adjust rules: at_risk_field = "month_excess")
message = "{where}: claimed {claimed} exceeds ... [CAP-01]"
rationale = "one paragraph: why the rule exists"

[[cases]]                             # at least one failing and one passing case
name = "what the case shows"
fires = true
lines = [{ amount_claimed = "5000.00" }]"""

_REQUIRED = (
    "id",
    "title",
    "clause",
    "severity",
    "stage",
    "applies_to",
    "when",
    "message",
    "rationale",
)
_OPTIONAL = (
    "effective_from",
    "effective_until",
    "allowed_up_to",
    "at_risk_field",
    "retired",
    "cases",
)
_OPERATORS = {ast.Gt: "$gt", ast.GtE: "$gte", ast.Lt: "$lt", ast.LtE: "$lte", ast.NotEq: "$neq"}


@dataclass
class Rule:
    id: str
    title: str
    clause: str
    severity: str
    stage: str
    applies_to: str
    when: str
    message: str
    rationale: str
    path: Path
    effective_from: str = ""
    effective_until: str = ""
    allowed_up_to: str = ""
    at_risk_field: str = ""
    retired: bool = False
    cases: list[dict] = field(default_factory=list)
    condition: dict = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)
    fast_condition: dict = field(default_factory=dict)
    terms: dict[str, tuple[str, object]] = field(default_factory=dict)
    fast_fields: list[str] = field(default_factory=list)

    @property
    def months(self) -> str:
        """The claim months the rule applies to, for people."""
        if self.effective_from and self.effective_until:
            return f"claim months {self.effective_from} to {self.effective_until}"
        if self.effective_from:
            return f"claim months from {self.effective_from}"
        if self.effective_until:
            return f"claim months up to {self.effective_until}"
        return "every claim month"

    @property
    def is_line_rule(self) -> bool:
        return self.applies_to in (
            "schema_failures",
            "checked_lines",
            "eligible_lines",
            "training_conditions",
            "limited_lines",
        )


class RuleFileError(ConfigError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"rule file {path}: {problem}\nA rule file has this shape:\n{RULE_SHAPE}")


class _Compiler:
    """Python-expression conditions to durable-rules JSON; collects the fields read."""

    def __init__(self, known: dict[str, type], path: Path) -> None:
        self.known = known
        self.path = path
        self.fields: set[str] = set()

    def fail(self, node: ast.AST, problem: str) -> RuleFileError:
        return RuleFileError(self.path, f"condition: {problem} (at `{ast.unparse(node)}`)")

    def field(self, node: ast.AST) -> tuple[str, type]:
        if not isinstance(node, ast.Name) or node.id not in self.known:
            raise self.fail(node, f"expected a field, one of: {', '.join(sorted(self.known))}")
        self.fields.add(node.id)
        return node.id, self.known[node.id]

    def operand(self, node: ast.AST, kind: type) -> object:
        if isinstance(node, ast.Constant) and type(node.value) is kind:
            return node.value
        if isinstance(node, ast.Name) and node.id in CONSTANTS and kind is int:
            return CONSTANTS[node.id]
        if isinstance(node, ast.Name) and self.known.get(node.id) is kind:
            self.fields.add(node.id)
            return {"$m": node.id}
        raise self.fail(node, f"expected a {kind.__name__} constant or field of the same type")

    def compile(self, node: ast.AST) -> dict:
        if isinstance(node, ast.BoolOp):
            key = "$and" if isinstance(node.op, ast.And) else "$or"
            return {key: [self.compile(value) for value in node.values]}
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            name, kind = self.field(node.left)
            op, right = node.ops[0], node.comparators[0]
            if isinstance(op, ast.In | ast.NotIn):
                if not isinstance(right, ast.Tuple | ast.List) or not right.elts:
                    raise self.fail(node, "`in` needs a tuple of constants")
                options = [self.operand(element, kind) for element in right.elts]
                if isinstance(op, ast.In):
                    return {"$or": [{name: option} for option in options]}
                return {"$and": [{"$neq": {name: option}} for option in options]}
            value = self.operand(right, kind)
            if isinstance(op, ast.Eq):
                return {name: value}
            if type(op) in _OPERATORS:
                return {_OPERATORS[type(op)]: {name: value}}
        raise self.fail(node, "use comparisons (== != < <= > >= in, not in) joined by and/or")


def compile_condition(expression: str, known: dict[str, type], path: Path) -> tuple[dict, list]:
    """The durable-rules condition for an expression, and the fields it reads."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise RuleFileError(path, f"condition does not parse: {error.msg}") from None
    compiler = _Compiler(known, path)
    condition = compiler.compile(tree.body)
    return condition, sorted(compiler.fields)


_COMPARISONS = ("$gt", "$gte", "$lt", "$lte", "$neq")


def comparison_terms(
    condition: dict, known: dict[str, type]
) -> tuple[dict, dict[str, tuple[str, object]]]:
    """The same condition with every comparison of an integer field replaced by a comparison
    of its sign term with 0, and the terms: name -> (field, other field or constant).

    `a > b` holds exactly when sign(a - b) > 0, so the engine decides the same verdicts, but
    a record's verdict then depends on a tuple of a few small categories instead of amounts
    in pence, and each distinct tuple is decided once (the engine's fast mode).
    """
    terms: dict[str, tuple[str, object]] = {}

    def term(name: str, operand: object) -> str:
        other = operand["$m"] if isinstance(operand, dict) else operand
        key = f"{name}__vs__{other}"
        terms[key] = (name, other)
        return key

    def walk(node: dict) -> dict:
        ((key, value),) = node.items()
        if key in ("$and", "$or"):
            return {key: [walk(child) for child in value]}
        if key in _COMPARISONS:
            ((name, operand),) = value.items()
            if known[name] is int:
                return {key: {term(name, operand): 0}}
            return node
        if known[key] is int:  # equality: {field: operand}
            return {term(key, value): 0}
        return node

    return walk(condition), terms


def _month_number(text: str, path: Path, key: str) -> int:
    try:
        year, month = text.split("-")
        number = int(year) * 100 + int(month)
        if len(year) != 4 or not 1 <= int(month) <= 12:
            raise ValueError
    except ValueError:
        raise RuleFileError(path, f"{key} must be a month as YYYY-MM, not '{text}'") from None
    return number


def load_rule(path: Path) -> Rule:
    import tomllib  # here: a cached catalogue (load_catalogue) needs no TOML parser

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RuleFileError(path, f"is not valid TOML: {error}") from None
    missing = [key for key in _REQUIRED if not str(data.get(key, "")).strip()]
    if missing:
        raise RuleFileError(path, f"missing or blank: {', '.join(missing)}")
    unknown = set(data) - {*_REQUIRED, *_OPTIONAL}
    if unknown:
        raise RuleFileError(path, f"unknown key(s): {', '.join(sorted(unknown))}")
    if data["id"] != path.stem:
        raise RuleFileError(path, f"id '{data['id']}' must equal the file name '{path.stem}'")
    if data["severity"] not in SEVERITIES:
        raise RuleFileError(path, f"severity must be one of {', '.join(SEVERITIES)}")
    if data["stage"] not in STAGES:
        raise RuleFileError(path, f"stage must be one of {', '.join(STAGES)}")
    if data["applies_to"] not in RECORD_FIELDS:
        raise RuleFileError(path, f"applies_to must be one of {', '.join(RECORD_FIELDS)}")
    rule = Rule(
        **{key: data[key] for key in _REQUIRED},
        effective_from=data.get("effective_from", ""),
        effective_until=data.get("effective_until", ""),
        allowed_up_to=data.get("allowed_up_to", ""),
        at_risk_field=data.get("at_risk_field", ""),
        retired=bool(data.get("retired", False)),
        cases=list(data.get("cases", [])),
        path=path,
    )
    known = RECORD_FIELDS[rule.applies_to]
    cap = rule.allowed_up_to if rule.is_line_rule else rule.at_risk_field
    if (rule.severity == "adjust") != bool(cap) or (cap and cap not in known):
        raise RuleFileError(
            path,
            "an adjust rule names the record field that caps a line (allowed_up_to) or, "
            "PCN-level, that holds its excess (at_risk_field); other rules name neither",
        )
    condition, fields = compile_condition(rule.when, known, path)
    # A rule applies to every claim month unless the scheme itself dates it.
    window = []
    if rule.effective_from:
        since = _month_number(rule.effective_from, path, "effective_from")
        window.append({"$gte": {"claim_month": since}})
    if rule.effective_until:
        until = _month_number(rule.effective_until, path, "effective_until")
        window.append({"$lte": {"claim_month": until}})
    rule.condition = {"$and": [condition, *window]}
    rule.fields = sorted({*fields, "claim_month"})
    rule.fast_condition, rule.terms = comparison_terms(rule.condition, known)
    rule.fast_fields = sorted(
        {name for name in rule.fields if known[name] is str} | set(rule.terms)
    )
    for _, name, _, _ in string.Formatter().parse(rule.message):
        if name is not None and name not in MESSAGE_FIELDS:
            raise RuleFileError(
                path,
                f"message names unknown field {{{name}}}; known: {', '.join(MESSAGE_FIELDS)}",
            )
    return rule


@dataclass
class Catalogue:
    rules: list[Rule]
    digest: str

    @property
    def active(self) -> list[Rule]:
        return [rule for rule in self.rules if not rule.retired]

    def get(self, rule_id: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.id == rule_id), None)

    def applying_to(self, applies_to: str) -> list[Rule]:
        return [rule for rule in self.active if rule.applies_to == applies_to]


def load_catalogue(directory: Path = RULES_DIR) -> Catalogue:
    """Every rule file under `directory`, checked; the digest covers their exact bytes.

    A catalogue that loaded cleanly is kept in the user's cache folder, keyed by the digest
    of its files' bytes and of the code that compiles them: parsing 25 TOML files was a
    fifth of `arrs-validate rules`' time. Any change to a rule file, or to this module,
    misses the cache and is loaded and checked afresh; a cache that cannot be read or
    written is simply not used."""
    paths = sorted(directory.rglob("*.toml"))
    if not paths:
        raise ConfigError(f"no rule files (*.toml) under {directory}")
    contents = [path.read_bytes() for path in paths]
    digest = hashlib.sha256()
    for path, content in zip(paths, contents, strict=True):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(content + b"\0")
    cached = _cache_file(directory, digest.hexdigest())
    catalogue = _read_cache(cached)
    if catalogue is not None:
        return catalogue
    rules: list[Rule] = []
    seen: dict[str, Path] = {}
    for path in paths:
        rule = load_rule(path)
        if rule.id in seen:
            raise RuleFileError(path, f"duplicate id {rule.id}: also in {seen[rule.id]}")
        seen[rule.id] = path
        rules.append(rule)
    rules.sort(key=lambda rule: rule.id)
    catalogue = Catalogue(rules=rules, digest=digest.hexdigest())
    _write_cache(cached, catalogue)
    return catalogue


def _cache_file(directory: Path, digest: str) -> Path | None:
    """Where a catalogue of these exact files, compiled by this exact code, is cached."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if root.startswith("~"):
        return None  # no home folder: no cache
    key = hashlib.sha256(digest.encode() + str(directory.resolve()).encode())
    key.update(sys.version.encode())
    for module in (__file__, units.__file__):
        key.update(Path(module).read_bytes())
    return Path(root) / "arrs-validate" / f"catalogue-{key.hexdigest()[:32]}.pickle"


def _private(path: Path) -> bool:
    """Owned by this user and writable by nobody else: a pickle runs code as it loads, so
    only a file no other user could have written is ever loaded (a shared or world-writable
    XDG_CACHE_HOME must not become a way to run code in someone's validation)."""
    try:
        for item in (path, path.parent):
            info = item.lstat()
            if info.st_uid != os.getuid() or info.st_mode & 0o022 or stat.S_ISLNK(info.st_mode):
                return False
    except OSError:
        return False
    return True


def _read_cache(cached: Path | None) -> Catalogue | None:
    if cached is None or not _private(cached):
        return None
    try:
        catalogue = pickle.loads(cached.read_bytes())
    except Exception:  # unreadable or damaged: load the files instead
        return None
    return catalogue if isinstance(catalogue, Catalogue) else None


def _write_cache(cached: Path | None, catalogue: Catalogue) -> None:
    if cached is None:
        return
    try:
        cached.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}")
        handle = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(handle, "wb") as file:
            file.write(pickle.dumps(catalogue, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(partial, cached)  # whole or not at all, whoever else writes it
    except OSError:
        pass
