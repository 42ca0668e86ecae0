"""The dashboard and the job history in headless Chromium (Debian's `chromium` and
`chromium-driver`): they render, the chart is visible, auto-refresh updates a number and
can be paused. A screenshot of each page is saved in VAR_DIR/screenshots."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from queueing.models import JobRecord
from tests.browser import pending_timers, text_of, track_timers
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_dashboard_renders_refreshes_and_pauses(staff_browser, live_server, screenshots):
    from selenium.webdriver.common.by import By

    browser = staff_browser
    now = timezone.now()
    JobRecord.objects.create(
        queue="telegram", kind="tests.jobs.echo", status="succeeded", started_at=now, finished_at=now
    )
    track_timers(browser)
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
    # Paused: no poll in flight and none scheduled, so nothing will refresh the page.
    wait_for(
        lambda: (
            browser.find_element(By.ID, "queue-dashboard").get_attribute("data-polling") != "1"
            and pending_timers(browser) == 0
        ),
        what="the paused dashboard to drop its refresh timer",
    )
    JobRecord.objects.create(queue="telegram", kind="tests.jobs.echo", dispatched_at=timezone.now())
    assert pending_timers(browser) == 0
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


def test_the_24_hour_chart_is_dated_and_shows_a_bins_values_on_hover(staff_browser, live_server, screenshots):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By

    browser = staff_browser
    two_hours_ago = timezone.now() - timedelta(hours=2)
    for status in ("succeeded", "succeeded", "failed"):
        JobRecord.objects.create(
            queue="telegram",
            kind="tests.jobs.echo",
            status=status,
            started_at=two_hours_ago,
            finished_at=two_hours_ago,
        )
    browser.get(live_server.url + reverse("queueing:dashboard") + "?hours=24")
    wait_for(lambda: browser.find_element(By.ID, "throughput-chart"), what="the chart")
    browser.find_element(By.ID, "dashboard-pause").click()
    wait_for(lambda: browser.find_element(By.ID, "queue-dashboard").get_attribute("data-polling") != "1")

    ticks = [tick.text for tick in browser.find_elements(By.CSS_SELECTOR, "#throughput-chart text.x-tick")]
    labels = [label.text for label in browser.find_elements(By.CSS_SELECTOR, "#throughput-chart text.axis-label")]
    assert len(ticks) == 6 and all(re.fullmatch(r"\d{1,2} [A-Z][a-z]{2} \d\d:\d\d", tick) for tick in ticks)
    assert labels[0].startswith("Time (") and labels[1] == "Jobs per minute"

    busy = next(
        rect
        for rect in browser.find_elements(By.CSS_SELECTOR, "#throughput-chart rect.bin")
        if " 0 finished" not in rect.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    )
    fill = "return getComputedStyle(arguments[0]).fill"
    before = browser.execute_script(fill, busy)
    ActionChains(browser).move_to_element(busy).perform()
    wait_for(lambda: browser.execute_script(fill, busy) != before, what="the hovered bin to light up")
    tooltip = busy.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    assert re.fullmatch(
        r"\d{1,2} [A-Z][a-z]{2} \d\d:\d\d–\d\d:\d\d: [\d.]+ finished, [\d.]+ failed per minute", tooltip
    )
    assert " 0 failed" not in tooltip
    browser.save_screenshot(str(screenshots / "dashboard_24h_chart.png"))


def test_a_failed_job_is_retried_from_its_page(staff_browser, live_server, screenshots):
    from selenium.webdriver.common.by import By

    job = JobRecord.objects.create(
        queue="telegram",
        kind="tests.jobs.echo",
        status="failed",
        attempts=1,
        max_attempts=1,
        error_class="permanent",
        last_error="Forbidden: Forbidden: bot was blocked by the user",
        finished_at=timezone.now(),
    )
    staff_browser.get(live_server.url + reverse("admin:queueing_jobrecord_change", args=[job.pk]))
    assert "The member blocked the bot. Failed after 1 attempt." in staff_browser.find_element(By.ID, "content").text
    staff_browser.save_screenshot(str(screenshots / "job_page.png"))

    staff_browser.find_element(By.ID, "retry-job").click()

    message = wait_for(lambda: staff_browser.find_element(By.CSS_SELECTOR, ".messagelist .success"), what="a message")
    assert message.text.startswith("Retried as job ")
    assert job.retried_by.count() == 1
