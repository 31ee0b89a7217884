"""The dashboard in a real headless Chromium (Debian's package), driven by Playwright."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import Server, service_fixture
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No background networking: this machine's network is closed, and the page needs none.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


server = service_fixture("dashboard", ray_num_cpus=4)


@contextlib.contextmanager
def open_page(url: str, token: str | None = None) -> Iterator[Any]:
    """The dashboard at ``url`` in a fresh headless Chromium, with ``token`` in the page's
    token field (as a user would type it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(url)
        if token is not None:
            page.fill("#token", token)
            page.dispatch_event("#token", "change")
            page.reload()
        yield page
        # Everything the page loaded came from the service itself: nothing from a CDN.
        assert requests and all(u.startswith(url) for u in requests), requests
        browser.close()


def refused_beside(page: Any, field: str, value: str, message: str) -> None:
    """Submit the form with ``value`` in the field named ``field``: the API's refusal,
    with ``message`` in it, appears next to that field."""
    tag = "textarea" if field in ("model", "optimizer.schedule", "early_stopping") else "input"
    page.fill(f"{tag}[name='{field}']", value)
    page.click("#submit-button")
    error = page.locator(f"label[data-field='{field}'] .error")
    error.wait_for(state="visible")
    assert message in error.inner_text()


@pytest.fixture()
def page(server: Server) -> Iterator[Any]:
    with open_page(server.url) as opened:
        yield opened


def test_submit_watch_and_cancel_from_the_page(server: Server, page: Any) -> None:
    other = httpx.post(f"{server.url}/jobs", json={"name": "to-cancel", "epochs": 3000,
                                                   "workers": 2}).json()["id"]
    page.wait_for_function("document.querySelector(\"input[name='epochs']\").value !== ''")
    assert page.input_value("input[name='optimizer.lr']") == "0.1"  # the spec's defaults
    assert page.input_value("select[name='allreduce']") == "mpi"
    assert '"units": 128' in page.input_value("textarea[name='model']")

    # An invalid field: the API's message appears next to that field, nothing is queued.
    before = httpx.get(f"{server.url}/jobs").json()["total"]
    refused_beside(page, "optimizer.lr", "-1", "greater than 0")
    assert httpx.get(f"{server.url}/jobs").json()["total"] == before

    page.fill("input[name='name']", "from-the-page")
    page.fill("input[name='optimizer.lr']", "0.05")
    page.fill("input[name='epochs']", "40")
    page.fill("textarea[name='model']", '{"input_dim": 64, "layers": [{"units": 512}, '
              '{"units": 512}, {"units": 10, "activation": "softmax"}]}')
    page.click("#submit-button")
    page.wait_for_function("document.querySelector('#detail-title').textContent !== ''")
    job_id = page.inner_text("#detail-title")
    assert httpx.get(f"{server.url}/jobs/{job_id}").json()["name"] == "from-the-page"

    # The curve grows while the job runs.
    counts = []
    deadline = time.monotonic() + 120
    while page.inner_text("#detail-state") != "succeeded" and time.monotonic() < deadline:
        counts.append(int(page.inner_text("#point-count")))
        time.sleep(0.3)
    assert page.inner_text("#detail-state") == "succeeded"
    growing = [c for c in counts if 0 < c < 40 * 23]
    assert len(set(growing)) >= 3, counts  # seen at several sizes before the end
    assert int(page.inner_text("#point-count")) == 40 * 23
    assert page.evaluate("document.getElementById('loss-chart').data[0].x.length") == 40 * 23
    assert page.evaluate("document.getElementById('loss-chart').data[1].x.length") == 40
    assert page.evaluate("document.getElementById('timing-chart').data.length") == 4

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)

    # Cancel the other job from its row in the table.
    page.click(f"button[data-cancel='{other}']")
    wait_for(lambda: httpx.get(f"{server.url}/jobs/{other}").json()["state"] == "cancelled",
             30, "the job cancelled from the page")
    page.wait_for_selector(f"tr[data-job='{other}'] td.state.cancelled")


def test_the_training_controls_from_the_form_to_the_charts(server: Server, page: Any) -> None:
    page.wait_for_function("document.querySelector(\"input[name='epochs']\").value !== ''")
    # The form shows every control with its default, as GET /jobs/defaults has it.
    assert '"constant"' in page.input_value("textarea[name='optimizer.schedule']")
    assert page.input_value("textarea[name='early_stopping']") == "null"
    assert page.input_value("input[name='optimizer.warmup_steps']") == "0"
    assert page.input_value("input[name='optimizer.clip_norm']") == ""  # off
    assert page.input_value("input[name='accumulation_steps']") == "1"
    assert '"dropout": 0' in page.input_value("textarea[name='model']")
    assert "adamw" in page.inner_text("select[name='optimizer.kind']")

    # Refusals appear next to their fields: a limit, and one that depends on the data.
    before = httpx.get(f"{server.url}/jobs").json()["total"]
    refused_beside(page, "optimizer.clip_norm", "0", "greater than 0")
    page.fill("input[name='optimizer.clip_norm']", "1")
    refused_beside(page, "optimizer.warmup_steps", "5000", "not shorter than the job's")
    page.fill("input[name='optimizer.warmup_steps']", "20")
    assert httpx.get(f"{server.url}/jobs").json()["total"] == before

    page.select_option("select[name='optimizer.kind']", "adamw")
    page.fill("input[name='optimizer.lr']", "0.01")
    page.fill("input[name='optimizer.momentum']", "0")
    page.fill("input[name='optimizer.weight_decay']", "0.05")
    page.fill("textarea[name='optimizer.schedule']", '{"kind": "cosine", "min_lr": 0.001}')
    page.fill("input[name='accumulation_steps']", "2")
    page.fill("textarea[name='early_stopping']", '{"patience": 3}')
    page.fill("input[name='epochs']", "5")
    page.fill("textarea[name='model']", '{"input_dim": 64, "layers": [{"units": 64, '
              '"dropout": 0.2}, {"units": 10, "activation": "softmax"}]}')
    page.click("#submit-button")
    page.wait_for_function("document.querySelector('#detail-title').textContent !== ''")
    job_id = page.inner_text("#detail-title")
    spec = httpx.get(f"{server.url}/jobs/{job_id}").json()["spec"]
    assert spec["optimizer"]["kind"] == "adamw" and spec["optimizer"]["clip_norm"] == 1
    assert spec["optimizer"]["schedule"] == {"kind": "cosine", "min_lr": 0.001}
    assert spec["optimizer"]["warmup_steps"] == 20 and spec["accumulation_steps"] == 2
    assert spec["early_stopping"]["patience"] == 3
    assert spec["model"]["layers"][0]["dropout"] == 0.2

    page.wait_for_function("document.querySelector('#detail-state').textContent "
                           "=== 'succeeded'", timeout=120_000)
    page.wait_for_function("document.querySelector('#point-count').textContent === '115'",
                           timeout=30_000)
    # The rate chart: warmup from 0.01/20, then the cosine down towards 0.001.
    rates = page.evaluate("document.getElementById('rate-chart').data[0].y")
    norms = page.evaluate("document.getElementById('rate-chart').data[1].y")
    assert len(rates) == len(norms) == 115
    assert rates[0] == pytest.approx(0.01 / 20) and rates[19] == pytest.approx(0.01)
    assert rates[20:] == sorted(rates[20:], reverse=True) and rates[-1] < 0.0015
    assert all(n > 0 for n in norms)


