"""A fake Telegram Bot API: a real aiohttp server on loopback that answers like api.telegram.org.

    with FakeTelegram().start() as fake:
        bot = telegram.Bot(token, base_url=fake.base_url)
        ...
        fake.wait_for_calls(1, method="sendMessage", chat_id=42)

It records every call, injects faults, can enforce Telegram's rate limits, and plays the user side
(updates for getUpdates or a webhook). In-process it runs its own event loop in a background thread,
so every public method here is thread-safe and blocking; `python -m tests.fake_telegram` runs it as a
separate process, driven through `FakeTelegramControl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Coroutine
from typing import Any, Literal, Self
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

from tests.fake_telegram.api import METHODS, ApiError, BotApi, Described, MethodSpec, Poller, normalize_params
from tests.fake_telegram.delivery import post_update, post_update_async, webhook_request
from tests.fake_telegram.objects import JSONDict, is_valid_token
from tests.fake_telegram.records import ERRORS, Call, Fault, FaultShortcuts, UploadedFile, normalize_chat_id
from tests.fake_telegram.updates import with_update_id

__all__ = ["FakeTelegram", "RateLimiter"]

RecordMode = Literal["full", "counts"]

_HEAD_BYTES = 64 * 1024
_MAX_BODY = 60 * 1024 * 1024
_JSON_HEADERS = {"Content-Type": "application/json"}
_BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    "<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
)


class RateLimiter:
    """Telegram's documented limits as sliding windows, kept per bot token so bots do not share them:
    messages per second overall, per second in one chat, per minute in one group (negative chat id).
    A message sent with `allow_paid_broadcast` counts against the paid limit (1000/s) instead of
    the free one: Telegram lets it past the free limit for Stars. `per_bot`: token -> its own
    messages per second overall, in place of `per_second` (bots with different limits)."""

    def __init__(
        self,
        per_second: int | None = 30,
        per_chat_per_second: int | None = 1,
        per_group_per_minute: int | None = 20,
        paid_per_second: int | None = 1000,
        per_bot: dict[str, int] | None = None,
    ) -> None:
        self.per_second = per_second
        self.per_chat_per_second = per_chat_per_second
        self.per_group_per_minute = per_group_per_minute
        self.paid_per_second = paid_per_second
        self.per_bot = dict(per_bot or {})
        self._windows: dict[Any, deque[float]] = {}

    def config(self) -> JSONDict:
        return {
            "per_second": self.per_second,
            "per_chat_per_second": self.per_chat_per_second,
            "per_group_per_minute": self.per_group_per_minute,
            "paid_per_second": self.paid_per_second,
            "per_bot": self.per_bot,
        }

    def _wait(self, key: Any, limit: int | None, window: float, now: float) -> float:
        if limit is None:
            return 0.0
        times = self._windows.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= now - window:
            times.popleft()
        return times[0] + window - now if len(times) >= limit else 0.0

    def check(self, token: str, chat_id: int | str, now: float | None = None, paid: bool = False) -> int | None:
        """None if the message may go (and it is counted), else the retry_after to answer with."""
        now = time.monotonic() if now is None else now
        is_group = not isinstance(chat_id, int) or chat_id < 0
        free = self.per_bot.get(token, self.per_second)
        overall = ((token, "paid"), self.paid_per_second, 1.0) if paid else (token, free, 1.0)
        windows = [overall, ((token, chat_id), self.per_chat_per_second, 1.0)]
        if is_group:
            windows.append(((token, chat_id, "minute"), self.per_group_per_minute, 60.0))
        wait = max(self._wait(key, limit, window, now) for key, limit, window in windows)
        if wait > 0:
            return max(1, math.ceil(wait))
        for key, limit, _ in windows:
            if limit is not None:
                self._windows.setdefault(key, deque()).append(now)
        return None


class FakeTelegram(FaultShortcuts):
    """The fake server. `record="counts"` keeps only counters (for benchmarks): calls() is then empty."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, record: RecordMode = "full") -> None:
        if record not in ("full", "counts"):
            raise ValueError("record must be 'full' or 'counts'")
        self.host = host
        self.port = port
        self.record = record
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiters = 0
        self._generation = 0
        self._calls: list[Call] = []
        self._received: Counter[str] = Counter()
        self._answered: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        self._faults: list[Fault] = []
        self._limiter: RateLimiter | None = None
        self._rate_limited = 0
        self._api = BotApi(store_messages=record == "full")
        self._started_at = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._delivery_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- running ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server root, e.g. http://127.0.0.1:8081."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give python-telegram-bot: `telegram.Bot(token, base_url=fake.base_url)`."""
        return f"{self.url}/bot"

    @property
    def control_url(self) -> str:
        """Root of the control API used by FakeTelegramControl."""
        return f"{self.url}/_fake"

    def start(self) -> Self:
        """Serve from a background thread with its own event loop; returns once it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-telegram", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving (waiting requests, hangs and long polls are released) and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop_async(), loop).result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
        self._thread = None

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def start_async(self) -> None:
        """Serve from the running event loop (standalone mode); `port` is updated if it was 0."""
        self._loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop_async(self) -> None:
        """Counterpart of start_async."""
        assert self._closing is not None
        self._closing.set()
        with self._lock:
            pollers = [bot.poller for bot in self._api.bots.values() if bot.poller is not None]
        for poller in pollers:
            poller.event.set()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._delivery_locks.clear()

    def _submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the server's loop, from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise RuntimeError("the fake is not running")

        def spawn() -> None:
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.call_soon_threadsafe(spawn)

    # --- recording --------------------------------------------------------------------------------

    def _matching(self, method: str | None, chat_id: Any, token: str | None, answered: bool) -> list[Call]:
        method = method.lower() if method else None
        chat_id = normalize_chat_id(chat_id)
        return [
            call
            for call in self._calls
            if (method is None or call.method.lower() == method)
            and (chat_id is None or call.params.get("chat_id") == chat_id)
            and (token is None or call.token == token)
            and (not answered or call.status is not None)
        ]

    def _count(self, method: str | None, chat_id: Any, token: str | None, answered: bool) -> int:
        if self.record == "full":
            return len(self._matching(method, chat_id, token, answered))
        if chat_id is not None or token is not None:
            raise ValueError("record='counts' keeps no per-chat or per-token data")
        counter = self._answered if answered else self._received
        return counter[method.lower()] if method else sum(counter.values())

    def calls(
        self, method: str | None = None, chat_id: int | str | None = None, token: str | None = None
    ) -> list[Call]:
        """Recorded calls in arrival order, optionally only one method (any case), chat or bot."""
        with self._lock:
            return self._matching(method, chat_id, token, answered=False)

    def count(
        self,
        method: str | None = None,
        chat_id: int | str | None = None,
        token: str | None = None,
        answered: bool = True,
    ) -> int:
        """How many calls match (answered ones only unless answered=False); works with record='counts'."""
        with self._lock:
            return self._count(method, chat_id, token, answered)

    def wait_for_calls(
        self,
        n: int = 1,
        method: str | None = None,
        chat_id: int | str | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        answered: bool = True,
    ) -> list[Call]:
        """Block until at least `n` matching calls were answered (or merely received, with answered=False);
        returns all matching calls. Raises TimeoutError, listing what did arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            try:
                while self._count(method, chat_id, token, answered) < n:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        seen = [(c.method, c.params.get("chat_id"), c.status) for c in self._calls[-20:]]
                        raise TimeoutError(
                            f"expected {n} {method or 'any'} call(s) (chat_id={chat_id}, token={token}) within "
                            f"{timeout}s, got {self._count(method, chat_id, token, answered)}; last calls: {seen}"
                        )
                    self._cond.wait(remaining)
                return self._matching(method, chat_id, token, answered=False) if self.record == "full" else []
            finally:
                self._waiters -= 1

    async def wait_for_calls_async(
        self,
        n: int = 1,
        method: str | None = None,
        chat_id: int | str | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        answered: bool = True,
    ) -> list[Call]:
        """`wait_for_calls` for async tests, without blocking their event loop."""
        return await asyncio.to_thread(self.wait_for_calls, n, method, chat_id, token, timeout, answered)

    def reset(self) -> None:
        """Forget calls, counters, faults, limits, bots (messages, webhooks, pending updates)."""
        with self._cond:
            self._generation += 1
            self._calls = []
            self._received.clear()
            self._answered.clear()
            self._by_status.clear()
            self._faults.clear()
            self._limiter = None
            self._rate_limited = 0
            pollers = [bot.poller for bot in self._api.bots.values() if bot.poller is not None]
            self._api = BotApi(store_messages=self.record == "full")
            self._started_at = time.time()
        for poller in pollers:
            poller.terminated = True
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(poller.event.set)

    def stats(self) -> JSONDict:
        """Counters: calls received / answered / in flight, by method and by status, 429s from the limits."""
        with self._lock:
            received, answered = sum(self._received.values()), sum(self._answered.values())
            return {
                "record": self.record,
                "received": received,
                "answered": answered,
                "in_flight": max(0, received - answered),
                "by_method": dict(self._received),
                "by_status": {str(status): n for status, n in self._by_status.items()},
                "rate_limited": self._rate_limited,
                "faults": len(self._faults),
                "limits": self._limiter.config() if self._limiter else None,
                "bots": len(self._api.bots),
                "since": self._started_at,
            }

    @property
    def rate_limited_count(self) -> int:
        """How many 429s the enforced limits produced (injected rate_limit faults are not included)."""
        with self._lock:
            return self._rate_limited

    # --- faults and limits ------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        """Install a fault. Faults apply in the order they were added: the first matching error fault
        and the first matching delay-only fault are used (and their `times` consumed)."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    def enforce_limits(
        self,
        per_second: int | None = 30,
        per_chat_per_second: int | None = 1,
        per_group_per_minute: int | None = 20,
        paid_per_second: int | None = 1000,
        per_bot: dict[str, int] | None = None,
    ) -> None:
        """Answer 429 (with retry_after) to send* calls beyond these limits, per bot token. None: no limit.
        `paid_per_second` applies to sends with allow_paid_broadcast, `per_second` to the others;
        `per_bot` (token -> messages per second) replaces `per_second` for those bots."""
        with self._lock:
            self._limiter = RateLimiter(per_second, per_chat_per_second, per_group_per_minute, paid_per_second, per_bot)

    def disable_limits(self) -> None:
        """Stop enforcing rate limits (the default)."""
        with self._lock:
            self._limiter = None

    def _fault_for(self, method: str, token: str, chat_id: Any) -> tuple[Fault | None, float, bool]:
        """The error fault, the delay for a call, and whether the delay holds back only the
        answer; consumes their `times`. Caller holds the lock."""
        error_fault: Fault | None = None
        delay_fault: Fault | None = None
        for fault in self._faults:
            if (error_fault if fault.error else delay_fault) is None and fault.matches(method, token, chat_id):
                if fault.error:
                    error_fault = fault
                else:
                    delay_fault = fault
        delay = 0.0
        for fault in (error_fault, delay_fault):
            if fault is None:
                continue
            delay += fault.delay
            if fault.times is not None:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
        answer_late = error_fault is None and delay_fault is not None and delay_fault.answer_late
        return error_fault, delay, answer_late

    @staticmethod
    def _fault_error(fault: Fault) -> ApiError:
        assert fault.error is not None
        status, template = ERRORS[fault.error]
        if fault.error == "custom":
            assert fault.status is not None and fault.description is not None
            return ApiError(fault.status, fault.description)
        description = fault.description or ""
        if fault.error == "bad_request" and description.startswith("Bad Request: "):
            description = description.removeprefix("Bad Request: ")
        if fault.error != "bad_request" and fault.description:
            text = fault.description
        else:
            text = template.format(retry_after=fault.retry_after, description=description or "bad request")
        if fault.error == "rate_limit":
            return ApiError(status, text, {"retry_after": fault.retry_after})
        if fault.error == "migrated":
            return ApiError(status, text, {"migrate_to_chat_id": fault.migrate_to_chat_id or -1_001_234_567_890})
        if fault.error == "bad_gateway":
            return ApiError(status, text, html=_BAD_GATEWAY_HTML)
        return ApiError(status, text)

    # --- the user's side --------------------------------------------------------------------------

    def push_update(self, token: str, update: JSONDict) -> JSONDict:
        """Make `update` happen for the bot: delivered to its webhook if one is set (in order, with its
        secret), else queued for getUpdates. An update_id is added if missing. Returns the update."""
        update = with_update_id(token, update)
        with self._lock:
            bot = self._api.bot(token)
            webhook = bot.webhook
            if webhook is None:
                self._api.queue_update(bot, update)
                poller = bot.poller
            else:
                bot.webhook_pending += 1
        if webhook is not None:
            self._submit(self._deliver(token, webhook, update))
        elif poller is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(poller.event.set)
        return update

    def post_update(
        self, webhook_url: str, update: JSONDict, secret_token: str | None = None, timeout: float = 10.0
    ) -> int:
        """POST one update to a webhook like Telegram (secret in X-Telegram-Bot-Api-Secret-Token);
        returns the HTTP status. Blocking: from async code use post_update_async."""
        return post_update(webhook_url, update, secret_token, timeout)

    async def post_update_async(
        self, webhook_url: str, update: JSONDict, secret_token: str | None = None, timeout: float = 10.0
    ) -> int:
        """`post_update` for async callers."""
        return await post_update_async(webhook_url, update, secret_token, timeout)

    def webhook(self, token: str) -> JSONDict | None:
        """The webhook a bot set (url, secret_token, allowed_updates, ...), or None."""
        with self._lock:
            bot = self._api.bots.get(token)
            return dict(bot.webhook) if bot and bot.webhook else None

    def pending_updates(self, token: str) -> list[JSONDict]:
        """Updates queued for getUpdates and not yet confirmed."""
        with self._lock:
            bot = self._api.bots.get(token)
            return list(bot.updates) if bot else []

    async def _deliver(self, token: str, webhook: JSONDict, update: JSONDict) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        lock = self._delivery_locks.setdefault(token, asyncio.Lock())
        body, headers = webhook_request(update, webhook.get("secret_token"))
        error: str | None = None
        async with lock:
            try:
                timeout = aiohttp.ClientTimeout(total=10)
                async with self._session.post(webhook["url"], data=body, headers=headers, timeout=timeout) as response:
                    if response.status >= 300:
                        error = f"Wrong response from the webhook: {response.status} {response.reason}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"Connection refused: {exc}" if isinstance(exc, aiohttp.ClientConnectionError) else str(exc)
        with self._lock:
            bot = self._api.bots.get(token)
            if bot is not None:
                bot.webhook_pending = max(0, bot.webhook_pending - 1)
                if error is not None:
                    bot.last_webhook_error = (int(time.time()), error)

    # --- HTTP -------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/bot"):
            return await self._handle_api(request, path)
        if path.startswith("/_fake/"):
            return await self._handle_control(request, path.removeprefix("/_fake/"))
        return _json_response(404, {"ok": False, "error_code": 404, "description": "Not Found"})

    async def _handle_api(self, request: web.Request, path: str) -> web.StreamResponse:
        received_at = time.time()
        token, _, method_name = path[4:].partition("/")
        early: ApiError | None = None
        try:
            params, files = await _read_params(request)
        except ApiError as exc:
            params, files, early = {}, [], exc
        spec = METHODS.get(method_name.lower())
        method = spec.name if spec is not None else method_name
        call = Call(method, token, params, files, received_at, http_method=request.method)
        key = method.lower()
        error: ApiError | None = early
        delay = 0.0
        answer_late = False
        with self._cond:
            generation = self._generation
            self._received[key] += 1
            if self.record == "full":
                self._calls.append(call)
            if self._waiters:
                self._cond.notify_all()
            if error is None:
                if not is_valid_token(token):
                    error = ApiError(401, "Unauthorized")
                elif spec is None:
                    error = ApiError(404, "Not Found")
            chat_id = params.get("chat_id")
            fault: Fault | None = None
            if error is None and self._faults:
                fault, delay, answer_late = self._fault_for(key, token, chat_id)
                if fault is not None and fault.error != "hang":
                    error = self._fault_error(fault)
            if error is None and self._limiter is not None and spec is not None and spec.sends and chat_id:
                retry_after = self._limiter.check(token, chat_id, paid=params.get("allow_paid_broadcast") is True)
                if retry_after is not None:
                    self._rate_limited += 1
                    error = ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})
            if error is None and delay == 0 and fault is None and spec is not None and spec.handler is not None:
                status, body = self._execute(spec, token, params, files)
                return self._answer(call, generation, status, body)

        # The slow path: anything that waits, with the lock released.
        if delay and not answer_late:
            await self._sleep(delay)
        if fault is not None and fault.error == "hang":
            assert self._closing is not None
            await self._closing.wait()
            error = ApiError(502, "Bad Gateway", html=_BAD_GATEWAY_HTML)
        if error is not None:
            with self._cond:
                return self._answer(call, generation, error.status, error)
        assert spec is not None
        if spec.handler is None:
            status, body = await self._get_updates(token, params)
        else:
            with self._cond:
                status, body = self._execute(spec, token, params, files)
        if answer_late:
            # Carried out: recorded as such even if the client gives up before the answer.
            call.status = status
            await self._sleep(delay)
        with self._cond:
            return self._answer(call, generation, status, body)

    def _execute(
        self, spec: MethodSpec, token: str, params: JSONDict, files: list[UploadedFile]
    ) -> tuple[int, JSONDict | ApiError]:
        """Run a method; the caller holds the lock."""
        try:
            result = self._api.call(spec, token, params, {f.field: f for f in files} if files else {})
        except ApiError as exc:
            return exc.status, exc
        if isinstance(result, Described):
            if spec.name == "setWebhook":
                self._flush_to_webhook(token)
            return 200, {"ok": True, "result": result.result, "description": result.description}
        return 200, {"ok": True, "result": result}

    def _flush_to_webhook(self, token: str) -> None:
        """Updates queued before setWebhook go to the new webhook, as Telegram does."""
        bot = self._api.bot(token)
        if bot.webhook is None or not bot.updates:
            return
        pending, bot.updates = list(bot.updates), deque()
        bot.webhook_pending += len(pending)
        for update in pending:
            self._submit(self._deliver(token, bot.webhook, update))

    def _answer(self, call: Call, generation: int, status: int, body: JSONDict | ApiError) -> web.Response:
        """Finish recording `call` and build the response; the caller holds the lock."""
        call.status = status
        call.answered_at = time.time()
        if isinstance(body, ApiError):
            envelope = None if body.html else body.envelope()
            call.response = envelope
        else:
            envelope = call.response = body
        if generation == self._generation:
            self._answered[call.method.lower()] += 1
            self._by_status[status] += 1
        if self._waiters:
            self._cond.notify_all()
        if envelope is None:
            assert isinstance(body, ApiError) and body.html is not None
            return web.Response(status=status, text=body.html, content_type="text/html")
        return _json_response(status, envelope)

    async def _sleep(self, seconds: float) -> None:
        assert self._closing is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _get_updates(self, token: str, params: JSONDict) -> tuple[int, JSONDict | ApiError]:
        """getUpdates with long polling: wait up to `timeout` seconds for an update. A newer getUpdates
        for the same bot ends a waiting one with 409 Conflict, as on Telegram."""
        timeout = params.get("timeout")
        timeout = max(0, timeout) if isinstance(timeout, int) else 0
        assert self._closing is not None
        with self._lock:
            bot = self._api.bot(token)
            if bot.poller is not None:
                bot.poller.terminated = True
                bot.poller.event.set()
                bot.poller = None
            try:
                updates = self._api.take_updates(bot, params)
            except ApiError as exc:
                return exc.status, exc
            if updates or timeout == 0 or self._closing.is_set():
                return 200, {"ok": True, "result": updates}
            poller = bot.poller = Poller(asyncio.Event())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poller.event.wait(), timeout)
        finally:
            with self._lock:
                if bot.poller is poller:
                    bot.poller = None
        if poller.terminated:
            return 409, ApiError(
                409, "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
            )
        with self._lock:
            try:
                return 200, {"ok": True, "result": self._api.take_updates(bot, params)}
            except ApiError as exc:
                return exc.status, exc

    # --- control API (for FakeTelegramControl in another process) ---------------------------------

    async def _handle_control(self, request: web.Request, route: str) -> web.StreamResponse:
        query = request.query
        try:
            data: JSONDict = await request.json() if request.can_read_body else {}
            if route == "calls" and request.method == "GET":
                calls = await asyncio.to_thread(
                    self.calls, query.get("method"), query.get("chat_id"), query.get("token")
                )
                return _json_response(200, {"calls": [c.to_dict() for c in calls]})
            if route == "count" and request.method == "GET":
                count = self.count(
                    query.get("method"), query.get("chat_id"), query.get("token"), query.get("answered", "1") == "1"
                )
                return _json_response(200, {"count": count})
            if route == "stats" and request.method == "GET":
                return _json_response(200, self.stats())
            if route == "reset" and request.method == "POST":
                self.reset()
            elif route == "faults" and request.method == "POST":
                self.add_fault(Fault.from_dict(data))
            elif route == "faults" and request.method == "DELETE":
                self.clear_faults()
            elif route == "limits" and request.method == "POST":
                if data.get("enabled", True):
                    self.enforce_limits(
                        data.get("per_second"),
                        data.get("per_chat_per_second"),
                        data.get("per_group_per_minute"),
                        data.get("paid_per_second", 1000),
                        data.get("per_bot"),
                    )
                else:
                    self.disable_limits()
            elif route == "updates" and request.method == "POST":
                return _json_response(200, {"update": self.push_update(data["token"], data["update"])})
            elif route == "webhook" and request.method == "GET":
                return _json_response(200, {"webhook": self.webhook(query.get("token", ""))})
            elif route == "health":
                return _json_response(200, {"ok": True, "base_url": self.base_url, "record": self.record})
            else:
                return _json_response(404, {"ok": False, "description": f"no control route {request.method} {route}"})
        except (ValueError, TypeError, KeyError) as exc:
            return _json_response(400, {"ok": False, "description": f"{type(exc).__name__}: {exc}"})
        return _json_response(200, {"ok": True})


