"""The Jinja environment of the HTML report, and the pages rendered in child processes.

A national run has a page per PCN (1,250 of them), and Jinja renders in Python, on one core
while the interpreter holds its lock. So the run prepares every page's data as plain Python
values (report.py, with Polars), and a child process (`python -I`, running pages.main) renders
the pages from them straight into the staging folder while the run builds the data files
on the other core. The child imports Jinja only (no Polars), so it starts in a few tens of
milliseconds; its job crosses a pipe as a pickle, between processes of this same program.
(Two children, splitting the pages, were no faster on two cores: three busy processes.)
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from validator.paths import TEMPLATES_DIR
from validator.units import display_pounds

if TYPE_CHECKING:
    import jinja2

SEVERITIES = ("reject", "adjust", "query", "warning")


def pounds_short(pence: int) -> str:
    """An axis label: whole pounds, in thousands or millions (`£1.2m`, `£450k`, `£900`)."""
    pounds = pence // 100
    if pounds >= 1_000_000:
        tenths = pounds // 100_000
        return f"£{tenths // 10}.{tenths % 10}m"
    if pounds >= 1_000:
        return f"£{pounds // 1_000:,}k"
    return f"£{pounds:,}"


def environment() -> jinja2.Environment:
    import jinja2  # imported here: a run's own process renders no page (see Rendering)

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # one run renders each template many times; never re-read it
    )
    env.filters["pounds"] = display_pounds
    env.filters["pounds_short"] = pounds_short
    env.filters["thousands"] = lambda number: f"{number:,}"
    return env


def pcn_page_name(pcn_code: str) -> str:
    return f"pcn/{pcn_code}.html"


def render_job(
    job: dict, folder: Path, env: jinja2.Environment | None = None, child: bool = False
) -> None:
    """Write the pages of `job` (plain Python values, see report.start_pages) into `folder`:
    index.html and rules.html if it has an `index`, and each of its PCNs' pages. `child`:
    this is a renderer process, which stops if its run dies."""
    from markupsafe import Markup

    env = env or environment()
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
            action=[group for group in groups if group["severity"] != "warning"],
            month_rows=Markup(job["month_rows"].get(code, "")),
            waived=job["waived"].get(code, []),
            agreements=job["agreements"],
            resolved=job["resolved"].get(code, []),
            limit=job["limit"],
        )
        (folder / pcn_page_name(code)).write_bytes(page.encode("utf-8"))


class Rendering:
    """The pages, rendered by a child process (PageRenderer) started before the run
    validates, so that its start-up (Python, Jinja, compiling the templates) overlaps the
    validation; it is sent its job when the findings are known. If no child can be
    started, this process renders the pages itself when wait() is called."""

    def __init__(self) -> None:
        self.renderer: PageRenderer | None = None
        self._here: tuple[dict, Path] | None = None  # a job rendered in this process
        try:
            self.renderer = PageRenderer()
        except OSError:
            # The interpreter cannot be started again (e.g. its path is not executable by
            # this user): this process renders the pages itself, only more slowly.
            self.renderer = None

    def send(self, job: dict, folder: Path) -> None:
        if self.renderer is None:
            self._here = (job, folder)
        else:
            self.renderer.send(job, folder)

    def wait(self) -> None:
        if self._here is not None:
            render_job(*self._here)
        if self.renderer is not None:
            try:
                self.renderer.wait()
            except BaseException:
                self.stop()
                raise

    def stop(self) -> None:
        """Stop the child if it still runs (the run ended without needing it, or is being
        abandoned)."""
        if self.renderer is not None:
            self.renderer.stop()


class PageRenderer:
    """A child process that renders one job into a folder (render_job); send() gives it the
    job, wait() waits for it. A disk error in the child is raised here as the same OSError."""

    def __init__(self) -> None:
        # Isolated (-I): the child never imports from the current folder, PYTHONPATH or the
        # user's site folder; it is told where this very package lies, and imports that.
        package_parent = str(Path(__file__).resolve().parent.parent)
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-c",
                "import sys; sys.path.insert(0, sys.argv[1]); "
                "from validator.pages import main; main()",
                package_parent,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._finished = False

    def send(self, job: dict, folder: Path) -> None:
        # The job goes over in one write, which the child reads at once (feeding it from a
        # thread instead would wait for the interpreter lock between every 64 KB). The child
        # reads one pickle, so stdin stays open until wait().
        with contextlib.suppress(BrokenPipeError):  # the child died: wait() tells why
            self._process.stdin.write(pickle.dumps((job, folder), pickle.HIGHEST_PROTOCOL))
            self._process.stdin.flush()

    def wait(self) -> None:
        stdout, stderr = self._process.communicate()
        self._finished = True
        if self._process.returncode == 0 and stdout:
            disk_error = pickle.loads(stdout)
            raise OSError(*disk_error)
        if self._process.returncode != 0:
            raise RuntimeError(
                f"the PCN page renderer (a child process) exited with "
                f"{self._process.returncode}: {stderr.decode(errors='replace').strip()}"
            )

    def stop(self) -> None:
        if self._finished:
            return
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()
        self._finished = True


def main() -> None:
    """The child: compiles the templates, then reads a pickled (job, folder) on stdin (none
    if the run ended first); on stdout nothing, or the pickled (errno, strerror, filename)
    of a disk error."""
    env = environment()
    for name in ("index.html.j2", "rules.html.j2", "pcn.html.j2"):
        env.get_template(name)
    try:
        job, folder = pickle.load(sys.stdin.buffer)
    except EOFError:
        return  # the run needed no pages (it stopped, or failed before its report)
    try:
        render_job(job, folder, env, child=True)
    except OSError as error:
        sys.stdout.buffer.write(pickle.dumps((error.errno, error.strerror, error.filename)))


if __name__ == "__main__":
    main()
