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
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

__all__ = [
    "DEFAULT_USAGE",
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
    "completion_reply",
    "default_reply",
    "gateway_chunks",
    "openai_chunks",
]

MODEL: Final = "anthropic/claude-sonnet-4.5"
# A held stream is dropped after this long so a forgotten release fails the test visibly.
HOLD_SAFETY_TIMEOUT: Final = 60.0
DEFAULT_USAGE: Final[dict[str, Any]] = {
    "prompt_tokens": 12,
    "completion_tokens": 7,
    "total_tokens": 19,
    "completion_tokens_details": {"reasoning_tokens": 0},
    "prompt_tokens_details": {"cached_tokens": 0},
}


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


def _dumps(value: Any) -> str:
    # Compact and non-ASCII kept raw, like the gateway's Node.js JSON.stringify.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


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
    """The AIML gateway's stream for Claude, as documented.

    Only the first chunk has an id; every delta repeats role and ``refusal: null``; no
    ``finish_reason`` key before the end; usage and ``meta.usage`` ride in the finish chunk;
    a ``delta``-less trailing chunk follows (``trailing_finish_reason=None`` omits it); no
    ``[DONE]``.
    """
    chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    chunks: list[dict[str, Any]] = []

    def chunk(choice: dict[str, Any], **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": "" if chunks else chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }
        body.update(extra)
        return body

    for piece in reasoning_pieces:
        delta = {"role": "assistant", "content": "", "reasoning_content": piece, "refusal": None}
        chunks.append(chunk({"index": 0, "delta": delta}))
    for piece in text_pieces:
        delta = {"role": "assistant", "content": piece, "refusal": None}
        chunks.append(chunk({"index": 0, "delta": delta}))
    finish: dict[str, Any] = {
        "index": 0,
        "delta": {"role": "assistant", "content": "", "refusal": None},
        "finish_reason": finish_reason,
    }
    extra: dict[str, Any] = {"usage": usage}
    if usd_spent is not None:
        extra["meta"] = {
            "usage": {"credits_used": round(usd_spent * 2_100_000), "usd_spent": usd_spent}
        }
    chunks.append(chunk(finish, **extra))
    if trailing_finish_reason is not None:
        chunks.append(chunk({"index": 0, "finish_reason": trailing_finish_reason}, usage=None))
    return [Event(_dumps(c)) for c in chunks]


def openai_chunks(
    text_pieces: Sequence[str],
    *,
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = DEFAULT_USAGE,
    model: str = MODEL,
) -> list[Event]:
    """Classic OpenAI stream: usage in a separate empty-choices chunk, then ``[DONE]``."""
    chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> Event:
        body: dict[str, Any] = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        body.update(extra)
        return Event(_dumps(body))

    events = [
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    ]
    events.extend(
        chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        for piece in text_pieces
    )
    events.append(chunk([{"index": 0, "delta": {}, "finish_reason": finish_reason}]))
    if usage is not None:
        events.append(chunk([], usage=usage))
    events.append(Event("[DONE]"))
    return events


def completion_reply(
    content: str,
    *,
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = DEFAULT_USAGE,
    model: str = MODEL,
) -> ErrorReply:
    """A non-streamed ``chat.completion`` (HTTP 200)."""
    return ErrorReply(
        200,
        {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        },
    )


def default_reply(request: RecordedRequest) -> Stream | ErrorReply:
    """Stream a short greeting for streamed requests, a short title otherwise."""
    path = request.path.split("?", 1)[0]
    if request.method != "POST" or not path.endswith("/chat/completions"):
        return ErrorReply(
            404,
            {
                "message": f"Cannot {request.method} {path}",
                "path": path,
                "requestId": uuid.uuid4().hex,
                "statusCode": 404,
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
    body = request.json if isinstance(request.json, dict) else {}
    if body.get("stream"):
        return Stream(list(gateway_chunks(["Hello", " from", " the", " fake", " upstream."])))
    return completion_reply("A short title")


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
            data, content_type = _dumps(body).encode(), "application/json; charset=utf-8"
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
