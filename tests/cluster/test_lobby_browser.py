"""The lobby's web page in a real headless Chromium: two browsers, each on the page of a
different node process, log in, join a room and chat through the cluster."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node import Node
from tests.cluster.conftest import wait_members
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.cluster

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browsers() -> Iterator[Any]:
    """``open()`` starts one headless Chromium (Debian's, driven by its chromedriver)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/"
                    "bootstrap.sh installs them: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    started: list[Any] = []

    def open_browser() -> Any:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--disable-gpu", "--window-size=900,640", "--no-first-run"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=opts)
        driver.set_page_load_timeout(30)
        started.append(driver)
        return driver

    yield open_browser
    for d in started:
        d.quit()


def lines(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#log li")]


def wait_line(driver: Any, line: str, timeout: float = 20.0) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: line in lines(d))
    except TimeoutException:
        raise AssertionError(f"no {line!r} on the page; it shows {lines(driver)}") from None


def submit(driver: Any, field: str, text: str, button: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, field)
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, button).click()


def test_two_browsers_chat_across_nodes(nodes, driver: Node, browsers, tmp_path: Path) -> None:
    web = {1: free_port(), 2: free_port()}
    for i in (1, 2):
        nodes(i, [{"class": "examples.lobby.server:Lobby",
                   "args": [0, 0, 2, "127.0.0.1", web[i]]}])
    wait_members(driver, {1, 2})
    wait_for(lambda: len(driver.coord.group_members("lobby.rooms")) == 4, timeout=30)

    ann, bob = browsers(), browsers()
    for page, i in ((ann, 1), (bob, 2)):
        wait_for(lambda i=i: _serves(web[i]), timeout=30)
        page.get(f"http://127.0.0.1:{web[i]}/")
        wait_line(page, "ok welcome: login <nick>")

    submit(ann, "nick", "ann", "login")
    wait_line(ann, "ok hello ann")
    submit(bob, "nick", "ann", "login")
    wait_line(bob, "error nick ann is taken")  # one nickname space across the nodes
    submit(bob, "nick", "bob", "login")
    wait_line(bob, "ok hello bob")
    submit(ann, "room", "hall", "join")
    wait_line(ann, "ok joined hall: ann")
    submit(bob, "room", "hall", "join")
    wait_line(bob, "ok joined hall: ann bob")
    wait_line(ann, "hall * bob joined")

    submit(bob, "text", "hi from node 2", "say")
    wait_line(ann, "hall bob: hi from node 2")
    submit(ann, "text", "hello from node 1 <b>not bold</b>", "say")
    wait_line(bob, "hall ann: hello from node 1 <b>not bold</b>")  # shown as text
    wait_line(ann, "hall ann: hello from node 1 <b>not bold</b>")

    shots = Path(os.environ.get("SKYMESH_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    for name, page in (("ann", ann), ("bob", bob)):
        assert page.save_screenshot(str(shots / f"lobby-{name}.png"))

    # A page of another origin may not open the gate's WebSocket (the allow-list, 403).
    code = ann.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"const s = new WebSocket('ws://127.0.0.1:{web[2]}/ws');"
        "s.onopen = () => done('opened'); s.onclose = (e) => done(e.code);"
    )
    assert code == 1006, code  # the browser saw the handshake refused
    assert f"origin http://127.0.0.1:{web[1]} not allowed" in nodes_log(tmp_path, 2)


def _serves(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def nodes_log(tmp_path: Path, node_id: int) -> str:
    """The log file of a node process started by the ``nodes`` fixture."""
    return wait_for(lambda: "not allowed" in _read(tmp_path / f"node{node_id}.log")
                    and _read(tmp_path / f"node{node_id}.log"))


def _read(p: Path) -> str:
    return p.read_text(errors="replace") if p.exists() else ""
