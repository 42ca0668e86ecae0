"""A broadcast's results per arm and language: sent, failed, blocked after, unsubscribed,
members who clicked and clicks, click-through; on the results page, its JSON and
broadcast_status --json."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bots.models import TelegramUser
from broadcasts import results
from broadcasts.models import Broadcast, Click, Delivery

pytestmark = pytest.mark.django_db

SENT_AT = timezone.now().replace(second=0, microsecond=0) - timedelta(hours=1)


@pytest.fixture
def broadcast(bot) -> Broadcast:
    """Arm A: 3 sent in English (one clicked twice, one pressed Stop, one blocked the bot
    after), 1 failed. Arm B: 2 sent in French (one clicked two buttons once each, one had
    blocked the bot before it was sent), 1 held for the winner."""
    broadcast = Broadcast.objects.create(bot=bot, text="Hi", status=Broadcast.Status.DONE)
    rows = [
        ("A", "", Delivery.Status.SENT, 0, {"clicks": [2]}),
        ("A", "", Delivery.Status.SENT, 1, {"stop": True}),
        ("A", "", Delivery.Status.SENT, 1, {"blocked": timedelta(minutes=5)}),
        ("A", "", Delivery.Status.FAILED, 0, {}),
        ("B", "fr", Delivery.Status.SENT, 2, {"clicks": [1, 1]}),
        ("B", "fr", Delivery.Status.SENT, 2, {"blocked": -timedelta(days=1)}),
        ("", "fr", Delivery.Status.HELD, 0, {}),
    ]
    for n, (arm, language, status, minute, what) in enumerate(rows):
        sent_at = SENT_AT + timedelta(minutes=minute) if status == Delivery.Status.SENT else None
        blocked_at = sent_at + what["blocked"] if "blocked" in what else None
        member = TelegramUser.objects.create(
            bot=bot, telegram_id=100 + n, is_blocked=blocked_at is not None, blocked_at=blocked_at
        )
        delivery = Delivery.objects.create(
            broadcast=broadcast,
            member=member,
            chat_id=100 + n,
            status=status,
            arm=arm,
            language=language,
            sent_at=sent_at,
            unsubscribed_at=SENT_AT if what.get("stop") else None,
        )
        for button, count in enumerate(what.get("clicks", [])):
            Click.objects.create(
                delivery=delivery,
                broadcast=broadcast,
                arm=arm,
                language=language,
                button=button,
                count=count,
                first_at=SENT_AT,
                last_at=SENT_AT,
            )
    return broadcast


def by(rows: list[dict], key: str) -> dict[str, dict]:
    return {row.pop(key): row for row in rows}


def test_the_figures_per_arm_per_language_and_in_total(broadcast):
    figures = results.results(broadcast)

    figure_names = ["sent", "failed", "blocked_after", "unsubscribed", "clicks", "presses", "click_through"]
    assert [figures[name] for name in figure_names] == [5, 1, 1, 2, 2, 4, 40.0]
    assert by(figures["arms"], "arm") == {
        "A": dict(sent=3, failed=1, blocked_after=1, unsubscribed=2, clicks=1, presses=2, click_through=33.3),
        "B": dict(sent=2, failed=0, blocked_after=0, unsubscribed=0, clicks=1, presses=2, click_through=50.0),
    }
    languages = by(figures["languages"], "language")
    assert set(languages) == {"", "fr"} and (languages["fr"]["sent"], languages[""]["sent"]) == (2, 3)
    assert [(m["at"], m["sent"]) for m in figures["per_minute"]] == [
        (SENT_AT.isoformat(), 1),
        ((SENT_AT + timedelta(minutes=1)).isoformat(), 2),
        ((SENT_AT + timedelta(minutes=2)).isoformat(), 2),
    ]


def test_the_figures_cost_a_fixed_number_of_queries_whatever_the_size(broadcast, bot):
    with CaptureQueriesContext(connection) as small:
        results.results(broadcast)
    member = TelegramUser.objects.create(bot=bot, telegram_id=999)
    Delivery.objects.create(broadcast=broadcast, member=member, chat_id=999, status=Delivery.Status.SENT, arm="C")
    with CaptureQueriesContext(connection) as larger:
        results.results(broadcast)
    # Whether the rows were pruned; per arm and language once, for the total, the arms and the
    # languages: the kept counts, members who blocked after, who pressed Stop, the clicks; the
    # kept counts per minute.
    assert len(small) == len(larger) == 6


def test_the_results_page_shows_them_with_a_chart_and_the_progress_page_links_to_it(staff, broadcast):
    page = staff.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/results/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="throughput-chart"' in html and "Messages per minute" in html
    assert '<td data-figure="clicks">2</td>' in html and '<td data-figure="unsubscribed">2</td>' in html
    assert '<tr data-group="B"><td>B</td><td>2</td>' in html
    assert staff.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/results.json").json()["clicks"] == 2
    progress = staff.get(f"/admin/broadcasts/broadcast/{broadcast.pk}/progress/").content.decode()
    assert f'href="/admin/broadcasts/broadcast/{broadcast.pk}/results/"' in progress


def test_broadcast_status_json_has_the_totals_and_the_figures_per_arm(broadcast):
    out = StringIO()
    call_command("broadcast_status", str(broadcast.pk), "--json", stdout=out)
    status = json.loads(out.getvalue())
    assert (status["clicks"], status["unsubscribed"], status["status"]) == (2, 2, "done")
    assert [arm["arm"] for arm in status["arms"]] == ["A", "B"]
    text = StringIO()
    call_command("broadcast_status", str(broadcast.pk), stdout=text)
    assert "Clicked: 2 members (4 clicks, 40.0% of those sent); unsubscribed: 2" in text.getvalue()
