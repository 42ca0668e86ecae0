"""Telegram's `parse_mode`: turn HTML / MarkdownV2 / Markdown text into plain text plus entities.

Good enough to catch what matters in tests: the returned text has no markup, entity offsets are in
UTF-16 units, and malformed markup is refused with Telegram's "can't parse entities" wording.
"""

from __future__ import annotations

from html.parser import HTMLParser

from tests.fake_telegram.objects import JSONDict, utf16_len

__all__ = ["FormatError", "parse_text"]


class FormatError(ValueError):
    """Markup Telegram would refuse; str() is the description after "Bad Request: "."""


def _cant_parse(detail: str) -> FormatError:
    return FormatError(f"can't parse entities: {detail}")


def parse_text(text: str, parse_mode: str | None) -> tuple[str, list[JSONDict]]:
    """Plain text and entities for `text` sent with `parse_mode` (None: the text as is, no entities)."""
    if not parse_mode:
        return text, []
    mode = parse_mode.lower()
    if mode == "html":
        return _parse_html(text)
    if mode == "markdownv2":
        return _MarkdownV2(text).parse()
    if mode == "markdown":
        return _parse_markdown(text)
    raise FormatError("unsupported parse_mode")


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


def _sorted(entities: list[JSONDict]) -> list[JSONDict]:
    return sorted(entities, key=lambda e: (e["offset"], -e["length"]))


_HTML_SIMPLE = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
}


class _HtmlEntities(HTMLParser):
    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.source = source
        self.line_starts = [0]
        for i, char in enumerate(source):
            if char == "\n":
                self.line_starts.append(i + 1)
        self.parts: list[str] = []
        self.utf16_offset = 0
        self.stack: list[tuple[str, int, JSONDict | None]] = []
        self.entities: list[JSONDict] = []

    def _position(self) -> int:
        line, column = self.getpos()
        return _byte_offset(self.source, self.line_starts[line - 1] + column)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        entity: JSONDict | None
        if tag == "code" and self.stack and self.stack[-1][0] == "pre":
            language = (attributes.get("class") or "").removeprefix("language-")
            pre_entity = self.stack[-1][2]
            if language and pre_entity is not None:
                pre_entity["language"] = language
            entity = None
        elif tag in _HTML_SIMPLE:
            entity = {"type": _HTML_SIMPLE[tag]}
        elif tag == "span" and attributes.get("class") == "tg-spoiler":
            entity = {"type": "spoiler"}
        elif tag == "a":
            entity = {"type": "text_link", "url": attributes.get("href") or ""}
        elif tag == "blockquote":
            entity = {"type": "expandable_blockquote" if "expandable" in attributes else "blockquote"}
        elif tag == "tg-emoji":
            entity = {"type": "custom_emoji", "custom_emoji_id": attributes.get("emoji-id") or ""}
        else:
            raise _cant_parse(f'Unsupported start tag "{tag}" at byte offset {self._position()}')
        self.stack.append((tag, self.utf16_offset, entity))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack:
            raise _cant_parse(f"Unexpected end tag at byte offset {self._position()}")
        open_tag, start, entity = self.stack.pop()
        if open_tag != tag:
            raise _cant_parse(
                f'Unmatched end tag at byte offset {self._position()}, expected "</{open_tag}>", found "</{tag}>"'
            )
        if entity is not None and self.utf16_offset > start:
            self.entities.append({"offset": start, "length": self.utf16_offset - start, **entity})

    def handle_data(self, data: str) -> None:
        self.parts.append(data)
        self.utf16_offset += utf16_len(data)


def _parse_html(source: str) -> tuple[str, list[JSONDict]]:
    parser = _HtmlEntities(source)
    parser.feed(source)
    parser.close()
    if parser.stack:
        raise _cant_parse(f'Can\'t find end tag corresponding to start tag "{parser.stack[-1][0]}"')
    return "".join(parser.parts), _sorted(parser.entities)


_V2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_V2_MARKERS = {"*": "bold", "_": "italic", "__": "underline", "~": "strikethrough", "||": "spoiler"}
_V2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "text_link": "TextUrl",
}


