"""Meta-tests that keep the rule catalogue honest, and the registry's refusal of bad rules."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import PROJECT, run_cli
from validator.catalogue import RECORD_FIELDS, compile_condition, load_catalogue
from validator.errors import ConfigError
from validator.paths import RULES_DIR

CATALOGUE = load_catalogue()
SCHEME_RULES = {
    "SCH-01",
    "ELG-01",
    "ELG-02",
    "ELG-03",
    "ELG-04",
    "ELG-05",
    "REF-01",
    "CST-01",
    "CAP-01",
    "SPL-01",
    "SPL-02",
    "MHP-01",
    "PAR-01",
    "PAR-02",
    "PAR-03",
    "TRN-01",
    "TRN-02",
    "TRN-03",
    "TRN-04",
    "DUP-01",
    "DUP-02",
    "LIM-01",
    "LIM-02",
    "BUD-01",
    "BUD-02",
}


def test_catalogue_holds_every_rule_of_the_scheme_document():
    assert len(SCHEME_RULES) == 25
    assert {rule.id for rule in CATALOGUE.active} == SCHEME_RULES
    scheme = (PROJECT / "docs" / "scheme.md").read_text(encoding="utf-8")
    for rule_id in SCHEME_RULES:
        assert f"| {rule_id} |" in scheme, f"docs/scheme.md does not describe {rule_id}"


def test_the_rules_command_lists_all_25():
    listing = run_cli("rules").stdout
    assert {line.split()[0] for line in listing.splitlines()[1:]} == SCHEME_RULES


@pytest.mark.parametrize("rule", CATALOGUE.rules, ids=lambda rule: rule.id)
def test_every_clause_names_its_document_and_section_or_role_entry(rule):
    documents = (
        "PCN Additional Roles overview (Aug 2021), ",
        "NHS England, Network Contract DES 2021/22 specification, ",
        "(README, Inputs",
    )
    assert any(document in rule.clause for document in documents), rule.clause
    assert "SPEC" not in rule.clause and "1900" not in rule.months


@pytest.mark.parametrize("rule", CATALOGUE.rules, ids=lambda rule: rule.id)
def test_every_rule_explains_itself_and_ships_cases(rule):
    assert len(rule.clause) > 20 and len(rule.rationale.split()) > 20
    assert rule.message.rstrip().endswith(f"[{rule.id}]")
    assert rule.message.startswith("{where}")
    assert any(case.get("fires") for case in rule.cases), "needs a failing case"
    assert any(not case.get("fires") for case in rule.cases), "needs a passing case"
    assert rule.path.parent.name == rule.id.split("-")[0].lower()


def test_digest_changes_with_any_rule_byte(tmp_path):
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    path = copy / "cap" / "CAP-01.toml"
    path.write_text(path.read_text() + "\n")
    assert load_catalogue(copy).digest != CATALOGUE.digest


def test_a_cached_catalogue_is_the_same_and_a_changed_rule_is_read_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    first = load_catalogue(copy)
    assert list((tmp_path / "cache" / "arrs-validate").glob("catalogue-*.pickle"))
    cached = load_catalogue(copy)
    assert cached == first
    path = copy / "cap" / "CAP-01.toml"
    path.write_text(path.read_text().replace('severity = "adjust"', 'severity = "reject"', 1))
    with pytest.raises(ConfigError, match="adjust rule"):  # checked afresh, not served cached
        load_catalogue(copy)


def test_a_damaged_cache_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = load_catalogue()
    for cached in (tmp_path / "cache" / "arrs-validate").glob("catalogue-*.pickle"):
        cached.write_bytes(b"not a pickle")
    assert load_catalogue() == first


def broken_catalogue(tmp_path, rule_file: str, old: str, new: str):
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    path = copy / rule_file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return copy


@pytest.mark.parametrize(
    ("rule_file", "old", "new", "complaint"),
    [
        ("cap/CAP-01.toml", 'id = "CAP-01"', 'id = "CAP-02"', "must equal the file name"),
        ("cap/CAP-01.toml", "clause = ", "clauses = ", "missing or blank: clause"),
        ("cap/CAP-01.toml", "{monthly_maximum}", "{monthly_maximun}", "unknown field"),
        (
            "cap/CAP-01.toml",
            "amount_claimed > monthly_maximum",
            "amount_claimed > maximum",
            "expected a int constant or field",
        ),
        (
            "cap/CAP-01.toml",
            "amount_claimed > monthly_maximum",
            "amount_claimed > 'x'",
            "expected a int constant",
        ),
        ("cap/CAP-01.toml", 'severity = "adjust"', 'severity = "fatal"', "severity must be"),
        ("cap/CAP-01.toml", 'stage = "C"', 'stage = "C"\neffective_from = "2021"', "YYYY-MM"),
        ("par/PAR-02.toml", 'severity = "query"', 'severity = "adjust"', "adjust rule names"),
    ],
)
def test_registry_refuses_malformed_rules_and_shows_the_shape(
    tmp_path, rule_file, old, new, complaint
):
    with pytest.raises(ConfigError) as error:
        load_catalogue(broken_catalogue(tmp_path, rule_file, old, new))
    assert complaint in str(error.value)
    assert "A rule file has this shape" in str(error.value)


def test_registry_refuses_duplicate_ids(tmp_path):
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    (copy / "extra").mkdir()
    shutil.copy(copy / "cap" / "CAP-01.toml", copy / "extra" / "CAP-01.toml")
    with pytest.raises(ConfigError, match="duplicate id CAP-01"):
        load_catalogue(copy)


def test_conditions_compile_to_durable_rules_json():
    condition, fields = compile_condition(
        "role in ('a', 'b') and afc_band not in ('5',) or days_in_post == 0",
        RECORD_FIELDS["checked_lines"],
        RULES_DIR,
    )
    assert condition == {
        "$or": [
            {
                "$and": [
                    {"$or": [{"role": "a"}, {"role": "b"}]},
                    {"$and": [{"$neq": {"afc_band": "5"}}]},
                ]
            },
            {"days_in_post": 0},
        ]
    }
    assert fields == ["afc_band", "days_in_post", "role"]


def test_conditions_are_parsed_never_run():
    with pytest.raises(ConfigError, match="use comparisons"):
        compile_condition(
            "__import__('os').system('true')", RECORD_FIELDS["checked_lines"], RULES_DIR
        )


def test_a_retired_rule_is_listed_but_never_run(tmp_path):
    copy = broken_catalogue(
        tmp_path, "trn/TRN-02.toml", 'severity = "warning"', 'severity = "warning"\nretired = true'
    )
    catalogue = load_catalogue(copy)
    assert catalogue.get("TRN-02").retired
    assert "TRN-02" not in {rule.id for rule in catalogue.active}


def test_a_cached_catalogue_others_could_write_is_never_loaded(tmp_path, monkeypatch):
    """A pickle runs code as it loads: a cache file (or folder) writable by other users is
    ignored, and the rule files are read instead."""
    from validator import catalogue as module

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fresh = load_catalogue()
    [cached] = (tmp_path / "arrs-validate").glob("catalogue-*.pickle")
    assert module._read_cache(cached) is not None
    cached.chmod(0o666)
    assert module._read_cache(cached) is None
    cached.chmod(0o600)
    cached.parent.chmod(0o777)
    assert module._read_cache(cached) is None
    assert load_catalogue().digest == fresh.digest  # still loads, from the rule files
