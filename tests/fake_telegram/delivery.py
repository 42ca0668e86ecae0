"""Posting an update to a webhook the way Telegram does: JSON body, and the secret given to setWebhook
in the X-Telegram-Bot-Api-Secret-Token header."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import aiohttp

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def webhook_request(update: dict[str, Any], secret_token: str | None) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a webhook delivery."""
    headers = {"Content-Type": "application/json"}
    if secret_token:
        headers[SECRET_HEADER] = secret_token
    return json.dumps(update, ensure_ascii=False).encode(), headers


def post_update(
    webhook_url: str, update: dict[str, Any], secret_token: str | None = None, timeout: float = 10.0
) -> int:
    """POST `update` to `webhook_url` like Telegram; returns the HTTP status (connection errors raise)."""
    body, headers = webhook_request(update, secret_token)
    request = urllib.request.Request(webhook_url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def post_update_async(
    webhook_url: str,
    update: dict[str, Any],
    secret_token: str | None = None,
    timeout: float = 10.0,
    session: aiohttp.ClientSession | None = None,
) -> int:
    """`post_update` for async code (e.g. when the webhook receiver runs in the caller's own loop)."""
    body, headers = webhook_request(update, secret_token)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    if session is not None:
        async with session.post(webhook_url, data=body, headers=headers, timeout=client_timeout) as response:
            return response.status
    async with (
        aiohttp.ClientSession() as own,
        own.post(webhook_url, data=body, headers=headers, timeout=client_timeout) as response,
    ):
        return response.status
