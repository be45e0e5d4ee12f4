"""The dashboard in a real browser (headless Chromium, driven by Selenium) over a quickstart
applied for real: the graph's phases, a FineTune's loss curve, a blocked Deployment's failing
gate, and progress that moves while a fine-tune runs, without a reload. Screenshots are saved
under tests/.artifacts/."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.browser import chromium_driver, save_screenshot, wait_for
from tests.support.reconcile_support import CLI_ENV, SpecRepo
from tests.support.runtime_support import free_port, needs_training

pytestmark = [needs_training, pytest.mark.slow, pytest.mark.browser]
T = TypeVar("T")


class DashboardProcess:
    """`tuneops ui` on a free loopback port, as a user starts it."""

    def __init__(self, root: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **CLI_ENV}
        env.pop("MLFLOW_TRACKING_URI", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "ui", str(root), "--listen", f"127.0.0.1:{self.port}",
             "--refresh", "0.5"], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
        self.log = log
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, f"tuneops ui exited: {log.read_text()}"
            try:
                with urllib.request.urlopen(f"{self.url}/api/state", timeout=30) as answer:
                    if answer.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            assert time.monotonic() < deadline, f"tuneops ui did not answer: {log.read_text()}"
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory, mlflow_server) -> Iterator[SpecRepo]:
    """The quickstart without its (suspended) Sweep: five resources, applied, all Ready."""
    repo = SpecRepo(tmp_path_factory.mktemp("dashboard") / "quickstart", mlflow_server.uri)
    (repo.root / "sweep.yaml").unlink()
    repo.commit("five resources")
    try:
        applied = repo.tuneops("apply", ".", "--yes")
        assert applied.exit_code == 0, applied.output
        yield repo
    finally:
        repo.stop_servers()


@pytest.fixture(scope="module")
def dashboard(quickstart: SpecRepo) -> Iterator[DashboardProcess]:
    served = DashboardProcess(quickstart.root, quickstart.root.parent / "ui.log")
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    driver = chromium_driver()
    try:
        yield driver
    finally:
        driver.quit()


def phases(driver) -> dict[str, str]:
    """Each node's phase, read in one script: the page swaps its nodes while it is read."""
    return driver.execute_script(
        "const found = {};"
        "document.querySelectorAll('svg.graph g.node').forEach("
        "  node => { found[node.getAttribute('data-resource')] = node.getAttribute('data-phase'); });"
        "return found;")


def steady(driver, read: Callable[[], T], what: str) -> T:
    """What `read` finds, read again when the page swapped its region mid-read (it refreshes in
    place), until it finds something."""
    from selenium.common.exceptions import StaleElementReferenceException

    def attempt() -> T | None:
        try:
            return read()
        except StaleElementReferenceException:
            return None

    return wait_for(driver, attempt, what=what)


