"""A fast loopback stand-in for the gateway: raw asyncio HTTP/1.1, chunked SSE, keep-alive.

`POST /v1/chat/completions` streams the reply that the last user message's spec asks for
(`bench n=… iv=… ttft=… seed=…`, see common.py): `n` OpenAI-style content chunks, one every
`iv` seconds on an absolute schedule (no drift), the first `ttft` seconds after the headers,
then a finish chunk, a usage chunk and `[DONE]`.

Run: python -m bench.upstream --port PORT
"""

import argparse
import asyncio
import json
import signal

from bench.common import parse_spec, reply_tokens

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)


def _chunk(event: dict) -> bytes:
    data = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _token_chunk(text: str) -> bytes:
    return _chunk(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "model": "bench",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
    )


def _tail(count: int) -> bytes:
    finish = _chunk(
        {"id": "chatcmpl-bench", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    )
    usage = _chunk(
        {
            "id": "chatcmpl-bench",
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": count, "total_tokens": count + 12},
        }
    )
    done = b"data: [DONE]\n\n"
    return finish + usage + b"%x\r\n%s\r\n" % (len(done), done) + b"0\r\n\r\n"


def _last_user_message(body: bytes) -> str:
    try:
        payload = json.loads(body)
        for message in reversed(payload.get("messages", [])):
            if message.get("role") == "user":
                return str(message.get("content", ""))
    except (ValueError, AttributeError, TypeError):
        pass
    return ""


async def _stream(writer: asyncio.StreamWriter, message: str) -> None:
    count, interval, ttft, seed = parse_spec(message)
    chunks = [_token_chunk(token) for token in reply_tokens(seed, count)]
    loop = asyncio.get_running_loop()
    writer.write(HEAD)
    start = loop.time() + ttft
    if interval <= 0:
        if ttft > 0:
            await asyncio.sleep(ttft)
        writer.write(b"".join(chunks))
    else:
        for index, chunk in enumerate(chunks):
            delay = start + index * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(chunk)
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
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
            await _stream(writer, _last_user_message(body))
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
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
