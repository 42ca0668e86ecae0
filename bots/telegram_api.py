"""The Bot API, through python-telegram-bot. Each process keeps one event loop and one
`telegram.Bot` (one connection pool) per bot, reused by every task it runs."""

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

import telegram

from bots.models import Bot
from bots.transport import AiohttpRequest, NoAnswer, Unreachable
from queueing import circuit
from queueing.errors import MaybeDone, ServiceUnavailable

_state: dict[str, Any] = {"pid": None, "loop": None, "apis": {}, "done": 0}


def _process_state() -> dict[str, Any]:
    # A forked worker must not share its parent's loop or sockets.
    if _state["pid"] != os.getpid():
        _state.update(pid=os.getpid(), loop=asyncio.new_event_loop(), apis={}, done=0)
    return _state


def run(coroutine: Coroutine) -> Any:
    return _process_state()["loop"].run_until_complete(coroutine)


def api_for(bot: Bot) -> telegram.Bot:
    return run(api_for_async(bot))


async def api_for_async(bot: Bot) -> telegram.Bot:
    """The process's `telegram.Bot` for this bot, from code already on the loop."""
    apis = _process_state()["apis"]
    key = (bot.token, bot.base_url)
    if key not in apis:
        # getUpdates shares the transport: PTB's default for it (httpx) loads the system's CA
        # certificates, 40-250 ms of CPU for each bot in each process.
        request = AiohttpRequest()
        api = telegram.Bot(bot.token, base_url=bot.base_url, request=request, get_updates_request=request)
        await api.initialize()
        apis[key] = api
    return apis[key]


def circuit_key(bot_id: int) -> str:
    return f"telegram:bot {bot_id}"


def call(bot: Bot, method: str, **params) -> Any:
    """`call(bot, "send_message", chat_id=1, text="hi")`; Bot API errors are raised as
    python-telegram-bot's exceptions, which queueing.errors sorts into retry classes, except:

    - while Telegram is unreachable for this bot (queueing.circuit), or has rejected its
      token, nothing is sent and ServiceUnavailable says how long to wait;
    - a request that got no answer raises MaybeDone: it may have been delivered."""
    return _guarded(bot, lambda api: run(getattr(api, method)(**params)))


def ready(bot: Bot) -> telegram.Bot:
    """The bot's client, set up (its first use asks getMe) under the same rules as `call`."""
    return _guarded(bot, lambda api: api, proves_reachable=False)


def _guarded(bot: Bot, use: Callable[[telegram.Bot], Any], proves_reachable: bool = True) -> Any:
    key = circuit_key(bot.pk)
    if outage := circuit.wait_for(key):
        raise ServiceUnavailable(outage.wait, f"Telegram {outage.describe()}")
    try:
        result = use(api_for(bot))
    except (Unreachable, telegram.error.InvalidToken) as exc:
        raise ServiceUnavailable(trip(bot, exc).wait, f"Telegram unreachable: {unreachable_reason(exc)}") from exc
    except NoAnswer as exc:
        raise MaybeDone(str(exc)) from exc
    if proves_reachable:  # a client set up earlier proves nothing about now
        # Counted before closing the circuit, which writes to the database: a failure there
        # must not make an answered call look unanswered, and so be sent again.
        _process_state()["done"] += 1
        circuit.reset(key)
    return result


def calls_done() -> int:
    """Bot API calls this process has had answered: work that has made one must not be
    repeated blindly, or the member hears it twice."""
    return _process_state()["done"]


def token_rejected(exc: BaseException) -> bool:
    """PTB's do_api_request reports a rejected token as EndPointNotFound, caused by InvalidToken."""
    return isinstance(exc, telegram.error.InvalidToken) or isinstance(exc.__cause__, telegram.error.InvalidToken)


def unreachable_reason(exc: Exception) -> str:
    return "token rejected" if token_rejected(exc) else str(exc)


def trip(bot: Bot, exc: Exception) -> circuit.Outage:
    return circuit.trip(circuit_key(bot.pk), unreachable_reason(exc))
