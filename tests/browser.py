"""Headless Chromium for admin pages (Debian's `chromium` and `chromium-driver`): a logged-in
staff browser and a folder for screenshots (kept as CI artefacts under VAR_DIR/screenshots)."""

import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.urls import reverse

from tests.waiting import wait_for

# A page's timers, counted: a test shows that nothing will refresh a paused page by the timers
# it has left (none), instead of sleeping through a refresh period to see that nothing came.
TIMER_TRACKER = """
(function () {
  var pending = new Set(), set = window.setTimeout, clear = window.clearTimeout;
  window.setTimeout = function (callback, delay) {
    var args = Array.prototype.slice.call(arguments, 2);
    var id = set(function () { pending.delete(id); callback.apply(this, args); }, delay);
    pending.add(id);
    return id;
  };
  window.clearTimeout = function (id) { pending.delete(id); clear(id); };
  window.pendingTimers = function () { return pending.size; };
})();
"""

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("headless Chromium is not installed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def screenshots() -> Path:
    folder = Path(settings.VAR_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def staff_browser(browser, live_server, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    User.objects.create_superuser("operator", "ops@example.com", "a long password")
    from selenium.webdriver.common.by import By

    browser.get(live_server.url + reverse("admin:login"))
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("a long password")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(lambda: "/admin/login/" not in browser.current_url, what="the login")
    return browser


def track_timers(browser) -> None:
    """From the next page loaded on, pending_timers() counts its timers not yet fired or cleared."""
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": TIMER_TRACKER})


def pending_timers(browser) -> int:
    return browser.execute_script("return window.pendingTimers()")


def text_of(browser, selector: str) -> str:
    """The element's text, or "" when an auto-refresh replaced it between finding and
    reading: callers poll, so they simply look again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return browser.find_element(By.CSS_SELECTOR, selector).text
    except StaleElementReferenceException:
        return ""
