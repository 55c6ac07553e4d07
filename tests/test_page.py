"""report.html in a real browser: Debian's Chromium, driven by Playwright, on pages these
tests build from synthetic runs (known numbers). The page must open from file:// with no
network request and no console error, draw what its data says, and answer to its hooks:
select#metric, select#x-axis, input#filter, div.plot[data-figure], table[data-table]."""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from stochopt.config import Config, FStar, RunRecord
from stochopt.study import analysis
from stochopt.study.page import page_data, write_page

CHROMIUM = "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra's playwright "
                               "drives the browser: pip install -e '.[test]'")
if not Path(CHROMIUM).is_file():
    pytest.skip("no browser: the page tests drive Debian's chromium (apt-get install "
                "chromium), which .ci/run installs", allow_module_level=True)


def _records(n_configs: int, seeds: int = 2, epochs: int = 5, bound: bool = False
             ) -> list[RunRecord]:
    """Synthetic runs: configuration j's validation accuracy rises towards 90 + j/n, its
    f - f* falls as 10^-(epoch/2) / (j + 1), with a little seed noise."""
    rng = np.random.default_rng(0)
    records = []
    for j in range(n_configs):
        for s in range(seeds):
            c = Config("sgd" if j % 2 else "adam", lr=0.01 * (1 + j), epochs=epochs, seed=s,
                       batch_size=64)
            rows = []
            for e in range(1, epochs + 1):
                acc = 90 + j / n_configs - 5 / e + 0.1 * rng.standard_normal()
                rows.append({"epoch": e, "train_loss": 0.5 / e, "train_acc": acc + 0.5,
                             "val_loss": 0.4 / e + 0.01 * j, "val_acc": acc, "lr": c.lr,
                             "suboptimality": 10 ** (-e / 2) / (j + 1) - (0.01 if bound
                                                                        else 0.0),
                             "seconds": 0.1,
                             "batch_seconds": 0.1 * n_configs * seeds, "steps": 750 * e,
                             "grad_evals": 48000 * e, "noise_scale": 100.0 * e})
            records.append(RunRecord(c, rows, test_acc=acc, test_loss=0.3,
                                     f_star=FStar(0.25, attained=not bound)))
    return records


def _page(tmp_path: Path, n_configs: int, pairs_among: int | None = None, bound: bool = False
          ) -> tuple[Path, list[str]]:
    """The page of ``n_configs`` synthetic configurations, and their labels (the best, by
    final validation loss, first); ``bound``: f - f_best, an upper bound, going negative."""
    records = _records(n_configs, bound=bound)
    runs = analysis.runs_table(records)
    summary = analysis.summarize(runs)
    among = {r["config"] for r in runs[: 2 * pairs_among]} if pairs_among else None
    pairs = analysis.comparisons([r for r in runs if among is None or r["config"] in among])
    out = tmp_path / f"page{n_configs}"
    out.mkdir()
    write_page(out, page_data(records, runs, summary, pairs, "a test study",
                              {"How do the optimisers compare?": "At batch 64, a sentence."}))
    labels = [r["config"] for r in sorted(summary, key=lambda r: r["final_val_loss_mean"])]
    return out / "report.html", labels


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _open(browser, path: Path):
    """The page, opened from file://, with every request and console error it made."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    seen: dict[str, list[str]] = {"requests": [], "errors": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector('div.plot[data-figure="curves"] .main-svg')
    return page, seen


def _traces(page) -> list[dict]:
    return page.evaluate("""Array.from(document.querySelector(
        'div.plot[data-figure="curves"]').data, t => ({name: t.name, visible: t.visible}))""")


def _screenshot(page, name: str, tmp_path: Path) -> None:
    """A test artefact: in the test's folder, and in $STOCHOPT_ARTEFACTS when it is set."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if folder := os.environ.get("STOCHOPT_ARTEFACTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(folder) / name)


