"""The wheel works on its own: built from this checkout and installed into a fresh venv, it
carries the rules, reference data, schemas and templates, and `arrs-validate --version` and the
shipped sample run from another folder give what the checkout gives.

No network and no rebuild of durable-rules: the wheel is built with the project venv's
setuptools (`--no-build-isolation`) and installed without dependencies; the fresh venv reaches
the project venv's packages through a `.pth` line (which adds that folder to the path but, unlike
a site folder, runs none of its `.pth` files, so the editable install there stays out of it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers import PROJECT, SAMPLE_ARGS, run_sample
from validator import __version__
from validator.catalogue import load_catalogue

SHIPPED_FOLDERS = ("rules", "reference", "schemas", "reports/templates")
GUARD = 300  # seconds: only so a broken build fails the test instead of hanging it


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        list(map(str, command)),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=GUARD,
    )


def checkout_copy(target: Path) -> Path:
    """What `pip install .` sees: the checkout without what .gitignore keeps out of it (the
    venv, earlier build folders, outputs), so an old build/ cannot leak into the wheel."""
    ignored = [
        line.strip().rstrip("/")
        for line in (PROJECT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    shutil.copytree(PROJECT, target, ignore=shutil.ignore_patterns(".git", *ignored))
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    source = checkout_copy(root / "source")
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        source,
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        root / "dist",
        cwd=root,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (root / "dist").glob("arrs_validate-*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed, its dependencies borrowed from the project venv."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    asked = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=venv)
    site = Path(asked.stdout.strip())
    assert site.is_relative_to(venv), asked.stdout + asked.stderr
    borrowed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "project-dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(borrowed)))
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=venv.parent,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def test_the_wheel_carries_every_shipped_data_file(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {
        f"validator/data/{path.relative_to(PROJECT).as_posix()}"
        for folder in SHIPPED_FOLDERS
        for path in (PROJECT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert len(expected) >= 29  # 19 rules, 3 reference tables, 2 schemas, 5 templates
    assert expected <= names, sorted(expected - names)
    assert not {name for name in names if name.startswith(("tests/", "tools/", "rules/"))}


def test_the_installed_package_reads_its_own_data(venv, tmp_path):
    where = run(
        venv / "bin" / "python",
        "-c",
        "import validator.paths as p; print(p.DATA_ROOT); print(p.RULES_DIR)",
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    data_root, rules = map(Path, where.stdout.split())
    assert data_root.is_relative_to(venv) and data_root.name == "data"
    assert rules.is_dir() and not data_root.is_relative_to(PROJECT)


def test_version_names_the_tool_and_the_rule_catalogue(venv, tmp_path):
    shown = run(venv / "bin" / "arrs-validate", "--version", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"arrs-validate {__version__}" in shown.stdout
    assert load_catalogue().digest in shown.stdout  # the wheel's rules are the checkout's


def test_the_sample_runs_from_another_folder_as_from_the_checkout(venv, tmp_path):
    work = tmp_path / "elsewhere"
    shutil.copytree(PROJECT / "sample_claims", work / "sample_claims")
    completed = run(venv / "bin" / "arrs-validate", *SAMPLE_ARGS, "--out", "out", cwd=work)
    # The sample seeds a missing rate (REF-01): every output is written, and the exit is 2.
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    out = work / "out"
    written = {path.name for path in out.iterdir()}
    expected = {"exceptions.csv", "summary.csv", "manifest.json", "index.html", "exceptions.xlsx"}
    assert expected <= written
    assert list((out / "pcn").glob("*.html"))
    checkout = tmp_path / "checkout"
    assert run_sample(checkout).returncode == 2
    for name in ("exceptions.csv", "summary.csv"):
        assert (out / name).read_bytes() == (checkout / name).read_bytes(), name
