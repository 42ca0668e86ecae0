"""The fake Telegram Bot API, exercised with real python-telegram-bot calls over HTTP. No database."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from telegram import Bot, ChatMemberBanned, ChatMemberMember, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, ChatMigrated, Conflict, Forbidden, NetworkError, RetryAfter, TimedOut
from telegram.request import HTTPXRequest

from tests.fake_telegram import (
    SECRET_HEADER,
    FakeTelegram,
    FakeTelegramControl,
    RateLimiter,
    group_chat,
    make_token,
    make_user,
    updates,
)

# PTB warns about its own int -> timedelta migration whenever a RetryAfter is built.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

T = TypeVar("T")
TOKEN = make_token(5551234)
OTHER_TOKEN = make_token(5559876)
PNG_640x480 = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (640).to_bytes(4, "big") + (480).to_bytes(4, "big") + bytes(500)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeTelegram) -> Iterator[FakeTelegram]:
    server.reset()
    yield server
    server.reset()


@contextlib.asynccontextmanager
async def ptb(base_url: str, token: str = TOKEN, read_timeout: float = 5.0) -> AsyncIterator[Bot]:
    request = HTTPXRequest(connection_pool_size=16, read_timeout=read_timeout, connect_timeout=2.0, pool_timeout=5.0)
    updates_request = HTTPXRequest(read_timeout=read_timeout, connect_timeout=2.0)
    async with Bot(token, base_url=base_url, request=request, get_updates_request=updates_request) as bot:
        yield bot


def seconds(obj: object, attribute: str) -> float:
    """A duration attribute in seconds, whether PTB gives an int or a timedelta (PTB_TIMEDELTA)."""
    value = getattr(obj, attribute)
    return value.total_seconds() if isinstance(value, dtm.timedelta) else value


def http(url: str, data: bytes | None = None, content_type: str | None = None) -> tuple[int, dict[str, Any]]:
    """A raw request (no PTB), for the encodings and error bodies."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --- methods ------------------------------------------------------------------------------------------


def test_get_me_identity_comes_from_the_token(fake: FakeTelegram) -> None:
    async def scenario() -> None:
        async with ptb(fake.base_url) as bot, ptb(fake.base_url, OTHER_TOKEN) as other:
            me = await bot.get_me()
            assert (me.id, me.username, me.is_bot) == (5551234, "bot5551234_bot", True)
            assert (await other.get_me()).id == 5559876

    run(scenario())
    assert {c.token for c in fake.calls("getMe")} == {TOKEN, OTHER_TOKEN}


def test_send_message_returns_a_real_looking_message(fake: FakeTelegram) -> None:
    async def scenario() -> None:
        async with ptb(fake.base_url) as bot:
            first = await bot.send_message(42, "hi /start see https://example.com/x.")
            second = await bot.send_message(42, "again")
            elsewhere = await bot.send_message(43, "other chat")
            group = await bot.send_message(-4001234, "to a group")
            supergroup = await bot.send_message(-1001234567890, "to a supergroup")

            assert (first.message_id, second.message_id, elsewhere.message_id) == (1, 2, 1)
            assert first.from_user.id == 5551234 and first.from_user.is_bot
            assert first.chat.id == 42 and first.chat.type == "private" and first.chat.first_name
            assert abs(first.date.timestamp() - time.time()) < 5
            assert [(e.type, e.offset, e.length) for e in first.entities] == [("bot_command", 3, 6), ("url", 14, 21)]
            assert group.chat.type == "group" and group.chat.title
            assert supergroup.chat.type == "supergroup"

    run(scenario())
    call = fake.calls("sendMessage", chat_id=42)[0]
    assert call.params == {"chat_id": 42, "text": "hi /start see https://example.com/x."}
    assert call.status == 200 and call.answered_at >= call.received_at and call.result["message_id"] == 1
    assert len(fake.calls(chat_id=42)) == 2 and len(fake.calls("SENDMESSAGE")) == 5