def test_the_page_opens_offline_and_draws_one_trace_per_configuration(browser, tmp_path):
    path, labels = _page(tmp_path, 3)
    page, seen = _open(browser, path)
    assert all(u.startswith("file://") for u in seen["requests"]), seen["requests"]
    assert len(seen["requests"]) == 2  # the page and plotly.min.js beside it
    assert seen["errors"] == []
    names = [t["name"] for t in _traces(page)]
    assert [n for n in names if not n.endswith("(band)")] == labels  # the best first
    assert len(names) == 3 * 3  # a mean and a band's two edges each
    _screenshot(page, "page_default.png", tmp_path)


def test_the_x_axis_and_the_metric_selectors_redraw(browser, tmp_path):
    page, _ = _open(browser, _page(tmp_path, 3)[0])
    layout = "document.querySelector('div.plot[data-figure=\"curves\"]').layout"
    assert page.evaluate(f"{layout}.xaxis.title.text") == "epoch"
    page.select_option("select#x-axis", "steps")
    assert page.evaluate(f"{layout}.xaxis.title.text") == "steps"
    page.select_option("select#metric", "suboptimality")
    assert page.evaluate(f"{layout}.yaxis.type") == "log"
    assert page.evaluate(f"{layout}.yaxis.title.text") == "f - f*"
    ys = page.evaluate("""document.querySelector('div.plot[data-figure="curves"]').data
        .filter(t => t.name === 'adam lr=0.01')[0].y""")  # configuration 0: 10^(-e/2)
    assert ys == pytest.approx([10 ** (-e / 2) for e in range(1, 6)], rel=1e-5)
    page.select_option("select#x-axis", "grad_evals")
    _screenshot(page, "page_subopt_over_grad_evals.png", tmp_path)


def test_a_legend_click_hides_its_configuration_and_the_filter_hides_rows_and_traces(
        browser, tmp_path):
    path, labels = _page(tmp_path, 3)
    page, _ = _open(browser, path)
    first = next(t["name"] for t in _traces(page) if not t["name"].endswith("(band)"))
    entry = page.locator('div.plot[data-figure="curves"] .legend .traces').filter(
        has_text=first)
    entry.click()
    page.wait_for_timeout(300)
    hidden = {t["visible"] for t in _traces(page) if t["name"].startswith(first)}
    assert hidden == {"legendonly"}
    assert {t["visible"] for t in _traces(page) if not t["name"].startswith(first)} == {True}
    page.fill("input#filter", "sgd")
    page.wait_for_timeout(300)
    sgd = [n for n in labels if "sgd" in n]
    assert len(sgd) == 1 and {t["name"] for t in _traces(page)} == {sgd[0], sgd[0] + " (band)"}
    shown = page.evaluate("""Array.from(document.querySelectorAll(
        'table[data-table="summary"] tbody tr'), tr => tr.style.display !== 'none')""")
    assert shown.count(True) == 1 and len(shown) == 3


def test_sorting_the_summary_by_validation_accuracy_orders_its_rows(browser, tmp_path):
    page, _ = _open(browser, _page(tmp_path, 6)[0])
    page.click('table[data-table="summary"] th[data-column="final_val_acc_mean"]')
    cells = page.evaluate("""Array.from(document.querySelectorAll(
        'table[data-table="summary"] tbody tr'), tr => parseFloat(tr.cells[4].dataset.value))""")
    assert cells == sorted(cells) and len(cells) == 6
    page.click('table[data-table="summary"] th[data-column="final_val_acc_mean"]')
    cells = page.evaluate("""Array.from(document.querySelectorAll(
        'table[data-table="summary"] tbody tr'), tr => parseFloat(tr.cells[4].dataset.value))""")
    assert cells == sorted(cells, reverse=True)


