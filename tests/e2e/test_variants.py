"""A/B tests and languages with real `telegram` and `broadcasts` clusters against the fake
Telegram: a sample, clicks through the real redirect, the winner to the rest; a member's
language choosing the version."""

from datetime import timedelta

import pytest

from broadcasts import clicks
from broadcasts.models import Broadcast, Delivery, MessageVersion
from broadcasts.tasks import start_broadcast
from tests.e2e.test_broadcasts import FAST, finished, make_members
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def texts_by_chat(fake) -> dict[int, list[str]]:
    """Every message Telegram accepted, by chat."""
    sent: dict[int, list[str]] = {}
    for call in fake.calls("sendMessage"):
        if call.status == 200:
            sent.setdefault(call.params["chat_id"], []).append(call.params["text"])
    return sent


def test_an_ab_test_on_a_sample_sends_the_arm_clicked_most_to_the_rest(telegram_bot, fake_telegram, clusters, client):
    members = make_members(telegram_bot, 400)
    broadcast = Broadcast.objects.create(
        bot=telegram_bot,
        text="A for #first_name",
        buttons=[{"text": "Give", "url": "https://example.org/give"}],
        ab_sample_percent=10,
        ab_wait=timedelta(hours=1),
    )
    MessageVersion.objects.create(broadcast=broadcast, arm="B", text="B for #first_name")
    clusters.start("telegram", **FAST)
    clusters.start("broadcasts", **FAST)
    start_broadcast.enqueue(broadcast.pk)

    sample = broadcast.deliveries.exclude(status=Delivery.Status.HELD)
    wait_for(
        lambda: sample.exists() and not sample.exclude(status=Delivery.Status.SENT).exists(),
        timeout=60,
        what="the sample to be sent",
    )
    assert 30 <= sample.count() <= 50 and set(sample.values_list("arm", flat=True)) == {"A", "B"}
    assert len(texts_by_chat(fake_telegram)) == sample.count(), "nobody outside the sample yet"
    # Members of arm B click its button through the platform's redirect; one of arm A does.
    clickers = [*sample.filter(arm="B")[:5], sample.filter(arm="A").first()]
    for delivery in clickers:
        assert client.get(f"/l/{clicks.token(delivery.pk, 0)}/").status_code == 302
    # The wait ends now: housekeeping chooses the winner on its own.
    Broadcast.objects.filter(pk=broadcast.pk).update(ab_wait=timedelta(0))

    wait_for(lambda: finished(broadcast), timeout=120, what="the winner to reach the rest")
    assert broadcast.ab_winner == "B"
    sent = texts_by_chat(fake_telegram)
    assert sorted(sent) == sorted(m.telegram_id for m in members)
    assert all(len(texts) == 1 for texts in sent.values()), "exactly one copy each"
    arm = dict(broadcast.deliveries.values_list("member__telegram_id", "arm"))
    in_sample = set(sample.values_list("member__telegram_id", flat=True))
    for member in members:
        expected = arm[member.telegram_id] if member.telegram_id in in_sample else "B"
        assert sent[member.telegram_id] == [f"{expected} for {member.first_name}"]
    assert broadcast.deliveries.filter(status=Delivery.Status.SENT).count() == 400


def test_a_french_speaking_member_gets_the_french_version_and_the_others_the_fallback(
    telegram_bot, fake_telegram, clusters
):
    english = make_members(telegram_bot, 3, language_code="en")
    unknown = make_members(telegram_bot, 2, first_id=2_000_000)
    french = make_members(telegram_bot, 1, first_id=3_000_000, language_code="fr")[0]
    canadian = make_members(telegram_bot, 1, first_id=4_000_000, language_code="fr-CA")[0]
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Hello #first_name")
    MessageVersion.objects.create(broadcast=broadcast, language="fr", text="Bonjour #first_name")
    clusters.start("telegram", **FAST)
    start_broadcast.enqueue(broadcast.pk)

    wait_for(lambda: finished(broadcast), timeout=60, what="the broadcast to finish")
    sent = texts_by_chat(fake_telegram)
    assert sent[french.telegram_id] == [f"Bonjour {french.first_name}"]
    assert sent[canadian.telegram_id] == [f"Bonjour {canadian.first_name}"]
    for member in english + unknown:
        assert sent[member.telegram_id] == [f"Hello {member.first_name}"]
    assert len(sent) == 7
