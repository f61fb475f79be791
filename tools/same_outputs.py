"""Check that two output folders hold byte-identical findings, summary, payments and lines.

Performance work must not change what a run writes: capture a run's outputs before a change,
run again after it, and compare.

    .venv/bin/python tools/same_outputs.py BEFORE_DIR AFTER_DIR
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

COMPARED = ("exceptions.csv", "exceptions.json", "summary.csv", "payments.csv", "lines.csv")


def digest(path: Path) -> str:
    """The file's SHA-256 (its first 16 digits), with exceptions.json's run_id (which differs
    on every run) blanked."""
    if not path.exists():
        return "(missing)"
    content = path.read_bytes()
    if path.name == "exceptions.json":
        content = re.sub(rb'"run_id": "[^"]*"', b'"run_id": ""', content, count=1)
    return hashlib.sha256(content).hexdigest()[:16]


def main() -> int:
    before, after = (Path(argument) for argument in sys.argv[1:3])
    differ = 0
    for name in COMPARED:
        old, new = digest(before / name), digest(after / name)
        differ += old != new
        print(f"{'same' if old == new else 'DIFFERENT':9s} {name:16s} {old} {new}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
