"""sketch-rnn serve in a real browser: Debian's chromium, headless, driven by selenium.

The page of ``sketch-rnn serve`` (run as the command, in its own process, on a model trained by
``sketch-rnn train``): a stroke drawn with pointer actions is completed by the model, reconstruct,
interpolate and draw-from-scratch answer, and the browser logs no JavaScript error. A screenshot
of the page after the completion is saved as ``serve.png`` in the test's temporary folder (the
path is printed; ``benchmarks/figures/serve.png`` is one).
"""

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from sketch_rnn.cli import main

WAIT = 60  # seconds: generous, the tests never depend on how fast the model answers
# A tiny model trained long enough (one epoch of 30 steps at a high learning rate) to draw lines.
TRAIN = ["train", "--data", "synthetic", "--per-class", "20", "--preset", "tiny", "--steps", "30",
         "--set", "steps_per_epoch=30", "--set", "learning_rate=0.01"]

# Pixels with any ink on the user's layer, and on the user's and the model's layers together.
COUNT_PIXELS = """
const alpha = (id) => { const c = document.getElementById(id);
  return c.getContext("2d").getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 3); };
const ink = alpha("ink"), machine = alpha("machine");
let user = 0, both = 0;
for (let i = 0; i < ink.length; i++) { user += ink[i] > 0; both += ink[i] > 0 || machine[i] > 0; }
return [user, both];
"""


def _browser():
    """Headless chromium with its driver, or a failure saying what to install."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("the browser test needs Debian's chromium and its driver: "
                    "`apt-get install -y chromium chromium-driver` (found: "
                    f"chromium={binary}, chromedriver={driver})", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=480,900",
                     "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ["SE_OFFLINE"] = "true"  # selenium's driver manager downloads nothing
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """The URL of ``sketch-rnn serve --port 0`` on a freshly trained run, as the command prints it."""
    out = tmp_path_factory.mktemp("run")
    main(TRAIN + ["--out", str(out)])
    command = [sys.executable, "-c", "import sys; from sketch_rnn.cli import main; main(sys.argv[1:])",
               "serve", "--out", str(out), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
    try:
        printed = []
        while not any("http://" in line for line in printed):
            printed.append(lines.get(timeout=120))
        line = printed[-1]
        assert "listening on this machine only" in line, line
        yield re.search(r"http://[^\s,]+", line).group()
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=WAIT) == 130  # Ctrl-C


@pytest.fixture(scope="module")
def browser():
    driver = _browser()
    yield driver
    driver.quit()


def _state(browser, *states):
    """Wait until the page's ``data-state`` is one of ``states`` (or ``error``); returns it."""
    try:
        state = WebDriverWait(browser, WAIT).until(
            lambda b: b.execute_script("const s = document.body.dataset.state; return s === 'error' || "
                                       f"{list(states)}.includes(s) ? s : null"))
    except TimeoutException:
        state = browser.execute_script("return document.body.dataset.state")
    assert state in states, f"page state {state!r}: {browser.find_element(By.ID, 'status').text}"
    return state


def _draw(browser, points):
    """A stroke through ``points`` (offsets from the board's centre, in CSS pixels), by pointer actions."""
    board = browser.find_element(By.ID, "board")
    actions = ActionChains(browser, duration=20).move_to_element_with_offset(board, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        actions.move_by_offset(x1 - x0, y1 - y0)
    actions.release().perform()


def test_a_stroke_drawn_in_the_browser_is_completed_by_the_model(browser, url, tmp_path):  # browser first: none, a failure before training
    browser.get(url)
    _state(browser, "ready")
    assert "tiny model (conditional, at most 12 points)" in browser.find_element(By.ID, "model").text
    _draw(browser, [(-100, 60), (-100, -60), (40, -60)])  # a corner: sent as 3 points, the pen down
    _state(browser, "done")
    user, both = browser.execute_script(COUNT_PIXELS)
    assert user > 0 and both > user, (user, both)
    browser.save_screenshot(str(tmp_path / "serve.png"))
    print("screenshot:", tmp_path / "serve.png")

    browser.find_element(By.ID, "reroll").click()
    _state(browser, "done")
    assert "seed 2" in browser.find_element(By.ID, "status").text
    browser.find_element(By.ID, "reconstruct").click()
    _state(browser, "done")
    assert browser.find_element(By.ID, "status").text.startswith("Reconstructed")

    browser.find_element(By.ID, "clear").click()
    assert browser.execute_script(COUNT_PIXELS) == [0, 0]
    _draw(browser, [(-60, -60), (60, -60), (60, 60), (-60, 60)])
    _state(browser, "done")
    browser.find_element(By.ID, "interpolate").click()
    _state(browser, "done")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#strip canvas")) == 8  # the two drawings and 6 between

    browser.find_element(By.ID, "scratch").click()
    _state(browser, "done")
    user, both = browser.execute_script(COUNT_PIXELS)
    assert user == 0 and browser.find_element(By.ID, "status").text.startswith("Drawn")

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
