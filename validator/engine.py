"""The one adapter between the validator and durable-rules.

durable-rules is used as LIBRARIES.md prescribes: a host whose background timer threads are
switched off (every action runs inside the call that triggered it), one ruleset per rule so a
record is matched by every rule independently, records asserted as facts and retracted after
each batch of at most 1,000, every record anchored on a positive `row_no` test, only integers
and strings crossing the boundary, every action wrapped so an exception fails the run, and a
catch-all rule per ruleset that proves each record was evaluated exactly once.

Two modes give the same verdicts. `plain` posts every record as it is, line by line: the
reference. `fast` (the default) posts what the verdict depends on: every integer comparison
`a > b` becomes `sign(a - b) > 0` (catalogue.comparison_terms), Polars computes the signs, the
engine decides each distinct tuple of signs and categories once, and Polars joins the
verdicts back to every record.
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter
from collections.abc import Callable

import durable_rules_engine
import polars as pl
from durable.engine import Host, MessageObservedException

from validator.catalogue import Rule
from validator.errors import EngineError

BATCH_SIZE = 1_000
_SEEN = "seen"


class _SynchronousHost(Host):
    """A durable-rules host whose actions all run in the caller's thread, deterministically."""

    def __init__(self, actions: dict[str, Callable]) -> None:
        self._actions = actions
        super().__init__()

    def _run(self) -> None:  # no background dispatch timers
        return None

    def get_action(self, action_name: str) -> Callable:
        return self._actions[action_name]


