"""The HTML report and auditor exports, checked as files and in a real headless Chromium.

Browser tests drive Debian's chromium through Playwright (`executable_path`), with the
network unreachable by construction: pages are opened from disk and every request that is
not `file:` is recorded as a failure. Screenshots go to test-output/screenshots/.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.helpers import PROJECT, claims, register, run_cli, run_sample

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = PROJECT / "test-output" / "screenshots"
GOLDEN = PROJECT / "tests" / "golden"
needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (apt-get install chromium; CI installs it)",
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    completed = run_sample(out)
    assert completed.returncode == 2, completed.stderr  # its REF-01 line: outputs written
    return out


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on(
        "dialog",
        lambda dialog: (page.problems.append("dialog: " + dialog.message), dialog.dismiss()),
    )
    page.on("request", lambda r: r.url.startswith("file:") or page.problems.append(r.url))
    yield page
    context.close()


def all_pages(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.html"))


def test_every_page_is_self_contained(sample):
    pages = all_pages(sample)
    assert len(pages) == 2 + 7  # index, rules and one page per PCN
    for path in pages:
        html = path.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|javascript:)""", html), path
        assert "<link" not in html and "@import" not in html and "url(" not in html


@needs_browser
def test_index_loads_offline_without_errors_and_search_filters(sample, page):
    page.goto((sample / "index.html").as_uri())
    assert page.title().startswith("ARRS claims exception report")
    rows = page.locator("#pcn-table tbody tr")
    assert rows.count() == 7
    page.fill("#pcn-search", "meadow")
    assert page.locator("#pcn-table tbody tr:visible").count() == 1
    assert "U71004" in page.locator("#pcn-table tbody tr:visible").inner_text()
    assert page.locator("#pcn-count").inner_text() == "1 shown"
    page.fill("#pcn-search", "")
    assert page.locator("#pcn-table tbody tr:visible").count() == 7
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "index.png"), full_page=True)
    assert page.problems == []


@needs_browser
def test_sorting_by_a_money_column(sample, page):
    page.goto((sample / "index.html").as_uri())
    page.click("#pcn-table thead th:nth-child(7) button")  # At risk, ascending
    page.click("#pcn-table thead th:nth-child(7) button")  # descending
    first = page.locator("#pcn-table tbody tr").first.locator("th a").inner_text()
    assert first == "U71004"  # the PCN over its ARRS sum has the most at risk
    assert page.problems == []


@needs_browser
def test_a_pcn_is_two_clicks_away_and_prints_without_navigation(sample, page):
    page.goto((sample / "index.html").as_uri())
    page.click("text=U71006")
    assert page.url.endswith("/pcn/U71006.html")
    assert page.locator("h1").inner_text() == "U71006 Harbour PCN"
    assert page.locator("#waived + .table-wrap tbody tr").count() == 2
    assert "AG-2021-001" in page.locator("#waived + .table-wrap").inner_text()
    page.click("h3#TRN-01 a")
    assert page.url.endswith("/rules.html#TRN-01")
    page.go_back()
    page.emulate_media(media="print")
    assert not page.locator("nav").is_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.emulate_media(media="screen")
    page.screenshot(path=str(SCREENSHOTS / "pcn-U71006.png"), full_page=True)
    assert page.problems == []


@needs_browser
def test_readable_on_a_phone(sample, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto((sample / "pcn" / "U71004.html").as_uri())
    body_width = page.evaluate("document.documentElement.scrollWidth")
    assert body_width <= 390  # wide tables scroll inside their own box, the page does not
    assert page.locator("h1").is_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "pcn-U71004-phone.png"), full_page=True)
    context.close()


@needs_browser
def test_hostile_staff_name_shows_as_text(tmp_path, page):
    hostile = "<script>alert(1)</script>"
    claim_file = claims(
        tmp_path / "claims.csv",
        {"staff_name": hostile, "wte": "2"},
        {"staff_id": "S2", "staff_name": hostile, "amount_claimed": "5000.00"},
    )
    completed = run_cli(
        "run",
        str(claim_file),
        "--pcns",
        str(register(tmp_path / "p.csv")),
        "--out",
        str(tmp_path / "out"),
        "--show-names",
    )
    assert completed.returncode == 1
    page.goto((tmp_path / "out" / "pcn" / "U10001.html").as_uri())
    cells = page.locator("td", has_text=hostile)
    assert cells.count() >= 1
    assert page.problems == []  # no alert dialog, no script error


