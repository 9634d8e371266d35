"""The web page (attnmt/static) in real headless Chromium, driven by Selenium, on a live server.

Needs the Debian packages chromium and chromium-driver (scripts/install_chromium.sh); skips
cleanly without them. Selenium gets explicit binary and driver paths, so Selenium Manager never
downloads anything. Leaves a screenshot in tests/artifacts/web.png for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from attnmt.serve import ServeLimits, create_app
from attnmt.translate import Translator
from tests.test_serve import SENTENCES, LiveServer, tiny_model_path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).parent / "artifacts"

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "needs /usr/bin/chromium and /usr/bin/chromedriver: run scripts/install_chromium.sh",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402  (only importable usefully once Chromium exists)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def live_url(request: pytest.FixtureRequest):
    translator = Translator.from_checkpoint(tiny_model_path(request))
    with LiveServer(create_app(translator, ServeLimits())) as live:
        yield live.url


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,1400", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_page_translates_and_shows_attention(live_url, browser):
    sentence = SENTENCES[7]
    browser.get(live_url + "/")
    wait = WebDriverWait(browser, 30)
    # /health fills in the model summary and the model's default beam.
    wait.until(lambda d: d.find_element(By.ID, "model-info").text)
    browser.find_element(By.ID, "src").send_keys(sentence)
    browser.find_element(By.ID, "translate-btn").click()
    # The step-by-step trace is rendered last, after the translation and the attention view.
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#trace .stopped"))
    assert browser.find_element(By.ID, "status").text == ""

    beam = int(browser.find_element(By.ID, "beam").get_attribute("value"))
    n_best = int(browser.find_element(By.ID, "nbest").get_attribute("value"))
    api = httpx.post(
        live_url + "/v1/translate", json={"text": sentence, "beam": beam, "n_best": n_best}
    ).json()["translations"][0]
    assert browser.find_element(By.ID, "output").text == api["text"]
    alternatives = browser.find_elements(By.CSS_SELECTOR, "#alternatives li")
    assert len(alternatives) == max(1, len(api["alternatives"]))

    src_toks = browser.find_elements(By.CSS_SELECTOR, "#attention .src-tok")
    tgt_toks = browser.find_elements(By.CSS_SELECTOR, "#attention .tgt-tok")
    assert src_toks and tgt_toks
    assert all(s.get_attribute("data-weight") is None for s in src_toks)
    ActionChains(browser).move_to_element(tgt_toks[0]).perform()
    weights = [s.get_attribute("data-weight") for s in src_toks]
    assert all(w is not None for w in weights)
    assert sum(float(w) for w in weights) == pytest.approx(1.0, abs=1e-2)
    assert "active" in tgt_toks[0].get_attribute("class")

    steps = browser.find_elements(By.CSS_SELECTOR, "#trace .step")
    assert len(steps) >= 1 and "Step 1" in steps[0].text

    ARTIFACTS.mkdir(exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1100, min(max(height + 120, 800), 4000))
    ActionChains(browser).move_to_element(tgt_toks[0]).perform()
    assert browser.save_screenshot(str(ARTIFACTS / "web.png"))


def test_page_reports_errors(live_url, browser):
    browser.get(live_url + "/")
    browser.find_element(By.ID, "translate-btn").click()  # empty input
    status = browser.find_element(By.ID, "status")
    assert "Type something" in status.text and "error" in status.get_attribute("class")
