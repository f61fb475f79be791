"""The Jinja environment of the HTML report, and the pages rendered in child processes.

A national run has a page per PCN (1,250 of them), and Jinja renders in Python, on one core
while the interpreter holds its lock. So the run prepares every page's data as plain Python
values (report.py, with Polars), and two child processes, `python -m validator.pages`,
render the pages from them straight into the staging folder while the run builds the data
files. A child imports Jinja only (no Polars), so it starts in a few tens of milliseconds;
its job crosses a pipe as a pickle, between processes of this same program.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import jinja2
from markupsafe import Markup

from validator.paths import TEMPLATES_DIR

SEVERITIES = ("reject", "adjust", "query", "warning")


def display_pounds(pence: int | None) -> str:
    """Integer pence for people: `£1,234.56` (the report's `pounds` filter)."""
    if pence is None:
        return "—"
    sign = "-" if pence < 0 else ""
    pounds, rest = divmod(abs(pence), 100)
    return f"{sign}£{pounds:,}.{rest:02d}"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # one run renders each template many times; never re-read it
    )
    env.filters["pounds"] = display_pounds
    env.filters["thousands"] = lambda number: f"{number:,}"
    return env


def pcn_page_name(pcn_code: str) -> str:
    return f"pcn/{pcn_code}.html"


def render_job(job: dict, folder: Path, child: bool = False) -> None:
    """Write the pages of `job` (plain Python values, see report.start_pages) into `folder`:
    index.html and rules.html if it has an `index`, and each of its PCNs' pages. `child`:
    this is a renderer process, which stops if its run dies."""
    env = environment()
    if "index" in job:
        index = job["index"]
        pages = {
            "index.html": env.get_template("index.html.j2").render(
                **index, page_name=pcn_page_name
            ),
            "rules.html": env.get_template("rules.html.j2").render(
                **job["context"], root="", by_rule=index["by_rule"]
            ),
        }
        for name, page in pages.items():
            (folder / name).write_bytes(page.encode("utf-8"))
    template = env.get_template("pcn.html.j2")
    (folder / "pcn").mkdir(exist_ok=True)
    parent = os.getppid()
    for pcn in job["pcns"]:
        if child and os.getppid() != parent:
            return  # the run that started this child was killed: its folder is abandoned
        code = pcn["pcn_code"]
        groups = [{**group, "rows": Markup(group["rows"])} for group in job["groups"].get(code, [])]
        sections = []
        for severity in SEVERITIES:
            in_severity = [group for group in groups if group["severity"] == severity]
            if in_severity:
                count = sum(group["count"] for group in in_severity)
                sections.append({"severity": severity, "count": count, "groups": in_severity})
        page = template.render(
            **job["context"],
            root="../",
            pcn=pcn,
            groups=groups,
            sections=sections,
            open_total=job["open_totals"].get(code, 0),
            shown_total=sum(group["count"] for group in groups),
            waived=job["waived"].get(code, []),
            agreements=job["agreements"],
            resolved=job["resolved"].get(code, []),
            limit=job["limit"],
        )
        (folder / pcn_page_name(code)).write_bytes(page.encode("utf-8"))


class Rendering:
    """Jobs rendered by child processes (PageRenderer), one each, started at once."""

    def __init__(self, jobs: list[dict], folder: Path) -> None:
        self.renderers: list[PageRenderer] = []
        try:
            for job in jobs:
                self.renderers.append(PageRenderer(job, folder))
        except BaseException:
            self.stop()
            raise

    def wait(self) -> None:
        try:
            for renderer in self.renderers:
                renderer.wait()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for renderer in self.renderers:
            renderer.stop()


class PageRenderer:
    """render_job(job, folder) in a child process, started at once; wait() waits for it.
    A disk error in the child is raised here as the same OSError."""

    def __init__(self, job: dict, folder: Path) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "validator.pages"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # The job goes over in one write, which the child reads at once (feeding it from a
        # thread instead would wait for the interpreter lock between every 64 KB). The child
        # reads one pickle, so stdin stays open until wait().
        with contextlib.suppress(BrokenPipeError):  # the child died: wait() tells why
            self._process.stdin.write(pickle.dumps((job, folder), pickle.HIGHEST_PROTOCOL))
            self._process.stdin.flush()

    def wait(self) -> None:
        stdout, stderr = self._process.communicate()
        if self._process.returncode == 0 and stdout:
            disk_error = pickle.loads(stdout)
            raise OSError(*disk_error)
        if self._process.returncode != 0:
            raise RuntimeError(
                f"the PCN page renderer (python -m validator.pages) exited with "
                f"{self._process.returncode}: {stderr.decode(errors='replace').strip()}"
            )

    def stop(self) -> None:
        """Stop the child if it still runs (the run is being abandoned)."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()


def main() -> None:
    """The child: a pickled (job, folder) on stdin; on stdout nothing, or the pickled
    (errno, strerror, filename) of a disk error."""
    job, folder = pickle.load(sys.stdin.buffer)
    try:
        render_job(job, folder, child=True)
    except OSError as error:
        sys.stdout.buffer.write(pickle.dumps((error.errno, error.strerror, error.filename)))


if __name__ == "__main__":
    main()