def test_a_thousand_configurations_open_and_the_filter_reaches_any(browser, tmp_path, capsys):
    """Means and bands per configuration, the best 40 drawn at open, the rest a filter away.
    The time to open is printed, not asserted (the machines are shared and noisy); the
    docs give it."""
    path, labels = _page(tmp_path, 1000, pairs_among=40)
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    t0 = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_selector('div.plot[data-figure="curves"] .main-svg')
    page.wait_for_function("document.querySelectorAll("
                           "'table[data-table=\"summary\"] tbody tr').length === 1000")
    seconds = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n1,000 configurations: the page opened in {seconds:.2f} s "
              f"({path.stat().st_size / 1e6:.1f} MB of page)")
    drawn = [t["name"] for t in _traces(page) if not t["name"].endswith("(band)")]
    assert drawn == labels[:40]
    assert "40 of 1000" in page.inner_text("#shown-note")
    last = labels[-1]  # the worst: not drawn until the filter names it
    page.fill("input#filter", last)
    page.wait_for_timeout(300)
    assert [t["name"] for t in _traces(page) if not t["name"].endswith("(band)")] == [last]


def test_a_running_study_writes_its_page_from_the_runs_finished_so_far(tmp_path):
    """write_progress_page: the page of the runs stored so far, titled as running; a study
    calls it as its groups finish (at most every 10 s)."""
    from stochopt.study.artefacts import write_progress_page

    records = _records(4)
    write_progress_page(tmp_path, records[:3], "stochopt sweep")
    page = (tmp_path / "report.html").read_text()
    assert "stochopt sweep (running: 3 runs finished)" in page
    assert '"seeds":2' in page and '"seeds":1' in page  # the third config has one seed so far
    assert (tmp_path / "plotly.min.js").is_file()


def test_f_minus_an_upper_bound_goes_on_a_symlog_axis(browser, tmp_path):
    """At weight decay 0 f* is only an upper bound and f - f_best may go negative: no log
    axis can show it, so the values go through sign(y) log10(1 + |y|/1e-4), labelled with
    the originals; the hover keeps the value itself."""
    page, _ = _open(browser, _page(tmp_path, 3, bound=True)[0])
    page.select_option("select#metric", "suboptimality")
    layout = page.evaluate("document.querySelector('div.plot[data-figure=\"curves\"]').layout")
    assert layout["yaxis"]["type"] == "linear" and "symlog" in layout["yaxis"]["title"]["text"]
    assert {"-1e-3", "0", "1e-1"} <= set(layout["yaxis"]["ticktext"])
    trace = page.evaluate("""document.querySelector('div.plot[data-figure="curves"]').data
        .filter(t => t.name === 'adam lr=0.01')[0]""")
    means = [10 ** (-e / 2) - 0.01 for e in range(1, 6)]  # configuration 0, negative at e = 5
    assert trace["customdata"] == pytest.approx(means, rel=1e-5)
    expected = [math.copysign(math.log10(1 + abs(m) / 1e-4), m) for m in means]
    assert trace["y"] == pytest.approx(expected, rel=1e-5) and trace["y"][-1] < 0


def test_the_comparison_answer_links_each_pair_to_its_row(browser, tmp_path):
    """Under 'How do the optimisers compare?': a link per pair of its batch size (validation
    accuracy), each to that pair's row of the comparisons table, which a click marks."""
    page, _ = _open(browser, _page(tmp_path, 3)[0])
    links = page.evaluate("""Array.from(document.querySelectorAll(
        '#answers a[href^="#comparisons-row-"]'), a => [a.textContent, a.getAttribute('href')])""")
    assert len(links) == 3  # three configurations: three pairs at batch 64
    for text, href in links:
        row = page.evaluate(f"""Array.from(document.querySelector('{href}').cells,
            c => c.textContent)""")
        assert row[1] == "final_val_acc" and f"{row[2]} vs {row[3]}" == text
    page.click(f'#answers a[href="{links[1][1]}"]')
    assert page.evaluate(f"document.querySelector('{links[1][1]}').className") == "picked"
