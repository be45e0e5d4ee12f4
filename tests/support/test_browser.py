"""The browser tests' harness works: a real headless Chromium opens a page served on loopback,
runs its JavaScript on a click, and writes a screenshot."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.browser import chromium_driver, save_screenshot, wait_for

pytestmark = pytest.mark.browser

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>harness</title></head>
<body>
  <p id="status">waiting</p>
  <button id="go" onclick="document.getElementById('status').textContent = 'clicked'">Go</button>
</body></html>
"""


class Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: object) -> None:
        pass


def test_chromium_clicks_a_button_and_saves_a_screenshot():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        driver = chromium_driver()  # skips the test when there is no browser
        try:
            from selenium.webdriver.common.by import By

            driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
            status = driver.find_element(By.ID, "status")
            assert status.text == "waiting"
            driver.find_element(By.ID, "go").click()
            wait_for(driver, lambda: status.text == "clicked", timeout=10, what="the click's text")
            shot = save_screenshot(driver, "harness-self-test")
            assert shot.is_file()
            assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        finally:
            driver.quit()
    finally:
        server.shutdown()
        server.server_close()
