"""The cockpit in a real browser: headless Chromium (`tests/integration/browser.py`) drives
`shipdelay cockpit`'s server over the small simulated world with a nightly scores table and an
alerts topic on the embedded Kafka cluster. Asserts on what the page shows: the sign-in refusing
a wrong key, the shipments the batch marks high, a filter narrowing the list, one shipment's
reasons and interval, the map, a new alert after the stream publishes one. Each step leaves a
screenshot under the data folder (`<data>/screenshots/`, never committed) for people to look at.
"""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
from confluent_kafka import Producer
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from werkzeug.serving import make_server

from cockpit.app import create_app
from serving.kafka import Topics
from serving.kafka_mock import MockCluster
from serving.stream_batch import AlertRule
from serving.stream_records import alert_records
from shipdelay.parquet_io import read_frame
from tests.integration.browser import browser  # noqa: F401 - the fixture
from tests.integration.test_cockpit_world import REASON, cockpit_settings

KEY = "browser-key-0123"
WAIT_S = 20.0


@pytest.fixture(scope="module")
def site(small_world, tmp_path_factory):
    """The cockpit served on a free port of 127.0.0.1, its settings and the batch's scores."""
    lake, _ = small_world
    with MockCluster() as bootstrap:
        settings = cockpit_settings(tmp_path_factory.mktemp("cockpit-browser") / "data", lake,
                                    api_key=KEY, kafka_bootstrap=bootstrap)
        scores = read_frame(next(settings.scores_dir.glob("run_date=*")))
        app = create_app(settings)  # as `shipdelay cockpit` serves it (`cockpit.serve`)
        server = make_server("127.0.0.1", 0, app.server, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        shots = settings.data_dir / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        try:
            yield {"url": f"http://127.0.0.1:{server.server_port}", "settings": settings,
                   "scores": scores, "bootstrap": bootstrap, "shots": shots}
        finally:
            server.shutdown()
            server.server_close()
            app.alert_follower.stop()  # before the cluster goes


def _wait(check, timeout_s: float = WAIT_S):
    """`check()`'s first truthy answer, retried while the page is still drawing."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except (StaleElementReferenceException, LookupError) as err:
            last = err
        time.sleep(0.2)
    raise AssertionError(f"the page did not show it within {timeout_s:.0f} s ({last})")


def _shot(driver, site, name: str, element_id: str | None = None) -> None:
    """A PNG of the window (scrolled to `element_id` first) under the data folder."""
    if element_id is not None:
        driver.execute_script("document.getElementById(arguments[0]).scrollIntoView();",
                              element_id)
    driver.save_screenshot(str(site["shots"] / f"{name}.png"))


def _text(driver, element_id: str) -> str:
    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else ""


def _column(driver, table_id: str, column: str) -> list[str]:
    """The visible cells of one column of a Dash DataTable."""
    cells = driver.find_elements(By.CSS_SELECTOR,
                                 f"#{table_id} td[data-dash-column='{column}']")
    return [c.text for c in cells]


def _sign_in(driver, site, path: str = "/") -> None:
    """Signed in (once a module: the cookie stays), then at `path`."""
    if driver.get_cookie("shipdelay_cockpit") is None:
        driver.get(site["url"] + "/login")
        driver.find_element(By.ID, "login-key").send_keys(KEY)
        driver.find_element(By.ID, "login-submit").click()  # the form leads to the Now page
        _wait(lambda: driver.get_cookie("shipdelay_cockpit"))
        if path == "/":
            _wait(lambda: _column(driver, "risk-table", "shipment_id"))
            return
    driver.get(site["url"] + path)
    if path == "/":
        _wait(lambda: _column(driver, "risk-table", "shipment_id"))


def test_without_the_key_nothing_shows_but_the_sign_in(browser, site):  # noqa: F811
    browser.delete_all_cookies()
    browser.get(site["url"] + "/")
    _wait(lambda: browser.find_elements(By.ID, "login-form"))
    assert browser.current_url.endswith("/login")
    assert not browser.find_elements(By.ID, "risk-table")
    browser.get(site["url"] + "/shipment/" + site["scores"]["shipment_id"].iloc[0])
    assert browser.current_url.endswith("/login")
    browser.find_element(By.ID, "login-key").send_keys("not-the-key", Keys.ENTER)
    error = _wait(lambda: _text(browser, "login-error"))
    assert "not the service" in error and not browser.find_elements(By.ID, "risk-table")
    _shot(browser, site, "01-sign-in-refused")


def test_the_list_shows_the_batch_high_risk_and_a_filter_narrows_it(browser, site):  # noqa: F811
    _sign_in(browser, site)
    scores = site["scores"]
    counts = scores["risk_band"].value_counts()
    bands = _wait(lambda: _text(browser, "band-counts"))
    for band in ("high", "medium", "low"):
        assert f"{band}: {counts.get(band, 0):,}" in bands
    _shot(browser, site, "02-now")
    high = set(scores.loc[scores["risk_band"] == "high", "shipment_id"])
    # the band column's filter: only high rows, every one of them high in the batch
    box = browser.find_element(By.CSS_SELECTOR,
                               "#risk-table th.dash-filter[data-dash-column='band'] input")
    box.send_keys("high", Keys.ENTER)
    _wait(lambda: set(_column(browser, "risk-table", "band")) == {"high"})
    shown = _column(browser, "risk-table", "shipment_id")
    assert shown and set(shown) <= high
    assert len(shown) == min(len(high), 25)  # one page of them, and as many pages as needed
    pages = browser.find_element(By.CSS_SELECTOR, "#risk-table .last-page").text
    assert int(pages) == -(-len(high) // 25)
    _shot(browser, site, "03-filtered-high", "risk-table")
    # a customer's filter narrows it further, to that customer's high-risk shipments
    customer = _column(browser, "risk-table", "customer")[0]
    box = browser.find_element(By.CSS_SELECTOR,
                               "#risk-table th.dash-filter[data-dash-column='customer'] input")
    box.send_keys(customer, Keys.ENTER)
    _wait(lambda: set(_column(browser, "risk-table", "customer")) == {customer})
    narrowed = _column(browser, "risk-table", "shipment_id")
    assert 0 < len(narrowed) <= len(shown) and set(narrowed) <= high
    _shot(browser, site, "04-filtered-customer", "risk-table")


def test_a_shipment_page_shows_its_reasons_and_interval(browser, site):  # noqa: F811
    scores = site["scores"]
    high = scores[scores["risk_band"] == "high"].iloc[0]
    _sign_in(browser, site, f"/shipment/{high['shipment_id']}")
    reasons = _wait(lambda: _text(browser, "shipment-reasons"))
    assert REASON in reasons
    interval = _wait(lambda: _text(browser, "shipment-interval"))
    for at in (high["eta_p10"], high["eta_p90"]):
        assert pd.Timestamp(at).strftime("%a %d %b %H:%M") in interval
    _shot(browser, site, "05-shipment")


def test_the_map_renders_its_hubs(browser, site):  # noqa: F811
    _sign_in(browser, site)
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#hub-map .main-svg"))
    # plotly draws one marker a hub with at-risk volume: there are some in this world
    markers = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#hub-map .scattergeo "
                                                  "path.point, #hub-map .scatterlayer "
                                                  "path.point"))
    assert len(markers) > 0
    _shot(browser, site, "06-map")


def test_a_new_alert_appears_after_the_stream_publishes_it(browser, site):  # noqa: F811
    _sign_in(browser, site)
    _wait(lambda: "alert" in _text(browser, "alert-status"))
    before = _column(browser, "alert-inbox", "shipment_id")
    shipment = site["scores"]["shipment_id"].iloc[0]
    when = pd.Timestamp("2030-01-01T12:00:00Z")
    alert = pd.DataFrame({"alert_id": [f"{shipment}@{when.isoformat()}"],
                          "shipment_id": [shipment], "kind": ["threshold"], "p_late": [0.83],
                          "previous_p_late": [0.41], "risk_band": ["high"], "eta": [when],
                          "reasons": [["a customs hold at the destination"]],
                          "as_of": [when], "model_version": ["3"]})
    values, keys = alert_records(alert, AlertRule(0.6, 0.2))
    producer = Producer({"bootstrap.servers": site["bootstrap"]})
    topic = Topics.from_settings(site["settings"]).alerts
    for value, key in zip(values, keys):
        producer.produce(topic, value=value, key=key)
    assert producer.flush(10) == 0
    # no reload: the inbox polls
    _wait(lambda: shipment in _column(browser, "alert-inbox", "shipment_id"))
    assert shipment not in before
    risks = _column(browser, "alert-inbox", "risk")
    assert "41% → 83%" in risks
    _shot(browser, site, "07-alert", "alert-inbox")
