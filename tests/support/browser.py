"""A real headless Chromium for the dashboard's browser tests, driven by Selenium, that never
reaches the network: Debian's chromium and chromium-driver (tests/run.sh installs them with
apt-get), given to Selenium by path so Selenium Manager neither looks anything up nor downloads.

A test that cannot have a browser (no chromium, no chromedriver, no selenium, or a driver that
does not start) is skipped, saying what is missing. Screenshots go to tests/.artifacts/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "tests" / ".artifacts"

INSTALL_HINT = "tests/run.sh installs Debian's chromium and chromium-driver with apt-get"

FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root in containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # a container's /dev/shm is often 64 MB: shared memory in /tmp instead
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--no-proxy-server",  # the pages are on loopback: an http_proxy in the environment is not for them
)


def _binary(variable: str, name: str) -> str:
    """The path in `variable`, else `name` on PATH, else Debian's /usr/bin/`name`."""
    return os.environ.get(variable) or shutil.which(name) or f"/usr/bin/{name}"


def chromium_driver() -> Chrome:
    """A headless Chromium with a fresh profile (removed on quit()); the caller quits it."""
    # Selenium Manager, which Selenium runs when it lacks a path, may download a browser or a
    # driver: offline it does not, and with both paths given below it is not run at all.
    os.environ.setdefault("SE_OFFLINE", "true")
    chromium = _binary("TUNEOPS_CHROMIUM", "chromium")
    chromedriver = _binary("TUNEOPS_CHROMEDRIVER", "chromedriver")
    missing = [f"{what} ({path})" for what, path in (("chromium", chromium), ("chromedriver", chromedriver))
               if not (os.path.isfile(path) and os.access(path, os.X_OK))]
    if missing:
        pytest.skip(f"no browser: {' and '.join(missing)} missing; {INSTALL_HINT}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        pytest.skip(f"selenium is not importable ({error}); tests/run.sh installs it (the dev extra)")

    class Driver(webdriver.Chrome):
        """webdriver.Chrome that removes its temporary profile when it quits."""

        def quit(self) -> None:
            try:
                super().quit()
            finally:
                # Set once started; a driver that failed to start quits inside __init__.
                remove_profile = getattr(self, "remove_profile", None)
                if remove_profile is not None:
                    remove_profile()

    profile = tempfile.mkdtemp(prefix="tuneops-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # Selenium talks to chromedriver on localhost: not through the environment's HTTP_PROXY. The
    # replacement this method's warning names (a ClientConfig) is not a parameter of Chrome().
    with warnings.catch_warnings(action="ignore", category=DeprecationWarning):
        options.ignore_local_proxy_environment_variables()
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        driver = Driver(options=options, service=Service(executable_path=chromedriver))
    except Exception as error:  # any failure to start is a missing browser to the test
        shutil.rmtree(profile, ignore_errors=True)
        message = getattr(error, "msg", None) or str(error)  # a WebDriverException's, without its stack
        pytest.skip(f"chromium ({chromium}) with chromedriver ({chromedriver}) did not start: "
                    f"{type(error).__name__}: {message.strip().splitlines()[0][:300]}; {INSTALL_HINT}")
    # quit() calls it; a driver that is never quit has its profile removed when collected or at exit.
    driver.remove_profile = weakref.finalize(driver, shutil.rmtree, profile, ignore_errors=True)
    return driver


def save_screenshot(driver: Chrome, name: str) -> Path:
    """The visible window as tests/.artifacts/`name`.png (overwritten each run)."""
    path = ARTIFACTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(driver.get_screenshot_as_png())
    return path


def wait_for(driver: Chrome, condition: Callable[[], T], timeout: float = 20, what: str = "") -> T:
    """`condition()`'s first truthy value, polled every 0.1 s; the test fails after `timeout`
    seconds, naming `what` and the page's URL. NoSuchElementException counts as not yet."""
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.support.wait import WebDriverWait

    started = time.monotonic()
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda _: condition())
    except TimeoutException:
        pass
    try:
        url = driver.current_url
    except WebDriverException as error:
        url = f"unknown ({type(error).__name__})"
    pytest.fail(f"timed out after {time.monotonic() - started:.1f} s waiting for "
                f"{what or getattr(condition, '__name__', 'a condition')}; the page is at {url}")
