"""The local-first Redis channel layer: this process's sockets served without Redis, and
receives that outlast a Redis outage (through the TCP fault proxy)."""

import asyncio
import os
import uuid
from collections.abc import Callable

import pytest

from chatsite.layers import LocalFirstRedisChannelLayer
from tests.support.tcp_proxy import TcpFaultProxy

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(
        not os.environ.get("REDIS_URL"), reason="needs Redis (the PostgreSQL + Redis leg)"
    ),
]


async def _until(condition: Callable[[], bool]) -> None:
    """Poll a condition the proxy's thread changes (no event to wait on), with a deadline."""
    async with asyncio.timeout(10):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def _layer(url: str, prefix: str, capacity: int = 100) -> LocalFirstRedisChannelLayer:
    return LocalFirstRedisChannelLayer(hosts=[{"address": url}], prefix=prefix, capacity=capacity)


async def test_frames_for_this_process_arrive_in_order_while_redis_is_cut(
    redis_proxy: TcpFaultProxy,
) -> None:
    prefix = f"test-layers-{uuid.uuid4().hex[:8]}"
    here = _layer(redis_proxy.url_for(os.environ["REDIS_URL"]), prefix)
    elsewhere = _layer(os.environ["REDIS_URL"], prefix)
    local, remote = await here.new_channel(), await elsewhere.new_channel()
    await here.group_add("chat.g", local)
    await elsewhere.group_add("chat.g", remote)

    receiving = asyncio.ensure_future(here.receive(local))  # this loop is the layer's home
    await asyncio.to_thread(redis_proxy.cut)
    for offset in range(3):
        # Deltas for other processes go in the background: the sender never waits on Redis.
        await here.group_send("chat.g", {"type": "reply.delta", "offset": offset})
    # The end of a reply is waited for: the send says the other process's member is out of
    # reach, after delivering here.
    with pytest.raises(Exception):  # noqa: B017, PT011 (redis-py or OS connection error)
        await here.group_send("chat.g", {"type": "reply.finished", "offset": 3})
    received = [await asyncio.wait_for(receiving, 5)]
    received += [await asyncio.wait_for(here.receive(local), 5) for _ in range(3)]

    assert [message["offset"] for message in received] == [0, 1, 2, 3]
    await asyncio.to_thread(redis_proxy.restore)
    await here.group_discard("chat.g", local)
    await elsewhere.group_discard("chat.g", remote)
    await elsewhere.flush()


async def test_a_stalled_redis_holds_no_local_frame_and_bounds_a_waited_send(
    redis_proxy: TcpFaultProxy,
) -> None:
    prefix = f"test-layers-{uuid.uuid4().hex[:8]}"
    here = LocalFirstRedisChannelLayer(
        hosts=[{"address": redis_proxy.url_for(os.environ["REDIS_URL"])}],
        prefix=prefix,
        remote_send_timeout=1,
    )
    elsewhere = _layer(os.environ["REDIS_URL"], prefix)
    local, remote = await here.new_channel(), await elsewhere.new_channel()
    await here.group_add("chat.g", local)
    await elsewhere.group_add("chat.g", remote)
    receiving = asyncio.ensure_future(here.receive(local))
    await here.group_send("chat.g", {"type": "reply.delta", "offset": 0})
    assert (await asyncio.wait_for(elsewhere.receive(remote), 5))["offset"] == 0

    await asyncio.to_thread(redis_proxy.stall)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for offset in range(1, 4):
        await here.group_send("chat.g", {"type": "reply.delta", "offset": offset})
    assert loop.time() - started < 0.5  # no delta waited on the stalled Redis
    with pytest.raises(TimeoutError):
        await here.group_send("chat.g", {"type": "reply.finished", "offset": 4})
    # Bounded: one timeout for the delta on the wire, one for the end of the reply at most.
    assert loop.time() - started < 2 * 1 + 1
    received = [await asyncio.wait_for(receiving, 5)]
    received += [await asyncio.wait_for(here.receive(local), 5) for _ in range(4)]
    assert [message["offset"] for message in received] == [0, 1, 2, 3, 4]

    await asyncio.to_thread(redis_proxy.restore)
    await here.group_send("chat.g", {"type": "reply.finished", "offset": 5})
    # Other processes get what is sent once Redis answers again (what the stall cost them, a
    # replaceable frame, their next delta shows as a gap).
    async with asyncio.timeout(10):
        while (await elsewhere.receive(remote))["offset"] != 5:
            pass
    await here.group_discard("chat.g", local)
    await elsewhere.group_discard("chat.g", remote)
    await elsewhere.flush()


