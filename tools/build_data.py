"""Build step: ship the rule catalogue, reference data, schemas and templates inside the package.

In the checkout these stay top-level folders (rules/, reference/, schemas/, reports/templates/).
A wheel carries each of them at the same path under validator/data/, which is where
validator/paths.py looks first. An editable install copies nothing: it reads the checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools.command.build_py import build_py

SHIPPED_FOLDERS = ("rules", "reference", "schemas", "reports/templates")


class BuildPyWithData(build_py):
    """The standard build_py, then a copy of every shipped data file into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        shipped = Path(self.build_lib, "validator", "data")
        shutil.rmtree(shipped, ignore_errors=True)  # a file deleted since the last build goes too
        for folder in SHIPPED_FOLDERS:
            files = [path for path in sorted(Path(folder).rglob("*")) if path.is_file()]
            if not files:
                raise FileNotFoundError(
                    f"{folder}/ holds no files: run the build from the checkout"
                )
            for source in files:
                if "__pycache__" in source.parts:
                    continue
                target = shipped / source
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))
