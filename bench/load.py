"""Load generators, each in its own process so that its CPU is its own.

`ws`: many websocket clients of the app (a minimal asyncio websocket client: cheaper than a
library, so the load generator steals less CPU from the server on a 2-core machine). Each
connects with its user's session cookie, optionally waits for `go` on stdin (so the
orchestrator can read the server's RSS with every socket open and idle), sends one turn at
its start offset and times every frame until the final `complete` article.

`direct`: the reference. The same replies, straight from the upstream with an httpx streaming
client (httpx + httpx-sse + json.loads), timed the same way.

Run: python -m bench.load SPEC.json RESULT.json
"""

import asyncio
import base64
import itertools
import json
import os
import re
import sys
import time
from html import unescape
from typing import Any

import httpx
from httpx_sse import EventSource

from bench.common import expected_text

# Deltas append to the reply's streaming tail (`-tail`; `-content` before it had one), and a
# snapshot restates the content with the text inside that tail.
DELTA_RE = re.compile(
    r'<span hx-swap-oob="beforeend:#msg-[0-9a-f-]+-(?:content|tail)">(.*?)</span>', re.S
)
SNAPSHOT_RE = re.compile(
    r'<div hx-swap-oob="innerHTML:#msg-[0-9a-f-]+-content">'
    r'(?:<span id="msg-[0-9a-f-]+-tail" class="stream-tail">)?(.*?)(?:</span>)?</div>',
    re.S,
)
STATUS_RE = re.compile(r'data-status="(\w+)"')
# The finished reply replaces its article out of band; the attribute's place in the opening tag
# moved (`<article hx-swap-oob="true" id=…` before, `<article id=… hx-swap-oob="true"` now).
FINISHED_RE = re.compile(r'<article\b[^>]*\shx-swap-oob="true"')
COMPOSER_ERROR_RE = re.compile(r'<p id="composer-error"[^>]*>(.*?)</p>', re.S)


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


class WebSocket(asyncio.Protocol):
    """Just enough RFC 6455 for a client: handshake, masked text out, unmasked frames in."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = bytearray()
        self.open = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.handshaken = False
        self.transport: asyncio.Transport | None = None
        self.on_text = None
        self.fragments: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, text: str) -> None:
        data = text.encode()
        key = os.urandom(4)
        n = len(data)
        if n < 126:
            head = bytes((0x81, 0x80 | n))
        elif n < 65536:
            head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
        self.transport.write(head + key + _mask(data, key))  # type: ignore[union-attr]

    def _control(self, opcode: int, payload: bytes) -> None:
        key = os.urandom(4)
        head = bytes((0x80 | opcode, 0x80 | len(payload)))
        self.transport.write(head + key + _mask(payload, key))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buffer
        buf += data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status:
                self.open.set_exception(ConnectionError(status.decode(errors="replace")))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.handshaken = True
            self.open.set_result(None)
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            length = b1 & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = int.from_bytes(buf[2:4], "big")
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = int.from_bytes(buf[2:10], "big")
                offset = 10
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            opcode = b0 & 0x0F
            if opcode in (1, 2, 0):
                self.fragments.append(payload)
                if b0 & 0x80:
                    message = b"".join(self.fragments)
                    self.fragments = []
                    if self.on_text is not None:
                        self.on_text(message.decode(), now)
            elif opcode == 9:
                self._control(0xA, payload)
            elif opcode == 8:
                self.transport.close()  # type: ignore[union-attr]


class Turn:
    """One client's turn: what it saw and when."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.sent_at = 0.0
        self.started_at: float | None = None
        self.delta_times: list[float] = []
        self.pieces: list[str] = []
        self.done_at: float | None = None
        self.status = ""
        self.error = ""
        self.finished = asyncio.get_running_loop().create_future()

    def on_text(self, text: str, now: float) -> None:
        if text.startswith('<span hx-swap-oob="beforeend:'):
            self.delta_times.append(now)
            self.pieces.extend(unescape(piece) for piece in DELTA_RE.findall(text))
        elif FINISHED_RE.match(text):
            match = STATUS_RE.search(text)
            self.status = match[1] if match else "?"
            self.done_at = now
            if not self.finished.done():
                self.finished.set_result(None)
        elif text.startswith('<div hx-swap-oob="beforeend:#transcript">'):
            self.started_at = now
        elif text.startswith('<div hx-swap-oob="innerHTML:'):
            match = SNAPSHOT_RE.search(text)
            if match:
                self.pieces = [unescape(match[1])]
        else:
            match = COMPOSER_ERROR_RE.search(text)
            if match and match[1]:
                self.error = unescape(match[1])
                if not self.finished.done():
                    self.finished.set_result(None)

    def result(self) -> dict[str, Any]:
        delivered = "".join(self.pieces)
        times = self.delta_times
        return {
            "ok": self.status == "complete" and delivered == expected_text(self.message),
            "status": self.status,
            "error": self.error,
            "ttft": times[0] - self.sent_at if times else None,
            "total": self.done_at - self.sent_at if self.done_at else None,
            "frames": len(times),
            "delivered_ok": delivered == expected_text(self.message),
            "gaps": [b - a for a, b in itertools.pairwise(times)],
        }


async def _ws_connect(port: int, client: dict[str, Any]) -> WebSocket:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws/c/{client['conversation']}/ HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: http://127.0.0.1:{port}\r\n"
        f"Cookie: sessionid={client['cookie']}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: WebSocket(request), "127.0.0.1", port)
    await asyncio.wait_for(protocol.open, 30)
    return protocol


