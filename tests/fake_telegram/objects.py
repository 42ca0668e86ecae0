"""Telegram objects shared by the fake server and the update builders: bots, users, chats, entities.

Everything here is deterministic: a bot is fully described by its token and a user by its id, so
a test can build the objects it expects without asking the server.
"""

from __future__ import annotations

import itertools
import re
import threading
import zlib
from typing import Any

JSONDict = dict[str, Any]

TOKEN_RE = re.compile(r"^(\d{1,20}):([A-Za-z0-9_-]{1,100})$")

_FIRST_NAMES = ("Alice", "Boris", "Chen", "Dana", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas")
_LAST_NAMES = ("Smith", "Ivanova", "Wang", "Cohen", "Yilmaz", "Haddad", "Berg", "Tanaka", "Silva", "Weber")

_user_ids = itertools.count(700_000_001)
_group_ids = itertools.count(1_000_001)
_lock = threading.Lock()


def make_token(bot_id: int = 123456789, secret: str | None = None) -> str:
    """A token shaped like Telegram's (`<bot id>:<35 characters>`)."""
    if secret is None:
        secret = f"AAFake{bot_id:x}".ljust(35, "x")[:35]
    return f"{bot_id}:{secret}"


def is_valid_token(token: str) -> bool:
    """True for a token shaped like `<digits>:<secret>`; the fake accepts any such token."""
    return TOKEN_RE.match(token) is not None


def bot_id_from_token(token: str) -> int:
    """The bot's user id: the digits before ':'."""
    return int(token.split(":", 1)[0])


def bot_user(token: str) -> JSONDict:
    """The bot's User object as it appears in `from` of the messages it sends."""
    bot_id = bot_id_from_token(token)
    return {"id": bot_id, "is_bot": True, "first_name": f"Fake Bot {bot_id}", "username": f"bot{bot_id}_bot"}


def get_me_result(token: str) -> JSONDict:
    """The result of getMe: the bot's User object with the bot-only capability fields."""
    return {
        **bot_user(token),
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


def make_user(
    user_id: int | None = None,
    *,
    first_name: str | None = None,
    last_name: str | None = None,
    username: str | None = None,
    language_code: str | None = "en",
    is_premium: bool | None = None,
) -> JSONDict:
    """A human User object; names are derived from the id unless given (pass "" to omit one)."""
    if user_id is None:
        with _lock:
            user_id = next(_user_ids)
    first = first_name if first_name is not None else _FIRST_NAMES[user_id % 10]
    last = last_name if last_name is not None else _LAST_NAMES[(user_id // 10) % 10]
    if username is None:
        username = f"{first.lower() or 'user'}_{last.lower() or 'tg'}_{user_id % 10_000}"
    user: JSONDict = {"id": user_id, "is_bot": False, "first_name": first or "User"}
    if last:
        user["last_name"] = last
    if username:
        user["username"] = username
    if language_code:
        user["language_code"] = language_code
    if is_premium:
        user["is_premium"] = True
    return user


def private_chat(user: JSONDict) -> JSONDict:
    """The private Chat with a user, as it appears in `message.chat`."""
    chat: JSONDict = {"id": user["id"], "first_name": user["first_name"]}
    for key in ("last_name", "username"):
        if user.get(key):
            chat[key] = user[key]
    chat["type"] = "private"
    return chat


def group_chat(
    chat_id: int | None = None, title: str | None = None, *, supergroup: bool = True, username: str | None = None
) -> JSONDict:
    """A group or supergroup Chat; supergroup ids look like -100xxxxxxxxxx as in Telegram."""
    if chat_id is None:
        with _lock:
            n = next(_group_ids)
        chat_id = -(1_000_000_000_000 + n) if supergroup else -(4_000_000_000 + n)
    chat: JSONDict = {"id": chat_id, "title": title or f"Group {abs(chat_id)}"}
    if username:
        chat["username"] = username
    chat["type"] = "supergroup" if supergroup else "group"
    return chat


def channel_chat(chat_id: int | None = None, title: str | None = None, username: str | None = None) -> JSONDict:
    """A channel Chat."""
    if chat_id is None:
        with _lock:
            chat_id = -(1_000_000_000_000 + next(_group_ids))
    chat: JSONDict = {"id": chat_id, "title": title or f"Channel {abs(chat_id)}"}
    if username:
        chat["username"] = username
    chat["type"] = "channel"
    return chat


def channel_id_for_username(username: str) -> int:
    """A stable channel id for `@username`, so repeated sends land in the same chat."""
    return -(1_000_000_000_000 + zlib.crc32(username.lower().encode()) % 1_000_000_000)


def chat_for_id(chat_id: int | str) -> JSONDict:
    """The Chat the bot sees when it sends to `chat_id`: private for positive ids, group or supergroup for
    negative ones (supergroups have the -100 prefix), channel for `@username`."""
    if isinstance(chat_id, str):
        name = chat_id.lstrip("@")
        return channel_chat(channel_id_for_username(name), title=name, username=name)
    if chat_id > 0:
        return private_chat(make_user(chat_id))
    return group_chat(chat_id, supergroup=chat_id <= -1_000_000_000_000)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's entity offsets and length limits."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


_ENTITY_RE = re.compile(
    r"(?P<url>\bhttps?://[^\s<>\"']+)"
    r"|(?<![\w/])(?P<bot_command>/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?)(?![\w/])"
    r"|(?<![\w@])(?P<mention>@[A-Za-z][A-Za-z0-9_]{4,31})\b"
    r"|(?<![\w#])(?P<hashtag>#[^\W\d]\w*)"
)
_URL_TRAILING = ".,;:!?)]}'\""


def detect_entities(text: str) -> list[JSONDict]:
    """The entities Telegram detects by itself in plain text: bot_command, url, mention and hashtag."""
    if not any(c in text for c in "/@#"):
        return []
    entities: list[JSONDict] = []
    for match in _ENTITY_RE.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        start, end = match.span()
        if kind == "url":
            while end > start and text[end - 1] in _URL_TRAILING:
                end -= 1
        offset = utf16_len(text[:start])
        entities.append({"offset": offset, "length": utf16_len(text[start:end]), "type": kind})
    return entities
