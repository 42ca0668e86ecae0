"""The dashboard and the job history in headless Chromium (Debian's `chromium` and
`chromium-driver`): they render, the chart is visible, auto-refresh updates a number and
can be paused. A screenshot of each page is saved in VAR_DIR/screenshots."""

import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from queueing.models import JobRecord
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

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


def text_of(browser, selector: str) -> str:
    """The element's text, or "" when an auto-refresh replaced it between finding and
    reading: callers poll, so they simply look again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return browser.find_element(By.CSS_SELECTOR, selector).text
    except StaleElementReferenceException:
        return ""


def test_the_dashboard_renders_refreshes_and_pauses(staff_browser, live_server, screenshots):
    from selenium.webdriver.common.by import By

    browser = staff_browser
    now = timezone.now()
    JobRecord.objects.create(
        queue="telegram", kind="tests.jobs.echo", status="succeeded", started_at=now, finished_at=now
    )
    browser.get(live_server.url + reverse("admin:index"))
    browser.find_element(By.LINK_TEXT, "Queue dashboard").click()

    chart = wait_for(lambda: browser.find_element(By.ID, "throughput-chart"), what="the chart")
    assert chart.is_displayed() and chart.size["width"] > 300 and chart.size["height"] > 100
    wait_for(lambda: text_of(browser, "#queues tr[data-queue=telegram] .depth") == "0", what="depth 0")
    assert browser.find_elements(By.CSS_SELECTOR, "#alerts .alert")  # no cluster runs in this test
    browser.save_screenshot(str(screenshots / "dashboard.png"))

    JobRecord.objects.create(queue="telegram", kind="tests.jobs.echo", dispatched_at=timezone.now())
    wait_for(
        lambda: text_of(browser, "#queues tr[data-queue=telegram] .depth") == "1",
        timeout=15,
        what="auto-refresh to show the new depth",
    )
    assert browser.find_element(By.ID, "throughput-chart").is_displayed()

    browser.find_element(By.ID, "dashboard-pause").click()
    wait_for(lambda: browser.find_element(By.ID, "queue-dashboard").get_attribute("data-polling") != "1")
    paused_at = browser.find_element(By.ID, "queue-dashboard").get_attribute("data-refreshes")
    JobRecord.objects.create(queue="telegram", kind="tests.jobs.echo", dispatched_at=timezone.now())
    browser.execute_script("return new Promise(resolve => setTimeout(resolve, 6000))")  # longer than a period
    assert browser.find_element(By.ID, "queue-dashboard").get_attribute("data-refreshes") == paused_at
    assert text_of(browser, "#queues tr[data-queue=telegram] .depth") == "1"

    browser.find_element(By.ID, "dashboard-pause").click()
    wait_for(lambda: text_of(browser, "#queues tr[data-queue=telegram] .depth") == "2", what="refresh after resume")


def test_the_job_history_renders(staff_browser, live_server, screenshots):
    from selenium.webdriver.common.by import By

    JobRecord.objects.create(
        queue="telegram",
        kind="tests.jobs.fail_permanently",
        status="failed",
        error_class="permanent",
        finished_at=timezone.now(),
    )
    staff_browser.get(live_server.url + reverse("admin:queueing_jobrecord_changelist") + "?status=failed")

    rows = wait_for(lambda: staff_browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr"), what="the list")
    assert len(rows) == 1 and "fail_permanently" in rows[0].text
    staff_browser.save_screenshot(str(screenshots / "job_history.png"))
