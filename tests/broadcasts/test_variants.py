"""A/B arms and languages (broadcasts.variants): who gets which version, the sample held for
the winner, the winner's choice on a simulated clock, and the sender sending each version."""

from collections import Counter
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.messages import get_messages
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from bots.models import TelegramUser
from broadcasts import variants
from broadcasts.models import ABMeasure, Broadcast, Click, Delivery, MessageVersion
from broadcasts.recovery import resume_stranded
from broadcasts.sending import fan_out, finish_if_complete
from broadcasts.summary import send_summary
from broadcasts.tasks import send_deliveries, send_due_winners, send_test, start_broadcast
from queueing.models import JobRecord
from tests.broadcasts.support import NO_VERSIONS
from tests.images import tiny_png

pytestmark = pytest.mark.django_db


def members(bot, count: int, first_id: int = 1_000, **fields) -> list[TelegramUser]:
    return TelegramUser.objects.bulk_create(
        TelegramUser(bot=bot, telegram_id=first_id + n, first_name=f"M{n}", is_subscribed=True, **fields)
        for n in range(count)
    )


def broadcast_with(bot, arms: str = "A", percent: int = 0, languages=(), **fields) -> Broadcast:
    broadcast = Broadcast.objects.create(bot=bot, text="A text", ab_sample_percent=percent, **fields)
    for arm in arms.replace("A", ""):
        MessageVersion.objects.create(broadcast=broadcast, arm=arm, text=f"{arm} text")
    for language in languages:
        MessageVersion.objects.create(broadcast=broadcast, arm="A", language=language, text=f"A {language}")
    return broadcast


def fanned_out(broadcast: Broadcast) -> Broadcast:
    fan_out(broadcast)
    return broadcast


def arm_counts(broadcast: Broadcast) -> Counter:
    return Counter(broadcast.deliveries.values_list("arm", flat=True))


def test_the_arms_split_the_audience_evenly(bot):
    members(bot, 1200)
    broadcast = fanned_out(broadcast_with(bot, "ABCD"))

    counts = arm_counts(broadcast)
    assert set(counts) == {"A", "B", "C", "D"}
    assert all(abs(n - 300) <= 3 for n in counts.values()), counts
    assert not broadcast.deliveries.exclude(status=Delivery.Status.PENDING).exists()


def test_the_split_is_the_same_each_time_it_is_computed_and_differs_between_broadcasts(bot):
    members(bot, 300)
    broadcast = fanned_out(broadcast_with(bot, "AB"))
    first = dict(broadcast.deliveries.values_list("member_id", "arm"))

    broadcast.deliveries.all().delete()
    fanned_out(broadcast)
    other = fanned_out(broadcast_with(bot, "AB"))

    assert dict(broadcast.deliveries.values_list("member_id", "arm")) == first
    assert dict(other.deliveries.values_list("member_id", "arm")) != first


def test_a_resumed_or_retried_start_keeps_each_members_arm(bot):
    members(bot, 200)
    broadcast = broadcast_with(bot, "AB")
    start_broadcast(broadcast.pk)
    first = dict(broadcast.deliveries.values_list("member_id", "arm"))
    assert set(first.values()) == {"A", "B"}
    broadcast.refresh_from_db()
    assert broadcast.pause() and broadcast.resume()

    start_broadcast(broadcast.pk)

    assert dict(broadcast.deliveries.values_list("member_id", "arm")) == first


