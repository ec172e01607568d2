"""Server-Sent Events from raw bytes.

Decoding happens here, at the byte level, with an incremental UTF-8 decoder: a multi-byte
character cut across two network reads is joined, and invalid bytes become U+FFFD instead of
failing the reply. Lines end in ``\\n``, ``\\r\\n`` or ``\\r`` (a ``\\r`` at the end of a read
waits for the next one). Comment lines (``: keep-alive``) are dropped. A line that grows past
``max_line_chars`` without ending is an error, so a hostile stream cannot grow memory forever.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Final

from conversations.gateway.errors import ProtocolError

MAX_LINE_CHARS: Final = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = ""


class SSEDecoder:
    __slots__ = ("_buffer", "_data", "_decoder", "_event", "_max_line", "_started")

    def __init__(self, *, max_line_chars: int = MAX_LINE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._data: list[str] = []
        self._event = ""
        self._max_line = max_line_chars
        self._started = False

    def feed(self, raw: bytes) -> list[ServerSentEvent]:
        text = self._decoder.decode(raw)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        return self._take_lines(self._buffer + text)

    def close(self) -> list[ServerSentEvent]:
        """End of body: decode what is left; an event without its closing blank line is
        dropped, as the SSE standard says."""
        return self._take_lines(self._buffer + self._decoder.decode(b"", final=True))

    def _take_lines(self, buffer: str) -> list[ServerSentEvent]:
        held_cr = buffer.endswith("\r")
        if held_cr:
            buffer = buffer[:-1]
        if "\r" in buffer:
            buffer = buffer.replace("\r\n", "\n").replace("\r", "\n")
        lines = buffer.split("\n")
        rest = lines.pop()
        if held_cr:
            lines.append(rest)
            rest = ""
        if len(rest) > self._max_line:
            raise ProtocolError("The model service sent a line in its reply that never ended.")
        self._buffer = rest
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            # Hot path: nearly every line is "data: …" or the blank line that ends an event.
            if line[:5] == "data:":
                data.append(line[6:] if line[5:6] == " " else line[5:])
            elif not line:
                if data:
                    events.append(ServerSentEvent(data="\n".join(data), event=self._event))
                    data.clear()
                self._event = ""
            elif line[0] != ":":
                self._field(line)
        return events

    def _field(self, line: str) -> None:
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        # "id" and "retry" mean nothing for one reply and are ignored; comments are dropped.
