"""The HTML reports, rendered by a real headless Chromium: the README's examples
are generated, loaded, screenshotted, and their DOM read back (the plots are there,
the binding limit is named)."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tcpceiling.report.html import (
    MIN_CURVE_POINTS,
    _latency_figure,
    _rate_figure,
    _timeline_figure,
)
from tests.conftest import FIXTURES, IS_ROOT, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs chromium (`.ci/run` installs it)"
)


class Dom(HTMLParser):
    """What the test reads from the DOM Chromium built: figures (and whether each holds
    an svg), the binding limits named, the section titles."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict[str, Any]] = []
        self.binding: list[str] = []
        self.sections: list[str] = []
        #: in document order: ("h2", title), ("div", class), ("figure", plot)
        self.order: list[tuple[str, str]] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "figure":
            self.figures.append({"plot": a.get("data-plot"), "svg": False})
            self.order.append(("figure", a.get("data-plot") or ""))
        elif tag == "div":
            self.order.append(("div", a.get("class") or ""))
        elif tag == "svg" and self.figures:
            self.figures[-1]["svg"] = True
        elif tag == "strong" and a.get("class") == "binding":
            self._in = "binding"
        elif tag == "h2":
            self._in = "h2"

    def handle_data(self, data: str) -> None:
        if self._in == "binding":
            self.binding.append(data)
        elif self._in == "h2":
            self.sections.append(data)
            self.order.append(("h2", data))
        self._in = None


def chromium(page: Path, shot: Path) -> Dom:
    """Load the page offline, screenshot it, and parse the DOM Chromium dumps."""
    assert CHROMIUM is not None
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--window-size=1200,2600"]  # fmt: skip
    subprocess.run(
        [*flags, f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    parsed = Dom()
    parsed.feed(dom.stdout)
    return parsed


def test_report_of_saved_results_checks_its_input(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"kind": "doctor", "schema_version": 1}')
    code, _o, err = run_cli("report", str(bad), "-o", str(tmp_path / "r.html"))
    assert code == 2 and "not an analyze, probe" in err and not (tmp_path / "r.html").exists()
    code, _o, err = run_cli("analyze", "--report", str(tmp_path / "no" / "r.html"))
    assert code == 2 and "no directory" in err


@needs_chromium
def test_analyze_reports_overlay_two_machines(tmp_path: Path) -> None:
    """This machine and a stock distribution's fixture tree in one report: the same
    figures, both machines' bars, each one's binding limit named."""
    code, out, _ = run_cli("analyze", "--json", "--report", str(tmp_path / "here.html"))
    assert code == 0
    base = FIXTURES / "stock-distro"
    _, other, _ = run_cli(
        "analyze", "--procfs", str(base / "proc"), "--sysfs", str(base / "sys"), "--json"
    )
    (tmp_path / "this-machine.json").write_text(out)
    (tmp_path / "stock-distro.json").write_text(other)
    code, _o, err = run_cli(
        "report",
        str(tmp_path / "this-machine.json"),
        str(tmp_path / "stock-distro.json"),
        "-o",
        str(tmp_path / "both.html"),
    )
    assert code == 0, err
    dom = chromium(tmp_path / "both.html", tmp_path / "both.png")
    expected = [s["binding"] for d in (json.loads(out), json.loads(other)) for s in d["scenarios"]]
    assert sorted(dom.binding) == sorted(expected)  # every scenario of both, by role
    assert [f["plot"] for f in dom.figures] == ["limits-server", "limits-client"]
    assert all(f["svg"] for f in dom.figures)
    single = chromium(tmp_path / "here.html", tmp_path / "here.png")
    assert single.binding == [s["binding"] for s in json.loads(out)["scenarios"]]


@needs_chromium
@pytest.mark.skipif(not IS_ROOT, reason="needs root: the probe runs in a namespace")
def test_probe_compare_and_rate_reports(tmp_path: Path) -> None:
    """The probe, compare-io and rate examples of docs/ (smaller), each its own report,
    then all of them in one."""
    runs = {
        "probe": ["probe", "--target", "60000"],
        "compare-io": ["compare-io", "--connections", "1000", "--wake-samples", "50"],
        "rate": ["rate", "--duration", "2"],
    }
    saved = []
    for kind, args in runs.items():
        page = tmp_path / f"{kind}.html"
        code, out, err = run_cli(*args, "--report", str(page), "--json")
        assert code in (0, 1), err
        saved.append(tmp_path / f"{kind}.json")
        saved[-1].write_text(out)
        dom = chromium(page, tmp_path / f"{kind}.png")
        assert [f["plot"] for f in dom.figures] == expected_plots(kind, json.loads(out))
        assert all(f["svg"] for f in dom.figures)
        if kind != "compare-io":  # the prediction beside the proof comes first
            assert dom.order[1] == ("div", "versus"), dom.order
    code, _o, err = run_cli("report", *map(str, saved), "-o", str(tmp_path / "all.html"))
    assert code == 0, err
    dom = chromium(tmp_path / "all.html", tmp_path / "all.png")
    assert dom.sections == [
        "Predicted and proven (probe)",
        "Threads vs epoll (compare-io)",
        "New connections per second: predicted and proven (rate)",
    ]


def expected_plots(kind: str, doc: dict[str, Any]) -> list[str]:
    """Curves only where there are enough samples to be curves (MIN_CURVE_POINTS);
    latency always as its distribution."""
    enough = MIN_CURVE_POINTS
    if kind == "probe":
        timeline = ["timeline"] if len(doc["timeline"]) >= enough else []
        memory = ["memory"] if len(doc["memory_curve"]) >= enough else []
        rate = ["open-rate"] if len(doc["timeline"]) - 1 >= enough else []
        return [*timeline, *memory, "slab-breakdown", *rate, "latency"]
    if kind == "rate":
        return [*(["rate"] if len(doc["per_second"]) >= enough else []), "rate-latency"]
    return ["compare"]


def test_curves_need_enough_points_and_latency_is_a_distribution() -> None:
    """A short run's two samples are a table, not a curve; the histogram is drawn."""
    doc = {"timeline": [[0.0, 0, None], [0.5, 900, None]], "memory_curve": [],
           "connect_latency_histogram": [[10.5, 3], [11.0, 90], [40.2, 7]],
           "connect_latency_us": {"p50": 11.0, "p95": 40.2, "p99": 40.2}}  # fmt: skip
    html = _timeline_figure([("short", doc)])
    assert html.startswith('<div class="timeline-table">') and "900" in html
    assert _rate_figure([("short", doc)]) == ""
    latency = _latency_figure([("short", doc)], "c", "latency")
    assert 'data-plot="latency"' in latency and "p99 40.2" in latency


@needs_chromium
def test_tune_report_shows_now_and_after(tmp_path: Path) -> None:
    page = tmp_path / "tune.html"
    code, out, err = run_cli(
        "tune", "--role", "server", "--target", "1000000", "--root", str(tmp_path),
        "--report", str(page), "--json",
    )  # fmt: skip
    assert code == 0, err
    dom = chromium(page, tmp_path / "tune.png")
    assert [f["plot"] for f in dom.figures] == ["tune"] and dom.figures[0]["svg"]
    assert dom.binding == [json.loads(out)["plan"]["before"]["binding"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tune.html", "tune.png"]  # a dry run