async def test_a_receive_waiting_across_a_redis_outage_gets_what_is_sent_after_it(
    redis_proxy: TcpFaultProxy,
) -> None:
    prefix = f"test-layers-{uuid.uuid4().hex[:8]}"
    here = _layer(redis_proxy.url_for(os.environ["REDIS_URL"]), prefix)
    elsewhere = _layer(os.environ["REDIS_URL"], prefix)
    channel = await here.new_channel()
    waiting = asyncio.ensure_future(here.receive(channel))
    # The pump is reading Redis through the proxy before the cut.
    await _until(lambda: redis_proxy.open_connections > 0)

    await asyncio.to_thread(redis_proxy.cut)
    refused = redis_proxy.refused
    # It tries again while Redis is away.
    await _until(lambda: redis_proxy.refused > refused)
    assert not waiting.done()
    await asyncio.to_thread(redis_proxy.restore)
    await elsewhere.send(channel, {"type": "reply.delta", "offset": 7})

    message = await asyncio.wait_for(waiting, 15)
    assert message["offset"] == 7
    await elsewhere.flush()


async def test_a_socket_that_falls_behind_loses_frames_it_can_catch_up_on_never_the_end() -> None:
    layer = _layer(os.environ["REDIS_URL"], f"test-layers-{uuid.uuid4().hex[:8]}", capacity=3)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "reply.delta", "offset": 0})
    await layer.send(channel, {"type": "reply.finished", "message_id": "a"})
    for offset in (1, 2, 3):
        await layer.send(channel, {"type": "reply.delta", "offset": offset})

    received = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(3)]

    assert [m.get("offset", m["type"]) for m in received] == ["reply.finished", 2, 3]


async def _zrange_calls() -> int:
    """How many ZRANGE commands the Redis server has run (each reads a group's members)."""
    import redis.asyncio

    client = redis.asyncio.from_url(os.environ["REDIS_URL"])
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_zrange", {}).get("calls", 0))


async def test_a_stream_to_this_process_alone_does_not_ask_redis_for_members_per_frame() -> None:
    layer = _layer(os.environ["REDIS_URL"], f"test-layers-{uuid.uuid4().hex[:8]}")
    local = await layer.new_channel()
    await layer.group_add("chat.g", local)
    await layer.group_send("chat.g", {"type": "reply.delta", "offset": 0})
    await _until(lambda: not layer._remote_senders)
    before = await _zrange_calls()

    for offset in range(1, 51):
        await layer.group_send("chat.g", {"type": "reply.delta", "offset": offset})
    await _until(lambda: not layer._remote_senders)

    assert await _zrange_calls() - before <= 1
    received = [await asyncio.wait_for(layer.receive(local), 5) for _ in range(51)]
    assert [message["offset"] for message in received] == list(range(51))
    await layer.group_discard("chat.g", local)
    await layer.flush()


async def test_a_viewer_joining_on_another_process_gets_the_end_at_once_and_deltas_soon() -> None:
    prefix = f"test-layers-{uuid.uuid4().hex[:8]}"
    here, elsewhere = (
        _layer(os.environ["REDIS_URL"], prefix),
        _layer(os.environ["REDIS_URL"], prefix),
    )
    local = await here.new_channel()
    await here.group_add("chat.g", local)
    # Only this process's member so far: frames stay here.
    await here.group_send("chat.g", {"type": "reply.delta", "offset": 0})
    remote = await elsewhere.new_channel()
    await elsewhere.group_add("chat.g", remote)

    # What is not made up for by a later frame asks Redis who is there, every time.
    await here.group_send("chat.g", {"type": "turn.started", "offset": 1})
    assert (await asyncio.wait_for(elsewhere.receive(remote), 5))["offset"] == 1
    # Deltas reach the newcomer from then on (a newcomer that missed some asks for a snapshot).
    await here.group_send("chat.g", {"type": "reply.delta", "offset": 2})
    assert (await asyncio.wait_for(elsewhere.receive(remote), 5))["offset"] == 2

    await here.group_discard("chat.g", local)
    await elsewhere.group_discard("chat.g", remote)
    await here.flush()
