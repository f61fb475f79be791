"""Every rule's passing and failing cases, stored in its own rule file, run through the real
pipeline and engine. `pytest -k PAR-01` runs one rule's cases."""

from __future__ import annotations

import pytest

from tests.helpers import projection, run_case
from validator.catalogue import load_catalogue

CASES = [
    pytest.param(rule, case, id=f"{rule.id}-{number}-{case['name']}")
    for rule in load_catalogue().active
    for number, case in enumerate(rule.cases, start=1)
]


def run_rule_case(folder, case: dict):
    """A case of a rule file: its lines over a valid base line, its register rows and
    agreements, its review month; validated by the real pipeline and engine."""
    return run_case(
        folder,
        lines=case.get("lines", [{}]),
        register_rows=case.get("register"),
        agreement_rows=case.get("agreements"),
        month=case.get("month"),
    )


@pytest.mark.parametrize(("rule", "case"), CASES)
def test_rule_case(rule, case, tmp_path):
    result = run_rule_case(tmp_path, case)
    found = projection(result, rule.id)
    if "findings" in case:
        expected = sorted((line, rule.id, status) for line, status in case["findings"])
    elif case["fires"]:
        line = 2 if rule.is_line_rule else 0
        expected = [(line, rule.id, "open")]
    else:
        expected = []
    assert found == expected, result.findings.select("rule_id", "message").rows()
    assert result.rows_read == result.rows_rejected_by_schema + result.rows_checked


@pytest.mark.parametrize(("rule", "case"), [c for c in CASES if c.values[1]["fires"]])
def test_failing_case_message_is_complete(rule, case, tmp_path):
    """Every figure a message names was found: nothing blank, None or unknown in it."""
    result = run_rule_case(tmp_path, case)
    messages = result.findings.filter(result.findings["rule_id"] == rule.id)["message"]
    assert messages.len()
    for message in messages:
        assert message.endswith(f"[{rule.id}]")
        for sign_of_a_gap in ("None", "—", "()", "  ", " ;", " ,"):
            assert sign_of_a_gap not in message, message
