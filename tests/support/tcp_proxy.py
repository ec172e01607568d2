"""A TCP proxy that injects network faults between the app and PostgreSQL or Redis.

The proxy runs its own asyncio loop in a background thread, so the same object serves an
async test (the app in the test's own loop), a sync test and Daphne subprocesses (they are
given `proxy.url_for(...)` as DATABASE_URL or REDIS_URL). Three states:

- flowing: bytes pass both ways;
- cut: every open connection is closed at once and new ones are closed as soon as they are
  accepted, as when the server goes away;
- stalled: connections stay open and new ones are accepted, but no byte moves either way
  until the proxy flows again (then everything held is delivered, in order);
- open connections stalled: only the connections open at that moment hold their bytes (for
  good, unless restored), while new ones flow: a connection a firewall or NAT silently
  dropped, which only a client-side bound ever ends.
"""

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")
CHUNK = 65536


class TcpFaultProxy:
    def __init__(self, *, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        # Whether new connections flow, and each open connection's own switch.
        self._flowing = True
        self._flows: set[asyncio.Event] = set()
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        # Connections accepted since start, and those closed at once because of a cut: lets a
        # test tell that the app really uses the proxy, and that it tried again while cut.
        self.accepted = 0
        self.refused = 0

    # Control, from any thread.

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._listen())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close_all())
            loop.close()

        self._thread = threading.Thread(target=run, name="tcp-fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the TCP fault proxy did not start")

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self) -> None:
        """Close every connection and refuse new ones until `restore`."""
        self._call(self._set(cut=True, flowing=True))

    def stall(self) -> None:
        """Hold every byte (connections stay open) until `restore`."""
        self._call(self._set(cut=False, flowing=False))

    def stall_open_connections(self) -> None:
        """Hold the bytes of the connections open now, until `restore`; new ones flow."""
        self._call(self._stall_open())

    def restore(self) -> None:
        self._call(self._set(cut=False, flowing=True))

    def url_for(self, url: str) -> str:
        """`url` (postgres://..., redis://...) with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.host}:{self.port}" if userinfo else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    # The loop's side.

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "the proxy is not started"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set(self, *, cut: bool, flowing: bool) -> None:
        self._cut = cut
        if cut:
            self._abort_all()
        self._flowing = flowing
        for flow in self._flows:
            if flowing:
                flow.set()
            else:
                flow.clear()

    async def _stall_open(self) -> None:
        for flow in self._flows:
            flow.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_all()

    async def _close_all(self) -> None:
        self._abort_all()

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._cut:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        if self._cut:
            writer.transport.abort()
            target_writer.transport.abort()
            return
        self._writers.update((writer, target_writer))
        flow = asyncio.Event()
        if self._flowing:
            flow.set()
        self._flows.add(flow)
        await asyncio.gather(
            self._pipe(reader, target_writer, flow),
            self._pipe(target_reader, writer, flow),
            return_exceptions=True,
        )
        self._flows.discard(flow)
        for each in (writer, target_writer):
            self._writers.discard(each)
            each.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flow: asyncio.Event
    ) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                # A stall holds the bytes here; a cut meanwhile aborts the transport.
                await flow.wait()
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
