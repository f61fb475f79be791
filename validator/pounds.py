"""Money for people, with no library behind it: the page renderer (Jinja only) and the Polars
layers print pounds the same way."""


def display_pounds(pence: int | None) -> str:
    """Integer pence as `£1,234.56` (`—` for none)."""
    if pence is None:
        return "—"
    sign = "-" if pence < 0 else ""
    pounds, rest = divmod(abs(pence), 100)
    return f"{sign}£{pounds:,}.{rest:02d}"