def test_each_rank_s_split_of_the_latest_steps(server: Server, page: Any) -> None:
    """The rank selector draws one rank's split from the timeline; the ranks chart shows
    each rank's mean split side by side. The reference is GET /jobs/{id}/timeline."""
    spec = {"name": "two-ranks", "workers": 2, "epochs": 10, "steps_per_chunk": 10,
            "model": {"input_dim": 64, "layers": [{"units": 32},
                                                  {"units": 10, "activation": "softmax"}]}}
    job_id = httpx.post(f"{server.url}/jobs", json=spec).json()["id"]
    wait_for(lambda: httpx.get(f"{server.url}/jobs/{job_id}").json()["state"] == "succeeded",
             120, "the job")
    page.click(f"tr[data-job='{job_id}']")
    page.wait_for_function("document.querySelector('#point-count').textContent === '230'")
    page.wait_for_function("(document.getElementById('ranks-chart').data || []).length === 4")
    assert page.evaluate("document.getElementById('ranks-chart').data[0].x") == [
        "rank 0", "rank 1"]
    assert page.locator("#split-rank option").count() == 3  # live rank 0, then each rank

    page.select_option("#split-rank", "1")
    page.wait_for_function("document.getElementById('timing-chart').layout.title.text"
                           ".includes('rank 1')")
    trace = httpx.get(f"{server.url}/jobs/{job_id}/timeline",
                      params={"from_step": 31, "to_step": 230}).json()
    compute = {e["args"]["step"]: e["dur"] / 1e6 for e in trace["traceEvents"]
               if e["ph"] == "X" and e["tid"] == 1 and e["name"] == "compute"}
    drawn = page.evaluate("document.getElementById('timing-chart').data[0]")
    assert drawn["name"] == "compute" and drawn["x"] == list(range(31, 231))
    assert drawn["y"] == pytest.approx([compute[s] for s in range(31, 231)], rel=1e-12)
    means = page.evaluate("document.getElementById('ranks-chart').data[0].y")
    assert means[1] == pytest.approx(sum(compute.values()) / 200, rel=1e-9)

    page.select_option("#split-rank", "")  # back to rank 0's every step
    page.wait_for_function("document.getElementById('timing-chart').data[0].x.length === 230")


guarded = service_fixture("dashboard-guarded", ray_num_cpus=2, token="page-t0ken",
                          auth_reads="true")


def test_with_reads_behind_the_token_the_live_charts_still_load(guarded: Server) -> None:
    """An EventSource cannot send the token: the page opens each job's stream with a
    ticket it asks for with the token, and the whole curve arrives."""
    auth = {"Authorization": "Bearer page-t0ken"}
    spec = {"name": "guarded", "epochs": 20, "workers": 1, "allreduce": "local",
            "model": {"input_dim": 64, "layers": [{"units": 32},
                                                  {"units": 10, "activation": "softmax"}]}}
    job_id = httpx.post(f"{guarded.url}/jobs", json=spec, headers=auth).json()["id"]
    assert httpx.get(f"{guarded.url}/jobs/{job_id}/events").status_code == 401
    with open_page(guarded.url, token="page-t0ken") as page:
        streams: list[tuple[str, int]] = []
        page.on("response", lambda r: streams.append((r.url, r.status))
                if "/events" in r.url else None)
        page.click(f"tr[data-job='{job_id}']")
        page.wait_for_function("document.querySelector('#detail-state').textContent "
                               "=== 'succeeded'", timeout=120_000)
        total = httpx.get(f"{guarded.url}/jobs/{job_id}", headers=auth).json()["total_steps"]
        page.wait_for_function(f"document.querySelector('#point-count').textContent "
                               f"=== '{total}'", timeout=30_000)
        assert page.evaluate("document.getElementById('loss-chart').data[0].x.length") == total
    opened = [(url, status) for url, status in streams if "/events?" in url]
    assert opened and all("ticket=" in url and status == 200 for url, status in opened)
    assert any(url.endswith("/events/ticket") and status == 200 for url, status in streams)