def _skeleton(html: str) -> str:
    """The tag structure of a page, one tag per line with its id and class: what the golden
    file pins down, without the figures, times and wording that change between runs."""

    class Skeleton(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []
            self.depth = 0

        def handle_starttag(self, tag, attrs):
            keep = {k: v for k, v in attrs if k in ("id", "class", "scope", "data-sortable")}
            detail = " ".join(f'{k}="{v}"' for k, v in sorted(keep.items()) if v is not None)
            self.lines.append("  " * self.depth + f"<{tag}{' ' + detail if detail else ''}>")
            if tag not in ("meta", "br", "input", "rect", "line", "text", "img"):
                self.depth += 1

        def handle_endtag(self, tag):
            if tag not in ("meta", "br", "input", "rect", "line", "text", "img"):
                self.depth = max(0, self.depth - 1)

    parser = Skeleton()
    parser.feed(html)
    lines, collapsed = parser.lines, []
    for line in lines:  # repeated table rows and chart bars collapse to one
        if not collapsed or collapsed[-1] != line:
            collapsed.append(line)
    return "\n".join(collapsed) + "\n"


@pytest.mark.parametrize("page_name", ["index.html", "rules.html", "pcn/U71006.html"])
def test_golden_html_structure(sample, page_name, update_golden):
    """Rewrite with: .venv/bin/pytest tests/test_report.py -k golden --update-golden"""
    golden = GOLDEN / (page_name.replace("/", "-") + ".skeleton")
    actual = _skeleton((sample / page_name).read_text(encoding="utf-8"))
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual)
    assert golden.exists(), "run: .venv/bin/pytest tests/test_report.py -k golden --update-golden"
    assert actual == golden.read_text(), (
        "HTML structure changed; if intended, run: "
        ".venv/bin/pytest tests/test_report.py -k golden --update-golden"
    )


def test_xlsx_has_findings_summary_and_rules_with_money_as_numbers(sample):
    import xml.etree.ElementTree as ElementTree
    from zipfile import ZipFile

    import polars as pl

    path = sample / "exceptions.xlsx"
    with ZipFile(path) as book:
        for name in book.namelist():
            if name.endswith((".xml", ".rels")):
                ElementTree.fromstring(book.read(name))  # every part is well-formed XML
        assert '<pane ySplit="1"' in book.read("xl/worksheets/sheet1.xml").decode()
    # Read back by an independent reader (calamine, through Polars).
    findings = pl.read_excel(path, sheet_name="findings", engine="calamine")
    assert findings.columns[:3] == ["rule_id", "severity", "status"]
    assert findings.height == 47
    cap = findings.filter(pl.col("rule_id") == "CAP-01").sort("source_line")
    assert cap["amount_at_risk"].dtype == pl.Float64  # money as numbers
    assert cap["amount_at_risk"].to_list()[0] == 46.2
    summary = pl.read_excel(path, sheet_name="summary", engine="calamine")
    assert summary.height == 7 and summary["claimed"].dtype == pl.Float64
    rules = pl.read_excel(path, sheet_name="rules", engine="calamine")
    assert rules.height == 25