class _MarkdownV2:
    def __init__(self, source: str) -> None:
        self.src = source
        self.out: list[str] = []
        self.offset = 0
        self.entities: list[JSONDict] = []
        # (entity type, utf-16 start, index in source of the opening marker)
        self.stack: list[tuple[str, int, int]] = []
        self.quote_start: int | None = None

    def emit(self, text: str) -> None:
        self.out.append(text)
        self.offset += utf16_len(text)

    def add(self, kind: str, start: int, **extra: str) -> None:
        if self.offset > start:
            self.entities.append({"offset": start, "length": self.offset - start, "type": kind, **extra})

    def reserved(self, char: str) -> FormatError:
        return _cant_parse(f"Character '{char}' is reserved and must be escaped with the preceding '\\'")

    def read_until(self, i: int, end: str, kind: str, start_index: int) -> tuple[str, int]:
        """Raw content from i up to the unescaped `end`; returns it and the index after `end`."""
        src, chunk = self.src, []
        while i < len(src):
            if src[i] == "\\" and i + 1 < len(src):
                chunk.append(src[i + 1])
                i += 2
            elif src.startswith(end, i):
                return "".join(chunk), i + len(end)
            else:
                chunk.append(src[i])
                i += 1
        raise _cant_parse(f"Can't find end of {kind} entity at byte offset {_byte_offset(src, start_index)}")

    def parse(self) -> tuple[str, list[JSONDict]]:
        src, i = self.src, 0
        while i < len(src):
            char = src[i]
            if char == "\\" and i + 1 < len(src) and 0 < ord(src[i + 1]) < 127:
                self.emit(src[i + 1])
                i += 2
            elif char == ">" and (i == 0 or src[i - 1] == "\n"):
                if self.quote_start is None:
                    self.quote_start = self.offset
                i += 1
            elif char == "\n":
                if self.quote_start is not None and not src.startswith(">", i + 1):
                    self.add("blockquote", self.quote_start)
                    self.quote_start = None
                self.emit(char)
                i += 1
            elif src.startswith("```", i):
                body, i = self.read_until(i + 3, "```", "Pre", i)
                first_line, newline, rest = body.partition("\n")
                start = self.offset
                if newline and first_line and " " not in first_line:
                    self.emit(rest)
                    self.add("pre", start, language=first_line)
                else:
                    self.emit(body.removeprefix("\n") if newline and not first_line else body)
                    self.add("pre", start)
            elif char == "`":
                body, i = self.read_until(i + 1, "`", "Code", i)
                start = self.offset
                self.emit(body)
                self.add("code", start)
            elif char == "[":
                self.stack.append(("text_link", self.offset, i))
                i += 1
            elif char == "]":
                if not self.stack or self.stack[-1][0] != "text_link" or not src.startswith("(", i + 1):
                    raise self.reserved(char)
                _, start, _ = self.stack.pop()
                url, i = self.read_until(i + 2, ")", "TextUrl", i)
                self.add("text_link", start, url=url)
            elif char in "*_~|":
                marker = src[i : i + 2] if src[i : i + 2] in ("__", "||") else char
                if marker not in _V2_MARKERS:
                    raise self.reserved(char)
                kind = _V2_MARKERS[marker]
                if self.stack and self.stack[-1][0] == kind:
                    _, start, _ = self.stack.pop()
                    self.add(kind, start)
                else:
                    self.stack.append((kind, self.offset, i))
                i += len(marker)
            elif char in _V2_RESERVED:
                raise self.reserved(char)
            else:
                self.emit(char)
                i += 1
        if self.stack:
            kind, _, index = self.stack[-1]
            raise _cant_parse(f"Can't find end of {_V2_NAMES[kind]} entity at byte offset {_byte_offset(src, index)}")
        if self.quote_start is not None:
            self.add("blockquote", self.quote_start)
        return "".join(self.out), _sorted(self.entities)


_LEGACY_MARKERS = {"*": "bold", "_": "italic", "`": "code"}


def _parse_markdown(src: str) -> tuple[str, list[JSONDict]]:
    """Legacy Markdown: *bold*, _italic_, `code`, ```pre```, [text](url); no nesting."""
    out: list[str] = []
    entities: list[JSONDict] = []
    offset, i = 0, 0

    def missing_end(index: int) -> FormatError:
        return _cant_parse(f"Can't find end of the entity starting at byte offset {_byte_offset(src, index)}")

    while i < len(src):
        char = src[i]
        if char == "\\" and i + 1 < len(src) and src[i + 1] in "_*`[":
            out.append(src[i + 1])
            offset += 1
            i += 2
        elif src.startswith("```", i):
            end = src.find("```", i + 3)
            if end < 0:
                raise missing_end(i)
            body = src[i + 3 : end]
            out.append(body)
            entities.append({"offset": offset, "length": utf16_len(body), "type": "pre"})
            offset += utf16_len(body)
            i = end + 3
        elif char in _LEGACY_MARKERS:
            end = src.find(char, i + 1)
            if end < 0:
                raise missing_end(i)
            body = src[i + 1 : end]
            out.append(body)
            if body:
                entities.append({"offset": offset, "length": utf16_len(body), "type": _LEGACY_MARKERS[char]})
            offset += utf16_len(body)
            i = end + 1
        elif char == "[":
            close = src.find("](", i + 1)
            end = src.find(")", close + 2) if close >= 0 else -1
            if end < 0:
                raise missing_end(i)
            body = src[i + 1 : close]
            out.append(body)
            entities.append(
                {"offset": offset, "length": utf16_len(body), "type": "text_link", "url": src[close + 2 : end]}
            )
            offset += utf16_len(body)
            i = end + 1
        else:
            out.append(char)
            offset += utf16_len(char)
            i += 1
    return "".join(out), entities
