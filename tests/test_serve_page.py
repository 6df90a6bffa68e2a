"""The playground page in a real headless browser (Debian's chromium + chromedriver, through Selenium):
`negotiax serve` runs as a subprocess; the test moves a slider, mutes an objective, asks for a comparison
with the base model, submits, waits for both streamed answers and the α bars, and saves a screenshot."""
from __future__ import annotations

import json
import os
import shutil
import urllib.request

import pytest

from serve_tiny import ServerProcess, save_tiny

CHROMIUM = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
DRIVER = shutil.which("chromedriver")


def start_browser(width: int = 1100, height: int = 760):
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver; .ci/run does this)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the selenium package is missing (pip install "
                                    "'negotiax[serve]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))


def drive_page(driver, url: str, prompt: str, raise_objective: str, mute: str, max_tokens: int,
               timeout: float = 120) -> None:
    """Load the page, set one slider to 2.0 with the keyboard, mute one objective, compare with base, send,
    and wait for the answer to finish."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    wait = WebDriverWait(driver, timeout)
    slider = wait.until(lambda d: d.find_element(By.ID, f"slider-{raise_objective}"))
    slider.click()  # focus; a click in the middle of the track keeps the value at 0
    for _ in range(4):  # step 0.5: four presses move β from 0 to 2
        slider.send_keys(Keys.ARROW_RIGHT)
    assert driver.find_element(By.ID, f"value-{raise_objective}").text == "2.0"
    driver.find_element(By.ID, f"mute-{mute}").click()
    driver.find_element(By.ID, "compare").click()
    box = driver.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    tokens = driver.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys(str(max_tokens))
    driver.find_element(By.ID, "send").click()
    wait.until(lambda d: d.find_element(By.ID, "answer-panel").get_attribute("data-state") == "done")


def api_answer(url: str, body: dict) -> dict:
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def test_playground_page_streams_answer_and_alpha(tmp_path, smol_tokenizer):
    from selenium.webdriver.common.by import By

    driver = start_browser()  # skips first when no browser is installed
    backbone, circuit = save_tiny(tmp_path, smol_tokenizer)
    server = ServerProcess(backbone, circuit, tmp_path / "server.log").wait_ready()
    prompt, messages = "How do I pick a strong password?", [{"role": "user", "content": "How do I pick a strong password?"}]
    try:
        drive_page(driver, server.url, prompt, raise_objective="harmless", mute="honest", max_tokens=16)
        answer = driver.find_element(By.ID, "answer").get_attribute("textContent")
        base = driver.find_element(By.ID, "base-answer").get_attribute("textContent")
        bars = {b.get_attribute("data-objective"): b.text.split()[-1]
                for b in driver.find_elements(By.CSS_SELECTOR, "#alpha .bar")}
        shot = tmp_path / "serve-page.png"
        driver.save_screenshot(str(shot))
        if os.environ.get("NEGOTIAX_SCREENSHOT"):  # to refresh the README's picture
            shutil.copy(shot, os.environ["NEGOTIAX_SCREENSHOT"])
        # What the page showed is what the API answers for β harmless=2 with honest muted, and for the base.
        mine = api_answer(server.url, {"model": "negotiax", "messages": messages, "max_tokens": 16, "temperature": 0,
                                       "negotiax": {"preference": {"harmless": 2.0}, "mute": ["honest"]}})
        plain = api_answer(server.url, {"model": "negotiax:base", "messages": messages, "max_tokens": 16,
                                        "temperature": 0})
    finally:
        driver.quit()
        server.stop()
    assert answer and answer == mine["choices"][0]["message"]["content"]
    assert base and base == plain["choices"][0]["message"]["content"] and base != answer
    alpha = mine["negotiax"]["alpha"]
    assert bars == {name: f"{value:.2f}" for name, value in alpha.items()} and bars["honest"] == "0.00"
    assert shot.stat().st_size > 5000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
