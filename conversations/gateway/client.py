"""The httpx client for the AIML API's OpenAI-compatible ``/chat/completions`` endpoint.

Framework-free on purpose (stdlib and httpx only) so it can be tested against a loopback server
and reused outside Django. One retry loop serves both streamed turns and short completions.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

import httpx

from conversations.gateway.classify import (
    decode_body,
    protocol_error,
    retry_reason,
    safe_detail,
    status_error,
)
from conversations.gateway.dialect import Aspect, Dialect, DialectMemory, InMemoryDialects
from conversations.gateway.errors import (
    AUTO_RETRIED,
    ConnectionFailed,
    GatewayError,
    ShapeRejected,
    Timeout,
)
from conversations.gateway.events import (
    ContentDelta,
    DialectSwitched,
    DialectUsed,
    Event,
    ParameterNotSent,
    Retrying,
)
from conversations.gateway.parse import StreamParser, completion_events
from conversations.gateway.payload import TurnRequest
from conversations.gateway.sse import SSEDecoder

logger = logging.getLogger(__name__)

# A Retry-After longer than this (e.g. the free tier's hourly limit) is reported, not waited.
MAX_HONOURED_RETRY_AFTER: Final = 60.0
_MAX_ERROR_BODY_BYTES: Final = 64 * 1024
_MAX_JSON_BODY_BYTES: Final = 8 * 1024 * 1024
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    buffer = bytearray()
    async for piece in response.aiter_bytes():
        buffer += piece
        if len(buffer) >= limit:
            break
    return bytes(buffer[:limit])


class UpstreamClient:
    """One shared connection pool per event loop; safe for hundreds of concurrent streams.

    ``timeout`` is the longest wait for the reply to progress: for the first response, and then
    between pieces of content (keep-alive comments and empty chunks do not count).
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_attempts: int = 3,
        backoff_base: float = 1.0,
        backoff_max: float = 20.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        dialects: DialectMemory | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._transport = transport
        self._max_attempts = max(1, max_attempts)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep
        self._dialects: DialectMemory = dialects if dialects is not None else InMemoryDialects()
        try:
            self._host = httpx.URL(self._url).host or self._url
        except httpx.InvalidURL:
            self._host = "(invalid URL)"
        # httpx pools are bound to the loop that opened their connections; Django may drive
        # this client from several loops (async_to_sync), so keep one pool per loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]
        self._clients = weakref.WeakKeyDictionary()

    # -- plumbing -----------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout, connect=self._connect_timeout),
                # As many kept alive as may be open: with hundreds of replies streaming, a
                # smaller keep-alive pool closed most connections after each reply, and every
                # next turn paid a new TCP (and TLS) handshake.
                limits=httpx.Limits(
                    max_connections=1000, max_keepalive_connections=1000, keepalive_expiry=30.0
                ),
                transport=self._transport,
                follow_redirects=False,
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
        # Pools of other (possibly dead) loops cannot be awaited from here; let them go.
        self._clients.clear()

    def _headers(self, request_id: str | None, *, stream: bool) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        if request_id is not None and _REQUEST_ID_RE.fullmatch(request_id):
            headers["X-Client-Request-Id"] = request_id
        elif request_id is not None:
            logger.debug("dropping malformed client request id (%d chars)", len(request_id))
        return headers

    def _transport_error(self, exc: httpx.HTTPError, *, started: bool) -> GatewayError:
        """Map an httpx failure; ``started`` means response headers had already arrived."""
        reason = safe_detail(str(exc) or type(exc).__name__, self._api_key)
        if isinstance(exc, httpx.ConnectTimeout):
            return ConnectionFailed(
                f"Could not connect to the model service at {self._host} within "
                f"{self._connect_timeout:g} s.",
                retryable=True,
            )
        if isinstance(exc, httpx.TimeoutException):
            return self._timeout_error(started=started)
        if isinstance(exc, httpx.ConnectError):
            return ConnectionFailed(
                f"Could not connect to the model service at {self._host}: {reason}",
                retryable=True,
            )
        if isinstance(exc, httpx.DecodingError):
            return protocol_error("a reply that could not be decoded")
        if isinstance(exc, httpx.UnsupportedProtocol):
            return ConnectionFailed(f"The model service URL is not usable: {reason}")
        if started:
            return ConnectionFailed(
                "The connection to the model was lost before the reply finished.",
                retryable=True,
            )
        return ConnectionFailed(
            f"The connection to the model service at {self._host} failed: {reason}",
            retryable=True,
        )

    def _timeout_error(self, *, started: bool) -> Timeout:
        what = "to send more of its reply" if started else "to respond"
        return Timeout(f"The model took longer than {self._timeout:g} s {what}.", retryable=True)

    async def _open(
        self, payload: Mapping[str, Any], headers: Mapping[str, str], model: str
    ) -> httpx.Response:
        """Send the request and return a 2xx response with its body still unread."""
        client = self._client()
        try:
            request = client.build_request("POST", self._url, json=payload, headers=headers)
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=False) from exc
        except httpx.InvalidURL as exc:
            raise ConnectionFailed("The model service URL is not valid.") from exc
        if 200 <= response.status_code < 300:
            return response
        try:
            raw = await _read_limited(response, _MAX_ERROR_BODY_BYTES)
        except httpx.HTTPError:
            raw = b""
        finally:
            await response.aclose()
        raise status_error(
            response.status_code, decode_body(raw), response.headers, model, self._api_key
        )

    def _retry_delay(self, attempt: int, error: GatewayError) -> float | None:
        """Delay before the next try, or None when the error must go to the caller."""
        if attempt >= self._max_attempts:
            return None
        if not error.retryable or not isinstance(error, AUTO_RETRIED):
            return None
        if error.retry_after is not None:
            if error.retry_after > MAX_HONOURED_RETRY_AFTER:
                return None
            return error.retry_after
        # Full jitter spreads out hundreds of streams that failed at the same moment.
        ceiling = min(self._backoff_max, self._backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0.0, ceiling)

    def _give_up(self, error: GatewayError, attempt: int) -> GatewayError:
        if attempt <= 1:
            return error
        return error.with_message(f"{error.message} (gave up after {attempt} attempts)")

    # -- the one retry loop -------------------------------------------------------------------

    async def _run(
        self, request: Mapping[str, Any] | TurnRequest, *, stream: bool, request_id: str | None
    ) -> AsyncIterator[Event]:
        """Events of one turn, trying again (with a ``Retrying`` event before each wait) while
        nothing has been yielded to the caller yet.

        A ``TurnRequest`` is sent in the dialect the memory knows for its model (else its own);
        a 400 naming one aspect of the shape switches that aspect and sends the turn once more,
        before the first token, with a ``DialectSwitched`` event; the memory learns the new
        dialect once the gateway accepts it.
        """
        headers = self._headers(request_id, stream=stream)
        dialect: Dialect | None = None
        reported: set[ParameterNotSent] = set()
        error: GatewayError
        if isinstance(request, TurnRequest):
            model = request.options.model
            if request.dialect_read:
                dialect = request.starting_dialect
            else:
                dialect = await self._dialects.get(model) or request.starting_dialect
            built = request.build(dialect, stream=stream)
            payload = built.body
            for notice in built.not_sent:
                yield notice
            reported.update(built.not_sent)
        else:
            model = str(request.get("model", ""))
            payload = dict(request)
            if not stream:
                payload["stream"] = False
                # OpenAI-style APIs reject stream_options on non-streamed requests.
                payload.pop("stream_options", None)
        switched: set[Aspect] = set()
        attempt = 1
        while True:
            produced = False
            try:
                response = await self._open(payload, headers, model)
                if switched and dialect is not None:
                    await self._dialects.remember(model, dialect)
                try:
                    if dialect is not None:
                        yield DialectUsed(model=model, dialect=dialect)
                    async for event in self._events(response):
                        produced = True
                        yield event
                finally:
                    await response.aclose()
                return
            except ShapeRejected as exc:
                error = exc
                if isinstance(request, TurnRequest) and dialect is not None and not produced:
                    other = dialect.switched(exc.aspect)
                    rebuilt = request.build(other, stream=stream)
                    if exc.aspect not in switched and rebuilt.body != payload:
                        switched.add(exc.aspect)
                        dialect, payload = other, rebuilt.body
                        logger.info(
                            "gateway refused the %s shape for %s; switching", exc.aspect, model
                        )
                        yield DialectSwitched(model=model, aspect=exc.aspect, dialect=dialect)
                        for notice in rebuilt.not_sent:
                            if notice not in reported:
                                reported.add(notice)
                                yield notice
                        continue
            except GatewayError as exc:
                error = exc
            delay = None if produced else self._retry_delay(attempt, error)
            if delay is None:
                raise self._give_up(error, attempt)
            logger.warning(
                "upstream try %d/%d failed (%s, status=%s, request_id=%s); retrying in %.2f s",
                attempt,
                self._max_attempts,
                type(error).__name__,
                error.status,
                headers.get("X-Client-Request-Id", "-"),
                delay,
            )
            yield Retrying(attempt=attempt, delay=delay, reason=retry_reason(error))
            attempt += 1
            await self._sleep(delay)

    # -- reading one response -----------------------------------------------------------------

    async def _events(self, response: httpx.Response) -> AsyncIterator[Event]:
        content_type = response.headers.get("content-type", "").lower()
        if "json" in content_type:
            body = await self._read_json(response)
            for event in completion_events(body, secret=self._api_key):
                yield event
            return
        if "html" in content_type:
            raise protocol_error("an HTML page instead of a reply stream")

        parser = StreamParser(secret=self._api_key)
        decoder = SSEDecoder()
        loop = asyncio.get_running_loop()
        reads = response.aiter_bytes()
        deadline = loop.time() + self._timeout
        try:
            while not parser.done:
                try:
                    # Only content moves the deadline: a stream of keep-alive comments or empty
                    # chunks times out like silence does.
                    async with asyncio.timeout_at(deadline):
                        raw = await anext(reads)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if parser.finish is not None:
                        logger.info("upstream stream stalled after its finish reason; ending")
                        break
                    raise self._timeout_error(started=True) from None
                progressed = False
                for sse in decoder.feed(raw):
                    events = parser.feed(sse.data)
                    for event in events:
                        progressed = True
                        yield event
                    if parser.done:
                        break
                if progressed:
                    deadline = loop.time() + self._timeout
            if not parser.done:
                for sse in decoder.close():
                    for event in parser.feed(sse.data):
                        yield event
        except httpx.HTTPError as exc:
            if parser.finish is None:
                parser.log_oddities()
                raise self._transport_error(exc, started=True) from exc
            logger.info("upstream stream ended abnormally after its finish reason; ignoring")
        except GatewayError:
            parser.log_oddities()
            raise
        finally:
            # httpx's byte iterator is an async generator: close it here, not in the GC.
            close = getattr(reads, "aclose", None)
            if close is not None:
                await close()
        for event in parser.end():
            yield event

    async def _read_json(self, response: httpx.Response) -> Any:
        try:
            raw = await _read_limited(response, _MAX_JSON_BODY_BYTES)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=True) from exc
        body = decode_body(raw)
        if not isinstance(body, dict | list):
            raise protocol_error("a reply that is not valid JSON")
        return body

    # -- public API ---------------------------------------------------------------------------

    async def stream_chat(
        self, request: Mapping[str, Any] | TurnRequest, *, request_id: str | None = None
    ) -> AsyncIterator[Event]:
        """Stream one chat turn as typed events.

        ``request`` is a ``TurnRequest`` (built here, in the dialect that works for its model,
        with a ``ParameterNotSent`` event first for each parameter the model does not take) or
        a ready JSON body.

        Ordering: notices; deltas (``ReasoningDelta``, ``ContentDelta``, ``Refusal``,
        ``Citation``) as they arrive; then, once the body ends (``[DONE]`` or a clean end of
        body), at most one ``Usage`` followed by exactly one ``Finished``. A connection lost or
        stalled after the finish reason arrived still ends normally, since the reply itself is
        complete.

        Errors raise ``GatewayError`` subclasses. Retryable failures are retried (with a
        ``Retrying`` event before each wait) only while nothing has been yielded yet. Close the
        iterator (``contextlib.aclosing``) when abandoning it early so the connection is
        released at once.
        """
        async for event in self._run(request, stream=True, request_id=request_id):
            yield event

    async def complete(
        self, request: Mapping[str, Any] | TurnRequest, *, request_id: str | None = None
    ) -> str:
        """Run one non-streamed turn and return the reply text (used for short titles).
        Some gateways stream even when asked not to; the text is the same."""
        return "".join(
            [
                event.text
                async for event in self._run(request, stream=False, request_id=request_id)
                if isinstance(event, ContentDelta)
            ]
        )
