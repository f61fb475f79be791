"""What a run tells the person or the log collector watching it, on stderr.

`text` on a terminal: a progress bar while claim files are read (tqdm) and a line per phase.
`text` elsewhere (cron mail, a pipe): plain timestamped lines, no escape codes. `json`: one
JSON object per line for log collectors. Every run logs its run id, inputs, counts and exit
code.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm


# C0 and C1 controls, DEL, and the surrogates a non-UTF-8 file name decodes to.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\n`), so a file
    name or a value can never forge a line of the log or move a terminal's cursor."""

    def escape(match: re.Match) -> str:
        char = match.group()
        if keep_newlines and char == "\n":
            return char
        return char.encode("unicode_escape", "backslashreplace").decode("ascii")

    return _UNPRINTABLE.sub(escape, text)


# What --quiet still logs: errors, and in json (for a collector) every run's finish.
_ALWAYS = {
    "text": frozenset({"error", "stopped"}),
    "json": frozenset({"error", "stopped", "finish"}),
}


class RunLog:
    """A run's log lines on stderr. With `quiet`, only errors (cron mail then holds only what
    needs a person); in json every line is one object."""

    def __init__(
        self, log_format: str, run_id: str, stream: TextIO | None = None, quiet: bool = False
    ) -> None:
        self.format = log_format
        self.run_id = run_id
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.terminal = self.format == "text" and self.stream.isatty() and not quiet
        self.bar: tqdm | None = None

    def event(self, event: str, **fields: object) -> None:
        if self.quiet and event not in _ALWAYS[self.format]:
            return
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if self.format == "json":
            record = {"time": now, "run_id": self.run_id, "event": event, **fields}
            line = json.dumps(record, default=str, ensure_ascii=False)
        else:
            details = " ".join(f"{key}={printable(str(value))}" for key, value in fields.items())
            line = f"{now} arrs-validate {self.run_id} {event} {details}".rstrip()
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def progress(self, event: str, data: dict) -> None:
        """The pipeline's progress callback."""
        if event == "file":
            if self.terminal:
                if self.bar is None:
                    import shutil

                    from tqdm import tqdm  # only on a terminal: importing it costs 50 ms

                    self.bar = tqdm(
                        total=data["total"],
                        desc="reading claim files",
                        unit="file",
                        file=self.stream,
                        leave=False,
                        # a terminal that reports no size (a bare pty) still gets a bar
                        ncols=shutil.get_terminal_size((80, 24)).columns or 80,
                        nrows=shutil.get_terminal_size((80, 24)).lines or 24,
                    )
                self.bar.update(1)
                if data["number"] == data["total"]:
                    self.close()
            else:
                self.event("file_read", **data)
        elif event == "phase":
            self.close()
            self.event("phase", name=data["name"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
