"""The exact units of the run, with no library behind them: WTE as integer units, money as
integer pence and its bound, the date that never comes, and pounds for people. The page
renderer (Jinja only), the rule catalogue (read by `rules` and `explain`, which import no
Polars) and the Polars layers all take them from here."""

# 1.0 WTE in integer units: a multiple of 10**6 (a WTE written with up to six decimal places)
# and of 37,500 (milli-hours in a 37.5-hour week: hours are read to 3 decimal places, 9.375
# hours = 0.25 WTE), so both forms are exact; so is a third. A longer WTE is taken to the
# nearest unit (values.wte_units).
WTE_UNITS = 3_000_000
FULL_TIME_MILLIHOURS = 37_500
UNITS_PER_MILLIHOUR = WTE_UNITS // FULL_TIME_MILLIHOURS
# Two WTE values that differ by more than this disagree ("agree to 0.01": README, Inputs).
WTE_AGREEMENT_UNITS = WTE_UNITS // 100
# The largest amount any money cell may hold: £10,000,000.00. No claim line, annual maximum
# or PCN's ARRS sum comes near it, and with it every product and sum the run makes (a million
# lines of it, a maximum times WTE units times days) stays far inside a 64-bit integer.
MAX_MONEY_PENCE = 1_000_000_000
# The texts every reader accepts, as regular expressions of ASCII digits only (Python's and
# Polars' \d also match other scripts' digits), years 1900-2199: written once for the Polars
# parsers (values.py), the reference and config readers, and --month.
YEAR = r"(?:19|2[01])[0-9]{2}"
MONTH_PATTERN = YEAR + r"-(0[1-9]|1[0-2])"
ISO_DATE_PATTERN = YEAR + r"-[0-9]{2}-[0-9]{2}"
UK_DATE_PATTERN = r"[0-9]{1,2}/[0-9]{1,2}/" + YEAR
MONEY_PATTERN = r"£?([0-9]{1,3}(?:,[0-9]{3})+|[0-9]{1,12})(?:\.([0-9]{1,2}))?"
# A date that never comes: stands for a blank date in engine records (yyyymmdd integers).
NEVER = 99_991_231


def display_pounds(pence: int | None) -> str:
    """Integer pence as `£1,234.56` (`—` for none)."""
    if pence is None:
        return "—"
    sign = "-" if pence < 0 else ""
    pounds, rest = divmod(abs(pence), 100)
    return f"{sign}£{pounds:,}.{rest:02d}"


# The most claim lines a run takes unless told otherwise (--max-lines): two national years.
# Past it a run is refused before it is all read, so that one huge or hostile batch cannot
# exhaust the machine's memory (README, Performance: under 1 KB a line, a few KB for lines
# that each carry several long findings).
MAX_LINES = 1_000_000