def test_parse_modes_produce_entities_and_refuse_bad_markup(fake: FakeTelegram) -> None:
    async def scenario() -> None:
        async with ptb(fake.base_url) as bot:
            html = await bot.send_message(1, '<b>Hi</b> <a href="https://t.me">link</a> &lt;3', parse_mode="HTML")
            assert html.text == "Hi link <3"
            assert [(e.type, e.offset, e.length) for e in html.entities] == [("bold", 0, 2), ("text_link", 3, 4)]
            assert html.entities[1].url == "https://t.me"
            md = await bot.send_message(1, r"*bold* _it_ \. `code`", parse_mode="MarkdownV2")
            assert md.text == "bold it . code"
            assert [e.type for e in md.entities] == ["bold", "italic", "code"]
            with pytest.raises(BadRequest, match=r"(?i)can't parse entities: character '!' is reserved"):
                await bot.send_message(1, "Hello!", parse_mode="MarkdownV2")
            with pytest.raises(BadRequest, match=r'(?i)unsupported start tag "div"'):
                await bot.send_message(1, "<div>x</div>", parse_mode="HTML")

    run(scenario())


def test_missing_or_invalid_parameters_are_bad_requests(fake: FakeTelegram) -> None:
    async def scenario() -> None:
        async with ptb(fake.base_url) as bot:
            with pytest.raises(BadRequest, match="Message text is empty"):
                await bot.send_message(42, "")
            with pytest.raises(BadRequest, match="Message is too long"):
                await bot.send_message(42, "x" * 4097)
            with pytest.raises(BadRequest, match="Chat not found"):
                await bot.send_message("not-a-chat", "hi")
            with pytest.raises(BadRequest, match="There is no photo in the request"):
                await bot.send_photo(42, photo="")

    run(scenario())
    status, body = http(f"{fake.base_url}{TOKEN}/sendMessage", b'{"text": "hi"}', "application/json")
    assert (status, body) == (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat_id is empty"})
    status, body = http(f"{fake.base_url}{TOKEN}/sendMessage?chat_id=42")
    assert body["description"] == "Bad Request: message text is empty"


def test_edit_and_delete_messages(fake: FakeTelegram) -> None:
    async def scenario() -> None:
        async with ptb(fake.base_url) as bot:
            sent = await bot.send_message(42, "draft")
            keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="yes")]])
            edited = await bot.edit_message_text("final", chat_id=42, message_id=sent.message_id, reply_markup=keyboard)
            assert edited.text == "final" and edited.edit_date is not None and edited.message_id == sent.message_id
            assert edited.reply_markup.inline_keyboard[0][0].callback_data == "yes"
            with pytest.raises(BadRequest, match="Message is not modified"):
                await bot.edit_message_text("final", chat_id=42, message_id=sent.message_id, reply_markup=keyboard)
            with pytest.raises(BadRequest, match="Message to edit not found"):
                await bot.edit_message_text("x", chat_id=42, message_id=99)
            assert await bot.delete_message(42, sent.message_id) is True
            with pytest.raises(BadRequest, match="Message to delete not found"):
                await bot.delete_message(42, sent.message_id)
            with pytest.raises(BadRequest, match="Message to edit not found"):
                await bot.edit_message_text("gone", chat_id=42, message_id=sent.message_id)

    run(scenario())
    assert [c.status for c in fake.calls("deleteMessage")] == [200, 400]


def test_chat_action_and_callback_answers(fake: FakeTelegram) -> None:
    async def scenario() -> None:
        async with ptb(fake.base_url) as bot:
            assert await bot.send_chat_action(42, "typing") is True
            with pytest.raises(BadRequest, match="Wrong parameter action"):
                await bot.send_chat_action(42, "dancing")
            assert await bot.answer_callback_query("12345", text="Saved", show_alert=True) is True

    run(scenario())
    assert fake.calls("answerCallbackQuery")[0].params == {
        "callback_query_id": "12345",
        "text": "Saved",
        "show_alert": True,
    }


