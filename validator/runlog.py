"""What a run tells the person or the log collector watching it, on stderr.

`text` on a terminal: a progress bar while claim files are read (tqdm) and a line per phase.
`text` elsewhere (cron mail, a pipe): plain timestamped lines, no escape codes. `json`: one
JSON object per line for log collectors. Every run logs its run id, inputs, counts and exit
code.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm


class RunLog:
    def __init__(self, log_format: str, run_id: str, stream: TextIO | None = None) -> None:
        self.format = log_format
        self.run_id = run_id
        self.stream = stream or sys.stderr
        self.terminal = self.format == "text" and self.stream.isatty()
        self.bar: tqdm | None = None

    def event(self, event: str, **fields: object) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        if self.format == "json":
            record = {"time": now, "run_id": self.run_id, "event": event, **fields}
            line = json.dumps(record, default=str, ensure_ascii=False)
        else:
            details = " ".join(f"{key}={value}" for key, value in fields.items())
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
