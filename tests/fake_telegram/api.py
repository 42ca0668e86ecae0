"""The Bot API methods themselves: state per bot and the answers Telegram would give.

No HTTP and no locking here: the server parses requests, holds its lock around `BotApi.call`, and
turns `ApiError` into Telegram's error envelope.
"""

from __future__ import annotations

import base64
import itertools
import json
import mimetypes
import os
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.fake_telegram.formatting import FormatError, parse_text
from tests.fake_telegram.objects import (
    JSONDict,
    bot_user,
    chat_for_id,
    detect_entities,
    get_me_result,
    utf16_len,
)
from tests.fake_telegram.records import UploadedFile, normalize_chat_id
from tests.fake_telegram.updates import update_type

_INT_PARAMS = frozenset(
    {
        "message_id",
        "offset",
        "limit",
        "timeout",
        "reply_to_message_id",
        "message_thread_id",
        "duration",
        "width",
        "height",
        "max_connections",
        "cache_time",
        "from_chat_id",
    }
)
_BOOL_PARAMS = frozenset(
    {
        "disable_notification",
        "protect_content",
        "drop_pending_updates",
        "show_alert",
        "has_spoiler",
        "supports_streaming",
        "disable_web_page_preview",
        "allow_sending_without_reply",
        "disable_content_type_detection",
        "show_caption_above_media",
        "allow_paid_broadcast",
    }
)
_JSON_PARAMS = frozenset(
    {"reply_markup", "entities", "caption_entities", "allowed_updates", "link_preview_options", "reply_parameters"}
)
_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_SECRET_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

MAX_TEXT = 4096
MAX_CAPTION = 1024


