"""Reading raw updates cheaply, before anything else touches them."""

import json
import math
import re

# Where each kind of update keeps its chat, in the order Telegram documents them.
_CHAT_CARRIERS = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "message_reaction",
    "chat_boost",
)
# Updates with no chat are ordered by the user who caused them.
_USER_CARRIERS = ("callback_query", "inline_query", "chosen_inline_result", "shipping_query", "pre_checkout_query")

# The columns update_id and chat_id are bigint; Telegram's ids use at most 52 bits.
SMALLEST_ID, LARGEST_ID = -(2**63), 2**63 - 1
# Telegram nests a few levels (a reply inside a message inside an update); a deeper body is not
# an update, and every later reader (the database, Django, python-telegram-bot) recurses into it.
MAX_DEPTH = 32
# Telegram's numbers are short; PostgreSQL's numeric refuses fractions of over 16,383 digits.
_LONGEST_NUMBER = 40
_LARGEST_EXPONENT = 400
# JSON escapes that no database stores as they are: NUL, and a surrogate that is not half of a pair
# (or may not be: an escaped backslash before "ud800" can make a lone low surrogate look paired).
_UNSTORABLE_ESCAPE = re.compile(
    r"\\\\u[dD]|\\u(?:0000|[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|[dD][c-fC-F](?<!\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F]))"
)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class MalformedUpdate(ValueError):
    pass


def is_id(value: object) -> bool:
    """An integer that fits the bigint columns (a JSON `true` is a bool, not an id)."""
    return isinstance(value, int) and not isinstance(value, bool) and SMALLEST_ID <= value <= LARGEST_ID


def update_id_of(payload: object) -> int:
    if not isinstance(payload, dict):
        raise MalformedUpdate("the update must be a JSON object")
    update_id = payload.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise MalformedUpdate("the update has no integer update_id")
    if not is_id(update_id):
        raise MalformedUpdate("the update's update_id is out of range")
    return update_id


def chat_id_of(payload: dict) -> int | None:
    """The chat whose updates must be handled in order, or None if the update has none."""
    for key in _CHAT_CARRIERS:
        carrier = payload.get(key)
        if isinstance(carrier, dict) and isinstance(chat := carrier.get("chat"), dict) and "id" in chat:
            return _checked_id(chat["id"], "chat")
    for key in _USER_CARRIERS:
        carrier = payload.get(key)
        if isinstance(carrier, dict) and isinstance(user := carrier.get("from"), dict) and "id" in user:
            return _checked_id(user["id"], "sender")
    return None


def _checked_id(value: object, whose: str) -> int:
    if not is_id(value):
        raise MalformedUpdate(f"the update's {whose} id is not an integer in range")
    return value


def loads(text: str) -> object:
    """JSON as every database stores it. Raises MalformedUpdate for what Telegram never sends
    (NaN, Infinity, numbers out of range, nesting deeper than MAX_DEPTH) and ValueError for
    text that is not JSON."""
    try:
        payload = _decoder.decode(text)
    except RecursionError:
        raise MalformedUpdate(f"the update is nested more than {MAX_DEPTH} levels deep") from None
    # Cheap on the hot path: only a body with that many brackets can be nested that deep.
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(payload) > MAX_DEPTH:
        raise MalformedUpdate(f"the update is nested more than {MAX_DEPTH} levels deep")
    return payload


def storable(text: str, payload: object) -> tuple[str, object]:
    """The text and payload to store: NUL (PostgreSQL's jsonb refuses it) and lone surrogates
    (PostgreSQL refuses them, and no client can encode them) become U+FFFD, which keeps the
    UTF-16 length that message entity offsets count in."""
    if not _UNSTORABLE_ESCAPE.search(text):
        return text, payload
    payload = _replace_unstorable(payload)
    return json.dumps(payload), payload


def _refuse_constant(name: str) -> float:
    raise MalformedUpdate(f"the update has a non-finite number ({name})")


def _finite_float(literal: str) -> float:
    if len(literal) <= _LONGEST_NUMBER:
        value = float(literal)
        exponent = literal.lower().partition("e")[2]
        if math.isfinite(value) and abs(int(exponent or 0)) <= _LARGEST_EXPONENT:
            return value
    raise MalformedUpdate("the update has a number out of range")


_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _depth(value: object) -> int:
    deepest, level = 0, [(value, 1)]
    while level:
        node, depth = level.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                level.append((child, depth + 1))
        deepest = max(deepest, depth)
    return deepest


def _replace_unstorable(value):
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))
    if isinstance(value, dict):
        return {_replace_unstorable(k): _replace_unstorable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_unstorable(v) for v in value]
    return value