def test_a_fan_out_in_batches_splits_as_one_in_a_go_and_a_batch_after_the_winner_sends_it(bot, monkeypatch):
    """The split is a hash of each member's id: batches do not change it. Members whose batch
    is made after the A/B winner was chosen get the winner, pending, as the held ones do."""
    members(bot, 500)
    members(bot, 40, first_id=9_000, language_code="fr")
    broadcast = broadcast_with(bot, "AB", percent=20, languages=["fr"], status=Broadcast.Status.SENDING)
    fan_out(broadcast)
    in_one_go = set(broadcast.deliveries.values_list("member_id", "status", "arm", "language"))
    assert {s for _, s, *_ in in_one_go} == {Delivery.Status.PENDING, Delivery.Status.HELD}
    assert {language for *_, language in in_one_go} == {"fr", ""}
    broadcast.deliveries.all().delete()
    broadcast.fan_out_after = 0
    monkeypatch.setattr("broadcasts.sending.FAN_OUT_BATCH", 70)

    batches = [fan_out(broadcast) for _ in range(3)]

    assert batches == [70, 70, 70] and broadcast.fan_out_after is not None
    assert set(broadcast.deliveries.values_list("member_id", "status", "arm", "language")) < in_one_go
    assert not finish_if_complete(broadcast), "not done while the fan-out goes on"
    sample = broadcast.deliveries.exclude(status=Delivery.Status.HELD)
    sample.update(status=Delivery.Status.SENT)
    assert variants.winner_due_at(broadcast) is None, "the rest of the sample is not made yet"
    sample.update(status=Delivery.Status.PENDING)
    held = broadcast.deliveries.filter(status=Delivery.Status.HELD).count()
    assert held and variants.decide(broadcast, "B") == held

    while broadcast.fan_out_after is not None:
        fan_out(broadcast)

    winner = {
        (member, Delivery.Status.PENDING, "B", language)
        if status == Delivery.Status.HELD
        else (member, status, arm, language)
        for member, status, arm, language in in_one_go
    }
    assert set(broadcast.deliveries.values_list("member_id", "status", "arm", "language")) == winner
    assert broadcast.deliveries.count() == 540


def test_outside_the_sample_deliveries_are_held_without_an_arm(bot):
    members(bot, 2000)
    broadcast = fanned_out(broadcast_with(bot, "AB", percent=10))

    sample = broadcast.deliveries.filter(status=Delivery.Status.PENDING)
    held = broadcast.deliveries.filter(status=Delivery.Status.HELD)
    assert abs(sample.count() - 200) <= 3
    assert abs(sample.filter(arm="A").count() - sample.filter(arm="B").count()) <= 6
    assert held.count() == 2000 - sample.count()
    assert set(held.values_list("arm", flat=True)) == {""}
    # The sender claims what can be sent now; the broadcast is not done while rows are held.
    assert broadcast.deliveries.claimable(timezone.now()).count() == sample.count()
    sample.update(status=Delivery.Status.SENT)
    broadcast.status = Broadcast.Status.SENDING
    broadcast.save()
    assert not finish_if_complete(broadcast)


def test_a_broadcast_without_versions_ignores_the_sample_share(bot):
    members(bot, 50)
    broadcast = fanned_out(broadcast_with(bot, "A", percent=10))

    assert arm_counts(broadcast) == {"A": 50}


def test_a_member_gets_their_language_exactly_then_by_its_primary_subtag_else_the_fallback(bot):
    codes = ["fr", "FR-ca", "pt-BR", "pt", "de", "", "pt-br"]
    people = [
        TelegramUser.objects.create(bot=bot, telegram_id=10 + i, is_subscribed=True, language_code=c)
        for i, c in enumerate(codes)
    ]
    broadcast = fanned_out(broadcast_with(bot, languages=["fr", "pt-br"]))

    language = dict(broadcast.deliveries.values_list("member_id", "language"))
    assert [language[m.pk] for m in people] == ["fr", "fr", "pt-br", "", "", "", "pt-br"]

    portuguese = fanned_out(broadcast_with(bot, languages=["pt"]))
    assert dict(portuguese.deliveries.values_list("member_id", "language"))[people[2].pk] == "pt"


def test_the_summary_counts_what_the_fan_out_assigns(bot):
    members(bot, 500)
    members(bot, 40, first_id=9_000, language_code="fr")
    broadcast = broadcast_with(bot, "ABC", percent=20, languages=["fr"])

    by_arm, by_language = variants.Split(broadcast).counts(TelegramUser.objects.filter(bot=bot))
    fanned_out(broadcast)

    assert dict(by_arm) == dict(arm_counts(broadcast))
    assert by_arm[-1][0] == "", "held last"
    assert dict(by_language) == dict(Counter(broadcast.deliveries.values_list("language", flat=True)))
    assert dict(by_language)["fr"] == 40


