"""The broadcast admin: composing, the preview, sending and scheduling, the progress page and
its JSON, pause/resume/cancel/retry, the changelist counts, and one run with real clusters."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from bots.models import Bot, TelegramUser
from broadcasts.models import Audience, Broadcast, Delivery, MessageTemplate, Pledge
from broadcasts.preview import Preview
from broadcasts.tasks import start_due_broadcasts
from queueing.housekeeping import Housekeeper
from queueing.models import JobRecord
from tests.broadcasts.support import assert_draft_refused, compose, deliveries, make_members, messages_of, sending, url
from tests.browser import pending_timers, track_timers
from tests.fake_telegram.objects import make_token
from tests.waiting import wait_for

pytestmark = pytest.mark.django_db

Status = Broadcast.Status
START = "broadcasts.tasks.start_broadcast"


# -- compose ----------------------------------------------------------------------------------


def test_a_valid_draft_is_saved_with_its_buttons_and_author(staff, bot):
    response = staff.post(
        url("add"), compose(bot, buttons="Pay now | https://example.org/pay\n\nNews|https://example.org/n")
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    broadcast = Broadcast.objects.get()
    assert broadcast.status == Status.DRAFT
    assert broadcast.buttons == [
        {"text": "Pay now", "url": "https://example.org/pay"},
        {"text": "News", "url": "https://example.org/n"},
    ]
    assert broadcast.created_by.username == "operator"


def test_save_and_preview_leads_to_the_preview(staff, bot):
    page = staff.get(url("add")).content.decode()
    assert 'name="_preview"' in page and "admin-autocomplete" in page

    response = staff.post(url("add"), {**compose(bot), "_preview": "Save and preview"})

    assert response["Location"] == url("preview", Broadcast.objects.get().pk)


@pytest.mark.parametrize(
    "fields, field, error",
    [
        ({"text": ""}, "text", "Write a text or choose a template."),
        ({"buttons": "Pay | http://example.org/pay"}, "buttons", "Line 1: 'http://example.org/pay' is not an https"),
        ({"buttons": "just text"}, "buttons", 'Line 1: write "Button text | https://url".'),
        ({"audience": Audience.CAMPAIGN}, "audience_value", "Give the campaign for this audience."),
        ({"audience": Audience.LANGUAGE}, "audience_value", "Give the language code"),
        ({"audience": Audience.HAND_PICKED}, "members", "Pick at least one member"),
    ],
)
def test_invalid_drafts_are_refused_with_a_clear_error(staff, bot, fields, field, error):
    assert_draft_refused(staff, bot, fields, field, error)


def test_a_template_alone_is_enough_and_misspelt_placeholders_only_warn(staff, bot):
    template = MessageTemplate.objects.create(name="reminder", text="Dear #name, you owe #balnce")

    response = staff.post(url("add"), compose(bot, text="", template=template.pk), follow=True)

    broadcast = Broadcast.objects.get()
    assert broadcast.body == "Dear #name, you owe #balnce"
    assert any("Not placeholders, sent as written: #balnce" in m for m in messages_of(response))


def test_a_broadcast_that_has_started_cannot_be_edited(staff, bot):
    broadcast = sending(bot)

    response = staff.get(url("change", broadcast.pk))

    assert response.status_code == 200
    assert "text" not in response.context["adminform"].form.fields
    assert url("progress", broadcast.pk) in response.content.decode()


# -- preview ----------------------------------------------------------------------------------


def test_the_preview_renders_the_first_recipients_and_counts_the_problems(staff, bot):
    members = make_members(bot, 7)
    make_members(bot, 2, first_id=2_000_000, is_subscribed=False)
    TelegramUser.objects.filter(pk=members[0].pk).update(first_name="<b>Bob & Co</b>")
    Pledge.objects.create(bot=bot, member=members[0], telegram_id=members[0].telegram_id, amount=1250)
    Pledge.objects.create(bot=bot, member=members[1], telegram_id=members[1].telegram_id, amount=10, paid_amount=4)
    long_tail = "x" * 4060
    broadcast = Broadcast.objects.create(
        bot=bot, text=f"Dear #first_name, you owe #balance {long_tail}", parse_mode="HTML"
    )

    response = staff.get(url("preview", broadcast.pk))

    preview: Preview = response.context["preview"]
    assert preview.recipients == 7
    assert [s.member.pk for s in preview.samples] == [m.pk for m in members[:5]]
    assert preview.samples[0].text == f"Dear &lt;b&gt;Bob &amp; Co&lt;/b&gt;, you owe 1,250 USD {long_tail}"
    assert preview.samples[1].text.startswith("Dear M1, you owe 6 USD ")
    assert preview.samples[2].text.startswith("Dear M2, you owe - ")
    assert preview.needs_pledge and preview.without_pledge == 5
    # Only the first, with its long name and amount, goes over 4096 (entities count as one character).
    assert preview.too_long == 1 and preview.samples[0].too_long
    assert preview.checked == 7 and not preview.sampled
    page = response.content.decode()
    assert "Dear &amp;lt;b&amp;gt;Bob" in page  # the rendered HTML is shown as text, not markup
    assert 'id="preview-send"' in page and 'id="preview-schedule"' not in page


def test_a_caption_has_a_shorter_limit(staff, bot):
    make_members(bot, 2)
    broadcast = Broadcast.objects.create(bot=bot, text="y" * 1500, photo="broadcasts/p.jpg")

    preview = staff.get(url("preview", broadcast.pk)).context["preview"]

    assert preview.is_caption and preview.limit == 1024 and preview.too_long == 2


def test_a_large_audience_is_checked_on_a_sample(staff, bot, monkeypatch):
    monkeypatch.setattr(Preview, "FULL_CHECK_LIMIT", 10)
    make_members(bot, 25)
    broadcast = Broadcast.objects.create(bot=bot, text="z" * 5000)

    response = staff.get(url("preview", broadcast.pk))

    preview = response.context["preview"]
    assert preview.recipients == 25 and preview.checked == 10 and preview.sampled and preview.too_long == 10
    assert "random sample of 10 of the 25 recipients" in response.content.decode()


def test_send_now_enqueues_start_broadcast_and_shows_progress(staff, bot):
    make_members(bot, 2)
    broadcast = Broadcast.objects.create(bot=bot, text="Hi")

    response = staff.post(url("confirm", broadcast.pk), {"_send": "1"})

    assert response.status_code == 302 and response["Location"] == url("progress", broadcast.pk)
    job = JobRecord.objects.get(kind=START)
    assert job.args == [broadcast.pk] and job.queue == "telegram" and job.status == JobRecord.Status.QUEUED


def test_a_broadcast_that_has_started_is_not_sent_again(staff, bot):
    broadcast = sending(bot)

    response = staff.post(url("confirm", broadcast.pk), {"_send": "1"}, follow=True)

    assert not JobRecord.objects.filter(kind=START).exists()
    assert any("not sent again" in m for m in messages_of(response))


def test_a_second_click_on_send_now_enqueues_nothing_more(staff, bot):
    make_members(bot, 2)
    broadcast = Broadcast.objects.create(bot=bot, text="Hi")

    staff.post(url("confirm", broadcast.pk), {"_send": "1"})
    response = staff.post(url("confirm", broadcast.pk), {"_send": "1"}, follow=True)

    assert JobRecord.objects.filter(kind=START).count() == 1
    assert any("started already" in m for m in messages_of(response))


def test_a_scheduled_broadcast_keeps_its_time(staff, bot):
    broadcast = Broadcast.objects.create(
        bot=bot, text="Hi", status=Status.SCHEDULED, scheduled_at=timezone.now() + timedelta(hours=1)
    )

    response = staff.post(url("change", broadcast.pk), compose(bot))

    assert "A scheduled broadcast needs its time" in str(response.context["adminform"].form.errors["scheduled_at"])


def test_schedule_hands_the_draft_to_start_due_broadcasts(staff, bot):
    make_members(bot, 2)
    when = timezone.now() + timedelta(hours=2)
    broadcast = Broadcast.objects.create(bot=bot, text="Hi", scheduled_at=when)
    assert 'id="preview-schedule"' in staff.get(url("preview", broadcast.pk)).content.decode()

    staff.post(url("confirm", broadcast.pk), {"_schedule": "1"})

    broadcast.refresh_from_db()
    assert broadcast.status == Status.SCHEDULED
    assert not JobRecord.objects.filter(kind=START).exists()


def test_a_draft_without_a_time_cannot_be_scheduled(staff, bot):
    make_members(bot, 1)
    broadcast = Broadcast.objects.create(bot=bot, text="Hi")

    response = staff.post(url("confirm", broadcast.pk), {"_schedule": "1"}, follow=True)

    broadcast.refresh_from_db()
    assert broadcast.status == Status.DRAFT
    assert any("schedule time" in m for m in messages_of(response))


def test_the_default_clusters_duty_starts_a_due_broadcast_once(bot):
    now = timezone.now()
    due = Broadcast.objects.create(bot=bot, text="Hi", status=Status.SCHEDULED, scheduled_at=now - timedelta(seconds=1))
    Broadcast.objects.create(bot=bot, text="Later", status=Status.SCHEDULED, scheduled_at=now + timedelta(hours=1))

    assert start_due_broadcasts in {duty for _, duty in Housekeeper("default").duties}
    assert start_due_broadcasts("default") == 1
    assert start_due_broadcasts("default") == 0  # its start is already waiting

    [job] = JobRecord.objects.filter(kind=START)
    assert (job.args, job.queue) == ([due.pk], "telegram")


# -- progress and actions ---------------------------------------------------------------------


def test_progress_json_counts_every_status_and_the_recent_rate(staff, bot):
    broadcast = sending(bot, members=10)
    rows = deliveries(broadcast)
    now = timezone.now()
    for delivery in rows[:4]:
        delivery.status, delivery.sent_at = Delivery.Status.SENT, now - timedelta(seconds=5)
    rows[4].status, rows[4].sent_at = Delivery.Status.SENT, now - timedelta(minutes=5)
    rows[5].status = Delivery.Status.FAILED
    rows[6].status = Delivery.Status.RETRYING
    Delivery.objects.bulk_update(rows, ["status", "sent_at"])
    Broadcast.objects.filter(pk=broadcast.pk).update(started_at=now - timedelta(minutes=10))

    data = staff.get(url("progress_json", broadcast.pk)).json()

    assert data["status"] == "sending"
    assert data["counts"] == {
        "pending": 3,
        "sending": 0,
        "sent": 5,
        "retrying": 1,
        "failed": 1,
        "skipped": 0,
        "unknown": 0,
        "cancelled": 0,
        "held": 0,
        "total": 10,
    }
    assert data["finished"] == 6 and data["percent"] == 60.0
    assert data["rate"] == pytest.approx(4 / 30, abs=0.05)
    assert data["eta_seconds"] == round(4 / (4 / 30))


def test_the_progress_page_shows_the_bar_and_the_actions_that_apply(staff, bot):
    broadcast = sending(bot, members=4)
    Delivery.objects.filter(pk=deliveries(broadcast)[0].pk).update(status=Delivery.Status.SENT)

    page = staff.get(url("progress", broadcast.pk)).content.decode()

    assert 'id="broadcast-bar-fill" style="width: 25.0%"' in page
    assert url("action", broadcast.pk, "pause") in page and "csrfmiddlewaretoken" in page
    assert reverse("admin:broadcasts_broadcast_progress_json", args=[broadcast.pk]) in page


def test_actions_are_post_only(staff, bot):
    broadcast = sending(bot)

    assert staff.get(url("action", broadcast.pk, "pause")).status_code == 405
    assert staff.post(url("action", broadcast.pk, "explode")).status_code == 404
    broadcast.refresh_from_db()
    assert broadcast.status == Status.SENDING


def test_pause_then_resume_enqueues_what_is_left(staff, bot):
    broadcast = sending(bot)

    staff.post(url("action", broadcast.pk, "pause"))
    broadcast.refresh_from_db()
    assert broadcast.status == Status.PAUSED
    assert not JobRecord.objects.filter(kind=START).exists()

    response = staff.post(url("action", broadcast.pk, "resume"), follow=True)

    broadcast.refresh_from_db()
    assert broadcast.status == Status.SENDING
    assert JobRecord.objects.get(kind=START).args == [broadcast.pk]
    assert "Resumed." in messages_of(response)


def test_resume_of_a_broadcast_that_is_not_paused_changes_nothing(staff, bot):
    broadcast = sending(bot)

    response = staff.post(url("action", broadcast.pk, "resume"), follow=True)

    assert not JobRecord.objects.filter(kind=START).exists()
    assert any("Only a paused broadcast can be resumed" in m for m in messages_of(response))


def test_cancel_cancels_the_waiting_deliveries_and_keeps_the_sent_ones(staff, bot):
    broadcast = sending(bot, members=4)
    rows = deliveries(broadcast)
    Delivery.objects.filter(pk=rows[0].pk).update(status=Delivery.Status.SENT)
    Delivery.objects.filter(pk=rows[1].pk).update(status=Delivery.Status.RETRYING)

    response = staff.post(url("action", broadcast.pk, "cancel"), follow=True)

    broadcast.refresh_from_db()
    assert broadcast.status == Status.CANCELLED and broadcast.finished_at is not None
    assert [d.status for d in deliveries(broadcast)] == ["sent", "cancelled", "cancelled", "cancelled"]
    assert any("3 waiting deliveries" in m for m in messages_of(response))
    assert staff.post(url("action", broadcast.pk, "cancel")).status_code == 302
    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.CANCELLED


def test_retry_failed_reopens_a_done_broadcast_but_never_retries_blocked_members(staff, bot):
    broadcast = sending(bot, members=4)
    rows = deliveries(broadcast)
    Delivery.objects.filter(pk=rows[0].pk).update(status=Delivery.Status.SENT)
    Delivery.objects.filter(pk=rows[1].pk).update(
        status=Delivery.Status.FAILED,
        error="The member blocked the bot (Forbidden: bot was blocked by the user)",
        error_class="blocked",
    )
    Delivery.objects.filter(pk=rows[2].pk).update(
        status=Delivery.Status.FAILED, error="TimedOut: timed out", error_class="permanent", attempts=3
    )
    Delivery.objects.filter(pk=rows[3].pk).update(status=Delivery.Status.FAILED, error="x", error_class="permanent")
    TelegramUser.objects.filter(pk=rows[3].member_id).update(is_blocked=True)
    Broadcast.objects.filter(pk=broadcast.pk).update(status=Status.DONE, finished_at=timezone.now())

    response = staff.post(url("action", broadcast.pk, "retry-failed"), follow=True)

    broadcast.refresh_from_db()
    assert broadcast.status == Status.SENDING and broadcast.finished_at is None
    assert [d.status for d in deliveries(broadcast)] == ["sent", "failed", "pending", "failed"]
    retried = Delivery.objects.get(pk=rows[2].pk)
    assert retried.attempts == 0 and retried.error == ""
    assert JobRecord.objects.get(kind=START).args == [broadcast.pk]
    assert "Retrying 1 failed deliveries." in messages_of(response)


def test_retry_failed_on_a_paused_broadcast_waits_for_resume(staff, bot):
    broadcast = sending(bot, members=2)
    Delivery.objects.filter(pk=deliveries(broadcast)[0].pk).update(status=Delivery.Status.FAILED)
    Broadcast.objects.filter(pk=broadcast.pk).update(status=Status.PAUSED)

    staff.post(url("action", broadcast.pk, "retry-failed"))

    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.PAUSED
    assert [d.status for d in deliveries(broadcast)] == ["pending", "pending"]
    assert not JobRecord.objects.filter(kind=START).exists()


def done_with_outcomes(bot: Bot, *statuses: str) -> Broadcast:
    """A finished broadcast whose deliveries ended as `statuses`, one member each."""
    broadcast = sending(bot, members=len(statuses))
    for delivery, status in zip(deliveries(broadcast), statuses, strict=True):
        Delivery.objects.filter(pk=delivery.pk).update(status=status, error="no answer" if status == "unknown" else "")
    Broadcast.objects.filter(pk=broadcast.pk).update(status=Status.DONE, finished_at=timezone.now())
    broadcast.refresh_from_db()
    return broadcast


def test_the_progress_shows_each_outcome_and_the_unknown_in_red(staff, bot):
    broadcast = done_with_outcomes(bot, "sent", "sent", "failed", "skipped", "unknown", "unknown", "unknown", "sent")

    data = staff.get(url("progress_json", broadcast.pk)).json()
    page = staff.get(url("progress", broadcast.pk)).content.decode()

    assert data["percent"] == 100.0 and data["is_over"]
    assert data["outcomes"] == {"sent": 37.5, "skipped": 12.5, "failed": 12.5, "unknown": 37.5, "cancelled": 0.0}
    assert '<td data-count="unknown" class="broadcast-bad">3</td>' in page
    assert '<td data-count="failed" class="broadcast-bad">1</td>' in page
    assert '<td data-count="sent">3</td>' in page
    assert 'data-part="unknown" style="flex-grow: 3"' in page and 'data-part="sent" style="flex-grow: 3"' in page
    assert "unknown (may have arrived)" in page
    assert url("resend_unknown", broadcast.pk) in page


def test_the_progress_shows_why_sending_waits(staff, bot):
    until = timezone.now() + timedelta(seconds=40)
    broadcast = sending(bot, stall_reason="waiting 40 s for Telegram's flood control", stalled_until=until)

    data = staff.get(url("progress_json", broadcast.pk)).json()
    page = staff.get(url("progress", broadcast.pk)).content.decode()

    assert data["stall_reason"] == "waiting 40 s for Telegram's flood control"
    assert data["stalled_until"] == until.isoformat()
    assert '<p id="progress-stall">' in page and "waiting 40 s for Telegram&#x27;s flood control" in page
    Broadcast.objects.filter(pk=broadcast.pk).update(status=Status.DONE)
    data = staff.get(url("progress_json", broadcast.pk)).json()
    assert (data["stall_reason"], data["stalled_until"]) == ("", None)
    assert '<p id="progress-stall" hidden>' in staff.get(url("progress", broadcast.pk)).content.decode()


def test_resend_to_unknown_asks_first_and_changes_nothing_until_confirmed(staff, bot):
    broadcast = done_with_outcomes(bot, "sent", "unknown", "unknown", "unknown")
    TelegramUser.objects.filter(pk=deliveries(broadcast)[3].member_id).update(is_blocked=True)

    page = staff.get(url("resend_unknown", broadcast.pk)).content.decode()

    assert "get it twice" in page and 'value="Yes, resend to 2"' in page
    assert f'action="{url("resend_unknown", broadcast.pk)}"' in page
    assert [d.status for d in deliveries(broadcast)] == ["sent", "unknown", "unknown", "unknown"]
    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.DONE
    assert not JobRecord.objects.filter(kind=START).exists()


def test_resend_to_unknown_reopens_the_broadcast_but_never_resends_to_blocked_members(staff, bot):
    broadcast = done_with_outcomes(bot, "sent", "unknown", "unknown", "failed")
    TelegramUser.objects.filter(pk=deliveries(broadcast)[2].member_id).update(is_blocked=True)

    response = staff.post(url("resend_unknown", broadcast.pk), follow=True)

    assert response.redirect_chain[-1][0] == url("progress", broadcast.pk)
    broadcast.refresh_from_db()
    assert broadcast.status == Status.SENDING and broadcast.finished_at is None
    assert [d.status for d in deliveries(broadcast)] == ["sent", "pending", "unknown", "failed"]
    assert Delivery.objects.get(pk=deliveries(broadcast)[1].pk).error == ""
    assert JobRecord.objects.get(kind=START).args == [broadcast.pk]
    assert "Resending to 1 unknown deliveries; some members may get it twice." in messages_of(response)


def test_resend_to_unknown_of_a_cancelled_broadcast_changes_nothing(staff, bot):
    broadcast = done_with_outcomes(bot, "unknown")
    Broadcast.objects.filter(pk=broadcast.pk).update(status=Status.CANCELLED)

    response = staff.post(url("resend_unknown", broadcast.pk), follow=True)

    assert [d.status for d in deliveries(broadcast)] == ["unknown"]
    assert not JobRecord.objects.filter(kind=START).exists()
    assert any("No unknown delivery to resend" in m for m in messages_of(response))


def test_resend_to_unknown_as_a_changelist_action_confirms_first(staff, bot):
    first = done_with_outcomes(bot, "unknown", "sent")
    second = Broadcast.objects.create(bot=bot, text="paused", status=Status.PAUSED)
    member = TelegramUser.objects.create(bot=bot, telegram_id=5, is_subscribed=True)
    Delivery.objects.create(broadcast=second, member=member, chat_id=5, status=Delivery.Status.UNKNOWN)
    chosen = {"action": "resend_unknown", "_selected_action": [first.pk, second.pk]}

    page = staff.post(reverse("admin:broadcasts_broadcast_changelist"), chosen).content.decode()

    assert "get it twice" in page and 'value="Yes, resend to 2"' in page
    assert Delivery.objects.filter(status=Delivery.Status.UNKNOWN).count() == 2

    staff.post(reverse("admin:broadcasts_broadcast_changelist"), {**chosen, "post": "yes"})

    assert not Delivery.objects.filter(status=Delivery.Status.UNKNOWN).exists()
    assert Broadcast.objects.get(pk=first.pk).status == Status.SENDING
    assert Broadcast.objects.get(pk=second.pk).status == Status.PAUSED  # its deliveries wait for resume
    assert JobRecord.objects.get(kind=START).args == [first.pk]


def test_the_change_form_offers_resend_to_unknown_only_when_there_are_some(staff, bot):
    with_unknown = done_with_outcomes(bot, "unknown", "sent")
    Broadcast.objects.filter(pk=with_unknown.pk).update(stall_reason="token rejected")
    all_sent = Broadcast.objects.create(bot=bot, text="x", status=Status.DONE)

    assert "Resend to 1 unknown" in staff.get(url("change", with_unknown.pk)).content.decode()
    assert "Resend to" not in staff.get(url("change", all_sent.pk)).content.decode()


def test_only_staff_with_change_permission_may_act(client, bot):
    broadcast = sending(bot)
    client.force_login(User.objects.create_user("viewer", password="a long password", is_staff=True))

    assert client.post(url("action", broadcast.pk, "pause")).status_code == 403
    assert client.get(url("progress_json", broadcast.pk)).status_code == 403
    client.logout()
    assert client.post(url("action", broadcast.pk, "pause")).status_code == 302  # to the login
    assert Broadcast.objects.get(pk=broadcast.pk).status == Status.SENDING


# -- lists ------------------------------------------------------------------------------------


def test_the_changelist_shows_counts_in_a_fixed_number_of_queries(staff, bot):
    first = sending(bot, members=5)
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries(first)[:3]]).update(status=Delivery.Status.SENT)
    Delivery.objects.filter(pk=deliveries(first)[3].pk).update(status=Delivery.Status.FAILED)
    Delivery.objects.filter(pk=deliveries(first)[4].pk).update(status=Delivery.Status.UNKNOWN)
    Broadcast.objects.filter(pk=first.pk).update(stall_reason="Telegram unreachable since 10:02:03")
    Broadcast.objects.create(bot=bot, text="draft")
    staff.get(reverse("admin:broadcasts_broadcast_changelist"))

    with CaptureQueriesContext(connection) as few:
        response = staff.get(reverse("admin:broadcasts_broadcast_changelist"))
    for n in range(5):
        Broadcast.objects.create(bot=bot, text=f"more {n}")
    with CaptureQueriesContext(connection) as more:
        staff.get(reverse("admin:broadcasts_broadcast_changelist"))

    assert len(more) == len(few)
    row = next(b for b in response.context["cl"].result_list if b.pk == first.pk)
    assert (row.sent_count, row.failed_count, row.skipped_count, row.unknown_count, row.total_count) == (3, 1, 0, 1, 5)
    page = response.content.decode()
    assert url("progress", first.pk) in page
    summary = '3 sent</span> · <span class="broadcast-bad" title="">1 failed</span> · <span class="broadcast-bad"'
    assert summary in page and '1 unknown</span></a> <span class="broadcast-of">of 5</span>' in page
    assert "Telegram unreachable since 10:02:03" in page


def test_the_delivery_list_is_read_only_and_searchable_by_member(staff, bot):
    broadcast = sending(bot, members=3)
    TelegramUser.objects.filter(pk=deliveries(broadcast)[1].member_id).update(first_name="Zelda")
    changelist = reverse("admin:broadcasts_delivery_changelist")

    response = staff.get(changelist, {"q": "Zelda", "broadcast__id__exact": broadcast.pk})

    assert [d.member.first_name for d in response.context["cl"].result_list] == ["Zelda"]
    assert staff.get(reverse("admin:broadcasts_delivery_add")).status_code == 403
    assert staff.get(changelist, {"status__exact": "sent"}).context["cl"].result_count == 0


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_send_now_in_the_admin_reaches_telegram_and_progress_ends_at_100(telegram_bot, fake_telegram, clusters, client):
    client.force_login(User.objects.create_superuser("operator", "ops@example.com", "a long password"))
    members = make_members(telegram_bot, 40)
    broadcast = Broadcast.objects.create(
        bot=telegram_bot, text="Hello #first_name", buttons=[{"text": "Pay", "url": "https://example.org/pay"}]
    )
    clusters.start("telegram", TELEGRAM_RATE_LIMIT="1000")

    client.post(url("confirm", broadcast.pk), {"_send": "1"})

    data = wait_for(
        lambda: (d := client.get(url("progress_json", broadcast.pk)).json())["is_over"] and d,
        timeout=60,
        what="the broadcast to finish",
    )
    assert data["status"] == "done" and data["percent"] == 100.0 and data["counts"]["sent"] == 40
    texts = {c.params["chat_id"]: c.params["text"] for c in fake_telegram.calls("sendMessage") if c.status == 200}
    assert texts == {m.telegram_id: f"Hello {m.first_name}" for m in members}


@pytest.mark.e2e
def test_a_scheduled_broadcast_is_started_by_the_default_clusters_duty(telegram_bot, fake_telegram, clusters):
    make_members(telegram_bot, 5)
    broadcast = Broadcast.objects.create(
        bot=telegram_bot, text="Hi", status=Status.SCHEDULED, scheduled_at=timezone.now() - timedelta(seconds=1)
    )
    clusters.start("telegram", TELEGRAM_RATE_LIMIT="1000")
    clusters.start("default")

    wait_for(
        lambda: Broadcast.objects.get(pk=broadcast.pk).status == Status.DONE,
        timeout=60,
        interval=0.5,
        what="the default cluster's duty to start the broadcast",
    )
    assert len(fake_telegram.calls("sendMessage")) == 5
    assert JobRecord.objects.filter(kind=START, status="succeeded").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_progress_page_in_a_browser_updates_its_numbers_and_can_pause(request, live_server):
    """Skipped when selenium or Chromium is missing (see tests/browser.py)."""
    driver = request.getfixturevalue("staff_browser")
    from selenium.webdriver.common.by import By

    bot = Bot.objects.create(token=make_token(7100002), webhook_secret=Bot.new_secret())
    broadcast = sending(bot, members=20)
    rows = deliveries(broadcast)
    Delivery.objects.filter(pk__in=[d.pk for d in rows[:5]]).update(status=Delivery.Status.SENT, sent_at=timezone.now())

    track_timers(driver)
    driver.get(live_server.url + url("progress", broadcast.pk))

    bar = driver.find_element(By.ID, "broadcast-bar-fill")
    assert bar.is_displayed() and bar.size["height"] > 10
    assert driver.find_element(By.ID, "progress-percent").text == "25.0"
    assert driver.find_element(By.CSS_SELECTOR, "form[data-when=paused]").is_displayed() is False
    Delivery.objects.filter(pk__in=[d.pk for d in rows[5:15]]).update(
        status=Delivery.Status.SENT, sent_at=timezone.now()
    )
    wait_for(
        lambda: driver.find_element(By.ID, "progress-percent").text == "75.0",
        timeout=15,
        what="the page to refresh its numbers",
    )
    assert driver.find_element(By.CSS_SELECTOR, 'td[data-count="sent"]').text == "15"
    assert float(driver.find_element(By.ID, "progress-rate").text) > 0
    outer = driver.find_element(By.ID, "broadcast-bar").size["width"]
    wait_for(lambda: bar.size["width"] > outer * 0.7, timeout=5, what="the bar to grow")
    driver.save_screenshot(str(request.getfixturevalue("screenshots") / "broadcast_progress.png"))

    driver.find_element(By.ID, "progress-pause").click()
    # Paused: no refresh is scheduled (a poll in flight when the button was pressed schedules none).
    wait_for(lambda: pending_timers(driver) == 0, timeout=5, what="the paused page to drop its refresh timer")
    Delivery.objects.filter(pk__in=[d.pk for d in rows[15:]]).update(
        status=Delivery.Status.SENT, sent_at=timezone.now()
    )
    assert pending_timers(driver) == 0
    assert driver.find_element(By.ID, "progress-percent").text == "75.0"

    driver.find_element(By.CSS_SELECTOR, "form[data-when=sending] input[type=submit]").click()
    wait_for(lambda: Broadcast.objects.get(pk=broadcast.pk).status == Status.PAUSED, what="the pause action")
    assert "Paused" in driver.find_element(By.CSS_SELECTOR, ".messagelist").text


@pytest.mark.django_db(transaction=True)
def test_the_list_fits_1280_px_and_resend_to_unknown_is_confirmed_in_a_browser(request, live_server):
    """Skipped when selenium or Chromium is missing (see tests/browser.py)."""
    driver = request.getfixturevalue("staff_browser")
    from selenium.webdriver.common.by import By

    shots = request.getfixturevalue("screenshots")
    driver.set_window_size(1280, 900)
    bot = Bot.objects.create(token=make_token(7100003), webhook_secret=Bot.new_secret())
    broadcast = sending(bot, members=20, title="Spring appeal: a reminder to everyone who pledged in March")
    rows = deliveries(broadcast)
    Delivery.objects.filter(pk__in=[d.pk for d in rows[:12]]).update(status=Delivery.Status.SENT)
    Delivery.objects.filter(pk__in=[d.pk for d in rows[12:14]]).update(status=Delivery.Status.FAILED)
    Delivery.objects.filter(pk__in=[d.pk for d in rows[14:]]).update(status=Delivery.Status.UNKNOWN)
    Broadcast.objects.filter(pk=broadcast.pk).update(status=Status.DONE)
    Broadcast.objects.create(
        bot=bot,
        title="Flood",
        text="x",
        status=Status.SENDING,
        stall_reason="waiting 40 s for Telegram's flood control",
    )

    driver.get(live_server.url + reverse("admin:broadcasts_broadcast_changelist"))
    results = driver.find_element(By.CSS_SELECTOR, "#changelist .results")
    assert driver.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", results)
    unknown = driver.find_elements(By.CSS_SELECTOR, "td.field-deliveries_display .broadcast-bad")[-1]
    assert unknown.text == "6 unknown" and unknown.value_of_css_property("color") == "rgba(186, 33, 33, 1)"
    driver.save_screenshot(str(shots / "broadcast_list_1280.png"))

    driver.get(live_server.url + url("progress", broadcast.pk))
    assert (
        driver.find_element(By.CSS_SELECTOR, 'td[data-count="unknown"]').value_of_css_property("font-weight") == "700"
    )
    part = driver.find_element(By.CSS_SELECTOR, '[data-part="unknown"]')
    bar = driver.find_element(By.ID, "broadcast-bar")
    assert part.size["width"] == pytest.approx(bar.size["width"] * 6 / 20, abs=3)
    driver.save_screenshot(str(shots / "broadcast_progress_outcomes.png"))
    driver.find_element(By.ID, "progress-resend-unknown").click()

    wait_for(lambda: driver.find_elements(By.ID, "resend-warning"), what="the confirmation page")
    assert "get it twice" in driver.find_element(By.ID, "resend-warning").text
    assert [d.status for d in deliveries(broadcast)].count("unknown") == 6
    driver.save_screenshot(str(shots / "broadcast_resend_unknown.png"))
    driver.find_element(By.ID, "resend-confirm").click()

    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".messagelist"), what="the progress page")
    assert "Resending to 6 unknown deliveries" in driver.find_element(By.CSS_SELECTOR, ".messagelist").text
    assert [d.status for d in deliveries(broadcast)].count("pending") == 6


@pytest.mark.django_db(transaction=True)
def test_the_progress_page_in_a_browser_shows_a_stall_and_unknown_deliveries_as_they_come(request, live_server):
    """Skipped when selenium or Chromium is missing (see tests/browser.py)."""
    driver = request.getfixturevalue("staff_browser")
    from selenium.webdriver.common.by import By

    bot = Bot.objects.create(token=make_token(7100004), webhook_secret=Bot.new_secret())
    broadcast = sending(bot, members=4)
    driver.get(live_server.url + url("progress", broadcast.pk))
    stall = driver.find_element(By.ID, "progress-stall")
    resend = driver.find_element(By.ID, "progress-resend-unknown")
    assert not stall.is_displayed() and not resend.is_displayed()

    Broadcast.objects.filter(pk=broadcast.pk).update(stall_reason="Telegram unreachable since 10:02:03")
    Delivery.objects.filter(pk=deliveries(broadcast)[0].pk).update(status=Delivery.Status.UNKNOWN)

    wait_for(lambda: stall.is_displayed(), timeout=15, what="the stall reason to appear")
    assert "Telegram unreachable since 10:02:03" in stall.text
    assert resend.is_displayed()
    cell = driver.find_element(By.CSS_SELECTOR, 'td[data-count="unknown"]')
    assert cell.text == "1" and "broadcast-bad" in cell.get_attribute("class")
    part = driver.find_element(By.CSS_SELECTOR, '[data-part="unknown"]')
    quarter = driver.find_element(By.ID, "broadcast-bar").size["width"] / 4
    wait_for(lambda: abs(part.size["width"] - quarter) <= 3, timeout=5, what="the bar's unknown part to grow")
