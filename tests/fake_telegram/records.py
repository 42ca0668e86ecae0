"""What the fake records and how faults are described; plain data shared by the server and the
control client (both sides turn them into JSON and back)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tests.fake_telegram.objects import JSONDict

__all__ = ["ERRORS", "Call", "Fault", "UploadedFile", "normalize_chat_id"]


def normalize_chat_id(value: Any) -> int | str | None:
    """chat_id as Telegram reads it: an int when it is numeric (form data sends "42"), else the string."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return text


@dataclass(slots=True)
class UploadedFile:
    """A file part of a multipart request."""

    field: str
    filename: str | None
    content_type: str | None
    size: int
    head: bytes = field(default=b"", repr=False, compare=False)  # first bytes, to read image dimensions

    def to_dict(self) -> JSONDict:
        return {"field": self.field, "filename": self.filename, "content_type": self.content_type, "size": self.size}

    @classmethod
    def from_dict(cls, data: JSONDict) -> UploadedFile:
        return cls(data["field"], data.get("filename"), data.get("content_type"), data.get("size", 0))


@dataclass(slots=True)
class Call:
    """One request the fake received. `status` and `answered_at` stay None until it is answered (and
    forever for a request whose client gave up first, e.g. on a hang fault)."""

    method: str  # canonical ("sendMessage") when known, else as requested
    token: str
    params: JSONDict
    files: list[UploadedFile]
    received_at: float
    answered_at: float | None = None
    status: int | None = None
    response: JSONDict | None = None  # the envelope sent back; None for non-JSON answers (502) and hangs
    http_method: str = "POST"

    @property
    def chat_id(self) -> int | str | None:
        return self.params.get("chat_id")

    @property
    def bot_id(self) -> int | None:
        head = self.token.split(":", 1)[0]
        return int(head) if head.isdigit() else None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def result(self) -> Any:
        """The `result` of a successful answer (a Message dict for sendMessage), else None."""
        return self.response.get("result") if self.response else None

    @property
    def duration(self) -> float | None:
        return None if self.answered_at is None else self.answered_at - self.received_at

    def to_dict(self) -> JSONDict:
        data = asdict(self)
        data["files"] = [f.to_dict() for f in self.files]
        return data

    @classmethod
    def from_dict(cls, data: JSONDict) -> Call:
        values = dict(data)
        values["files"] = [UploadedFile.from_dict(f) for f in data.get("files", [])]
        return cls(**values)


ERRORS: dict[str, tuple[int, str]] = {
    "rate_limit": (429, "Too Many Requests: retry after {retry_after}"),
    "blocked": (403, "Forbidden: bot was blocked by the user"),
    "kicked": (403, "Forbidden: bot was kicked from the group chat"),
    "deactivated": (403, "Forbidden: user is deactivated"),
    "chat_not_found": (400, "Bad Request: chat not found"),
    "migrated": (400, "Bad Request: group chat was upgraded to a supergroup chat"),
    "bad_request": (400, "Bad Request: {description}"),
    "unauthorized": (401, "Unauthorized"),
    "server_error": (500, "Internal Server Error"),
    "bad_gateway": (502, "Bad Gateway"),
    "hang": (0, ""),
    "custom": (0, "{description}"),
}


@dataclass(slots=True)
class Fault:
    """A rule that changes how matching calls are answered.

    error: a key of ERRORS, or None for a pure delay. method/chat_id/token narrow which calls match
    (None matches any). times: how many more calls it applies to; None = until cleared.
    """

    error: str | None
    method: str | None = None
    chat_id: int | str | None = None
    token: str | None = None
    times: int | None = None
    delay: float = 0.0
    # With a pure delay: do what was asked at once and only answer late, as a congested
    # Telegram does (the message is delivered though the client may have given up).
    answer_late: bool = False
    retry_after: int = 1
    status: int | None = None
    description: str | None = None
    migrate_to_chat_id: int | None = None

    def __post_init__(self) -> None:
        if self.error is not None and self.error not in ERRORS:
            raise ValueError(f"unknown error {self.error!r}; one of {sorted(ERRORS)}")
        if self.error == "custom" and (self.status is None or self.description is None):
            raise ValueError("a custom fault needs status and description")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or None for always)")
        self.chat_id = normalize_chat_id(self.chat_id)
        if self.method is not None:
            self.method = self.method.lower()

    def matches(self, method: str, token: str, chat_id: int | str | None) -> bool:
        """`method` is lower-case."""
        return (
            (self.method is None or self.method == method)
            and (self.token is None or self.token == token)
            and (self.chat_id is None or self.chat_id == chat_id)
        )

    def to_dict(self) -> JSONDict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: JSONDict) -> Fault:
        return cls(**data)


class FaultShortcuts:
    """fail / delay / hang, shared by FakeTelegram (in-process) and FakeTelegramControl (over
    HTTP): each only says how a Fault is installed (`add_fault`)."""

    def add_fault(self, fault: Fault) -> Fault:
        raise NotImplementedError

    def fail(
        self,
        error: str = "server_error",
        *,
        method: str | None = None,
        chat_id: int | str | None = None,
        token: str | None = None,
        times: int | None = None,
        retry_after: int = 1,
        delay: float = 0.0,
        status: int | None = None,
        description: str | None = None,
        migrate_to_chat_id: int | None = None,
    ) -> Fault:
        """Answer matching calls with an error for the next `times` calls (None: until cleared).

        error: rate_limit (429 + retry_after), blocked / kicked / deactivated (403), chat_not_found,
        migrated (400 + migrate_to_chat_id), bad_request (400, `description`), unauthorized (401),
        server_error (500), bad_gateway (502, nginx HTML), hang (no answer until the client gives up),
        custom (`status` and `description`). `delay` first waits that many seconds.
        """
        return self.add_fault(
            Fault(
                error,
                method=method,
                chat_id=chat_id,
                token=token,
                times=times,
                retry_after=retry_after,
                delay=delay,
                status=status,
                description=description,
                migrate_to_chat_id=migrate_to_chat_id,
            )
        )

    def delay(
        self,
        seconds: float,
        *,
        method: str | None = None,
        chat_id: int | str | None = None,
        token: str | None = None,
        times: int | None = None,
        answer_late: bool = False,
    ) -> Fault:
        """Answer matching calls normally, but only after `seconds`. With `answer_late`, carry
        the call out at once and only hold the answer back: a client that gives up first has
        still sent the message."""
        return self.add_fault(
            Fault(
                None,
                method=method,
                chat_id=chat_id,
                token=token,
                times=times,
                delay=seconds,
                answer_late=answer_late,
            )
        )

    def hang(
        self,
        *,
        method: str | None = None,
        chat_id: int | str | None = None,
        token: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Never answer matching calls (until the server stops): the client's read timeout fires."""
        return self.fail("hang", method=method, chat_id=chat_id, token=token, times=times)
