"""The report in a real (headless Debian) Chromium, and the kaleido static export."""

import re

import plotly.graph_objects as go
import pytest
from playwright.sync_api import sync_playwright
from plotly.offline import get_plotlyjs

from evaluator.report import ReportOptions, build_report, export_figures

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def report(tmp_path_factory, request):
    from evaluator.report import read_trials_csv

    trials = read_trials_csv(request.path.parent / "fixtures" / "study_trials.csv")
    out = tmp_path_factory.mktemp("report")
    meta = {"title": "Pets <pilot> & friends", "dataset": "Oxford-IIIT Pets",
            "models": [{"name": "clip", "fingerprint": "sha256:abcd"}], "benchmark": "oxford-pets",
            "prompts": [{"model": "clip", "class": "A", "prompts": ["a photo of a A, a type of pet.", "<b>A</b>"]},
                        {"model": "clip", "class": "B", "prompts": ["a photo of a B, a type of pet."]}],
            "model_notes": ["training data unknown: see the CLIP paper §5"],
            "few_shot_method": "one / two example images per class shown beside the question"}
    return build_report(trials, out_dir=out, meta=meta,
                        options=ReportOptions(bootstrap=100, include_simulated=True, static=False))


def test_the_html_embeds_plotly_js_once_and_loads_nothing_external(report):
    page = (report.out_dir / "report.html").read_text()
    assert page.count(get_plotlyjs()[:300]) == 1
    assert not re.search(r"<script[^>]+src=", page) and "<link" not in page and "@import" not in page
    assert "Pets &lt;pilot&gt; &amp; friends" in page and "Pets <pilot>" not in page
    assert page.index('id="table2"') < page.index('id="definitions"') < page.index('class="figure"')
    assert "Includes simulated participants" in page
    assert page.index('id="table2"') < page.index('id="replication"') < page.index('id="definitions"')
    assert "noise-ceiling" in page and "training data unknown: see the CLIP paper §5" in page
    assert "<details><summary>3 prompt string(s) of 1 model run(s)" in page and "&lt;b&gt;A&lt;/b&gt;" in page


def test_the_html_opens_in_headless_chromium_without_errors_or_network_requests(report):
    # No skip: without Debian's Chromium the launch fails, as in every other browser test.
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((report.out_dir / "report.html").as_uri(), wait_until="load")
            page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length === {len(report.figures)}",
                                   timeout=15000)
            assert page.locator("#table2 tbody tr").count() == len(report.tables["table2"])
            assert page.locator("#replication tbody tr").count() == len(report.tables["replication"])
            assert not page.locator("#prompts table").is_visible()  # folded away until asked for
            assert page.locator(".main-svg").count() > 0
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(LOCAL_SCHEMES)] == []


def test_kaleido_exports_a_non_empty_png(tmp_path):
    fig = go.Figure(go.Bar(x=["zero-shot", "one-shot"], y=[53.7, 75.7]))
    (png,) = export_figures({"bars": fig}, tmp_path, formats=("png",))
    data = png.read_bytes()
    assert png.name == "bars.png" and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