def logged_losses(repo: SpecRepo, tracking_uri: str) -> int:
    """How many loss values the newest fine-tune run logged, as MLflow itself answers."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(repo.experiment)
    (run, *_) = client.search_runs([experiment.experiment_id], "tags.`tuneops.kind` = 'FineTune'",
                                   order_by=["attributes.start_time DESC"])
    return len(client.get_metric_history(run.info.run_id, "loss"))


def test_the_graph_shows_each_resource_with_its_phase_and_a_click_opens_the_fine_tunes_curves(
        quickstart: SpecRepo, dashboard: DashboardProcess, browser, mlflow_server):
    from selenium.webdriver.common.by import By

    browser.get(dashboard.url + "/")
    wait_for(browser, lambda: len(phases(browser)) == 5, what="five nodes on the graph")
    assert phases(browser) == {"Dataset/fruit-colors": "Ready", "BaseModel/tiny-llama": "Ready",
                               "FineTune/fruit-sft": "Ready", "Evaluation/fruit-sft-quality": "Ready",
                               "Deployment/fruit-bot": "Ready"}
    edges = steady(browser, lambda: {(edge.get_attribute("data-from"), edge.get_attribute("data-to"))
                                     for edge in browser.find_elements(By.CSS_SELECTOR, "path.edge")},
                   what="the edges")
    assert ("FineTune/fruit-sft", "Deployment/fruit-bot") in edges
    assert ("Dataset/fruit-colors", "FineTune/fruit-sft") in edges
    save_screenshot(browser, "dashboard-graph")

    browser.find_element(By.CSS_SELECTOR, 'g.node[data-resource="FineTune/fruit-sft"]').click()
    wait_for(browser, lambda: browser.current_url.endswith("/resources/FineTune/fruit-sft"),
             what="the FineTune's page opened")
    chart = 'figure.chart[data-title="training loss"]'

    def curve() -> tuple[int, int] | None:
        lines = browser.find_elements(By.CSS_SELECTOR, f"{chart} polyline.line")
        dots = browser.find_elements(By.CSS_SELECTOR, f"{chart} circle.point")
        return (int(lines[0].get_attribute("data-points")), len(dots)) if lines else None

    counted, drawn = steady(browser, curve, what="a loss curve")
    assert counted == drawn == logged_losses(quickstart, mlflow_server.uri) > 10
    page = steady(browser, lambda: browser.find_element(By.ID, "main").text, what="the page's text")
    assert f"{quickstart.model}/1" in page and "Ready" in page

    def lineage() -> str:
        details = browser.find_element(By.CSS_SELECTOR, "#runs details")
        details.click()
        return details.text

    shown = steady(browser, lineage, what="a run's lineage")
    assert quickstart.git("rev-parse", "HEAD") in shown  # the commit it was trained from
    assert "dataset fruit-colors" in shown and "sha256:" in shown
    save_screenshot(browser, "dashboard-fine-tune")


def test_a_blocked_deployment_shows_the_failing_gate_and_its_value(
        quickstart: SpecRepo, dashboard: DashboardProcess, browser):
    from selenium.webdriver.common.by import By

    quickstart.edit("evaluation.yaml", "min: 0.5", "min: 0.99")
    quickstart.commit("a gate fruit-sft/1 cannot pass")
    blocked = quickstart.tuneops("apply", ".", "--yes")
    assert "Evaluation/fruit-sft-quality: done" in blocked.stdout, blocked.output

    browser.get(dashboard.url + "/")
    wait_for(browser, lambda: phases(browser).get("Deployment/fruit-bot") == "Blocked",
             what="the Deployment shown Blocked")
    browser.find_element(By.CSS_SELECTOR, 'g.node[data-resource="Deployment/fruit-bot"]').click()

    def first_failing_gate() -> list[str] | None:
        rows = browser.find_elements(By.CSS_SELECTOR, "table.failing tbody tr")
        return [cell.text for cell in rows[0].find_elements(By.TAG_NAME, "td")] if rows else None

    cells = steady(browser, first_failing_gate, what="the failing gates on the Deployment's page")
    assert cells[0] == "Evaluation/fruit-sft-quality" and cells[1] == "exact_match"
    value = float(cells[2])
    assert 0 <= value < 0.99 and cells[3] == ">= 0.99"
    assert f"gate exact_match {cells[2]} < 0.99" in cells[5]
    save_screenshot(browser, "dashboard-blocked-deployment")


def test_progress_advances_while_a_fine_tune_runs_without_a_reload(
        quickstart: SpecRepo, dashboard: DashboardProcess, browser):

    quickstart.edit("fine-tune.yaml", "epochs: 3", "epochs: 12")
    quickstart.commit("train longer")
    env = {**os.environ, **CLI_ENV}
    env.pop("MLFLOW_TRACKING_URI", None)
    apply = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", ".", "--yes"], cwd=quickstart.root,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        browser.get(dashboard.url + "/")
        loaded_at = browser.execute_script("return document.body.getAttribute('data-loaded-at')")

        def progress() -> float:
            shown = browser.execute_script(
                "const bar = document.querySelector('g.node[data-resource=\"FineTune/fruit-sft\"] rect.bar');"
                "return bar ? bar.getAttribute('data-progress') : null;")
            return float(shown) if shown else 0.0

        first = wait_for(browser, lambda: progress() or None, timeout=180,
                         what="the fine-tune's progress shown")
        save_screenshot(browser, "dashboard-running")
        later = wait_for(browser, lambda: progress() > first and progress(), timeout=120,
                         what=f"progress beyond {first:.2f}")
        assert later > first
        assert phases(browser)["FineTune/fruit-sft"] == "Running"
        assert browser.execute_script("return document.body.getAttribute('data-loaded-at')") == loaded_at
        assert int(browser.execute_script("return document.body.getAttribute('data-refreshes')")) >= 2
    finally:
        apply.terminate()
        apply.wait(timeout=60)
        stopped = quickstart.tuneops("stop", ".")
        assert stopped.exit_code == 0, stopped.output
