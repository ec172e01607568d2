"""A real loopback HTTP/1.1 server that imitates the AIML gateway and misbehaves on demand.

It is a socket server (not an httpx mock) so the app under test can reach it from another
process, and it uses chunked transfer encoding so a dropped connection (no terminating chunk)
is distinguishable from a clean end of body.

Replies are scripted per request: ``enqueue`` a ``Stream`` (a list of steps), an
``ErrorReply`` (any non-streamed reply, including a 200 JSON completion) or ``Refuse``. When the
queue is empty, ``default_reply`` answers. Tests synchronise with ``Gate``/``Hold`` and
``wait_for_requests`` rather than sleeping.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

from conversations.gateway import wire

__all__ = [
    "DEFAULT_USAGE",
    "SHAPE_REFUSALS",
    "Drop",
    "ErrorReply",
    "Event",
    "FakeUpstream",
    "Gate",
    "Hold",
    "Pause",
    "Raw",
    "RecordedRequest",
    "Refuse",
    "Stream",
    "comments_only",
    "completion_reply",
    "default_reply",
    "gateway_chunks",
    "openai_chunks",
    "split_bytes",
    "strict_gateway",
    "surrogate_split",
    "wrapped_chunks",
]

MODEL: Final = wire.MODEL
# A held stream is dropped after this long so a forgotten release fails the test visibly.
HOLD_SAFETY_TIMEOUT: Final = 60.0
DEFAULT_USAGE: Final[dict[str, Any]] = wire.usage(12, 7)


class _Headers(dict[str, str]):
    """Header names are case-insensitive; keys are stored lower-cased."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        for name, value in items:
            key = name.lower()
            super().__setitem__(key, f"{self[key]}, {value}" if key in self else value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # case-insensitive lookups
    json: Any  # None when the body was empty or not JSON


class Gate:
    """A point in a scripted stream that the test can wait for and then let pass."""

    def __init__(self) -> None:
        self._reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def wait_reached(self, timeout: float = 10.0) -> None:
        if not self._reached.wait(timeout):
            raise TimeoutError(f"the fake upstream did not reach the gate within {timeout} s")

    @property
    def reached(self) -> bool:
        return self._reached.is_set()


# -- script steps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One SSE event: ``data: <data>`` followed by the blank line."""

    data: str

    def frame(self) -> bytes:
        return b"data: " + self.data.encode() + b"\n\n"


@dataclass(frozen=True)
class Raw:
    """Bytes written as one HTTP chunk, unframed (split events, comments, garbage)."""

    payload: bytes


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Hold:
    gate: Gate


@dataclass(frozen=True)
class Drop:
    """Close the connection without the terminating zero-length chunk."""


Step = Event | Raw | Pause | Hold | Drop


# -- replies ----------------------------------------------------------------------------------


@dataclass
class Stream:
    steps: list[Step]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # Also answer a non-streaming request with it (a gateway that streams regardless).
    unasked: bool = False


@dataclass
class ErrorReply:
    """Any non-streamed reply: a dict/list body is sent as JSON, str as text, bytes as-is."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Refuse:
    """Close the socket after reading the request, without sending any response."""


Reply = Stream | ErrorReply | Refuse


# -- canned bodies ----------------------------------------------------------------------------


def _events(chunks: Sequence[dict[str, Any] | str]) -> list[Event]:
    return [Event(chunk if isinstance(chunk, str) else wire.dumps(chunk)) for chunk in chunks]


def gateway_chunks(
    text_pieces: Sequence[str],
    *,
    reasoning_pieces: Sequence[str] = (),
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = DEFAULT_USAGE,
    usd_spent: float | None = 0.0012,
    model: str = MODEL,
    trailing_finish_reason: str | None = "stop",
) -> list[Event]:
    """The AIML gateway's stream for Claude, as documented (see ``wire.gateway_chunks``)."""
    return _events(
        wire.gateway_chunks(
            text_pieces,
            reasoning_pieces=reasoning_pieces,
            finish_reason=finish_reason,
            usage=usage,
            usd_spent=usd_spent,
            model=model,
            trailing_finish_reason=trailing_finish_reason,
        )
    )


def wrapped_chunks(text_pieces: Sequence[str], **options: Any) -> list[Event]:
    """The gateway's wrapped Claude stream from before 2026-02-13 (see ``wire``)."""
    return _events(wire.wrapped_chunks(text_pieces, **options))


def surrogate_split(before: str, char: str, after: str, **options: Any) -> list[Event]:
    """Two content chunks that cut ``char`` (outside the BMP) between its UTF-16 halves, as a
    gateway slicing JSON-escaped text sends it: ``"…\\ud83d"`` then ``"\\ude00…"``. The
    rest of the stream is ``gateway_chunks``'s, with ``options`` passed on."""
    units = char.encode("utf-16-be")
    if len(units) != 4:
        raise ValueError("the character must lie outside the Basic Multilingual Plane")
    high, low = chr(int.from_bytes(units[:2])), chr(int.from_bytes(units[2:]))
    return gateway_chunks([before + high, low + after], **options)


def comments_only(count: int, *, gap: float) -> list[Step]:
    """Keep-alive comments (``: OPENROUTER PROCESSING``) and nothing else, ``gap`` s apart."""
    steps: list[Step] = []
    for _ in range(count):
        steps += [Raw(b": OPENROUTER PROCESSING\n\n"), Pause(gap)]
    return steps


def split_bytes(events: Sequence[Event], *, cut: Callable[[bytes], int]) -> list[Step]:
    """The events' bytes sent as two network writes, cut where ``cut(wire)`` says (e.g. in the
    middle of a multi-byte character)."""
    data = b"".join(event.frame() for event in events)
    at = cut(data)
    return [Raw(data[:at]), Pause(0.05), Raw(data[at:])]


def openai_chunks(
    text_pieces: Sequence[str],
    *,
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = DEFAULT_USAGE,
    model: str = MODEL,
) -> list[Event]:
    """Classic OpenAI stream: usage in a separate empty-choices chunk, then ``[DONE]``."""
    chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    first = wire.openai_chunk(
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        chunk_id=chunk_id,
        model=model,
    )
    pieces = [wire.openai_content(p, chunk_id=chunk_id, model=model) for p in text_pieces]
    tail = wire.openai_tail(
        finish_reason=finish_reason, usage=usage, chunk_id=chunk_id, model=model
    )
    return _events([first, *pieces, *tail])


def completion_reply(
    content: str,
    *,
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = DEFAULT_USAGE,
    model: str = MODEL,
) -> ErrorReply:
    """A non-streamed ``chat.completion`` (HTTP 200)."""
    return ErrorReply(
        200, wire.completion_body(content, finish_reason=finish_reason, usage=usage, model=model)
    )


def default_reply(request: RecordedRequest) -> Stream | ErrorReply:
    """Stream a short greeting for streamed requests, a short title otherwise."""
    path = request.path.split("?", 1)[0]
    if request.method != "POST" or not path.endswith("/chat/completions"):
        return ErrorReply(404, wire.error_body(404, f"Cannot {request.method} {path}", path=path))
    body = request.json if isinstance(request.json, dict) else {}
    if body.get("stream"):
        return Stream(list(gateway_chunks(["Hello", " from", " the", " fake", " upstream."])))
    return completion_reply("A short title")


# The gateway's own words for each shape it may refuse (the first is from its error docs).
SHAPE_REFUSALS: Final[dict[str, str]] = {
    "system-role": "`messages[0].role` does not support 'system' with this model",
    "system": "system: Extra inputs are not permitted",
    "reasoning_effort": "reasoning_effort: Extra inputs are not permitted",
    "thinking": "thinking: Extra inputs are not permitted",
    "stop": "stop: Extra inputs are not permitted",
    "stop_sequences": "stop_sequences: Extra inputs are not permitted",
    "image_url": "messages.0.content.1.type: content part type 'image_url' is not supported",
    "image": "messages.0.content.1.type: content part type 'image' is not supported",
}


def _shapes_in(body: dict[str, Any]) -> set[str]:
    shapes = {
        key
        for key in ("system", "reasoning_effort", "thinking", "stop", "stop_sequences")
        if key in body
    }
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "system":
            shapes.add("system-role")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            shapes.update(p.get("type", "") for p in content if isinstance(p, dict))
    return shapes


def strict_gateway(
    refused: set[str], *, reply: Callable[[RecordedRequest], Stream | ErrorReply] | None = None
) -> Callable[[RecordedRequest], Stream | ErrorReply]:
    """A ``default_reply`` for a gateway that refuses some request shapes (keys of
    ``SHAPE_REFUSALS``) with a 400 in its own words, and otherwise answers as ``reply`` does."""
    fallback = reply or default_reply

    def answer(request: RecordedRequest) -> Stream | ErrorReply:
        body = request.json if isinstance(request.json, dict) else {}
        refusals = sorted(_shapes_in(body) & refused)
        if refusals:
            return ErrorReply(400, wire.error_body(400, SHAPE_REFUSALS[refusals[0]]))
        return fallback(request)

    return answer


# -- server -----------------------------------------------------------------------------------


class _Aborted(Exception):
    """The script asked to drop the connection, or the server is stopping."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections give up after this, so no thread waits forever.
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def setup(self) -> None:
        super().setup()
        # Small SSE chunks must leave at once, not wait for Nagle's algorithm.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection)

    def handle(self) -> None:
        # Clients hang up on idle keep-alive connections; that is not a server error.
        with contextlib.suppress(OSError):
            super().handle()

    def finish(self) -> None:
        self.server.owner._untrack(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_POST(self) -> None:
        self._dispatch()

    do_GET = do_POST
    do_PUT = do_POST
    do_DELETE = do_POST

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Skip trailers up to the blank line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        raw = self._read_body()
        if self.command == "GET" and self.path.startswith("/v1/models"):
            self._send_models_list()
            return
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=_Headers(self.headers.items()),
            json=parsed,
        )
        reply = self.server.owner._take_reply(request)
        try:
            if isinstance(reply, Refuse):
                self._abort()
            elif isinstance(reply, ErrorReply):
                self._send_whole(reply)
            else:
                self._send_stream(reply)
        except (_Aborted, OSError):
            self.close_connection = True

    def _send_models_list(self) -> None:
        """The models and deprecations lists (kept apart from the chat requests)."""
        reply = self.server.owner._models_reply(self.path)
        if isinstance(reply, Refuse):
            self._abort()
        else:
            self._send_whole(reply)

    def _send_whole(self, reply: ErrorReply) -> None:
        body = reply.body
        if isinstance(body, bytes):
            data, content_type = body, "application/octet-stream"
        elif isinstance(body, str):
            data, content_type = body.encode(), "text/plain; charset=utf-8"
        elif body is None:
            data, content_type = b"", "text/plain; charset=utf-8"
        else:
            data, content_type = wire.dumps(body).encode(), "application/json; charset=utf-8"
        self.send_response(reply.status)
        headers = {"Content-Type": content_type, "X-Inference-Id": uuid.uuid4().hex}
        headers.update(reply.headers)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, reply: Stream) -> None:
        owner = self.server.owner
        self.send_response(reply.status)
        headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Inference-Id": uuid.uuid4().hex,
        }
        headers.update(reply.headers)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for step in reply.steps:
            if owner._stopping.is_set():
                raise _Aborted
            if isinstance(step, Event):
                self._chunk(step.frame())
            elif isinstance(step, Raw):
                self._chunk(step.payload)
            elif isinstance(step, Pause):
                if owner._stopping.wait(step.seconds):
                    raise _Aborted
            elif isinstance(step, Hold):
                if not owner._hold(step.gate):
                    self._abort()
                    raise _Aborted
            else:
                self._abort()
                return
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        # A zero-length chunk would end the body, so an empty step writes nothing.
        if data:
            self.wfile.write(b"%X\r\n%b\r\n" % (len(data), data))

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Hundreds of concurrent streams connect at once; the default backlog of 5 would stall them.
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, owner: FakeUpstream) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class FakeUpstream:
    """Scripted stand-in for the gateway on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.default_reply: Callable[[RecordedRequest], Stream | ErrorReply] = default_reply
        self._queue: deque[Reply] = deque()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._held: set[Gate] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._init_models_lists()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            return
        self._stopping.clear()
        self._server = _Server(self)
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-upstream-{port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        with self._cond:
            gates, self._held = list(self._held), set()
            connections = list(self._connections)
        for gate in gates:
            gate.release()
        server.shutdown()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def end_streams(self) -> None:
        """Let every held stream go and cut every open connection, leaving the server up: the
        replies a test left running end now, whatever their script had left to send."""
        with self._cond:
            gates = list(self._held)
            connections = list(self._connections)
        for gate in gates:
            gate.release()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake upstream is not running")
        return int(self._server.server_address[1])

    # -- scripting --------------------------------------------------------------------------

    def enqueue(self, *replies: Reply) -> None:
        with self._cond:
            self._queue.extend(replies)

    @property
    def streamed_requests(self) -> list[RecordedRequest]:
        """The chat turns, without the app's small non-streaming requests (titles)."""
        with self._cond:
            return [r for r in self.requests if isinstance(r.json, dict) and r.json.get("stream")]

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} requests within {timeout} s, got {len(self.requests)}"
                )

    def reset(self) -> None:
        with self._cond:
            self._queue.clear()
            self.requests.clear()
            self.default_reply = default_reply
        self._init_models_lists()

    # -- used by the handler threads --------------------------------------------------------

    def _take_reply(self, request: RecordedRequest) -> Reply:
        with self._cond:
            self.requests.append(request)
            reply = self._next_reply_for(request)
            fallback = self.default_reply
            self._cond.notify_all()
        return reply if reply is not None else fallback(request)

    def _next_reply_for(self, request: RecordedRequest) -> Reply | None:
        """The first queued reply this request may take. A scripted stream is meant for a chat
        turn, so a non-streaming request (a title, which may come late) never takes one."""
        streaming = isinstance(request.json, dict) and bool(request.json.get("stream"))
        for index, reply in enumerate(self._queue):
            if streaming or not isinstance(reply, Stream) or reply.unasked:
                del self._queue[index]
                return reply
        return None

    def _hold(self, gate: Gate) -> bool:
        """Wait at a gate; False when the stream must be dropped instead of continuing."""
        with self._cond:
            self._held.add(gate)
        gate._reached.set()
        released = gate._released.wait(HOLD_SAFETY_TIMEOUT)
        with self._cond:
            self._held.discard(gate)
        return released and not self._stopping.is_set()

    def _track(self, conn: socket.socket) -> None:
        with self._cond:
            self._connections.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._cond:
            self._connections.discard(conn)

    # -- the models and deprecations lists (GET /v1/models, GET /v1/models/deprecations) -------

    def _init_models_lists(self) -> None:
        """Both lists empty until a test sets `models_list` / `deprecations_list` (a JSON-able
        body, an ErrorReply or Refuse); `models_gate` holds both answers until released."""
        self.models_list: Any = {"data": []}
        self.deprecations_list: Any = {"data": []}
        self.models_gate: Gate | None = None
        self.models_requests: list[str] = []

    def _models_reply(self, path: str) -> ErrorReply | Refuse:
        with self._cond:
            self.models_requests.append(path)
            gate = self.models_gate
            deprecations = path.split("?", 1)[0] == "/v1/models/deprecations"
            body = self.deprecations_list if deprecations else self.models_list
        if gate is not None and not self._hold(gate):
            return Refuse()
        if isinstance(body, ErrorReply | Refuse):
            return body
        return ErrorReply(200, body)