class ApiError(Exception):
    """An answer with ok=false. `html` replaces the JSON body, as nginx does for a 502."""

    def __init__(
        self, status: int, description: str, parameters: JSONDict | None = None, html: str | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters
        self.html = html

    def envelope(self) -> JSONDict:
        body: JSONDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


@dataclass(slots=True)
class Described:
    """A result that comes with a `description` in the envelope (setWebhook, deleteWebhook)."""

    result: Any
    description: str


def _coerce(name: str, value: Any) -> Any:
    if name == "chat_id":
        return normalize_chat_id(value)
    if not isinstance(value, str):
        return value
    if name in _INT_PARAMS:
        try:
            return int(value)
        except ValueError:
            return value
    if name in _BOOL_PARAMS:
        return value.lower() in ("true", "1")
    if name in _JSON_PARAMS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def normalize_params(raw: Mapping[str, Any]) -> JSONDict:
    """Parameters typed the way Telegram reads them, whatever the encoding: form fields and query strings
    carry "42" and JSON-encoded markup, a JSON body carries real values (or, again, markup as a string)."""
    return {name: _coerce(name, value) for name, value in raw.items()}


@dataclass(eq=False)
class Poller:
    """A getUpdates request waiting for updates (there is at most one per bot)."""

    event: Any  # asyncio.Event, created in the server's loop
    terminated: bool = False


@dataclass(eq=False)
class BotState:
    """Everything the fake remembers for one bot token."""

    token: str
    user: JSONDict
    me: JSONDict
    last_message_id: dict[int | str, int] = field(default_factory=dict)
    messages: dict[tuple[int, int], JSONDict] = field(default_factory=dict)
    deleted: set[tuple[int, int]] = field(default_factory=set)
    webhook: JSONDict | None = None
    last_webhook_error: tuple[int, str] | None = None
    webhook_pending: int = 0
    updates: deque[JSONDict] = field(default_factory=deque)
    allowed_updates: list[str] | None = None
    poller: Poller | None = None

    def next_message_id(self, chat_id: int) -> int:
        message_id = self.last_message_id.get(chat_id, 0) + 1
        self.last_message_id[chat_id] = message_id
        return message_id

    def has_message(self, chat_id: int, message_id: int) -> bool:
        return 0 < message_id <= self.last_message_id.get(chat_id, 0) and (chat_id, message_id) not in self.deleted


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    handler: Callable[[BotApi, BotState, JSONDict, dict[str, UploadedFile]], Any] | None
    sends: bool = False  # creates a message, so it counts against the rate limits


_FILE_PREFIX = {
    "photo": "AgACAgIAAxkBAAI",
    "document": "BQACAgIAAxkBAAI",
    "video": "BAACAgIAAxkBAAI",
    "audio": "CQACAgIAAxkBAAI",
}
_DEFAULT_MIME = {"document": "application/octet-stream", "video": "video/mp4", "audio": "audio/mpeg"}
_DEFAULT_SIZE = 102_400
_PHOTO_SIDES = (90, 320, 800, 1280)


def image_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes of a PNG, GIF or JPEG; None if unknown."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return struct.unpack("<HH", head[6:10])
    if head.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                i += 1
                continue
            marker = head[i + 1]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", head[i + 5 : i + 9])
                return width, height
            (length,) = struct.unpack(">H", head[i + 2 : i + 4])
            i += 2 + length
    return None


class BotApi:
    """The Bot API state of a whole fake server: bots by token, and the files they uploaded."""

    def __init__(self, *, store_messages: bool = True) -> None:
        self.store_messages = store_messages
        self.bots: dict[str, BotState] = {}
        self.files: dict[str, Any] = {}
        self._chats: dict[int | str, JSONDict] = {}
        self._file_counter = itertools.count(1)

    def bot(self, token: str) -> BotState:
        state = self.bots.get(token)
        if state is None:
            state = self.bots[token] = BotState(token, bot_user(token), get_me_result(token))
        return state

    def call(self, spec: MethodSpec, token: str, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        assert spec.handler is not None
        return spec.handler(self, self.bot(token), params, files)

    # --- helpers -----------------------------------------------------------------------------------

    def _chat(self, params: JSONDict) -> JSONDict:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise bad_request("chat_id is empty")
        chat = self._chats.get(chat_id)
        if chat is None:
            if chat_id == 0 or (isinstance(chat_id, str) and not re.fullmatch(r"@[A-Za-z][A-Za-z0-9_]{3,31}", chat_id)):
                raise bad_request("chat not found")
            chat = self._chats[chat_id] = chat_for_id(chat_id)
        return chat

    def _text(
        self, text: Any, parse_mode: Any, entities: Any, *, empty: str, too_long: str, limit: int
    ) -> tuple[str, list[JSONDict]]:
        if not isinstance(text, str) or not text.strip():
            raise bad_request(empty)
        if isinstance(entities, list) and entities:
            plain, found = text, sorted(entities, key=lambda e: (e.get("offset", 0), -e.get("length", 0)))
        else:
            try:
                plain, found = parse_text(text, parse_mode)
            except FormatError as exc:
                raise bad_request(str(exc)) from None
            if not plain.strip():
                raise bad_request(empty)
            auto = detect_entities(plain)
            if auto:
                taken = [(e["offset"], e["offset"] + e["length"]) for e in found]
                found = found + [
                    e for e in auto if not any(s < e["offset"] + e["length"] and e["offset"] < t for s, t in taken)
                ]
                found.sort(key=lambda e: (e["offset"], -e["length"]))
        if utf16_len(plain) > limit:
            raise bad_request(too_long)
        return plain, found

    def _message(self, bot: BotState, chat: JSONDict, params: JSONDict, content: JSONDict) -> JSONDict:
        chat_id = chat["id"]
        message: JSONDict = {"message_id": bot.next_message_id(chat_id)}
        if chat["type"] == "channel":
            message["sender_chat"] = chat
        else:
            message["from"] = bot.user
        message["chat"] = chat
        message["date"] = int(time.time())
        reply_to = params.get("reply_to_message_id")
        if reply_to is None and isinstance(params.get("reply_parameters"), dict):
            reply_to = params["reply_parameters"].get("message_id")
        if isinstance(reply_to, int):
            replied = bot.messages.get((chat_id, reply_to))
            if replied is not None:
                message["reply_to_message"] = {k: v for k, v in replied.items() if k != "reply_to_message"}
        message.update(content)
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        if self.store_messages:
            bot.messages[(chat_id, message["message_id"])] = message
        return message

    def _message_id(self, params: JSONDict) -> int:
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise bad_request("message identifier is not specified")
        return message_id

    def _file_ids(self, kind: str) -> tuple[str, str]:
        n = next(self._file_counter)
        raw = n.to_bytes(8, "big") + os.urandom(40)
        file_id = _FILE_PREFIX[kind] + base64.urlsafe_b64encode(raw).decode().rstrip("=")
        unique = "AQAD" + base64.urlsafe_b64encode(n.to_bytes(3, "big") + os.urandom(6)).decode()
        return file_id, unique

    def _media(self, kind: str, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        value = params.get(kind)
        upload = files.get(kind)
        if isinstance(value, str) and value.startswith("attach://"):
            upload = files.get(value.removeprefix("attach://"))
        if upload is None:
            if not isinstance(value, str) or not value:
                raise bad_request(f"there is no {kind} in the request")
            known = self.files.get(value)
            if known is not None:
                return known
        is_url = upload is None and value.startswith(("http://", "https://"))
        if upload is not None:
            size, filename, mime = upload.size, upload.filename, upload.content_type
            if not mime or mime == "application/octet-stream":
                mime = (filename and mimetypes.guess_type(filename)[0]) or mime
        else:
            size, mime = _DEFAULT_SIZE, None
            filename = os.path.basename(urlsplit(value).path) if is_url else None
        if kind == "photo":
            width, height = (upload and image_size(upload.head)) or (1280, 720)
            return self._photo_sizes(width, height, size)
        file_id, unique_id = self._file_ids(kind) if upload is not None or is_url else (value, self._file_ids(kind)[1])
        media: JSONDict = {}
        if kind in ("video", "audio"):
            media["duration"] = params.get("duration") if isinstance(params.get("duration"), int) else 0
        if kind == "video":
            media["width"] = params.get("width") if isinstance(params.get("width"), int) else 1280
            media["height"] = params.get("height") if isinstance(params.get("height"), int) else 720
        if kind == "audio":
            for key in ("performer", "title"):
                if isinstance(params.get(key), str):
                    media[key] = params[key]
        if filename:
            media["file_name"] = filename
        media["mime_type"] = mime or _DEFAULT_MIME[kind]
        media.update(file_id=file_id, file_unique_id=unique_id, file_size=size)
        if self.store_messages:
            self.files[file_id] = media
        return media

    def _photo_sizes(self, width: int, height: int, size: int) -> list[JSONDict]:
        sizes: list[JSONDict] = []
        longest = max(width, height, 1)
        for side in _PHOTO_SIDES:
            scale = min(1.0, side / longest)
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
            file_id, unique_id = self._file_ids("photo")
            file_size = max(1, round(size * scale * scale))
            sizes.append(
                {"file_id": file_id, "file_unique_id": unique_id, "file_size": file_size, "width": w, "height": h}
            )
            if scale == 1.0:
                break
        if self.store_messages:
            for photo in sizes:
                self.files[photo["file_id"]] = sizes
        return sizes

    def _send_media(self, kind: str, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        chat = self._chat(params)
        content: JSONDict = {kind: self._media(kind, params, files)}
        caption = params.get("caption")
        if isinstance(caption, str) and caption:
            text, entities = self._text(
                caption,
                params.get("parse_mode"),
                params.get("caption_entities"),
                empty="message caption is empty",
                too_long="message caption is too long",
                limit=MAX_CAPTION,
            )
            content["caption"] = text
            if entities:
                content["caption_entities"] = entities
        return self._message(bot, chat, params, content)

    # --- updates -----------------------------------------------------------------------------------

    def queue_update(self, bot: BotState, update: JSONDict) -> None:
        """Keep an update for getUpdates; a message in it advances the chat's message ids."""
        bot.updates.append(update)
        kind = update_type(update)
        payload = update.get(kind) if kind else None
        if isinstance(payload, dict) and "message_id" in payload and isinstance(payload.get("chat"), dict):
            chat_id = payload["chat"]["id"]
            bot.last_message_id[chat_id] = max(bot.last_message_id.get(chat_id, 0), payload["message_id"])

    def take_updates(self, bot: BotState, params: JSONDict) -> list[JSONDict]:
        """getUpdates without the waiting: confirm everything below `offset`, return what is left."""
        if bot.webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active;"
                " use deleteWebhook to delete the webhook first",
            )
        offset = params.get("offset")
        if isinstance(offset, int) and offset < 0:
            while len(bot.updates) > -offset:
                bot.updates.popleft()
        elif isinstance(offset, int) and offset > 0:
            while bot.updates and bot.updates[0]["update_id"] < offset:
                bot.updates.popleft()
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            bot.allowed_updates = allowed or None
        if bot.allowed_updates:
            kept = [u for u in bot.updates if update_type(u) in bot.allowed_updates]
            if len(kept) != len(bot.updates):
                bot.updates = deque(kept)
        limit = params.get("limit")
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        return list(itertools.islice(bot.updates, limit))

    # --- methods -----------------------------------------------------------------------------------

    def get_me(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        return bot.me

    def send_message(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        chat = self._chat(params)
        text, entities = self._text(
            params.get("text"),
            params.get("parse_mode"),
            params.get("entities"),
            empty="message text is empty",
            too_long="message is too long",
            limit=MAX_TEXT,
        )
        content: JSONDict = {"text": text}
        if entities:
            content["entities"] = entities
        return self._message(bot, chat, params, content)

    def edit_message_text(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> Any:
        parsed = {"empty": "message text is empty", "too_long": "message is too long", "limit": MAX_TEXT}
        if params.get("inline_message_id"):
            self._text(params.get("text"), params.get("parse_mode"), params.get("entities"), **parsed)
            return True
        chat = self._chat(params)
        message_id = self._message_id(params)
        text, entities = self._text(params.get("text"), params.get("parse_mode"), params.get("entities"), **parsed)
        chat_id = chat["id"]
        if not bot.has_message(chat_id, message_id):
            raise bad_request("message to edit not found")
        markup = params.get("reply_markup")
        markup = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        old = bot.messages.get((chat_id, message_id))
        if old is not None:
            if "text" not in old:
                raise bad_request("there is no text in the message to edit")
            if old["text"] == text and old.get("entities", []) == entities and old.get("reply_markup") == markup:
                raise bad_request(
                    "message is not modified: specified new message content and reply markup are exactly the same"
                    " as a current content and reply markup of the message"
                )
        now = int(time.time())
        message: JSONDict = {"message_id": message_id}
        if chat["type"] == "channel":
            message["sender_chat"] = chat
        else:
            message["from"] = (old or {}).get("from", bot.user)
        message.update(chat=chat, date=(old or {}).get("date", now), edit_date=now, text=text)
        if entities:
            message["entities"] = entities
        if markup:
            message["reply_markup"] = markup
        if self.store_messages:
            bot.messages[(chat_id, message_id)] = message
        return message

    def delete_message(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> bool:
        chat_id = self._chat(params)["id"]
        message_id = self._message_id(params)
        if not bot.has_message(chat_id, message_id):
            raise bad_request("message to delete not found")
        bot.deleted.add((chat_id, message_id))
        bot.messages.pop((chat_id, message_id), None)
        return True

    def send_chat_action(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> bool:
        self._chat(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        return True

    def send_photo(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        return self._send_media("photo", bot, params, files)

    def send_document(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        return self._send_media("document", bot, params, files)

    def send_video(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        return self._send_media("video", bot, params, files)

    def send_audio(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        return self._send_media("audio", bot, params, files)

    def set_webhook(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> Described:
        url = params.get("url") or ""
        if not url:
            return self.delete_webhook(bot, params, files)
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            # Real Telegram insists on HTTPS; the fake also takes http:// so tests can use loopback.
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not (isinstance(secret, str) and _SECRET_TOKEN_RE.match(secret)):
            raise bad_request("secret token contains unallowed characters")
        if params.get("drop_pending_updates"):
            bot.updates.clear()
        allowed = params.get("allowed_updates")
        bot.webhook = {
            "url": url,
            "secret_token": secret,
            "max_connections": params.get("max_connections") or 40,
            "allowed_updates": allowed if isinstance(allowed, list) and allowed else None,
            "ip_address": params.get("ip_address") or "127.0.0.1",
            "set_at": time.time(),
        }
        bot.last_webhook_error = None
        return Described(True, "Webhook was set")

    def delete_webhook(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> Described:
        if params.get("drop_pending_updates"):
            bot.updates.clear()
        if bot.webhook is None:
            return Described(True, "Webhook is already deleted")
        bot.webhook = None
        return Described(True, "Webhook was deleted")

    def get_webhook_info(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> JSONDict:
        if bot.webhook is None:
            return {"url": "", "has_custom_certificate": False, "pending_update_count": len(bot.updates)}
        info: JSONDict = {
            "url": bot.webhook["url"],
            "has_custom_certificate": False,
            "pending_update_count": bot.webhook_pending,
            "ip_address": bot.webhook["ip_address"],
        }
        if bot.last_webhook_error is not None:
            info["last_error_date"], info["last_error_message"] = bot.last_webhook_error
        info["max_connections"] = bot.webhook["max_connections"]
        if bot.webhook["allowed_updates"]:
            info["allowed_updates"] = bot.webhook["allowed_updates"]
        return info

    def answer_callback_query(self, bot: BotState, params: JSONDict, files: dict[str, UploadedFile]) -> bool:
        if not params.get("callback_query_id"):
            raise bad_request("query is too old and response timeout expired or query ID is invalid")
        return True


METHODS: dict[str, MethodSpec] = {
    spec.name.lower(): spec
    for spec in (
        MethodSpec("getMe", BotApi.get_me),
        MethodSpec("sendMessage", BotApi.send_message, sends=True),
        MethodSpec("editMessageText", BotApi.edit_message_text),
        MethodSpec("deleteMessage", BotApi.delete_message),
        MethodSpec("sendChatAction", BotApi.send_chat_action),
        MethodSpec("sendPhoto", BotApi.send_photo, sends=True),
        MethodSpec("sendDocument", BotApi.send_document, sends=True),
        MethodSpec("sendVideo", BotApi.send_video, sends=True),
        MethodSpec("sendAudio", BotApi.send_audio, sends=True),
        MethodSpec("setWebhook", BotApi.set_webhook),
        MethodSpec("deleteWebhook", BotApi.delete_webhook),
        MethodSpec("getWebhookInfo", BotApi.get_webhook_info),
        MethodSpec("getUpdates", None),  # answered by the server: it may wait
        MethodSpec("answerCallbackQuery", BotApi.answer_callback_query),
    )
}
