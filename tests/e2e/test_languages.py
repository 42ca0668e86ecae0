"""A French-speaking member through the real path: updates posted by the fake Telegram to the
webhook of a live server, a real `telegram` qcluster answering in the member's language
beside an English-speaking member, then a broadcast's French version."""

import pytest

from broadcasts.models import Broadcast, MessageVersion
from broadcasts.tasks import start_broadcast
from tests.e2e.test_broadcasts import FAST, finished
from tests.e2e.test_ingress import replies_to
from tests.e2e.test_variants import texts_by_chat
from tests.fake_telegram import make_user, updates
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_a_french_speaking_member_gets_french_replies_and_the_french_version(webhook_bot, fake_telegram, clusters):
    clusters.start("telegram", **FAST)
    amelie = make_user(701, first_name="Amélie", language_code="fr-CA")
    ann = make_user(702, first_name="Ann", language_code="en")

    # Interleaved, so one worker answers both languages in turn.
    for text in ["/start", "/pledge", "/pledge 1,250.50", "/pledge"]:
        for user in (amelie, ann):
            fake_telegram.push_update(webhook_bot.token, updates.text_message(webhook_bot.token, text, user=user))

    assert replies_to(fake_telegram, 701, 4) == [
        "Bonjour Amélie ! Vous recevrez désormais les nouvelles de la campagne.\n"
        "Envoyez /pledge pour voir votre promesse de don, /help pour en savoir plus.",
        "Vous n'avez pas encore de promesse de don. Envoyez /pledge 250 pour promettre 250.",
        "Merci ! J'ai enregistré votre promesse de don de 1\xa0250,50 USD.",
        "Promesse : 1\xa0250,50 USD\nVersé : 0 USD\nReste dû : 1\xa0250,50 USD",
    ]
    assert replies_to(fake_telegram, 702, 4) == [
        "Hi Ann! You're subscribed to campaign updates.\nSend /pledge to see your pledge, /help for more.",
        "You have no pledge yet. Send /pledge 250 to pledge 250.",
        "Thank you! I recorded your pledge of 1,250.50 USD.",
        "Pledge: 1,250.50 USD\nPaid: 0 USD\nBalance: 1,250.50 USD",
    ]

    broadcast = Broadcast.objects.create(bot=webhook_bot, text="Hello #first_name")
    MessageVersion.objects.create(broadcast=broadcast, language="fr", text="Bonjour #first_name")
    start_broadcast.enqueue(broadcast.pk)

    wait_for(lambda: finished(broadcast), timeout=60, what="the broadcast to finish")
    sent = texts_by_chat(fake_telegram)
    assert sent[701][4:] == ["Bonjour Amélie"]
    assert sent[702][4:] == ["Hello Ann"]