def test_each_delivery_gets_its_arms_version_in_its_language_else_the_arms_fallback(bot):
    broadcast = broadcast_with(bot, "AB", languages=["fr"])
    MessageVersion.objects.create(
        broadcast=broadcast, arm="B", language="fr", text="B fr", buttons=[{"text": "Go", "url": "https://b.example"}]
    )
    versions = variants.Versions(broadcast)

    def text(arm: str, language: str) -> str:
        return versions.of(Delivery(arm=arm, language=language)).text

    assert [text("A", ""), text("A", "fr"), text("B", ""), text("B", "fr"), text("B", "de")] == [
        "A text",
        "A fr",
        "B text",
        "B fr",
        "B text",
    ]
    assert versions.of(Delivery(arm="B", language="fr")).buttons == [{"text": "Go", "url": "https://b.example"}]


def test_an_arm_without_a_fallback_version_is_reported():
    assert variants.missing_fallbacks([("A", "fr"), ("B", "fr"), ("C", ""), ("C", "de")]) == ["B"]


def sample_sent(broadcast: Broadcast, at) -> None:
    broadcast.status, broadcast.started_at = Broadcast.Status.SENDING, at - timedelta(minutes=5)
    broadcast.save()
    broadcast.deliveries.filter(status=Delivery.Status.PENDING).update(status=Delivery.Status.SENT, sent_at=at)


def test_the_arm_whose_members_clicked_most_wins_and_goes_to_everyone_held(bot):
    members(bot, 1000)
    broadcast = fanned_out(broadcast_with(bot, "ABC", percent=30))
    sample_sent(broadcast, timezone.now())
    for arm, clicks in (("A", 3), ("B", 12), ("C", 6)):
        for delivery in broadcast.deliveries.filter(arm=arm)[:clicks]:
            Click.record(delivery.pk, 0)
    # Many clicks by one member count once: members who clicked, not clicks.
    noisy = broadcast.deliveries.filter(arm="C").first()
    for _ in range(20):
        Click.record(noisy.pk, 0)
    held = set(broadcast.deliveries.filter(status=Delivery.Status.HELD).values_list("pk", flat=True))

    released = variants.decide(broadcast)

    assert broadcast.ab_winner == "B"
    assert released == len(held)
    rest = broadcast.deliveries.filter(pk__in=held)
    assert set(rest.values_list("status", "arm")) == {(Delivery.Status.PENDING, "B")}
    assert variants.decide(broadcast, "C") is None, "one winner, once"
    assert set(rest.values_list("arm", flat=True)) == {"B"}


def test_with_fewest_blocks_as_the_measure_the_arm_that_lost_fewest_members_wins(bot):
    members(bot, 600)
    broadcast = fanned_out(broadcast_with(bot, "AB", percent=50, ab_measure=ABMeasure.FEWEST_BLOCKS))
    sample_sent(broadcast, timezone.now())
    for delivery in broadcast.deliveries.filter(arm="A")[:2]:
        Click.record(delivery.pk, 0)
    TelegramUser.objects.filter(pk__in=broadcast.deliveries.filter(arm="A").values("member_id")[:9]).update(
        is_blocked=True
    )
    TelegramUser.objects.filter(pk__in=broadcast.deliveries.filter(arm="B").values("member_id")[:2]).update(
        is_blocked=True
    )

    variants.decide(broadcast)

    assert broadcast.ab_winner == "B"


def test_the_winner_is_chosen_once_the_wait_after_the_samples_last_send_is_over(bot):
    members(bot, 300)
    broadcast = fanned_out(broadcast_with(bot, "AB", percent=10, ab_wait=timedelta(hours=1)))
    sent_at = timezone.now() - timedelta(hours=3)
    broadcast.status, broadcast.started_at = Broadcast.Status.SENDING, sent_at
    broadcast.save()
    assert variants.due_winners(now=sent_at + timedelta(hours=2)) == [], "the sample is not sent yet"

    sample_sent(broadcast, sent_at)

    assert variants.winner_due_at(broadcast) == sent_at + timedelta(hours=1)
    assert variants.due_winners(now=sent_at + timedelta(minutes=59)) == []
    assert variants.due_winners(now=sent_at + timedelta(minutes=61)) == [broadcast]
    Broadcast.objects.filter(pk=broadcast.pk).update(ab_send_winner=False)
    assert variants.due_winners(now=sent_at + timedelta(minutes=61)) == [], "an operator sends this one"


