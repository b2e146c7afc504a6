"""The report: summary page, pytest-html columns and extras, JSON, --compare-to, terminal.

Unit tests render hand-made results (fast); two gate runs on the tiny models check the
real thing, one of them under pytest-xdist; one test opens the page in headless Chromium.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from miniature.core import settings as opt
from miniature.core.characteristics.base import ComparisonResult, format_number
from miniature.plugin.html_columns import result_cells
from miniature.reports.page import evidence_html, render_summary_page
from miniature.core.settings import make_settings
from miniature.reports.payload import (
    ReportError,
    change_lines,
    compare_results,
    load_report,
    report_payload,
    summary_table,
)
from miniature.reports.write import write_reports

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=\"console.error('xss-executed')\">"
HOSTILE = f"a fine film {SCRIPT} {IMG} & more"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
VOID = {"br", "img", "meta", "link", "hr", "input", "wbr", "col", "source"}


# -- hand-made results -----------------------------------------------------------------------
def _result(
    characteristic: str,
    reference: str,
    candidate: str,
    figure: float,
    *,
    gating: bool = True,
    stage: str | None = None,
    **extra: Any,
) -> ComparisonResult:
    names = {
        "prediction_errors": "error-set Jaccard",
        "data_representation": "kNN Jaccard",
        "data_distribution": "OOD-set Jaccard",
        "adversarial_vulnerability": "broken-set Jaccard",
    }
    defaults: dict[str, Any] = dict(
        threshold=0.5,
        chance=round(figure / 7, 4),
        ci_low=round(figure - 0.031, 4),
        ci_high=round(figure + 0.029, 4),
        corrected=figure / 2,
        n=200,
    )
    defaults.update(extra)
    return ComparisonResult(
        characteristic=characteristic,
        reference=reference,
        candidate=candidate,
        figure_name=names[characteristic],
        figure=figure,
        gating=gating,
        stage=stage,
        **defaults,
    )


#: per model: (items it gets wrong, items the attack breaks) of 20 attacked items
ATTACKS = {"bert-large": (2, 6), "distilbert": (3, 8), "tinybert": (4, 11)}


def attack_outcomes(model: str) -> list[dict[str, Any]]:
    """Outcomes shaped as attack_model_outcomes returns them."""
    wrong, broken = ATTACKS[model]
    return [
        {
            "result": "skipped" if i < wrong else "successful" if i < wrong + broken else "failed",
            "label": i % 2,
            "original_text": f"review {i} {HOSTILE}",
            "perturbed_text": f"revue {i} {SCRIPT}",
            "words_changed": 1,
            "queries": 5,
        }
        for i in range(20)
    ]


def sample_results() -> list[ComparisonResult]:
    """Three models (two gating pairs, one informational), every characteristic, both stages."""
    pairs = [("bert-large", "distilbert", True), ("bert-large", "tinybert", True), ("distilbert", "tinybert", False)]
    from miniature.core.characteristics.adversarial import compare_adversarial

    results = []
    for i, (ref, cand, gating) in enumerate(pairs):
        base = 0.1 * i
        results.append(
            _result(
                "prediction_errors",
                ref,
                cand,
                0.611 - base,
                gating=gating,
                evidence=[
                    {"index": 3, "kind": "negative flip", "text": HOSTILE},
                    {"index": 8, "kind": "positive flip", "text": "plain text"},
                ],
            )
        )
        for stage, offset in (("before fine-tuning", 0.0), ("after fine-tuning", 0.05)):
            results.append(
                _result(
                    "data_representation",
                    ref,
                    cand,
                    0.523 - base - offset,
                    gating=gating,
                    stage=stage,
                    k=10,
                    details={"variance": 0.0371 + i / 1000, "mean": 0.523 - base - offset},
                    sweep={"1": 0.3 - base, "5": 0.45 - base, "10": 0.523 - base - offset, "50": 0.6 - base},
                    evidence=[
                        {
                            "index": 1,
                            "text": HOSTILE,
                            "jaccard": 0.0,
                            "reference_neighbours": [2, 3],
                            "candidate_neighbours": [3, 4],
                            "reference_neighbour_texts": ["same", SCRIPT],
                            "candidate_neighbour_texts": ["same", "x"],
                        }
                    ],
                )
            )
        results.append(
            _result(
                "data_distribution",
                ref,
                cand,
                0.287 + base,
                gating=gating,
                k=10,
                sweep={"1": 0.2, "5": 0.25 + base, "10": 0.287 + base},
                evidence=[
                    {
                        "index": 4,
                        "kind": "OOD for reference only",
                        "text": HOSTILE,
                        "reference_score": 1.2,
                        "candidate_score": 0.4,
                    }
                ],
            )
        )
        results.append(
            compare_adversarial(
                attack_outcomes(ref),
                attack_outcomes(cand),
                reference=ref,
                candidate=cand,
                threshold=0.5,
                drop_tolerance=20.0,
                gating=gating,
                n_bootstrap=50,
                seed=0,
            )
        )
    return results


def sample_settings(**overrides: Any) -> opt.Settings:
    values = dict(reference="bert-large", candidate=["distilbert", "tinybert"], test_data=f"data/{SCRIPT}.jsonl")
    values.update(overrides)
    return make_settings(**values)


# -- parsing helpers -------------------------------------------------------------------------
class PageParser(HTMLParser):
    """Checks the tags balance; collects cells, rows, images, script tags and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.scripts = 0
        self.cells: dict[tuple[str, str, str], dict[str, str]] = {}
        self.rows: list[dict[str, str]] = []
        self.images: list[str] = []
        self.text: list[str] = []
        self._cell: tuple[tuple[str, str, str], dict[str, str], list[str]] | None = None
        self._row: tuple[dict[str, str], list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "td" and "data-characteristic" in a and "data-pair" in a:
            self._cell = ((a["data-pair"], a["data-characteristic"], a.get("data-stage", "")), a, [])
        if tag == "tr":
            self._row = (a, [])

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
            return
        self.stack.pop()
        if tag == "td" and self._cell is not None:
            key, attrs, text = self._cell
            self.cells[key] = {**attrs, "text": " ".join(" ".join(text).split())}
            self._cell = None
        if tag == "tr" and self._row is not None:
            attrs, text = self._row
            self.rows.append({**attrs, "text": " ".join(" ".join(text).split())})
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell[2].append(data)
        if self._row is not None:
            self._row[1].append(data)


def parse_page(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


def assert_escaped(text: str) -> None:
    assert SCRIPT not in text and "<img src=x" not in text
    assert ESCAPED_SCRIPT in text


# -- unit tests on hand-made results ---------------------------------------------------------
def test_summary_page_parses_and_shows_every_figure_in_table_2_shape() -> None:
    import random

    results = sample_results()
    random.Random(0).shuffle(results)  # under xdist results arrive in any order
    payload = json.loads(json.dumps(report_payload(results, sample_settings(), duration_s=12.5), default=str))
    page = parse_page(render_summary_page(payload, json_name="miniature-x.json"))
    assert page.scripts == 0
    assert len(page.cells) == len(results)
    for result in results:
        cell = page.cells[(f"{result.reference} vs {result.candidate}", result.characteristic, result.stage or "")]
        text = cell["text"]
        assert text.startswith(format_number(result.figure) + " " + result.verdict), text
        assert f"CI {format_number(result.ci_low)}–{format_number(result.ci_high)}" in text
        assert f"chance {format_number(result.chance)}" in text
        assert result.verdict.lower() in cell["class"].split()
    # the informational pair diverges, it does not fail
    informational = page.cells[("distilbert vs tinybert", "data_distribution", "")]
    assert "diverges" in informational["class"] and "DIVERGES" in informational["text"]
    failing = page.cells[("bert-large vs tinybert", "data_representation", "after fine-tuning")]
    assert "fail" in failing["class"].split() and "FAIL" in failing["text"]
    body = "".join(page.text)
    assert "Gate FAILED" in body and "variance" in body and "0.038" in body  # representation variance column
    # rows in the paper's order: reference pairs first, M_i shown once per group
    rows = [r for r in page.rows if r.get("class") == "pair"]
    assert [r["data-pair"] for r in rows] == [
        "bert-large vs distilbert",
        "bert-large vs tinybert",
        "distilbert vs tinybert",
    ]
    assert [r["text"].split()[:2] for r in rows] == [
        ["bert-large", "distilbert"],
        ["tinybert", "0.511"],
        ["distilbert", "tinybert"],
    ]


@pytest.mark.slow
def test_summary_page_has_table_3_figure_1_and_run_metadata() -> None:
    results = sample_results()
    payload = json.loads(json.dumps(report_payload(results, sample_settings(), duration_s=12.5), default=str))
    page = parse_page(render_summary_page(payload, json_name="miniature-x.json"))
    targets = {r["data-target"]: r["text"] for r in page.rows if "data-target" in r}
    assert list(targets) == ["bert-large", "distilbert", "tinybert"]
    from miniature.core.characteristics.adversarial import attack_figures

    for i, (model, text) in enumerate(targets.items()):
        f = attack_figures(attack_outcomes(model))
        expected = [
            format_number(f["original_accuracy"]),
            format_number(f["accuracy_after_attack"]),
            format_number(f["absolute_change"]),
            f"{f['percent_change']:.1f}",
            format_number(f["attack_success_rate"]),
            "20",
        ]
        assert text == " ".join((["bert-base"] if i == 0 else []) + [model] + expected)
    assert targets["tinybert"] == "tinybert 0.8 0.25 0.55 68.8 0.688 20"  # 16 right, 11 broken
    pngs = [src for src in page.images if src.startswith("data:image/png;base64,")]
    assert len(pngs) == 3  # (a) before, (b) after fine-tuning, (c) distribution
    import matplotlib.image

    for src in pngs:
        raw = base64.b64decode(src.split(",", 1)[1])
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(__import__("io").BytesIO(raw), format="png")
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels.std() > 0.05
    body = " ".join(page.text)
    for expected in (
        "took 12.5 s",
        "bert-large",
        "built-in synthetic sentiment data",
        "miniature-x.json",
        "pytest",
        "(a) Data representation agreement",
        "(c) Data distribution agreement",
    ):
        assert expected in body, expected


def test_dataset_text_is_escaped_in_page_and_extras() -> None:
    results = sample_results()
    payload = json.loads(json.dumps(report_payload(results, sample_settings()), default=str))
    page_text = render_summary_page(payload)
    assert_escaped(page_text)
    page = parse_page(page_text)
    assert page.scripts == 0
    assert SCRIPT in "".join(page.text)  # shown as text, once decoded
    for result in results:
        extra = evidence_html(result)
        assert_escaped(extra)
        parsed = parse_page(extra)
        assert parsed.scripts == 0 and not parsed.images
        assert format_number(result.figure) in "".join(parsed.text)
    representation = next(r for r in results if r.characteristic == "data_representation")
    assert '<li class="shared">same</li>' in evidence_html(representation)


#: a model name / setting value that would close an attribute and open a handler if not escaped
HOSTILE_NAME = f"tiny{SCRIPT}\"onerror=alert(2) x' onmouseover='alert(3)"


def test_model_names_and_settings_are_escaped_in_page_cells_and_extras() -> None:
    """A dataset text, a model name and a setting value holding markup and an attribute
    breakout (``"onerror=``) appear only escaped: in text, in data-* attributes, in the
    pytest-html cells and extras; attributes parse back to the original string."""
    from miniature.core.characteristics.adversarial import compare_adversarial

    reference, candidate = f"ref {HOSTILE_NAME}", HOSTILE_NAME
    results = [
        _result(
            "prediction_errors",
            reference,
            candidate,
            0.2,
            evidence=[{"index": 1, "text": HOSTILE}],
            conditions=[{"name": HOSTILE_NAME, "value": 3.0, "limit": 1.0, "passed": False}],
            details={"note": HOSTILE_NAME, HOSTILE_NAME: [HOSTILE_NAME]},
        ),
        _result(
            "data_representation",
            reference,
            candidate,
            0.6,
            stage="before fine-tuning",
            k=10,
            sweep={"1": 0.3, "10": 0.6},
            details={"variance": 0.01},
        ),
        compare_adversarial(
            attack_outcomes("bert-large"),
            attack_outcomes("tinybert"),
            reference=reference,
            candidate=candidate,
            threshold=0.5,
            drop_tolerance=20.0,
            n_bootstrap=10,
            seed=0,
        ),
    ]
    settings = sample_settings(attack_model=HOSTILE_NAME, train_data=f"data/{HOSTILE_NAME}.jsonl")
    payload = json.loads(json.dumps(report_payload(results, settings), default=str))
    payload["models"] = {"reference": reference, "candidates": [candidate], "order": [reference, candidate]}
    payload["settings"]["candidate"] = [HOSTILE_NAME]
    previous = {
        "results": [_result("prediction_errors", reference, candidate, 0.9)],
        "path": HOSTILE_NAME,
        "created": HOSTILE_NAME,
    }
    text = render_summary_page(payload, previous=previous, json_name=f"{HOSTILE_NAME}.json")
    assert_escaped(text)
    assert '"onerror=' not in text and "' onmouseover=" not in text
    assert "&#34;onerror=alert(2) x&#39; onmouseover=&#39;alert(3)" in text
    page = parse_page(text)
    assert page.scripts == 0
    body = "".join(page.text)
    assert HOSTILE_NAME in body and f"data/{HOSTILE_NAME}.jsonl" in body and HOSTILE in body
    pair = f"{reference} vs {candidate}"
    assert {key[0] for key in page.cells} == {pair}  # data-pair parses back to the names
    assert [r["data-target"] for r in page.rows if "data-target" in r] == [reference, candidate]
    assert {r["data-pair"] for r in page.rows if r.get("class") == "verdict-changed"} == {pair}
    for result in results:
        for html in (evidence_html(result), *result_cells(result)):
            assert SCRIPT not in html and '"onerror=' not in html
            assert parse_page(html).scripts == 0


def test_pytest_html_cells_carry_verdict_figure_threshold_ci_and_chance() -> None:
    result = sample_results()[0]
    cells = result_cells(result)
    assert len(cells) == 5 and result_cells(None) == ['<td class="col-miniature"></td>'] * 5
    text = " | ".join(" ".join(parse_page(c).text) for c in cells)
    assert text == "PASS | error-set Jaccard 0.611 | ≥ 0.5 | 0.58–0.64 | 0.087"


@pytest.mark.slow
def test_json_round_trips_and_reports_are_never_overwritten(tmp_path: Path) -> None:
    results = sample_results()
    results.append(
        _result(
            "adversarial_vulnerability", "bert-large", "other", math.nan, chance=None, ci_low=None, ci_high=None, n=0
        )
    )
    settings = sample_settings()
    first = write_reports(results, settings, tmp_path, duration_s=3.0)
    second = write_reports(results, settings, tmp_path, duration_s=3.0)
    assert first.json != second.json and first.page != second.page
    assert first.json.exists() and first.page.exists() and first.latest_page.read_text() == second.page.read_text()
    payload = json.loads(second.latest_json.read_text())
    rebuilt = [ComparisonResult(**d) for d in payload["results"]]
    assert [r.to_json() for r in rebuilt] == [r.to_json() for r in results]
    assert payload["settings"]["test-data"] == f"data/{SCRIPT}.jsonl" and payload["duration_s"] == 3.0
    loaded = load_report(first.json)
    assert [r.to_json() for r in loaded["results"]] == [r.to_json() for r in results]


def test_terminal_table_is_in_model_order_with_thresholds() -> None:
    results = list(reversed(sample_results()))  # xdist delivers results in any order
    lines = summary_table(results, ["bert-large", "distilbert", "tinybert"])
    assert lines[0].split("  ")[0] == "pair"
    assert lines[1].startswith("bert-large vs distilbert ") and "PASS 0.611" in lines[1]
    assert lines[2].startswith("bert-large vs tinybert ") and "FAIL 0.373" in lines[2]
    assert lines[3].startswith("distilbert vs tinybert (reported only)") and "DIVERGES 0.411" in lines[3]
    assert lines[4].startswith("threshold") and lines[4].count(">= 0.5") == 5


def test_compare_results_marks_figure_and_verdict_changes() -> None:
    previous = sample_results()
    current = sample_results()
    current[0] = _result("prediction_errors", "bert-large", "distilbert", 0.2)  # PASS 0.611 -> FAIL 0.2
    del current[-1]  # a check the new run did not make
    changes = compare_results(previous, current)
    lines = change_lines(changes, "old.json")
    assert lines[0] == f"changes since old.json (2 of {len(changes)} checks):"
    assert "  bert-large vs distilbert, prediction errors: PASS 0.611 -> FAIL 0.2 (-0.411)  << verdict changed" in lines
    gone = previous[-1]
    assert lines[2] == (
        f"  distilbert vs tinybert, adversarial vulnerability: {gone.verdict} {format_number(gone.figure)} "
        "-> absent  << not run this time"
    )
    assert change_lines(compare_results(previous, previous), "old.json")[0].startswith("no change since old.json")
    payload = json.loads(json.dumps(report_payload(current, sample_settings()), default=str))
    page = parse_page(
        render_summary_page(payload, previous={"results": previous, "path": "old.json", "created": "yesterday"})
    )
    flagged = [r for r in page.rows if r.get("class") == "verdict-changed"]
    assert [r["data-characteristic"] for r in flagged] == ["prediction_errors", "adversarial_vulnerability"]
    assert flagged[0]["text"] == "bert-large vs distilbert prediction errors 0.611 0.2 -0.411 PASS → FAIL"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ('{"results": 3}', "not a miniature JSON report"),
        ('{"results": [{"figure": 1.0}]}', "result 0 is incomplete"),
    ],
)
def test_unusable_compare_to_file_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, content: str | None, expected: str
) -> None:
    path = pytester.path / "previous-run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReportError, match=expected):
        load_report(path)
    result = pytester.runpytest(f"{opt.COMPARE_TO}={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"{opt.COMPARE_TO} {path}" in err and expected in err and "fix:" in err


def test_plugin_loads_without_pytest_html(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest("-p", "no:html")
    result.assert_outcomes(passed=1)
    with_html = pytester.runpytest(f"--html={pytester.path / 'r.html'}")
    with_html.assert_outcomes(passed=1)
    assert "Verdict" in (pytester.path / "r.html").read_text()


# -- headless Chromium -------------------------------------------------------------------------
@pytest.mark.slow
def test_page_renders_in_headless_chromium_without_console_errors(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium not installed ({CHROMIUM} missing); install it with `apt-get install chromium`")
    previous = sample_results()
    previous[1] = _result(
        "data_representation",
        "bert-large",
        "distilbert",
        0.41,
        stage="before fine-tuning",
        k=10,
        details={"variance": 0.04},
    )
    paths = write_reports(
        sample_results(),
        sample_settings(),
        tmp_path / "reports",
        duration_s=42.0,
        previous={"results": previous, "path": "reports/old.json", "created": "2024-01-01"},
    )
    screenshot = tmp_path / "page.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={screenshot}",
        "--window-size=1280,1800",
        "--enable-logging=stderr",
        "--v=0",
        paths.latest_page.resolve().as_uri(),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=45)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish in 45 s: a dialog (an injected alert()?) or a hung page")
    log = done.stderr
    # chromium logs every console message (console.error included) as "...:CONSOLE:..." lines;
    # the page has no script, so any such line is an error (or executed injected markup)
    console = [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert "xss-executed" not in log
    assert screenshot.exists() and screenshot.stat().st_size > 20_000, (done.returncode, log[-2000:])
    import matplotlib.image

    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[0] >= 1000 and pixels.std() > 0.05  # not a blank page


# -- real gate runs on the tiny models ---------------------------------------------------------
def _hostile_test_data(path: Path, n: int = 60) -> Path:
    from miniature.core.data import builtin_sentiment_data, write_jsonl

    test = builtin_sentiment_data(seed=0, scale=0.2).test
    rows = [
        {"text": f"{text} {HOSTILE}" if i % 2 == 0 else text, "label": label}
        for i, (text, label) in enumerate(zip(test.texts[:n], test.labels or []))
    ]
    write_jsonl(path, rows)
    return path


def _html_report_tests(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The per-test data pytest-html 4 embeds as JSON in the report."""

    class Blob(HTMLParser):
        blob = ""

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if dict(attrs).get("id") == "data-container":
                self.blob = dict(attrs)["data-jsonblob"] or ""

    parser = Blob()
    parser.feed(path.read_text())
    assert parser.blob, "no data-container in the pytest-html report"
    return json.loads(parser.blob)["tests"]


@pytest.mark.slow
def test_xdist_gate_run_writes_one_page_json_and_html_report(gate_checks: pytest.Pytester, tiny_models) -> None:
    data = _hostile_test_data(gate_checks.path / "test.jsonl")
    reports = gate_checks.path / "reports"
    html_report = gate_checks.path / "report.html"
    result = gate_checks.runpytest_subprocess(
        "-n",
        "2",
        f"--reference={tiny_models['reference']}",
        f"--candidate={tiny_models['small']}",
        f"--test-data={data}",
        f"--cache-dir={gate_checks.path / 'cache'}",
        f"--report-dir={reports}",
        "--bootstrap=20",
        "--data-limit=50",
        "--k-sweep=1,5,10,20",
        f"--html={html_report}",
        "--self-contained-html",
        "-k",
        "not adversarial",
        timeout=240,
    )  # the attack's import alone takes ~15 s; Table 3 is unit-tested
    out = result.stdout.str()
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), out[-3000:]
    # only the controller wrote: one timestamped JSON and page, plus the latest copies
    [json_path] = reports.glob("miniature-*.json")
    [page_path] = reports.glob("summary-*.html")
    assert sorted(p.name for p in reports.iterdir()) == sorted(
        [json_path.name, "latest.json", page_path.name, "summary.html"]
    )
    result.stdout.fnmatch_lines(
        [
            "*miniature summary*",
            "reference vs small*",
            "threshold*>= 0.5*",
            f"miniature report: {page_path} (latest: {reports / 'summary.html'})",
            "miniature JSON:*latest.json)",
        ]
    )
    payload = json.loads((reports / "latest.json").read_text())
    results = [ComparisonResult(**d) for d in payload["results"]]
    assert {r.characteristic for r in results} >= {"data_representation", "data_distribution"}
    page_text = (reports / "summary.html").read_text()
    assert page_text == page_path.read_text()
    assert_escaped(page_text)
    page = parse_page(page_text)
    assert page.scripts == 0
    for r in results:
        cell = page.cells[(f"{r.reference} vs {r.candidate}", r.characteristic, r.stage or "")]
        assert cell["text"].startswith(f"{format_number(r.figure)} {r.verdict}"), cell
    assert 'id="attack"' not in page_text  # no attack results, no empty Table 3
    assert sum(src.startswith("data:image/png;base64,") for src in page.images) == 2
    # pytest-html: the columns and the evidence extras of each check
    tests = _html_report_tests(html_report)
    for r in results:
        [entry] = [t for node, runs in tests.items() if r.characteristic in node for t in runs]
        row = " ".join(entry["resultsTableRow"])
        assert f"{r.figure_name} {format_number(r.figure)}" in row and f">{r.verdict}<" in row
        assert f"≥ {format_number(r.threshold)}" in row and f">{format_number(r.chance)}<" in row
        [extra] = [e for e in entry["extras"] if e["format_type"] == "html"]
        assert format_number(r.figure) in extra["content"]
        assert SCRIPT not in extra["content"]
        if r.characteristic == "data_representation":
            assert ESCAPED_SCRIPT in extra["content"]  # neighbour lists reach the hostile items


@pytest.mark.slow
def test_compare_to_shows_what_changed(gate_checks: pytest.Pytester, tiny_models) -> None:
    reports = gate_checks.path / "reports"
    common = [
        f"--reference={tiny_models['reference']}",
        f"--candidate={tiny_models['small']}",
        f"--cache-dir={gate_checks.path / 'cache'}",
        f"--report-dir={reports}",
        "--bootstrap=0",
        "--data-limit=60",
        "--k-sweep=5",
        "-k",
        "data_representation",
    ]
    first = gate_checks.runpytest(*common, "--k=5", "--threshold-representation=0")
    first.assert_outcomes(passed=1, deselected=4)
    previous = next(reports.glob("miniature-*.json"))
    second = gate_checks.runpytest(*common, "--k=10", "--threshold-representation=1", f"--compare-to={previous}")
    second.assert_outcomes(failed=1, deselected=4)
    before = json.loads(previous.read_text())["results"][0]["figure"]
    after = json.loads((reports / "latest.json").read_text())["results"][0]["figure"]
    assert before != after
    second.stdout.fnmatch_lines(
        [
            f"changes since {previous} (1 of 1 checks):",
            f"  reference vs small, data representation: PASS {format_number(before)} -> FAIL {format_number(after)} (*)  << verdict changed",
        ]
    )
    page = parse_page((reports / "summary.html").read_text())
    [row] = [r for r in page.rows if r.get("class") == "verdict-changed"]
    assert row["text"].startswith(
        f"reference vs small data representation {format_number(before)} {format_number(after)}"
    )
    assert row["text"].endswith("PASS → FAIL")
    assert str(previous) in " ".join(page.text)


def test_the_report_records_the_executor_and_its_workers(tmp_path: Path) -> None:
    execution = {
        "executor": "ray",
        "workers": 2,
        "address": "local",
        "jobs": 12,
        "seconds": 3.5,
        "worker_processes": 2,
        "errors": [],
    }
    paths = write_reports(sample_results(), sample_settings(), tmp_path, duration_s=1.0, execution=execution)
    payload = json.loads(paths.json.read_text())
    assert payload["execution"] == execution
    assert "ray (local), 2 workers, 12 jobs" in paths.page.read_text()
    default = report_payload(sample_results(), sample_settings())["execution"]
    assert default["executor"] == "inprocess" and default["workers"] is None