def _json_response(status: int, body: JSONDict) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), headers=_JSON_HEADERS
    )


async def _read_params(request: web.Request) -> tuple[JSONDict, list[UploadedFile]]:
    """Parameters from the query string and the body (JSON, urlencoded form or multipart with files)."""
    raw: dict[str, Any] = dict(request.query) if request.query_string else {}
    files: list[UploadedFile] = []
    if request.can_read_body:
        content_type = request.content_type
        if content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                    continue
                if part.filename is None:
                    raw[part.name] = await part.text()
                    continue
                head, size = bytearray(), 0
                while chunk := await part.read_chunk(256 * 1024):
                    size += len(chunk)
                    if len(head) < _HEAD_BYTES:
                        head += chunk[: _HEAD_BYTES - len(head)]
                mime = part.headers.get(aiohttp.hdrs.CONTENT_TYPE)
                files.append(UploadedFile(part.name, part.filename, mime, size, bytes(head)))
        else:
            body = await request.read()
            if body:
                if content_type == "application/json":
                    try:
                        data = json.loads(body)
                    except ValueError:
                        raise ApiError(400, "Bad Request: can't parse JSON object") from None
                    if not isinstance(data, dict):
                        raise ApiError(400, "Bad Request: JSON object expected")
                    raw.update(data)
                else:
                    raw.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return normalize_params(raw), files