def test_housekeeping_sends_a_due_winner_to_the_rest(bot, django_capture_on_commit_callbacks):
    members(bot, 300)
    broadcast = fanned_out(broadcast_with(bot, "AB", percent=10, ab_wait=timedelta(0)))
    sample_sent(broadcast, timezone.now() - timedelta(seconds=1))

    assert send_due_winners() == 1

    broadcast.refresh_from_db()
    assert broadcast.ab_winner == "A"
    assert not broadcast.deliveries.filter(status=Delivery.Status.HELD).exists()
    assert send_due_winners() == 0


def test_cancelling_cancels_the_held_deliveries_and_then_no_winner_is_sent(bot):
    members(bot, 100)
    broadcast = fanned_out(broadcast_with(bot, "AB", percent=10))
    broadcast.status = Broadcast.Status.SENDING
    broadcast.save()

    broadcast.cancel()

    assert not broadcast.deliveries.filter(status=Delivery.Status.HELD).exists()
    assert variants.decide(broadcast) is None


def test_the_sender_sends_each_member_their_version_with_its_buttons(telegram_bot, fake_telegram):
    french = members(telegram_bot, 6, first_id=100, language_code="fr")
    others = members(telegram_bot, 30, first_id=200)
    broadcast = Broadcast.objects.create(
        bot=telegram_bot, text="Hello #first_name", buttons=[{"text": "A", "url": "https://a.example"}]
    )
    MessageVersion.objects.create(
        broadcast=broadcast, arm="B", text="Hi #first_name", buttons=[{"text": "B", "url": "https://b.example"}]
    )
    MessageVersion.objects.create(broadcast=broadcast, arm="A", language="fr", text="Bonjour #first_name")
    MessageVersion.objects.create(broadcast=broadcast, arm="B", language="fr", text="Salut #first_name")
    start_broadcast(broadcast.pk)
    send_deliveries(broadcast.pk)

    calls = {c.chat_id: c for c in fake_telegram.calls("sendMessage")}
    arm = dict(broadcast.deliveries.values_list("chat_id", "arm"))
    assert set(arm.values()) == {"A", "B"}
    expected = {"A": ("Hello", "Bonjour", "https://a.example"), "B": ("Hi", "Salut", "https://b.example")}
    for member in french + others:
        fallback, in_french, url = expected[arm[member.telegram_id]]
        call = calls[member.telegram_id]
        greeting = in_french if member in french else fallback
        assert call.params["text"] == f"{greeting} {member.first_name}"
        assert call.params["reply_markup"]["inline_keyboard"][0][0]["url"] == url


def send_broadcast(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("send_broadcast", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_send_broadcast_makes_an_even_ab_test_and_language_versions(bot, settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    members(bot, 40)
    members(bot, 8, first_id=5_000, language_code="fr")

    out, err = send_broadcast(
        "--yes",
        "--text",
        "Hello #first_name",
        "--variant-text",
        "Hi #first_name",
        "--variant-text",
        "Hey #first_name",
        "--language",
        "FR=Bonjour #first_name",
    )

    broadcast = Broadcast.objects.get(pk=int(out))
    assert list(broadcast.versions.values_list("arm", "language", "text")) == [
        ("A", "fr", "Bonjour #first_name"),
        ("B", "", "Hi #first_name"),
        ("C", "", "Hey #first_name"),
    ]
    assert broadcast.ab_sample_percent == 0
    assert "A/B test, even split: A " in err and ", C " in err
    assert "by message language: fallback 40, fr 8" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--variant-text", "b", "--variant-text", "c", "--variant-text", "d", "--variant-text", "e"],
            "5 A/B arms: at most 4",
        ),
        (["--language", "fr Bonjour"], "write CODE=TEXT"),
        (["--language", "fr="], "write CODE=TEXT"),
        (["--language", "french=Bonjour"], "'french' is not a language code"),
        (["--language", "fr=Bonjour", "--language", "fr=Salut"], "--language fr given twice"),
        (["--variant-text", " "], "A --variant-text cannot be empty"),
    ],
)
def test_send_broadcast_refuses_bad_versions_with_a_clear_message(bot, settings, args, message):
    settings.TELEGRAM_BOT_TOKEN = ""
    members(bot, 3)

    with pytest.raises(CommandError) as refused:
        send_broadcast("--yes", "--text", "Hello", *args)

    assert message in str(refused.value)
    assert not Broadcast.objects.exists() and not MessageVersion.objects.exists()


