"""Builders for the Update objects Telegram sends to a bot (webhook body or getUpdates result).

Each builder takes the bot's token first, because update ids and message ids are per bot and the
bot's own User object appears inside some updates (callback queries, my_chat_member). Update ids
increase across the whole process, as Telegram's do, and never repeat across processes: a webhook
drops an update_id it has seen, so a second demo run must not start where the first one did.

    update = text_message(token, "/start")
    fake.push_update(token, update)          # for getUpdates
    fake.post_update(webhook_url, update)    # straight to a webhook
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from typing import Any

from tests.fake_telegram.objects import (
    JSONDict,
    bot_id_from_token,
    bot_user,
    channel_chat,
    detect_entities,
    make_user,
    private_chat,
)

__all__ = [
    "UPDATE_TYPES",
    "callback_query",
    "channel_post",
    "edited_message",
    "my_chat_member",
    "next_message_id",
    "next_update_id",
    "text_message",
    "update_type",
    "with_update_id",
]

UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)

# Room for this many updates per millisecond of a process's life before a process started
# later could reach the same ids; the ids stay below 2**53, safe for JSON readers everywhere.
UPDATE_IDS_PER_MS = 1_000
_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def _first_update_id() -> int:
    """Later processes start higher: getUpdates drops ids below the last confirmed offset."""
    return (time.time_ns() // 1_000_000 - _EPOCH_MS) * UPDATE_IDS_PER_MS


_lock = threading.Lock()
_update_ids = itertools.count(_first_update_id())
_message_ids: dict[tuple[int, int], int] = {}


def next_update_id(token: str) -> int:
    """The next update_id for this bot: strictly increasing, and unique across bots and processes."""
    with _lock:
        return next(_update_ids)


def next_message_id(token: str, chat_id: int) -> int:
    """The next message_id in a chat, as seen by this bot (the builders' own counter)."""
    key = (bot_id_from_token(token), chat_id)
    with _lock:
        _message_ids[key] = _message_ids.get(key, 0) + 1
        return _message_ids[key]


def _last_message_id(token: str, chat_id: int) -> int:
    with _lock:
        return _message_ids.get((bot_id_from_token(token), chat_id), 0)


def update_type(update: JSONDict) -> str | None:
    """The kind of an update: the name of its one field besides update_id ("message", ...)."""
    for key in update:
        if key != "update_id":
            return key
    return None


def _update(token: str, kind: str, payload: JSONDict) -> JSONDict:
    return {"update_id": next_update_id(token), kind: payload}


def _message(
    token: str,
    text: str,
    *,
    chat: JSONDict,
    user: JSONDict | None,
    message_id: int | None,
    date: int | None,
    entities: list[JSONDict] | None,
    extra: JSONDict | None = None,
) -> JSONDict:
    message: JSONDict = {"message_id": message_id or next_message_id(token, chat["id"])}
    if user is not None:
        message["from"] = user
    if chat["type"] == "channel":
        message["sender_chat"] = chat
    message["chat"] = chat
    message["date"] = date if date is not None else int(time.time())
    if extra:
        message.update(extra)
    message["text"] = text
    found = detect_entities(text) if entities is None else entities
    if found:
        message["entities"] = found
    return message


def text_message(
    token: str,
    text: str,
    *,
    user: JSONDict | None = None,
    chat: JSONDict | None = None,
    message_id: int | None = None,
    date: int | None = None,
    entities: list[JSONDict] | None = None,
    reply_to_message: JSONDict | None = None,
) -> JSONDict:
    """An Update with a text `message` from a user: private chat with that user unless `chat` is given.

    `entities` defaults to what Telegram detects itself: bot_command for "/start" (also "/start@bot"),
    url for http(s) links, mention, hashtag.
    """
    user = user or make_user()
    chat = chat or private_chat(user)
    extra = {"reply_to_message": reply_to_message} if reply_to_message else None
    message = _message(
        token, text, chat=chat, user=user, message_id=message_id, date=date, entities=entities, extra=extra
    )
    return _update(token, "message", message)


def edited_message(
    token: str,
    text: str,
    *,
    original: JSONDict | None = None,
    user: JSONDict | None = None,
    chat: JSONDict | None = None,
    message_id: int | None = None,
    date: int | None = None,
    edit_date: int | None = None,
) -> JSONDict:
    """An Update with `edited_message`: the new text of an earlier message.

    `original` may be the Update from `text_message` (or its message); its chat, sender, id and date
    are kept. Without it the last message the builders made in that chat is the one edited.
    """
    if original is not None:
        source = original.get("message") or original.get("edited_message") or original
        user, chat = source.get("from"), source["chat"]
        message_id, date = source["message_id"], source["date"]
    else:
        user = user or make_user()
        chat = chat or private_chat(user)
        message_id = message_id or _last_message_id(token, chat["id"]) or next_message_id(token, chat["id"])
    now = int(time.time())
    message = _message(
        token,
        text,
        chat=chat,
        user=user,
        message_id=message_id,
        date=date if date is not None else now,
        entities=None,
        extra={"edit_date": edit_date if edit_date is not None else now},
    )
    return _update(token, "edited_message", message)


def channel_post(
    token: str,
    text: str,
    *,
    chat: JSONDict | None = None,
    message_id: int | None = None,
    date: int | None = None,
    author_signature: str | None = None,
) -> JSONDict:
    """An Update with a `channel_post`: no `from`, `sender_chat` is the channel itself."""
    chat = chat or channel_chat()
    extra = {"author_signature": author_signature} if author_signature else None
    message = _message(token, text, chat=chat, user=None, message_id=message_id, date=date, entities=None, extra=extra)
    return _update(token, "channel_post", message)


def callback_query(
    token: str,
    data: str,
    *,
    user: JSONDict | None = None,
    message: JSONDict | None = None,
    message_text: str = "Choose an option:",
    button_text: str = "OK",
    query_id: str | None = None,
) -> JSONDict:
    """An Update with a `callback_query`: the user pressed an inline button with `data`.

    `message` is the bot's message carrying the keyboard; by default one is made in the private chat,
    sent by the bot, with a single button whose callback_data is `data`.
    """
    user = user or make_user()
    if message is None:
        chat = private_chat(user)
        message = {
            "message_id": next_message_id(token, chat["id"]),
            "from": bot_user(token),
            "chat": chat,
            "date": int(time.time()) - 5,
            "text": message_text,
            "reply_markup": {"inline_keyboard": [[{"text": button_text, "callback_data": data}]]},
        }
    query: JSONDict = {
        "id": query_id or str(random.getrandbits(63)),
        "from": user,
        "message": message,
        "chat_instance": str(random.getrandbits(63) - 2**62),
        "data": data,
    }
    return _update(token, "callback_query", query)


def _chat_member(token: str, status: str, until_date: int = 0) -> JSONDict:
    member: JSONDict = {"user": bot_user(token), "status": status}
    if status == "kicked":
        member["until_date"] = until_date
    elif status == "administrator":
        member.update(
            can_be_edited=False,
            is_anonymous=False,
            can_manage_chat=True,
            can_delete_messages=True,
            can_manage_video_chats=True,
            can_restrict_members=True,
            can_promote_members=False,
            can_change_info=True,
            can_invite_users=True,
            can_post_stories=False,
            can_edit_stories=False,
            can_delete_stories=False,
        )
    return member


def my_chat_member(
    token: str,
    new_status: str = "kicked",
    *,
    old_status: str | None = None,
    user: JSONDict | None = None,
    chat: JSONDict | None = None,
    date: int | None = None,
) -> JSONDict:
    """An Update with `my_chat_member`: the bot's own membership changed.

    In a private chat "kicked" means the user blocked the bot and "member" that they unblocked or
    restarted it. `new_status` is one of member, kicked, left, administrator.
    """
    if new_status not in ("member", "kicked", "left", "administrator"):
        raise ValueError(f"unsupported status {new_status!r}")
    user = user or make_user()
    chat = chat or private_chat(user)
    if old_status is None and new_status in ("kicked", "left"):
        old_status = "member"
    elif old_status is None:
        old_status = "kicked" if chat["type"] == "private" else "left"
    change: JSONDict = {
        "chat": chat,
        "from": user,
        "date": date if date is not None else int(time.time()),
        "old_chat_member": _chat_member(token, old_status),
        "new_chat_member": _chat_member(token, new_status),
    }
    return _update(token, "my_chat_member", change)


def with_update_id(token: str, update: dict[str, Any]) -> JSONDict:
    """The update itself if it has an update_id, else a copy with the bot's next one."""
    if "update_id" in update:
        return update
    return {"update_id": next_update_id(token), **update}