def _send_frame(message: str) -> str:
    return json.dumps(
        {
            "action": "send",
            "message": message,
            "sampling": "default",
            "temperature": "1",
            "top_p": "1",
            "reasoning_effort": "off",
            "max_tokens": "1000",
            "client_token": "bench",
        }
    )


async def _ws_turn(ws: WebSocket, message: str, limit: float) -> dict[str, Any]:
    turn = Turn(message)
    ws.on_text = turn.on_text
    turn.sent_at = time.perf_counter()
    ws.send_text(_send_frame(message))
    try:
        await asyncio.wait_for(asyncio.shield(turn.finished), limit)
    except TimeoutError:
        turn.error = turn.error or "timed out"
    return turn.result()


def _after_lead(lead: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """The measured turn's timings; it is only ok if the lead-in turn was delivered whole too."""
    measured["delivered_turns"] = int(lead["delivered_ok"]) + int(measured["delivered_ok"])
    measured["ok"] = measured["ok"] and lead["ok"]
    measured["delivered_ok"] = measured["delivered_ok"] and lead["delivered_ok"]
    measured["error"] = measured.get("error") or lead.get("error", "")
    return measured


async def run_ws(spec: dict[str, Any]) -> dict[str, Any]:
    port, clients = spec["port"], spec["clients"]
    gate = asyncio.Semaphore(64)

    ports = spec.get("ports") or [port]

    async def connect(index: int, client: dict[str, Any]) -> WebSocket | Exception:
        async with gate:
            try:
                return await _ws_connect(ports[index % len(ports)], client)
            except Exception as exc:
                return exc

    sockets = await asyncio.gather(*(connect(i, c) for i, c in enumerate(clients)))
    connected = sum(1 for s in sockets if isinstance(s, WebSocket))
    if spec.get("wait_go"):
        print(f"connected {connected}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    # Let the snapshot request each socket makes on connect settle before timing.
    await asyncio.sleep(0.2)
    cpu0 = time.process_time()
    t0 = time.perf_counter()

    async def one(ws: WebSocket | Exception, client: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(ws, WebSocket):
            return {"ok": False, "error": f"connect: {ws!r}", "gaps": []}
        delay = t0 + client["start"] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if not client.get("lead"):
            return await _ws_turn(ws, client["message"], spec["timeout"])
        lead = await _ws_turn(ws, client["lead"], spec["timeout"])
        return _after_lead(lead, await _ws_turn(ws, client["message"], spec["timeout"]))

    if spec.get("sequential"):
        results = [await one(ws, c) for ws, c in zip(sockets, clients, strict=True)]
    else:
        results = await asyncio.gather(
            *(one(ws, c) for ws, c in zip(sockets, clients, strict=True))
        )
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    for ws in sockets:
        if isinstance(ws, WebSocket):
            ws.transport.close()  # type: ignore[union-attr]
    return {"clients": results, "connected": connected, "elapsed": elapsed, "cpu": cpu}


async def _direct_turn(client: httpx.AsyncClient, url: str, message: str) -> dict[str, Any]:
    payload = {
        "model": "anthropic/claude-sonnet-4.5",
        "messages": [{"role": "user", "content": message}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 1000,
    }
    times: list[float] = []
    pieces: list[str] = []
    loads = json.loads
    sent_at = time.perf_counter()
    async with client.stream(
        "POST", url, json=payload, headers={"Authorization": "Bearer bench"}
    ) as response:
        async for sse in EventSource(response).aiter_sse():
            data = sse.data
            if data == "[DONE]":
                break
            chunk = loads(data)
            choices = chunk.get("choices")
            if choices:
                text = (choices[0].get("delta") or {}).get("content")
                if text:
                    times.append(time.perf_counter())
                    pieces.append(text)
    done_at = time.perf_counter()
    delivered = "".join(pieces)
    return {
        "ok": delivered == expected_text(message),
        "status": "complete",
        "error": "",
        "ttft": times[0] - sent_at if times else None,
        "total": done_at - sent_at,
        "frames": len(times),
        "delivered_ok": delivered == expected_text(message),
        "gaps": [b - a for a, b in itertools.pairwise(times)],
    }


async def run_direct(spec: dict[str, Any]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{spec['port']}/v1/chat/completions"
    clients = spec["clients"]
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=10.0),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
    ) as http:
        cpu0 = time.process_time()
        t0 = time.perf_counter()

        async def one(client: dict[str, Any]) -> dict[str, Any]:
            delay = t0 + client["start"] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                lead = client.get("lead")
                if lead:
                    first = await asyncio.wait_for(_direct_turn(http, url, lead), spec["timeout"])
                measured = await asyncio.wait_for(
                    _direct_turn(http, url, client["message"]), spec["timeout"]
                )
                return _after_lead(first, measured) if lead else measured
            except Exception as exc:
                return {"ok": False, "error": repr(exc), "gaps": []}

        if spec.get("sequential"):
            results = [await one(c) for c in clients]
        else:
            results = await asyncio.gather(*(one(c) for c in clients))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    return {"clients": results, "connected": len(clients), "elapsed": elapsed, "cpu": cpu}


def main() -> None:
    spec_path, result_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    runner = run_ws if spec["mode"] == "ws" else run_direct
    result = asyncio.run(runner(spec))
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
