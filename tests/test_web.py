"""The web page (attnmt/static) in real headless Chromium, driven by Selenium, on a live server.

Needs the Debian packages chromium and chromium-driver (scripts/install_chromium.sh); skips
cleanly without them. Selenium gets explicit binary and driver paths, so Selenium Manager never
downloads anything. Leaves a screenshot in tests/artifacts/web.png (the page with reference links
drawn over the word alignment) for a person to look at.
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


MODEL_LINKS = "#alignment-svg line.link.model"


def translate_on_page(browser, live_url: str, sentence: str) -> WebDriverWait:
    """Open the page, translate ``sentence`` and wait until everything is drawn."""
    browser.get(live_url + "/")
    wait = WebDriverWait(browser, 30)
    # /health fills in the model summary and the model's default beam.
    wait.until(lambda d: d.find_element(By.ID, "model-info").text)
    browser.find_element(By.ID, "src").send_keys(sentence)
    browser.find_element(By.ID, "translate-btn").click()
    # The step-by-step trace is rendered last, after the translation and the attention view.
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#trace .stopped"))
    return wait


def paste_reference(browser, wait: WebDriverWait, links: str, expect: str) -> str:
    """Type ``links`` into the reference field, overlay them, wait for ``expect`` in the
    reference status line and return that line."""
    field = browser.find_element(By.ID, "ref-links")
    field.clear()
    field.send_keys(links)
    browser.find_element(By.ID, "ref-btn").click()
    wait.until(lambda d: expect in d.find_element(By.ID, "ref-status").text)
    return browser.find_element(By.ID, "ref-status").text


def test_page_translates_and_shows_attention(live_url, browser):
    sentence = SENTENCES[7]
    translate_on_page(browser, live_url, sentence)
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


def test_page_draws_the_word_alignment(live_url, browser):
    sentence = SENTENCES[7]
    translate_on_page(browser, live_url, sentence)
    a = httpx.post(live_url + "/v1/explain", json={"text": sentence}).json()["alignment"]
    src_words = browser.find_elements(By.CSS_SELECTOR, "#alignment-svg g.word.src")
    out_words = browser.find_elements(By.CSS_SELECTOR, "#alignment-svg g.word.out")
    assert [w.text for w in src_words] == a["src_words"]
    assert [w.text for w in out_words] == a["output_words"] != []
    lines = browser.find_elements(By.CSS_SELECTOR, MODEL_LINKS)
    assert len(lines) == len(out_words)  # one link per output word
    drawn = sorted(
        [int(x.get_attribute("data-src")), int(x.get_attribute("data-out"))] for x in lines
    )
    assert drawn == a["links"]
    assert not browser.find_elements(By.CSS_SELECTOR, "#alignment-svg line.ref")

    # Hovering an output word lights up its link and its source word's heatmap column(s).
    ActionChains(browser).move_to_element(out_words[0]).perform()
    (i,) = [i for i, j in a["links"] if j == 0]
    lit = browser.find_elements(By.CSS_SELECTOR, "#alignment-svg line.link.hl")
    assert [(x.get_attribute("data-src"), x.get_attribute("data-out")) for x in lit] == [
        (str(i), "0")
    ]
    assert "hl" in src_words[i].get_attribute("class")
    cols = {int(c.get_attribute("data-col")) for c in
            browser.find_elements(By.CSS_SELECTOR, "#heatmap td.word-col")}  # fmt: skip
    assert cols == {p for p, w in enumerate(a["src_word_ids"]) if w == i}


def test_page_overlays_reference_links(live_url, browser):
    sentence = SENTENCES[7]
    wait = translate_on_page(browser, live_url, sentence)
    a = httpx.post(live_url + "/v1/explain", json={"text": sentence}).json()["alignment"]
    (i, j), n_src = a["links"][0], len(a["src_words"])
    other = ((i + 1) % n_src, j)  # a link the model does not have
    line = paste_reference(browser, wait, f"{i}-{j} {other[0]}?{other[1]}", "AER")
    assert "1 sure, 1 possible links; 1 of the model's" in line

    def drawn(css: str) -> list[tuple[int, int]]:
        found = browser.find_elements(By.CSS_SELECTOR, "#alignment-svg " + css)
        return [(int(x.get_attribute("data-src")), int(x.get_attribute("data-out"))) for x in found]

    assert drawn("line.ref.sure") == [(i, j)]
    assert drawn("line.ref.possible") == [other]
    assert drawn("line.model.agree") == [(i, j)]  # the model link the reference has too
    assert len(drawn("line.link.model")) == len(a["output_words"])
    assert browser.find_element(By.CSS_SELECTOR, ".legend").text.count("reference") >= 2

    ARTIFACTS.mkdir(exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1100, min(max(height + 120, 800), 4000))
    word = browser.find_elements(By.CSS_SELECTOR, "#alignment-svg g.word.out")[j]
    ActionChains(browser).move_to_element(word).perform()
    assert browser.save_screenshot(str(ARTIFACTS / "web.png"))
    browser.set_window_size(1100, 1400)


def test_page_shows_bad_reference_links(live_url, browser):
    wait = translate_on_page(browser, live_url, SENTENCES[7])
    line = paste_reference(browser, wait, "0-0 x", "reference_links")
    assert "bad link 'x'" in line
    assert "error" in browser.find_element(By.ID, "ref-status").get_attribute("class")
    # The model's links are still drawn, without an overlay, and the page has no other error.
    assert browser.find_elements(By.CSS_SELECTOR, MODEL_LINKS)
    assert not browser.find_elements(By.CSS_SELECTOR, "#alignment-svg line.ref")
    assert browser.find_element(By.ID, "status").text == ""
    line = paste_reference(browser, wait, "0-0 99-0", "outside")
    assert "link 99-0 is outside the sentence pair" in line


def test_page_reports_errors(live_url, browser):
    browser.get(live_url + "/")
    browser.find_element(By.ID, "translate-btn").click()  # empty input
    status = browser.find_element(By.ID, "status")
    assert "Type something" in status.text and "error" in status.get_attribute("class")
