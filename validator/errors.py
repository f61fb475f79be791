"""The three kinds of failure the CLI turns into exit codes 2 and 3."""


class ConfigError(Exception):
    """A bad option, register, agreements or reference file, or a missing rate.

    Stops the run before any output is written (exit 2). The message names the file, line or
    option and how to fix it.
    """


class EngineError(Exception):
    """The rules engine failed or lost a record: the results cannot be trusted (exit 3)."""