def test_json_export_follows_its_documented_schema(sample):
    document = json.loads((sample / "exceptions.json").read_text())
    schema = json.loads((PROJECT / "schemas" / "exceptions.schema.json").read_text())
    assert set(schema["required"]) <= set(document)
    assert document["format_version"] == schema["properties"]["format_version"]["const"]
    finding_keys = schema["properties"]["findings"]["items"]["required"]
    assert len(document["findings"]) == 47
    for finding in document["findings"]:
        assert set(finding_keys) <= set(finding)
        assert re.fullmatch(r"[0-9a-f]{16}", finding["fingerprint"])
    summary_keys = schema["properties"]["summary"]["items"]["required"]
    assert all(set(summary_keys) <= set(row) for row in document["summary"])
    manifest = json.loads((sample / "manifest.json").read_text())
    payments = (sample / "payments.csv").read_text().splitlines()[1:]
    for name, rows in (
        ("payments", len(payments)),
        ("lines", manifest["reconciliation"]["rows_read"]),
    ):
        keys = schema["properties"][name]["items"]["required"]
        assert len(document[name]) == rows
        assert all(set(row) == set(keys) for row in document[name]), name
    assert document["resolved"] is None


def test_previous_run_marks_new_persisting_and_resolved(tmp_path):
    pcns = register(tmp_path / "pcns.csv")
    may = claims(
        tmp_path / "may" / "claims.csv",
        {"claim_month": "2021-05", "amount_claimed": "5000.00"},
        {"claim_month": "2021-05", "staff_id": "S2", "training_status": "not_started"},
        # A fee on a line whose cost never includes one: a warning (SPL-02), gone in June.
        {"claim_month": "2021-05", "staff_id": "S4", "subcontract_fee": "100.00"},
    )
    first = run_cli("run", str(may), "--pcns", str(pcns), "--out", str(tmp_path / "run1"))
    assert first.returncode == 1
    june = claims(
        tmp_path / "june" / "claims.csv",
        {"claim_month": "2021-05", "amount_claimed": "5000.00"},  # still there
        {"claim_month": "2021-05", "staff_id": "S2"},  # training fixed
        {"claim_month": "2021-06", "staff_id": "S3", "additional_to_baseline": "N"},
    )
    second = run_cli(
        "run",
        str(june),
        "--pcns",
        str(pcns),
        "--out",
        str(tmp_path / "run2"),
        "--previous",
        str(tmp_path / "run1"),
    )
    assert second.returncode == 1, second.stderr
    lines = (tmp_path / "run2" / "exceptions.csv").read_text().splitlines()
    assert lines[0].endswith(",message,fingerprint,change")
    document = json.loads((tmp_path / "run2" / "exceptions.json").read_text())
    changes = sorted((f["rule_id"], f["change"]) for f in document["findings"])
    assert changes == [("CAP-01", "persisting"), ("CST-01", "persisting"), ("ELG-03", "new")]
    resolved = [(f["rule_id"], f["staff_id"]) for f in document["resolved"]]
    assert resolved == [("TRN-01", "S2"), ("SPL-02", "S4")]
    schema = json.loads((PROJECT / "schemas" / "exceptions.schema.json").read_text())
    resolved_keys = schema["properties"]["resolved"]["items"]["required"]
    assert all(set(row) == set(resolved_keys) for row in document["resolved"])
    # The schedule's Resolved column counts open reject, adjust and query findings, as its
    # caption says (and as New and Persisting do); the page lists every finding resolved.
    index = (tmp_path / "run2" / "index.html").read_text()
    schedule = index[index.index('id="schedule-table"') : index.index("</table>")]
    row = schedule[schedule.index("U10001") :]
    cells = re.findall(r"<td>([^<]*)</td>", row[: row.index("</tr>")])
    assert cells[-3:] == ["1", "2", "1"]  # new (ELG-03), persisting (CAP-01, CST-01), resolved
    page = (tmp_path / "run2" / "pcn" / "U10001.html").read_text()
    assert "Resolved since the previous run (2)" in page
    assert "Of these, 1 was an open reject, adjust or query finding" in page


