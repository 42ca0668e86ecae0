"""An aiohttp transport for python-telegram-bot. Its default httpx transport tops out near
300 sends a second on these machines; aiohttp manages ten times that, which paid
broadcasts (1000/s) need. python-telegram-bot still builds every request and turns every
error answer into its exception.

What failed is told apart by whether the request can have reached Telegram: `Unreachable`
when it cannot (no connection, or Telegram answered 5xx), `NoAnswer` when it was sent and no
answer came back (it may have been delivered, so it must not be sent again blindly)."""

import json

import aiohttp
from django.conf import settings
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData


class Unreachable(NetworkError):
    """Nothing was delivered: Telegram could not be reached or answered 5xx."""


class NoAnswer(TimedOut):
    """The request left and no answer came back: it may have been delivered."""

    def __init__(self, message: str):
        super().__init__(message)


class AiohttpRequest(BaseRequest):
    _JSON = {"Content-Type": "application/json"}

    def __init__(self, connections: int = 100):
        self._connections = connections
        self._connect_timeout = settings.TELEGRAM_CONNECT_TIMEOUT
        self._read_timeout = settings.TELEGRAM_READ_TIMEOUT
        self._upload_timeout = settings.TELEGRAM_UPLOAD_TIMEOUT
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=60),
                headers={"User-Agent": self.USER_AGENT},
            )

    async def shutdown(self) -> None:
        if self._session and not self._session.closed:
            await self._session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout=BaseRequest.DEFAULT_NONE,
        write_timeout=BaseRequest.DEFAULT_NONE,
        connect_timeout=BaseRequest.DEFAULT_NONE,
        pool_timeout=BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        await self.initialize()
        uploading = bool(request_data and request_data.contains_files)
        default_read = self._upload_timeout if uploading else self._read_timeout
        timeout = aiohttp.ClientTimeout(
            sock_connect=self._connect_timeout if connect_timeout is self.DEFAULT_NONE else connect_timeout,
            sock_read=default_read if read_timeout is self.DEFAULT_NONE else read_timeout,
        )
        try:
            headers = None if uploading else self._JSON
            async with self._session.request(
                method, url, data=self._body(request_data), headers=headers, timeout=timeout
            ) as response:
                body = await response.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise Unreachable(f"Telegram could not be reached ({type(exc).__name__})") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise NoAnswer(f"Telegram did not answer within {timeout.sock_read:g} s") from exc
        except aiohttp.ClientError as exc:
            raise NoAnswer(f"The connection to Telegram broke before it answered ({type(exc).__name__})") from exc
        if response.status >= 500:
            raise Unreachable(f"Telegram answered {response.status} {response.reason}")
        return response.status, body

    @staticmethod
    def _body(request_data: RequestData | None):
        if request_data is None:
            return None
        if not request_data.contains_files:
            return request_data.json_payload
        form = aiohttp.FormData()
        for name, value in request_data.json_parameters.items():
            form.add_field(name, value)
        for name, (filename, content, mimetype) in request_data.multipart_data.items():
            form.add_field(name, content, filename=filename, content_type=mimetype)
        return form


class JsonBody(RequestData):
    """Parameters of JSON types, encoded once, for `BaseRequest.post`, which still turns error
    answers into PTB's exceptions: a Bot method builds an object per parameter and encodes
    markup twice, a quarter of a send's CPU."""

    def __init__(self, params: dict):
        super().__init__()
        self._payload = json.dumps(params).encode()

    @property
    def json_payload(self) -> bytes:
        return self._payload
