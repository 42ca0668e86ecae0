"""Drive a fake started with `python -m tests.fake_telegram` from another process, with the same
method names as FakeTelegram (over the /_fake/ control API)."""

from __future__ import annotations

import json
import time
import urllib.request
from urllib.parse import urlencode

from tests.fake_telegram.delivery import post_update, post_update_async
from tests.fake_telegram.objects import JSONDict
from tests.fake_telegram.records import Call, Fault, FaultShortcuts
from tests.fake_telegram.updates import with_update_id

__all__ = ["FakeTelegramControl"]


class FakeTelegramControl(FaultShortcuts):
    """Client of a standalone fake. `base` is its root (http://127.0.0.1:8081) or its base_url (.../bot)."""

    def __init__(self, base: str, timeout: float = 10.0) -> None:
        self.url = base.rstrip("/").removesuffix("/bot")
        self.timeout = timeout

    @property
    def base_url(self) -> str:
        """What to give python-telegram-bot as base_url."""
        return f"{self.url}/bot"

    def _request(self, verb: str, route: str, body: JSONDict | None = None, query: JSONDict | None = None) -> JSONDict:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        url = f"{self.url}/_fake/{route}" + (f"?{urlencode(params)}" if params else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=verb, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read())

    def health(self) -> JSONDict:
        """Raises (URLError) while the server is not up."""
        return self._request("GET", "health")

    def wait_until_up(self, timeout: float = 10.0) -> None:
        """Poll until the server answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def calls(
        self, method: str | None = None, chat_id: int | str | None = None, token: str | None = None
    ) -> list[Call]:
        """Recorded calls (empty when the server records only counts)."""
        data = self._request("GET", "calls", query={"method": method, "chat_id": chat_id, "token": token})
        return [Call.from_dict(c) for c in data["calls"]]

    def count(
        self,
        method: str | None = None,
        chat_id: int | str | None = None,
        token: str | None = None,
        answered: bool = True,
    ) -> int:
        """How many calls match (answered ones unless answered=False)."""
        query = {"method": method, "chat_id": chat_id, "token": token, "answered": int(answered)}
        data = self._request("GET", "count", query=query)
        return data["count"]

    def wait_for_calls(
        self,
        n: int = 1,
        method: str | None = None,
        chat_id: int | str | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        answered: bool = True,
    ) -> list[Call]:
        """Poll until `n` matching calls; returns them (empty list in counts mode). Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while (count := self.count(method, chat_id, token, answered)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {n} {method or 'any'} call(s) within {timeout}s, got {count}")
            time.sleep(0.02)
        return self.calls(method, chat_id, token)

    def reset(self) -> None:
        """Forget calls, counters, faults, limits and bot state."""
        self._request("POST", "reset", {})

    def stats(self) -> JSONDict:
        """Counters, as FakeTelegram.stats()."""
        return self._request("GET", "stats")

    @property
    def rate_limited_count(self) -> int:
        """429s produced by enforced limits."""
        return self.stats()["rate_limited"]

    def add_fault(self, fault: Fault) -> Fault:
        """Install a fault (see FakeTelegram.fail)."""
        self._request("POST", "faults", fault.to_dict())
        return fault

    def clear_faults(self) -> None:
        """Remove every fault."""
        self._request("DELETE", "faults")

    def enforce_limits(
        self,
        per_second: int | None = 30,
        per_chat_per_second: int | None = 1,
        per_group_per_minute: int | None = 20,
        paid_per_second: int | None = 1000,
        per_bot: dict[str, int] | None = None,
    ) -> None:
        """See FakeTelegram.enforce_limits."""
        limits = {
            "per_second": per_second,
            "per_chat_per_second": per_chat_per_second,
            "per_group_per_minute": per_group_per_minute,
            "paid_per_second": paid_per_second,
            "per_bot": per_bot,
        }
        self._request("POST", "limits", limits)

    def disable_limits(self) -> None:
        """Stop enforcing rate limits."""
        self._request("POST", "limits", {"enabled": False})

    def push_update(self, token: str, update: JSONDict) -> JSONDict:
        """See FakeTelegram.push_update (the update_id, if missing, is assigned here)."""
        return self._request("POST", "updates", {"token": token, "update": with_update_id(token, update)})["update"]

    def webhook(self, token: str) -> JSONDict | None:
        """The webhook a bot set, or None."""
        return self._request("GET", "webhook", query={"token": token})["webhook"]

    def post_update(
        self, webhook_url: str, update: JSONDict, secret_token: str | None = None, timeout: float = 10.0
    ) -> int:
        """POST an update to a webhook like Telegram; returns the HTTP status. Done from this process."""
        return post_update(webhook_url, update, secret_token, timeout)

    async def post_update_async(
        self, webhook_url: str, update: JSONDict, secret_token: str | None = None, timeout: float = 10.0
    ) -> int:
        """`post_update` for async callers."""
        return await post_update_async(webhook_url, update, secret_token, timeout)