def test_pages_are_the_same_when_no_renderer_process_can_start(tmp_path, monkeypatch):
    """The pages come from a child process; if the interpreter cannot be started again,
    the run renders them itself, and they are the same pages."""
    import datetime as dt

    from validator import pages
    from validator.pipeline import RunOptions, run_validation
    from validator.report import start_pages

    result = run_validation(
        RunOptions(
            claims=[str(PROJECT / "sample_claims" / "claims")],
            pcns=PROJECT / "sample_claims" / "pcns.csv",
            agreements=PROJECT / "sample_claims" / "agreements.csv",
            month="2021-12",
        )
    )
    started = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    written = {}
    for way in ("children", "here"):
        if way == "here":

            def cannot_start(self):
                raise PermissionError(13, "Permission denied", "python3.11")

            monkeypatch.setattr(pages.PageRenderer, "__init__", cannot_start)
        folder = tmp_path / way
        folder.mkdir()
        rendering = pages.Rendering()
        assert (rendering.renderer is not None) == (way == "children")
        start_pages(result, started, "run-1", folder, rendering)
        rendering.wait()
        written[way] = {
            str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*.html")
        }
    assert len(written["here"]) == 2 + 7  # index, rules and the sample's seven PCNs
    assert written["here"] == written["children"]


# The report in a real browser: what a commissioner sees at 1280 px and on a phone, and
# what prints on A4. PDFs are read back by pypdf.


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """Thirty PCNs over nine months: tables long enough to run over several printed pages."""
    from validator.generate import generate

    folder = tmp_path_factory.mktemp("generated")
    generate(folder, pcns=30, months=9, seed=3, exception_rate=0.01)
    out = folder / "out"
    completed = run_cli(
        "run",
        str(folder / "claims"),
        "--pcns",
        str(folder / "pcns.csv"),
        "--month",
        "2021-12",
        "--out",
        str(out),
    )
    assert completed.returncode == 1, completed.stderr
    return out


def _pdf_pages(page, path: Path) -> list[str]:
    """Print the open page to A4 as a browser's print dialog would, and read its text back."""
    from pypdf import PdfReader

    page.emulate_media(media="print")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pdf = SCREENSHOTS / path
    pdf.write_bytes(page.pdf(format="A4", prefer_css_page_size=True, print_background=True))
    page.emulate_media(media="screen")
    return [sheet.extract_text() for sheet in PdfReader(pdf).pages]


def _overflowing(page) -> list:
    """Table boxes wider than their room, and the document's own width."""
    return page.evaluate(
        """() => [document.documentElement.scrollWidth,
            Array.from(document.querySelectorAll('.table-wrap'))
                 .filter(w => w.scrollWidth > w.clientWidth)
                 .map(w => w.querySelector('table').id || 'unnamed')]"""
    )


@needs_browser
@pytest.mark.parametrize("batch", ["sample", "generated"])
def test_index_shows_the_budget_columns_at_1280_without_sideways_scroll(batch, request, page):
    out = request.getfixturevalue(batch)
    page.goto((out / "index.html").as_uri())
    width, wide = _overflowing(page)
    assert width <= 1280
    assert "pcn-table" not in wide and "schedule-table" not in wide
    for column in ("Budget excess", "Payable", "ARRS sum", "Allowed this year", "Budget"):
        header = page.locator("#pcn-table thead th", has_text=column).first
        box = header.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1280, column
    page.screenshot(path=str(SCREENSHOTS / f"index-{batch}-1280.png"), full_page=True)
    assert page.problems == []


@needs_browser
def test_payment_schedule_totals_and_budget_columns_print_on_a4(sample, page):
    page.goto((sample / "index.html").as_uri())
    schedule = page.locator("#schedule-table")
    december = [
        row
        for row in csv.DictReader(io.StringIO((sample / "payments.csv").read_text()))
        if row["claim_month"] == "2021-12"
    ]
    pcns = (sample / "summary.csv").read_text().splitlines()[1:]
    assert schedule.locator("tbody tr").count() == len(pcns) == 7  # every PCN, claiming or not
    payable = sum(Decimal(row["payable"]) for row in december)  # December's payable, in full
    assert f"£{payable:,.2f}" in schedule.locator("tfoot").inner_text()
    text = "\n".join(_pdf_pages(page, "index-sample.pdf"))
    for column in ("Budget excess", "Payable", "Withheld", "ARRS sum", "Full-year", "forecast"):
        assert column in text, column
    assert "Payment schedule for 2021-12" in text