def test_send_broadcast_warns_of_a_misspelt_placeholder_in_a_version_as_in_the_text(bot, settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    members(bot, 3)

    _, err = send_broadcast("--yes", "--text", "Hello", "--variant-text", "You owe #balnce", "--language", "fr=#nmae")

    assert "--variant-text (B): #balnce is not a placeholder" in err
    assert "--language fr: #nmae is not a placeholder" in err


def test_housekeeping_leaves_an_ab_test_waiting_for_its_winner_alone_but_resumes_its_unsent_sample(bot):
    members(bot, 300)
    broadcast = fanned_out(broadcast_with(bot, "AB", percent=10))
    broadcast.status, broadcast.started_at = Broadcast.Status.SENDING, timezone.now() - timedelta(hours=1)
    broadcast.save()
    starts = JobRecord.objects.of_kinds(start_broadcast)

    assert resume_stranded() == 1, "the sample has no job to send it"
    starts.delete()
    broadcast.deliveries.filter(status=Delivery.Status.PENDING).update(status=Delivery.Status.SENT)

    assert resume_stranded() == 0
    assert not starts.exists()
    broadcast.refresh_from_db()
    assert broadcast.status == Broadcast.Status.SENDING


def admin_url(view: str, *args) -> str:
    return reverse(f"admin:broadcasts_broadcast_{view}", args=args)


def composed(bot, *versions: dict, **fields) -> dict:
    data = {
        "bot": bot.pk,
        "title": "Test",
        "text": "Hello #first_name",
        "audience": "subscribers",
        "no_pledge_fallback": "-",
        **NO_VERSIONS,
        "versions-TOTAL_FORMS": str(len(versions)),
        **fields,
    }
    for i, version in enumerate(versions):
        data.update({f"versions-{i}-{name}": value for name, value in version.items()})
    return data


def test_the_admin_saves_versions_from_its_inline(staff, bot):
    response = staff.post(
        admin_url("add"),
        composed(
            bot,
            {"arm": "B", "language": "", "text": "Hi #first_name", "buttons": "Give | https://example.org/b"},
            {"arm": "A", "language": "FR", "text": "Bonjour #first_name"},
            ab_sample_percent="10",
        ),
    )

    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    broadcast = Broadcast.objects.get()
    assert list(broadcast.versions.values_list("arm", "language", "buttons")) == [
        ("A", "fr", []),
        ("B", "", [{"text": "Give", "url": "https://example.org/b"}]),
    ]
    assert broadcast.ab_sample_percent == 10


def test_the_admin_warns_of_a_misspelt_placeholder_in_a_version(staff, bot):
    response = staff.post(admin_url("add"), composed(bot, {"arm": "B", "language": "", "text": "You owe #balnce"}))

    assert response.status_code == 302
    warnings = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("Arm B fallback: not placeholders, sent as written: #balnce." in w for w in warnings)


@pytest.mark.parametrize(
    "version, error",
    [
        ({"arm": "B", "language": "fr", "text": "Salut"}, "Arm B needs a version without a language"),
        ({"arm": "A", "language": "", "text": "Again"}, "Arm A without a language is the broadcast"),
    ],
)
def test_the_admin_refuses_versions_a_member_could_not_be_given(staff, bot, version, error):
    response = staff.post(admin_url("add"), composed(bot, version))

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Broadcast.objects.exists()


def test_the_confirmation_and_the_preview_count_per_arm_and_per_message_language(staff, bot):
    members(bot, 90)
    members(bot, 10, first_id=9_000, language_code="fr")
    broadcast = broadcast_with(bot, "AB", percent=20, languages=["fr"])
    by_arm, _ = variants.Split(broadcast).counts(TelegramUser.objects.all())

    for view in ("confirm", "preview"):
        page = staff.get(admin_url(view, broadcast.pk)).content.decode()
        for arm, count in by_arm:
            assert f'<td data-arm="{arm}">{count}</td>' in page, view
        assert '<td data-message-language="fr">10</td>' in page
        assert '<td data-message-language="">90</td>' in page
        assert "A/B test on a 20 % sample" in page


def test_progress_shows_each_arm_and_one_click_sends_the_winner_to_the_rest(staff, bot):
    members(bot, 200)
    broadcast = fanned_out(broadcast_with(bot, "AB", percent=10))
    sample_sent(broadcast, timezone.now())
    Click.record(broadcast.deliveries.filter(arm="A").first().pk, 0)
    held = broadcast.deliveries.filter(status=Delivery.Status.HELD).count()

    page = staff.get(admin_url("progress", broadcast.pk)).content.decode()
    assert '<tr data-arm="A">' in page and '<tr data-arm="B">' in page and "Send the winner to the rest now" in page
    arms = staff.get(admin_url("progress_json", broadcast.pk)).json()["arms"]
    assert [(a["arm"], a["clicked"]) for a in arms[:2]] == [("A", 1), ("B", 0)]
    assert arms[2] == {"arm": "", "deliveries": held, "held": True}

    staff.post(admin_url("action", broadcast.pk, "send-winner"))

    broadcast.refresh_from_db()
    assert broadcast.ab_winner == "A"
    assert broadcast.deliveries.filter(status=Delivery.Status.PENDING, arm="A").count() == held
    assert JobRecord.objects.of_kinds(start_broadcast).filter(args=[broadcast.pk]).exists()


def test_progress_of_a_broadcast_without_arms_shows_no_arms(staff, bot):
    members(bot, 5)
    broadcast = fanned_out(broadcast_with(bot, languages=["fr"]))

    assert staff.get(admin_url("progress_json", broadcast.pk)).json()["arms"] == []
    assert "progress-arms" not in staff.get(admin_url("progress", broadcast.pk)).content.decode()


def test_an_arms_own_photo_is_uploaded_once_and_the_other_arm_sends_its_text(
    telegram_bot, fake_telegram, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    members(telegram_bot, 20, first_id=300)
    broadcast = Broadcast.objects.create(bot=telegram_bot, text="Text for #first_name")
    version = MessageVersion(broadcast=broadcast, arm="B", text="Look, #first_name!")
    version.photo.save("poster.png", ContentFile(tiny_png()), save=False)
    version.save()
    start_broadcast(broadcast.pk)
    send_deliveries(broadcast.pk)

    arm = dict(broadcast.deliveries.values_list("chat_id", "arm"))
    photos = [c for c in fake_telegram.calls("sendPhoto") if c.status == 200]
    texts = [c for c in fake_telegram.calls("sendMessage") if c.status == 200]
    assert sorted(c.chat_id for c in photos) == sorted(chat for chat, a in arm.items() if a == "B")
    assert sorted(c.chat_id for c in texts) == sorted(chat for chat, a in arm.items() if a == "A")
    assert len([c for c in photos if c.files]) == 1
    assert all(c.params["caption"].startswith("Look, ") for c in photos)


def test_a_test_send_and_the_confirmation_show_the_members_own_version(telegram_bot, fake_telegram):
    french = TelegramUser.objects.create(
        bot=telegram_bot, telegram_id=77, first_name="Élise", language_code="fr", is_subscribed=True
    )
    operator = TelegramUser.objects.create(bot=telegram_bot, telegram_id=78, first_name="Olga", is_subscribed=True)
    broadcast = Broadcast.objects.create(
        bot=telegram_bot, text="Hello #first_name", buttons=[{"text": "Give", "url": "https://example.org/en"}]
    )
    MessageVersion.objects.create(
        broadcast=broadcast,
        language="fr",
        text="Bonjour #first_name",
        buttons=[{"text": "Donner", "url": "https://example.org/fr"}],
    )

    assert send_summary(broadcast).first_text == "Bonjour Élise"
    send_test(broadcast.pk, french.pk, operator.pk)

    sent = fake_telegram.calls("sendMessage", chat_id=78)[-1]
    assert sent.params["text"] == "[TEST]\nBonjour Élise"
    assert sent.params["reply_markup"]["inline_keyboard"][0][0]["url"] == "https://example.org/fr"
