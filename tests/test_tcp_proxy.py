"""The fault proxy itself: it forwards, cuts, stalls and restores (against a local echo server)."""

import asyncio

import pytest
import pytest_asyncio

from tests.support.tcp_proxy import TcpFaultProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest_asyncio.fixture
async def proxied_echo():
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = TcpFaultProxy(target_host="127.0.0.1", target_port=server.sockets[0].getsockname()[1])
    proxy.start()
    yield proxy
    proxy.stop()
    server.close()


async def _round_trip(proxy: TcpFaultProxy, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(data)), 5)
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_bytes_flow_both_ways(proxied_echo: TcpFaultProxy) -> None:
    assert await _round_trip(proxied_echo, b"hello") == b"hello"
    assert proxied_echo.accepted == 1


@pytest.mark.asyncio
async def test_a_cut_closes_open_connections_and_refuses_new_ones_until_restored(
    proxied_echo: TcpFaultProxy,
) -> None:
    reader, writer = await asyncio.open_connection(proxied_echo.host, proxied_echo.port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"

    await asyncio.to_thread(proxied_echo.cut)
    # The open connection ends (EOF or reset), it does not hang.
    writer.write(b"more")
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await asyncio.wait_for(reader.readexactly(4), 5)
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await _round_trip(proxied_echo, b"new")

    await asyncio.to_thread(proxied_echo.restore)
    assert await _round_trip(proxied_echo, b"back") == b"back"


@pytest.mark.asyncio
async def test_a_stall_holds_bytes_and_restore_delivers_them_in_order(
    proxied_echo: TcpFaultProxy,
) -> None:
    reader, writer = await asyncio.open_connection(proxied_echo.host, proxied_echo.port)
    await asyncio.to_thread(proxied_echo.stall)
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.3)
    await asyncio.to_thread(proxied_echo.restore)
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
    writer.close()


@pytest.mark.asyncio
async def test_stalling_open_connections_holds_theirs_while_new_ones_flow(
    proxied_echo: TcpFaultProxy,
) -> None:
    reader, writer = await asyncio.open_connection(proxied_echo.host, proxied_echo.port)
    writer.write(b"open")  # the proxy has taken the connection in
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"open"
    await asyncio.to_thread(proxied_echo.stall_open_connections)
    writer.write(b"held")
    await writer.drain()
    assert await _round_trip(proxied_echo, b"new one") == b"new one"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.3)
    await asyncio.to_thread(proxied_echo.restore)
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
    writer.close()


def test_url_for_keeps_credentials_path_and_query() -> None:
    proxy = TcpFaultProxy(target_host="db", target_port=5432)
    proxy.port = 4242
    assert (
        proxy.url_for("postgres://u:p@db:5432/name?x=1") == "postgres://u:p@127.0.0.1:4242/name?x=1"
    )
    assert proxy.url_for("redis://127.0.0.1:6379/1") == "redis://127.0.0.1:4242/1"