@needs_browser
def test_sortable_headers_print_on_continuation_pages(generated, page):
    page.goto((generated / "index.html").as_uri())
    sheets = _pdf_pages(page, "index-generated.pdf")
    with_rows = [sheet for sheet in sheets if re.search(r"^U100\d\d$", sheet, re.MULTILINE)]
    assert len(with_rows) >= 3  # the PCN tables run over several pages
    for sheet in with_rows:
        assert "Claimed" in sheet and "Payable" in sheet, sheet[:200]


@needs_browser
def test_the_chart_has_a_legend_and_axis_labels(sample, page):
    page.goto((sample / "index.html").as_uri())
    chart = page.locator("svg[aria-labelledby=months-title]")
    legend = chart.locator(".legend text").all_text_contents()
    assert legend == ["claimed", "allowed", "payable"]
    titles = chart.locator(".axis-title").all_text_contents()
    assert titles == ["£ per month", "claim month"]
    assert chart.locator(".axis-label").count() == 3


@needs_browser
@pytest.mark.parametrize("name", ["index.html", "pcn/U71001.html", "pcn/U71004.html"])
def test_nothing_forces_a_phone_screen_wider(sample, browser, name):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto((sample / name).as_uri())
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(SCREENSHOTS / f"{name.replace('/', '-')}-390.png"), full_page=True)
    context.close()


@needs_browser
def test_pcn_filter_hides_the_groups_it_empties_and_counts_what_is_left(sample, page):
    page.goto((sample / "pcn" / "U71001.html").as_uri())
    page.fill("#finding-search", "deadline")  # only the PAR-01 findings say so
    visible = page.locator("section.group:visible h3").all_inner_texts()
    assert [text.split()[0] for text in visible] == ["PAR-01"]
    assert page.locator("section.severity:visible").count() == 1
    assert page.locator("section.severity:visible > h2 [data-count]").inner_text() == "3"
    assert page.locator("#finding-count").inner_text() == "3 shown"
    page.fill("#finding-search", "")
    rules = {  # one group per rule among the page's findings
        row["rule_id"]
        for row in csv.DictReader(io.StringIO((sample / "exceptions.csv").read_text()))
        if row["pcn_code"] == "U71001"
    }
    assert page.locator("section.group:visible").count() == len(rules)
    assert page.problems == []


@needs_browser
def test_table_headers_stick_while_the_table_scrolls(generated, page):
    page.goto((generated / "index.html").as_uri())
    wrap = page.locator("#pcn-table").locator("xpath=..")
    wrap.evaluate("w => { w.scrollTop = 400; }")
    header = page.locator("#pcn-table thead th").first.bounding_box()
    box = wrap.bounding_box()
    assert header is not None and box is not None
    assert abs(header["y"] - box["y"]) <= 1


@needs_browser
def test_a_pcn_page_with_ten_findings_prints_on_two_a4_pages(tmp_path, page):
    over = {"amount_claimed": "5000.00"}  # above cost and maximum: CST-01 and CAP-01
    lines = [
        {**over, "staff_id": "S1"},
        {**over, "staff_id": "S2"},
        {"staff_id": "S3", "additional_to_baseline": "N"},
        {"staff_id": "S4", "additional_to_baseline": "N"},
        {"staff_id": "S5"},
        {"staff_id": "S5"},  # the same person twice: DUP-01 and DUP-02 on both lines
    ]
    completed = run_cli(
        "run",
        str(claims(tmp_path / "claims.csv", *lines)),
        "--pcns",
        str(register(tmp_path / "pcns.csv")),
        "--out",
        str(tmp_path / "out"),
    )
    assert completed.returncode == 1, completed.stderr
    findings = (tmp_path / "out" / "exceptions.csv").read_text().splitlines()[1:]
    assert len(findings) == 10
    page.goto((tmp_path / "out" / "pcn" / "U10001.html").as_uri())
    sheets = _pdf_pages(page, "pcn-ten-findings.pdf")
    assert len(sheets) <= 2
    text = "\n".join(sheets)
    assert "Payment for claim month" in text and "need the PCN's action" in text
    page.screenshot(path=str(SCREENSHOTS / "pcn-ten-findings-1280.png"), full_page=True)
