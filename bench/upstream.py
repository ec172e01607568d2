"""A fast loopback stand-in for the gateway: raw asyncio HTTP/1.1, chunked SSE, keep-alive.

`POST /v1/chat/completions` streams the reply that the last user message's spec asks for
(`bench n=… iv=… ttft=… seed=…`, see common.py): `n` OpenAI-style content chunks, one every
`iv` seconds on an absolute schedule (no drift), the first `ttft` seconds after the headers,
then a finish chunk, a usage chunk and `[DONE]`. A request with `"stream": false` (the app's
title request) gets a short JSON completion at once, as from the gateway.

Run: python -m bench.upstream --port PORT
"""

import argparse
import asyncio
import functools
import heapq
import itertools
import json
import signal
from typing import Any

from bench.common import parse_spec, reply_tokens
from conversations.gateway import wire

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)


def _chunk(event: dict | str) -> bytes:
    data = wire.sse(event)
    return b"%x\r\n%s\r\n" % (len(data), data)


@functools.cache
def _token_chunk(text: str) -> bytes:
    # Cached: the vocabulary is small, so the upstream spends its CPU on sending, not encoding.
    return _chunk(wire.openai_content(text, chunk_id="chatcmpl-bench", model="bench"))


def _tail(count: int) -> bytes:
    tail = wire.openai_tail(
        finish_reason="stop", usage=wire.usage(12, count), chunk_id="chatcmpl-bench", model="bench"
    )
    return b"".join(_chunk(event) for event in tail) + b"0\r\n\r\n"


COMPLETION = wire.dumps(
    wire.completion_body("Bench conversation", usage=wire.usage(30, 3), model="bench")
).encode()
COMPLETION_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(COMPLETION), COMPLETION)
)


def _request(body: bytes) -> tuple[bool, str]:
    """(whether it asks for a stream, its last user message)."""
    try:
        payload = json.loads(body)
        streaming = payload.get("stream", True) is not False
        for message in reversed(payload.get("messages", [])):
            if message.get("role") == "user":
                return streaming, str(message.get("content", ""))
    except (ValueError, AttributeError, TypeError):
        pass
    return True, ""


class Scheduler:
    """Every token of every stream is sent from one loop over a heap of due times: one timer
    per tick instead of one task wake-up per token, so one process feeds hundreds of streams."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, list[bytes], int, float, asyncio.Transport, Any]] = []
        self._wake: asyncio.Future[None] | None = None
        self._ids = itertools.count()
        self._task: asyncio.Task[None] | None = None

    def add(
        self, transport: asyncio.Transport, chunks: list[bytes], start: float, interval: float
    ) -> asyncio.Future[None]:
        done = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (start, next(self._ids), chunks, 0, interval, transport, done))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while True:
            now = loop.time()
            while heap and heap[0][0] <= now:
                due, ident, chunks, index, interval, transport, done = heapq.heappop(heap)
                if transport.is_closing():
                    done.set_result(None)
                    continue
                transport.write(chunks[index])
                index += 1
                if index < len(chunks):
                    heapq.heappush(
                        heap, (due + interval, ident, chunks, index, interval, transport, done)
                    )
                else:
                    done.set_result(None)
            # Sleep until the next token is due, or until a new stream is added.
            self._wake = wake = loop.create_future()
            timer = loop.call_at(heap[0][0], _wake_up, wake) if heap else None
            await wake
            if timer is not None:
                timer.cancel()


def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_scheduler: Scheduler | None = None


async def _stream(writer: asyncio.StreamWriter, message: str) -> None:
    global _scheduler
    count, interval, ttft, seed = parse_spec(message)
    chunks = [_token_chunk(token) for token in reply_tokens(seed, count)]
    loop = asyncio.get_running_loop()
    writer.write(HEAD)
    if ttft > 0:
        await asyncio.sleep(ttft)
    if interval <= 0 or not chunks:
        writer.write(b"".join(chunks))
    else:
        if _scheduler is None:
            _scheduler = Scheduler()
        transport = writer.transport
        await _scheduler.add(transport, chunks, loop.time(), interval)  # type: ignore[arg-type]
    writer.write(_tail(count))
    await writer.drain()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            streaming, message = _request(body)
            if streaming:
                await _stream(writer, message)
            else:
                writer.write(COMPLETION_RESPONSE)
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    except asyncio.CancelledError:
        # Shutting down with keep-alive connections open: nothing to report.
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port, backlog=2048)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
