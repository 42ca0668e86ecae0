"""Reading raw updates cheaply, before anything else touches them."""

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


class MalformedUpdate(ValueError):
    pass


def update_id_of(payload: object) -> int:
    if not isinstance(payload, dict):
        raise MalformedUpdate("the update must be a JSON object")
    update_id = payload.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise MalformedUpdate("the update has no integer update_id")
    return update_id


def chat_id_of(payload: dict) -> int | None:
    """The chat whose updates must be handled in order, or None if the update has none."""
    for key in _CHAT_CARRIERS:
        carrier = payload.get(key)
        if isinstance(carrier, dict):
            chat = carrier.get("chat")
            if isinstance(chat, dict) and isinstance(chat.get("id"), int):
                return chat["id"]
    for key in _USER_CARRIERS:
        carrier = payload.get(key)
        if isinstance(carrier, dict):
            user = carrier.get("from")
            if isinstance(user, dict) and isinstance(user.get("id"), int):
                return user["id"]
    return None