def test_media_uploads_are_recorded_and_file_ids_reusable(fake: FakeTelegram) -> None:
    async def scenario() -> None:
        async with ptb(fake.base_url) as bot:
            photo = await bot.send_photo(42, photo=PNG_640x480, caption="<i>look</i>", parse_mode="HTML")
            assert photo.caption == "look" and photo.caption_entities[0].type == "italic"
            assert [(p.width, p.height) for p in photo.photo] == [(90, 68), (320, 240), (640, 480)]
            assert all(p.file_id and p.file_unique_id and p.file_size for p in photo.photo)
            again = await bot.send_photo(43, photo=photo.photo[-1].file_id)
            assert again.photo[-1].file_id == photo.photo[-1].file_id

            document = await bot.send_document(42, document=b"a,b\n1,2\n", filename="report.csv")
            assert (document.document.file_name, document.document.file_size) == ("report.csv", 8)
            assert document.document.mime_type == "text/csv"
            video = await bot.send_video(42, video=b"\0" * 2048, filename="clip.mp4", duration=3, width=640, height=360)
            assert seconds(video.video, "duration") == 3
            assert (video.video.width, video.video.height, video.video.file_size) == (640, 360, 2048)
            audio = await bot.send_audio(42, audio=b"\0" * 100, filename="song.mp3", title="Song", performer="Me")
            assert (audio.audio.title, audio.audio.performer, audio.audio.mime_type) == ("Song", "Me", "audio/mpeg")
            by_id = await bot.send_document(42, document="BQACAgIAAxkBAAIBBBBB-some-id")
            assert by_id.document.file_id == "BQACAgIAAxkBAAIBBBBB-some-id"

    run(scenario())
    upload = fake.calls("sendDocument")[0].files[0]
    assert (upload.field, upload.filename, upload.size) == ("document", "report.csv", 8)
    assert upload.content_type == "text/csv"
    assert fake.calls("sendPhoto")[0].files[0].size == len(PNG_640x480)
    assert fake.calls("sendPhoto")[1].files == [] and fake.calls("sendDocument")[1].files == []


def test_encodings_method_case_unknown_methods_and_bad_tokens(fake: FakeTelegram) -> None:
    base = f"{fake.base_url}{TOKEN}"
    status, body = http(f"{base}/sendmessage?chat_id=7&text=query")
    assert status == 200 and body["ok"] and body["result"]["text"] == "query"
    status, body = http(f"{base}/SENDMESSAGE", json.dumps({"chat_id": 7, "text": "json"}).encode(), "application/json")
    assert body["result"]["message_id"] == 2
    form = b"chat_id=-1001&text=form&reply_markup=%7B%22inline_keyboard%22%3A%5B%5D%7D"
    status, body = http(f"{base}/sendMessage", form, "application/x-www-form-urlencoded")
    assert body["result"]["chat"]["id"] == -1001
    assert fake.calls(chat_id=-1001)[0].params["reply_markup"] == {"inline_keyboard": []}
    assert http(f"{base}/getMe")[1]["result"]["username"] == "bot5551234_bot"

    assert http(f"{base}/noSuchMethod") == (404, {"ok": False, "error_code": 404, "description": "Not Found"})
    assert http(f"{fake.base_url}not-a-token/getMe") == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    assert [c.method for c in fake.calls()][-2:] == ["noSuchMethod", "getMe"]
    assert [c.status for c in fake.calls()][-2:] == [404, 401]


# --- webhooks and getUpdates --------------------------------------------------------------------------