class RulesEngine:
    """Evaluates catalogue rules on frames of records; one instance per run, closed after."""

    def __init__(self, rules: list[Rule], mode: str = "fast") -> None:
        if mode not in ("fast", "plain"):
            raise ValueError(f"engine mode must be fast or plain, not {mode!r}")
        self.mode = mode
        self._matches: dict[str, list[int]] = {rule.id: [] for rule in rules}
        self._seen: dict[str, Counter] = {rule.id: Counter() for rule in rules}
        self._errors: list[str] = []
        actions: dict[str, Callable] = {}
        definitions: dict[str, dict] = {}
        for rule in rules:
            actions[rule.id] = self._guarded(rule.id, self._matches[rule.id].append)
            actions[f"{rule.id}/{_SEEN}"] = self._guarded(rule.id, self._count(self._seen[rule.id]))
            anchor = {"$gte": {"row_no": 0}}  # never matches durable's own state document
            definitions[rule.id] = {
                "fires": {
                    "all": [{"m": {"$and": [anchor, copy.deepcopy(self._condition(rule))]}}],
                    "run": rule.id,
                },
                _SEEN: {"all": [{"m": anchor}], "run": f"{rule.id}/{_SEEN}"},
            }
        self._host = _SynchronousHost(actions)
        self._host.register_rulesets(definitions)
        self.records_evaluated = 0

    def _guarded(self, rule_id: str, record: Callable) -> Callable:
        def action(closure) -> None:
            try:
                record(closure.m.row_no)
            except Exception as error:  # durable-rules would swallow it silently
                self._errors.append(f"{rule_id}: {type(error).__name__}: {error}")

        return action

    def _condition(self, rule: Rule) -> dict:
        return rule.fast_condition if self.mode == "fast" else rule.condition

    def _fields(self, rule: Rule, records: pl.DataFrame) -> list[str]:
        """The names of the inputs the engine sees for this rule."""
        missing = [name for name in rule.fields if name not in records.columns]
        if missing:
            raise EngineError(f"{rule.id}: records lack field(s) {', '.join(missing)}")
        return rule.fields if self.mode == "plain" else rule.fast_fields

    def _input_expr(self, rule: Rule, name: str) -> pl.Expr:
        """An input: a field as it is, or (fast mode) the sign of a field's difference from
        the other side of a comparison."""
        if self.mode == "fast" and name in rule.terms:
            field, other = rule.terms[name]
            against = pl.col(other) if isinstance(other, str) else pl.lit(other)
            # -1, 0 or 1: a byte, not eight (a million lines' inputs are a dozen of these).
            return (pl.col(field).cast(pl.Int64) - against).sign().cast(pl.Int8)
        return pl.col(name)

    def _inputs(self, rule: Rule, records: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
        fields = self._fields(rule, records)
        return records.select(self._input_expr(rule, name).alias(name) for name in fields), fields

    @staticmethod
    def _count(counter: Counter) -> Callable:
        def count(row_no: int) -> None:
            counter[row_no] += 1

        return count

    def close(self) -> None:
        for ruleset in self._host._ruleset_list:
            durable_rules_engine.delete_ruleset(ruleset._handle)
        self._host._ruleset_list.clear()

    def __enter__(self) -> RulesEngine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _assert(self, rule_id: str, facts: list[dict]) -> None:
        try:
            self._host.assert_facts(rule_id, facts)
            self._host.retract_facts(rule_id, facts)
        except MessageObservedException:
            # durable-rules indexes facts by a 32-bit hash and mistakes a clash for a
            # duplicate: clear the batch and replay it one fact at a time.
            for fact in facts:
                with contextlib.suppress(Exception):  # a fact that was never stored
                    self._host.retract_fact(rule_id, fact)
            for fact in facts:
                self._host.assert_fact(rule_id, fact)
                self._host.retract_fact(rule_id, fact)

    def _check_fields(self, rule: Rule, records: pl.DataFrame) -> None:
        for name in rule.fields:
            dtype = records.schema.get(name)
            if dtype is not None and not (
                dtype.is_signed_integer() or dtype in (pl.String, pl.Categorical)
            ):
                raise EngineError(f"{rule.id}: field {name} is {dtype}, not an integer or text")

    def evaluate(self, rule: Rule, records: pl.DataFrame) -> pl.Series:
        """A boolean per record: does the rule fire on it?"""
        if records.height == 0:
            return pl.Series(rule.id, [], dtype=pl.Boolean)
        self._check_fields(rule, records)
        inputs, fields = self._inputs(rule, records)
        return self._decide(rule, inputs, fields)

    def evaluate_all(
        self, rules: list[Rule], records: pl.DataFrame, where: pl.Series | None = None
    ) -> dict[str, pl.Series]:
        """evaluate() for several rules on the same records (those `where` is true for, if
        given: a verdict per such record, in order).

        Fast mode: one group_by finds the distinct tuples of all the rules' inputs, each with
        the numbers of the records that have it; each rule is asked about the distinct tuples
        of its own inputs among them, and its verdicts are scattered back to the records of
        the tuples it fires on (one hash pass for all the rules, not one per rule). Plain
        mode asks each rule about every record.
        """
        if self.mode == "plain" or records.height == 0:
            records = records if where is None else records.filter(where)
            return {rule.id: self.evaluate(rule, records) for rule in rules}
        columns: dict[str, pl.Expr] = {}
        fields_of: dict[str, list[str]] = {}
        for rule in rules:
            self._check_fields(rule, records)
            fields_of[rule.id] = self._fields(rule, records)
            for name in fields_of[rule.id]:
                columns.setdefault(name, self._input_expr(rule, name).alias(name))
        inputs = records.select(columns.values())
        if where is not None:  # the inputs are narrow: filtered, not the records
            inputs = inputs.filter(where)
        # Categories (role, band ...) as numbers while the tuples are found: a few bytes a
        # record, not the text; the engine is still posted the text.
        inputs = inputs.with_columns(pl.col(pl.String).cast(pl.Categorical))
        for name, count in zip(inputs.columns, inputs.null_count().row(0), strict=True):
            if count:
                raise EngineError(f"input {name} has nulls; derive must fill them")
        # One hash pass: each distinct tuple with the numbers of the records that have it.
        tuples = (
            inputs.with_row_index("record")
            .group_by(list(columns), maintain_order=True)
            .agg("record")
        )
        verdicts = {}
        for rule in rules:
            fields = fields_of[rule.id]
            fired = tuples.filter(self._decide(rule, tuples.select(fields), fields))
            hit = pl.repeat(False, inputs.height, dtype=pl.Boolean, eager=True)
            verdicts[rule.id] = hit.scatter(fired["record"].explode(), True).alias(rule.id)
        return verdicts

    def _decide(self, rule: Rule, inputs: pl.DataFrame, fields: list[str]) -> pl.Series:
        """Post each distinct input tuple (each record, in plain mode) to the engine once;
        a boolean per row of `inputs`."""
        for name in fields:
            if inputs[name].null_count():
                raise EngineError(f"{rule.id}: field {name} has nulls; derive must fill them")
        if self.mode == "plain":
            distinct = inputs.with_row_index("row_no", offset=1)
        else:
            distinct = inputs.unique(maintain_order=True).with_row_index("row_no", offset=1)
        distinct = distinct.with_columns(pl.col("row_no").cast(pl.Int64))
        matches, seen = self._matches[rule.id], self._seen[rule.id]
        matches.clear()
        seen.clear()
        facts = distinct.to_dicts()
        for start in range(0, len(facts), BATCH_SIZE):
            self._assert(rule.id, facts[start : start + BATCH_SIZE])
        if self._errors:
            raise EngineError("a rule action failed: " + "; ".join(self._errors))
        if len(seen) != len(facts) or any(count != 1 for count in seen.values()):
            raise EngineError(
                f"{rule.id}: {len(facts)} records posted but {sum(seen.values())} evaluations "
                f"for {len(seen)} records were seen; results would be incomplete"
            )
        self.records_evaluated += len(facts)
        hit = pl.col("row_no").is_in(pl.Series(matches, dtype=pl.Int64).implode()).alias("hit")
        if self.mode == "plain":
            return distinct.select(hit)["hit"]
        verdicts = distinct.select(*fields, hit)
        return inputs.join(verdicts, on=fields, how="left", maintain_order="left")["hit"]
