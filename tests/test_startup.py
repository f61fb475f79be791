"""What each command imports: `rules`, `explain` and `--help` start without the heavy
libraries (the README's "Performance" section), and a run's Pandera comes without Hypothesis.
Imports are checked, never seconds: timing is `make bench`'s."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import PROJECT

HEAVY = ("polars", "pandera", "durable", "jinja2", "hypothesis")

_IMPORTED = """
import contextlib, io, json, sys
from validator.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main({arguments!r})
    except SystemExit:
        pass
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})), file=sys.stderr)
"""


def imported_by(arguments: list[str]) -> set[str]:
    completed = subprocess.run(
        [sys.executable, "-c", _IMPORTED.format(arguments=arguments)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
    )
    return set(json.loads(completed.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("arguments", [["rules"], ["explain", "CAP-01"], ["--help"]])
def test_catalogue_commands_import_no_heavy_library(arguments):
    assert not {name for name in imported_by(arguments) if name.startswith(HEAVY)}


def test_the_schema_loads_pandera_without_hypothesis_and_leaves_it_importable():
    code = (
        "import sys, validator.schema as s; loaded = 'hypothesis' in sys.modules; "
        "import hypothesis; print(loaded, s.pa.__name__)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT, check=True
    )
    assert completed.stdout.split() == ["False", "pandera.polars"]