class Receiver:
    """A tiny webhook endpoint that records what it gets."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.received.append((dict(self.headers), body))
                receiver.arrived.set()
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


def test_post_update_reaches_a_webhook_with_the_secret_header(fake: FakeTelegram, receiver: Receiver) -> None:
    update = updates.text_message(TOKEN, "/start")
    assert fake.post_update(receiver.url, update, secret_token="s3cret") == 200
    headers, body = receiver.received[0]
    assert headers[SECRET_HEADER] == "s3cret" and headers["Content-Type"] == "application/json"
    assert body == update

    failing = Receiver(status=403)
    try:
        assert fake.post_update(failing.url, update) == 403
        assert SECRET_HEADER not in failing.received[0][0]
    finally:
        failing.close()


def test_webhook_methods_and_delivery_of_pushed_updates(fake: FakeTelegram, receiver: Receiver) -> None:
    async def scenario() -> None:
        async with ptb(fake.base_url) as bot:
            assert await bot.set_webhook(receiver.url, secret_token="abc_DEF-1", allowed_updates=["message"])
            info = await bot.get_webhook_info()
            assert info.url == receiver.url and info.allowed_updates == ("message",)
            with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
                await bot.get_updates()

            pushed = fake.push_update(TOKEN, updates.text_message(TOKEN, "hello"))
            assert await asyncio.to_thread(receiver.arrived.wait, 5)
            headers, body = receiver.received[0]
            assert headers[SECRET_HEADER] == "abc_DEF-1" and body == pushed

            assert await bot.delete_webhook() is True
            assert (await bot.get_webhook_info()).url == ""

    run(scenario())
    assert fake.webhook(TOKEN) is None
    assert fake.calls("setWebhook")[0].response["description"] == "Webhook was set"


def test_get_updates_offsets_and_long_polling(fake: FakeTelegram) -> None:
    pushed = [fake.push_update(TOKEN, updates.text_message(TOKEN, f"m{i}")) for i in range(3)]
    ids = [u["update_id"] for u in pushed]
    assert ids == sorted(ids) and len(set(ids)) == 3

    async def scenario() -> None:
        async with ptb(fake.base_url) as bot:
            got = await bot.get_updates()
            assert [u.update_id for u in got] == ids and got[0].message.text == "m0"
            assert [u.update_id for u in await bot.get_updates()] == ids  # not confirmed yet
            assert [u.update_id for u in await bot.get_updates(offset=ids[1])] == ids[1:]
            assert [u.update_id for u in await bot.get_updates(offset=-1)] == ids[2:]
            assert await bot.get_updates(offset=ids[2] + 1) == ()
            assert fake.pending_updates(TOKEN) == []

            later = threading.Timer(0.3, fake.push_update, (TOKEN, updates.text_message(TOKEN, "late")))
            later.start()
            started = time.monotonic()
            got = await bot.get_updates(offset=ids[2] + 1, timeout=60, read_timeout=90)
            # Answered when the update came, not at the end of the long poll.
            assert [u.message.text for u in got] == ["late"] and time.monotonic() - started < 60

            started = time.monotonic()
            assert await bot.get_updates(offset=got[0].update_id + 1, timeout=1) == ()
            assert time.monotonic() - started >= 0.9

    run(scenario())


def test_a_second_get_updates_terminates_the_waiting_one(fake: FakeTelegram) -> None:
    async def scenario() -> None:
        async with ptb(fake.base_url) as first, ptb(fake.base_url) as second:
            waiting = asyncio.ensure_future(first.get_updates(timeout=5))
            await fake.wait_for_calls_async(1, "getUpdates", answered=False)
            assert await second.get_updates(timeout=0) == ()
            with pytest.raises(Conflict, match="terminated by other getUpdates request"):
                await waiting

    run(scenario())


# --- faults -------------------------------------------------------------------------------------------


def test_faults_map_to_ptb_exceptions(fake: FakeTelegram) -> None:
    async def scenario() -> None:
        async with ptb(fake.base_url) as bot:
            fake.fail("rate_limit", retry_after=3, times=1)
            with pytest.raises(RetryAfter) as retry:
                await bot.send_message(1, "x")
            assert seconds(retry.value, "retry_after") == 3
            assert (await bot.send_message(1, "x")).message_id == 1  # times=1: used up

            fake.fail("blocked", chat_id=42)
            with pytest.raises(Forbidden, match="bot was blocked by the user"):
                await bot.send_message(42, "x")
            with pytest.raises(Forbidden):
                await bot.send_photo(42, photo=PNG_640x480)  # always, any method
            await bot.send_message(43, "other chats are fine")

            fake.fail("chat_not_found", method="sendMessage", chat_id=44, times=2)
            for _ in range(2):
                with pytest.raises(BadRequest, match="Chat not found"):
                    await bot.send_message(44, "x")
            await bot.send_message(44, "x")

            fake.fail("migrated", chat_id=-4001, migrate_to_chat_id=-1009, times=1)
            with pytest.raises(ChatMigrated) as migrated:
                await bot.send_message(-4001, "x")
            assert migrated.value.new_chat_id == -1009

            for error, status in (("server_error", "Internal Server Error"), ("bad_gateway", "Bad Gateway")):
                fake.fail(error, times=1)
                with pytest.raises(NetworkError, match=status):
                    await bot.send_message(45, "x")

            fake.fail("custom", status=400, description="Bad Request: message thread not found", times=1)
            with pytest.raises(BadRequest, match="Message thread not found"):
                await bot.send_message(45, "x")

            fake.clear_faults()
            await bot.send_message(42, "unblocked")

    run(scenario())
    statuses = [c.status for c in fake.calls("sendMessage")]
    assert statuses.count(429) == 1 and statuses.count(403) == 1 and statuses.count(500) == 1
    assert statuses.count(502) == 1 and fake.calls("sendMessage")[-1].status == 200
    assert fake.rate_limited_count == 0  # injected 429s are not the limiter's


def test_delays_and_hangs(fake: FakeTelegram) -> None:
    async def scenario() -> None:
        async with ptb(fake.base_url, read_timeout=0.5) as bot:
            fake.delay(0.3, chat_id=7, times=1)
            started = time.monotonic()
            await bot.send_message(7, "slow")
            assert time.monotonic() - started >= 0.3
            # Another chat is not held up: answered while chat 7's delayed answer still waits.
            fake.delay(0.4, chat_id=7, times=1)
            slow = asyncio.create_task(bot.send_message(7, "slow again"))
            await bot.send_message(8, "fast")
            assert not slow.done()
            await slow

            fake.fail("rate_limit", delay=0.2, retry_after=5, times=1)
            with pytest.raises(RetryAfter):
                await bot.send_message(7, "slow and limited")

            fake.hang(method="sendMessage", times=1)
            with pytest.raises(TimedOut):
                await bot.send_message(9, "never answered")
            await bot.send_message(9, "answered again")

    run(scenario())
    hung = fake.calls("sendMessage", chat_id=9)[0]
    assert hung.status is None and hung.answered_at is None
    slow = fake.calls(chat_id=7)[0]
    assert slow.duration is not None and slow.duration >= 0.3


# --- rate limits --------------------------------------------------------------------------------------


def test_rate_limiter_sliding_windows() -> None:
    limiter = RateLimiter(per_second=3, per_chat_per_second=1, per_group_per_minute=2)
    assert limiter.check("t", 1, now=100.0) is None
    assert limiter.check("t", 1, now=100.5) == 1  # same chat within a second
    assert limiter.check("t", 1, now=101.01) is None  # the window slid
    assert limiter.check("t", 2, now=101.02) is None
    assert limiter.check("t", 3, now=101.03) is None
    assert limiter.check("t", 4, now=101.04) == 1  # 3 per second over all chats
    assert limiter.check("other", 4, now=101.04) is None  # each bot has its own limits
    assert limiter.check("t", -5, now=200.0) is None
    assert limiter.check("t", -5, now=202.0) is None
    assert limiter.check("t", -5, now=204.0) == 56  # 2 per minute in a group: wait for the first to expire


def test_a_bot_may_have_a_limit_of_its_own() -> None:
    limiter = RateLimiter(per_second=3, per_chat_per_second=None, per_bot={"slow": 2})
    assert [limiter.check("slow", chat, now=100.0) for chat in range(1, 4)] == [None, None, 1]
    assert [limiter.check("t", chat, now=100.0) for chat in range(1, 5)] == [None, None, None, 1]
    assert limiter.check("slow", 9, now=101.01) is None  # its window slides as the others' do


def test_paid_broadcast_sends_have_their_own_limit() -> None:
    limiter = RateLimiter(per_second=2, per_chat_per_second=1, paid_per_second=4)
    assert [limiter.check("t", chat, now=100.0, paid=True) for chat in range(1, 6)] == [None] * 4 + [1]
    assert limiter.check("t", 10, now=100.0) is None  # the free limit is untouched by paid sends
    assert limiter.check("t", 11, now=100.0) is None
    assert limiter.check("t", 12, now=100.0) == 1
    assert limiter.check("t", 1, now=100.5, paid=True) == 1  # one chat: still 1/s, paid or not


def test_a_paid_send_is_limited_at_the_paid_rate_over_http(fake: FakeTelegram) -> None:
    fake.enforce_limits(per_second=1, per_chat_per_second=None, paid_per_second=3)

    async def scenario() -> None:
        async with ptb(fake.base_url) as bot:
            paid = await asyncio.gather(
                *(bot.send_message(chat, "paid", allow_paid_broadcast=True) for chat in range(1, 5)),
                return_exceptions=True,
            )
            assert sum(isinstance(r, RetryAfter) for r in paid) == 1  # 3 of 4 within the paid 3/s
            await bot.send_message(10, "free")  # the free 1/s is still there
            with pytest.raises(RetryAfter):
                await bot.send_message(11, "free, over the free limit")

    run(scenario())
    assert fake.rate_limited_count == 2


def test_enforced_limits_answer_429_only_when_exceeded(fake: FakeTelegram) -> None:
    fake.enforce_limits(per_second=30, per_chat_per_second=1, per_group_per_minute=20)

    async def scenario() -> None:
        async with ptb(fake.base_url) as bot, ptb(fake.base_url, OTHER_TOKEN) as other:
            await asyncio.gather(*(bot.send_message(chat, "under the limits") for chat in range(1, 21)))
            assert fake.rate_limited_count == 0

            await bot.send_message(100, "first")
            with pytest.raises(RetryAfter) as retry:
                await bot.send_message(100, "second in the same second")
            assert seconds(retry.value, "retry_after") == 1
            await other.send_message(100, "another bot is not limited by the first")
            assert await bot.send_chat_action(100, "typing")  # only messages count

            results = await asyncio.gather(
                *(bot.send_message(chat, "burst") for chat in range(200, 240)), return_exceptions=True
            )
            limited = [r for r in results if isinstance(r, RetryAfter)]
            assert 0 < len(limited) <= 40 - 9  # 30 per second, 21 of them already used

    run(scenario())
    assert fake.rate_limited_count == sum(1 for c in fake.calls("sendMessage") if c.status == 429)
    assert fake.stats()["by_status"]["429"] == fake.rate_limited_count
    fake.disable_limits()
    run(_send_twice(fake.base_url, 100))


async def _send_twice(base_url: str, chat_id: int) -> None:
    async with ptb(base_url) as bot:
        await bot.send_message(chat_id, "a")
        await bot.send_message(chat_id, "b")


def test_group_limit_per_minute(fake: FakeTelegram) -> None:
    fake.enforce_limits(per_second=None, per_chat_per_second=None, per_group_per_minute=3)

    async def scenario() -> None:
        async with ptb(fake.base_url) as bot:
            for _ in range(3):
                await bot.send_message(-1001234, "x")
            with pytest.raises(RetryAfter) as retry:
                await bot.send_message(-1001234, "x")
            assert 55 <= seconds(retry.value, "retry_after") <= 60
            for _ in range(5):
                await bot.send_message(1234, "private chats have no per-minute limit")

    run(scenario())
    assert fake.rate_limited_count == 1


# --- recording ----------------------------------------------------------------------------------------


def test_wait_for_calls_from_another_thread_and_timeout(fake: FakeTelegram) -> None:
    def send_later() -> None:
        time.sleep(0.2)
        run(_send_twice(fake.base_url, 77))

    thread = threading.Thread(target=send_later)
    thread.start()
    calls = fake.wait_for_calls(2, method="sendMessage", chat_id=77, timeout=5)
    thread.join()
    assert [c.params["text"] for c in calls] == ["a", "b"] and all(c.status == 200 for c in calls)
    assert fake.count("sendMessage") == 2
    with pytest.raises(TimeoutError, match="expected 3 sendMessage"):
        fake.wait_for_calls(3, method="sendMessage", timeout=0.2)


def test_counts_only_recording() -> None:
    with FakeTelegram(record="counts") as fake:
        run(_send_twice(fake.base_url, 5))
        assert fake.calls() == [] and fake.count("sendMessage") == 2 and fake.count() == 3
        assert fake.wait_for_calls(2, method="sendMessage") == []
        stats = fake.stats()
        assert stats["by_method"] == {"getme": 1, "sendmessage": 2}
        assert stats["by_status"] == {"200": 3} and stats["in_flight"] == 0
        with pytest.raises(ValueError, match="per-chat"):
            fake.count(chat_id=5)


# --- update builders ----------------------------------------------------------------------------------


def test_update_builders_make_updates_ptb_understands() -> None:
    user = make_user(31337, first_name="Ada", last_name="Lovelace", username="ada")
    assert user == {
        "id": 31337,
        "is_bot": False,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "username": "ada",
        "language_code": "en",
    }
    bot = Bot(TOKEN)

    start = Update.de_json(updates.text_message(TOKEN, "/start@bot5551234_bot go to http://x.io", user=user), bot)
    assert start.effective_user.id == 31337 and start.effective_chat.type == "private"
    assert start.message.chat.id == 31337 and start.message.text.startswith("/start")
    assert [(e.type, e.offset, e.length) for e in start.message.entities] == [("bot_command", 0, 21), ("url", 28, 11)]
    assert Update.de_json(updates.text_message(TOKEN, "plain"), bot).message.entities == ()

    original = updates.text_message(TOKEN, "typo", user=user)
    edited = Update.de_json(updates.edited_message(TOKEN, "fixed", original=original), bot)
    assert edited.edited_message.message_id == original["message"]["message_id"]
    assert edited.edited_message.text == "fixed" and edited.edited_message.edit_date is not None

    post = Update.de_json(updates.channel_post(TOKEN, "news"), bot)
    assert post.channel_post.chat.type == "channel" and post.channel_post.from_user is None
    assert post.channel_post.sender_chat.id == post.channel_post.chat.id

    query = Update.de_json(updates.callback_query(TOKEN, "vote:yes", user=user), bot)
    assert query.callback_query.data == "vote:yes" and query.callback_query.from_user.id == 31337
    assert query.callback_query.message.from_user.id == 5551234
    assert query.callback_query.message.reply_markup.inline_keyboard[0][0].callback_data == "vote:yes"

    blocked = Update.de_json(updates.my_chat_member(TOKEN, "kicked", user=user), bot)
    change = blocked.my_chat_member
    assert isinstance(change.new_chat_member, ChatMemberBanned) and isinstance(change.old_chat_member, ChatMemberMember)
    assert change.new_chat_member.user.id == 5551234 and change.chat.id == 31337
    restarted = Update.de_json(updates.my_chat_member(TOKEN, "member", user=user), bot)
    assert restarted.my_chat_member.old_chat_member.status == "kicked"
    added = Update.de_json(updates.my_chat_member(TOKEN, "administrator", chat=group_chat()), bot)
    assert added.my_chat_member.new_chat_member.status == "administrator"
    assert added.my_chat_member.old_chat_member.status == "left"

    ids = [u.update_id for u in (start, edited, post, query, blocked, restarted, added)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert updates.text_message(OTHER_TOKEN, "x")["update_id"] != updates.text_message(TOKEN, "x")["update_id"]


def test_update_ids_never_repeat_across_processes() -> None:
    """A webhook ignores an update_id it has seen, so a second run of the README demo (a new
    process) must not reuse the first one's ids; and a later run starts higher, as getUpdates
    drops ids below the offset already confirmed."""
    root = Path(__file__).resolve().parents[2]
    script = (
        "from tests.fake_telegram import make_token, updates\n"
        "print(*(updates.text_message(make_token(), '/start')['update_id'] for _ in range(3)))"
    )

    def ids_of_a_new_process() -> list[int]:
        out = subprocess.run(
            [sys.executable, "-c", script],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [int(n) for n in out.split()]

    first, second = ids_of_a_new_process(), ids_of_a_new_process()

    assert first == sorted(first) and len(set(first)) == 3
    assert max(first) < min(second)
    assert max(second) < 2**53


# --- standalone -------------------------------------------------------------------------------------


def test_standalone_process_with_the_control_client(receiver: Receiver) -> None:
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_telegram", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/bot")
        control = FakeTelegramControl(base_url)
        control.wait_until_up()

        async def scenario() -> None:
            async with ptb(control.base_url) as bot:
                await bot.send_message(42, "over the wire")
                control.fail("blocked", chat_id=43, times=1)
                with pytest.raises(Forbidden):
                    await bot.send_message(43, "x")
                control.enforce_limits(per_chat_per_second=1)
                await bot.send_message(44, "x")
                with pytest.raises(RetryAfter):
                    await bot.send_message(44, "y")
                control.disable_limits()
                control.push_update(TOKEN, updates.text_message(TOKEN, "from the user"))
                assert [u.message.text for u in await bot.get_updates()] == ["from the user"]
                await bot.set_webhook(receiver.url, secret_token="tok")

        run(scenario())
        calls = control.wait_for_calls(1, method="sendMessage", chat_id=42)
        assert calls[0].params["text"] == "over the wire" and calls[0].status == 200
        assert [c.status for c in control.calls("sendMessage")] == [200, 403, 200, 429]
        assert control.rate_limited_count == 1 and control.stats()["by_method"]["sendmessage"] == 4
        assert control.webhook(TOKEN)["secret_token"] == "tok"
        control.push_update(TOKEN, updates.text_message(TOKEN, "via webhook"))
        assert receiver.arrived.wait(5) and receiver.received[0][0][SECRET_HEADER] == "tok"
        control.reset()
        assert control.calls() == [] and control.stats()["received"] == 0
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0
