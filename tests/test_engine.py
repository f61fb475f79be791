"""The durable-rules adapter: every record evaluated once, every action run before results
are read, no state carried between runs, failures never silent."""

from __future__ import annotations

import polars as pl
import pytest

from validator.catalogue import load_catalogue
from validator.engine import BATCH_SIZE, RulesEngine
from validator.errors import EngineError

CAP = load_catalogue().get("CAP-01")


def records(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "amount_claimed": [i * 7 % 1009 for i in range(n)],
            "monthly_maximum": [500 + i % 13 for i in range(n)],
            "claim_month": [202106] * n,
            "rate_found": [1] * n,
        }
    )


def test_verdicts_match_the_condition_for_every_record_across_batches():
    frame = records(3 * BATCH_SIZE + 17)
    with RulesEngine([CAP]) as engine:
        verdict = engine.evaluate(CAP, frame)
    expected = (frame["amount_claimed"] > frame["monthly_maximum"]).to_list()  # rate_found 1
    assert verdict.to_list() == expected


def test_no_state_leaks_between_engines():
    frame = records(500)
    results = []
    for _ in range(3):
        with RulesEngine([CAP]) as engine:
            results.append(engine.evaluate(CAP, frame).to_list())
    assert results[0] == results[1] == results[2]


def test_distinct_inputs_are_decided_once():
    frame = pl.DataFrame(
        {
            "amount_claimed": [5, 5, 5, 9],
            "monthly_maximum": [6, 6, 6, 6],
            "claim_month": [202106] * 4,
            "rate_found": [1] * 4,
        }
    )
    with RulesEngine([CAP]) as engine:
        assert engine.evaluate(CAP, frame).to_list() == [False, False, False, True]
        assert engine.records_evaluated == 2


def test_nulls_and_floats_are_refused_at_the_boundary():
    with RulesEngine([CAP]) as engine:
        with pytest.raises(EngineError, match="has nulls"):
            engine.evaluate(
                CAP, records(3).with_columns(pl.lit(None, pl.Int64).alias("monthly_maximum"))
            )
        with pytest.raises(EngineError, match="not an integer or text"):
            engine.evaluate(CAP, records(3).with_columns(pl.col("amount_claimed") * 1.0))


def test_an_action_that_raises_fails_the_run():
    class ExplodingEngine(RulesEngine):
        def _guarded(self, rule_id, record):
            def explode(row_no):
                raise RuntimeError("disk on fire")

            return super()._guarded(rule_id, explode if record.__name__ == "append" else record)

    with (
        ExplodingEngine([CAP]) as engine,
        pytest.raises(EngineError, match=r"action failed.*disk on fire"),
    ):
        engine.evaluate(CAP, records(200))


def test_a_lost_record_is_detected():
    with RulesEngine([CAP]) as engine:
        seen = engine._seen[CAP.id]
        original = seen.__class__.__setitem__

        def drop_first(counter, key, value):
            if key != 1:
                original(counter, key, value)

        seen.__class__ = type("Lossy", (seen.__class__,), {"__setitem__": drop_first})
        with pytest.raises(EngineError, match="records posted"):
            engine.evaluate(CAP, records(10))


def test_fast_and_plain_modes_find_exactly_the_same(tmp_path):
    """The fast path (sign terms, each distinct decision once) against the plain
    line-by-line path, on a generated batch with every kind of exception seeded often."""
    from pathlib import Path

    from validator.generate import generate
    from validator.pipeline import RunOptions, run_validation

    batch = generate(tmp_path, pcns=25, months=12, seed=7, exception_rate=0.02, missing_rates=True)
    results = {}
    for mode in ("fast", "plain"):
        options = RunOptions(
            claims=[str(tmp_path / "claims")],
            pcns=Path(tmp_path / "pcns.csv"),
            agreements=Path(tmp_path / "agreements.csv"),
            month=batch["review_month"],
            engine_mode=mode,
        )
        results[mode] = run_validation(options)
    fast, plain = results["fast"], results["plain"]
    assert fast.findings.height > 500
    assert set(fast.findings["rule_id"]) == {rule.id for rule in load_catalogue().active}
    assert fast.findings.equals(plain.findings)
    assert fast.summary.equals(plain.summary)
    assert fast.records_evaluated < plain.records_evaluated / 20
