"""An output folder that is read-only or on a full disk: exit 2, a clear message, no partial
outputs, and the previous outputs untouched. Uses small real tmpfs mounts where the machine
allows mounting (CI runs as root); otherwise the same failure is injected into the writes."""

from __future__ import annotations

import errno
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.helpers import claims, register, run_cli, run_small
from validator import cli


def try_mount(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def mount_point(tmp_path):
    target = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    yield target
    subprocess.run(["umount", str(target)], capture_output=True)


def inputs(tmp_path: Path) -> list[str]:
    return [
        str(claims(tmp_path / "c.csv", {"amount_claimed": "5000.00"})),
        "--pcns",
        str(register(tmp_path / "p.csv")),
    ]


def test_read_only_output_folder(tmp_path, mount_point, monkeypatch, capsys):
    if try_mount(mount_point, "size=1m,ro"):
        completed = run_cli("run", *inputs(tmp_path), "--out", str(mount_point / "out"))
        code, stderr = completed.returncode, completed.stderr
    else:  # no privilege to mount: make every file creation under it fail the same way
        real_open = __import__("os").open

        def read_only(path, *args, **kwargs):
            if str(path).startswith(str(mount_point)):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr("os.open", read_only)
        code = cli.main(["run", *inputs(tmp_path), "--out", str(mount_point / "out")])
        stderr = capsys.readouterr().err
    assert code == 2
    assert "Read-only file system" in stderr and "writable" in stderr
    assert "Traceback" not in stderr


def test_full_disk_leaves_no_partial_outputs_and_the_previous_ones(tmp_path, mount_point):
    if not try_mount(mount_point, "size=192k"):
        pytest.fail("cannot mount a small tmpfs here; run as root (CI does)")
    out = mount_point / "out"
    first = run_small(tmp_path, out)
    assert first.returncode == 0, first.stderr
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    many = [{"staff_id": f"S{n:04d}", "amount_claimed": "5000.00"} for n in range(400)]
    big = claims(tmp_path / "big.csv", *many)
    completed = run_cli(
        "run", str(big), "--pcns", str(register(tmp_path / "p.csv")), "--out", str(out)
    )
    assert completed.returncode == 2, completed.stdout
    assert "No space left on device" in completed.stderr and "free space" in completed.stderr
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    leftovers = [p.name for p in mount_point.iterdir() if p.name not in ("out", ".out.lock")]
    assert leftovers == []
