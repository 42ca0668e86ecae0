"""Property-based: whatever a body with the right secret holds, the webhook answers 200, 400, 403
or 413, never 5xx (Telegram would redeliver it for a day); and whatever shape a Telegram update
takes, with fields removed or unknown fields added, the handlers return the status to record
or fail it at once with a reason (PermanentError), never with an error that would be retried."""

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bots import handlers, views
from bots.models import Bot, Update
from queueing.errors import PermanentError

SECRET = "s3cret-token_value"
TAKEN_OR_REFUSED = {200, 400, 403, 413}
CORPUS = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "updates").glob("*/*.json"))


def examples(count: int) -> settings:
    # The fixtures (database, client, fake Telegram) serve every example of a test alike.
    return settings(max_examples=count, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# Surrogates included: json.dumps writes a lone one as the escape PostgreSQL refuses.
any_text = st.text(st.characters(codec=None), max_size=20)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
any_json = st.recursive(
    scalars, lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
)
ids = st.integers() | st.booleans() | st.floats() | any_text | st.integers(min_value=2**63 - 2, max_value=2**70)
carriers = st.sampled_from(["message", "edited_message", "channel_post", "my_chat_member", "callback_query", "poll"])
update_shaped = st.builds(
    lambda update_id, kind, chat_id, user_id, extra: {
        "update_id": update_id,
        kind: {"chat": {"id": chat_id, "type": "private"}, "from": {"id": user_id, "is_bot": False}, "x": extra},
    },
    ids,
    carriers,
    ids,
    ids,
    any_json,
)
bodies = (
    st.builds(json.dumps, any_json | update_shaped).map(str.encode)
    | st.binary(max_size=200)
    | st.integers(1, 3000).map(lambda depth: ('{"update_id": 1, "x": ' + "[" * depth + "]" * depth + "}").encode())
)


@pytest.fixture
def bot(db):
    views._bots.clear()
    yield Bot.objects.create(token="123456:AAE-secret", webhook_secret=SECRET)
    views._bots.clear()


@examples(300)
@given(body=bodies)
def test_any_body_with_the_right_secret_is_taken_or_refused_never_5xx(client, bot, body):
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    # CONTENT_TYPE given outright: the test client leaves it out of a request with an empty body.
    response = client.generic(
        "POST", "/telegram/123456/webhook/", body, headers=headers, CONTENT_TYPE="application/json"
    )

    assert response.status_code in TAKEN_OR_REFUSED, (response.status_code, response.content)


# Fresh ids for every example: a reply into a chat that was just answered would wait for the
# chat's pace, and a redelivered update_id is not stored again.
_fresh = itertools.count(10_000_000)


def renumbered(payload: dict) -> dict:
    """The update with a new update_id and new ids for its chats and people (the same old id
    always becomes the same new one, so a private chat keeps its member's id)."""
    new_ids: dict[int, int] = {}

    def walk(value, key=None):
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if key == "id" and isinstance(value, int) and not isinstance(value, bool):
            return new_ids.setdefault(value, (1 if value >= 0 else -1) * next(_fresh))
        return value

    return {**walk(payload), "update_id": next(_fresh)}


def key_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from key_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from key_paths(child, (*prefix, index))


def container(payload, path):
    for step in path:
        payload = payload[step]
    return payload


@st.composite
def telegram_shaped(draw) -> dict:
    """A real update with some fields removed and unknown fields added."""
    payload = renumbered(json.loads(draw(st.sampled_from(CORPUS)).read_text()))
    for _ in range(draw(st.integers(0, 4))):
        paths = list(key_paths(payload))
        if paths and draw(st.booleans()):
            *parent, key = draw(st.sampled_from(paths))
            del container(payload, parent)[key]
        else:
            dicts = [()] + [path for path in paths if isinstance(container(payload, path), dict)]
            target = container(payload, draw(st.sampled_from(dicts)))
            target[draw(st.text(min_size=1, max_size=12))] = draw(
                st.recursive(
                    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
                    max_leaves=6,
                )
            )
    return payload


@examples(100)
@given(payload=telegram_shaped())
def test_a_telegram_shaped_update_is_handled_or_failed_with_a_reason(client, telegram_bot, fake_telegram, payload):
    headers = {"X-Telegram-Bot-Api-Secret-Token": telegram_bot.webhook_secret}
    response = client.post(telegram_bot.webhook_path(), payload, content_type="application/json", headers=headers)
    assert response.status_code in (200, 400)
    if response.status_code == 400:
        return  # its update_id or a chat id was removed: nothing to handle
    update = Update.objects.select_related("bot").get(update_id=payload["update_id"])

    try:
        status = handlers.handle(update.bot, update)
    except PermanentError as exc:
        assert str(exc)
    else:
        assert status in (Update.Status.PROCESSED, Update.Status.IGNORED)
    assert [call for call in fake_telegram.calls() if not call.ok] == []
