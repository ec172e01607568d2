"""Channel layers: the in-memory one without its per-call O(channels) costs, and the Redis one
serving this process's own sockets directly.

In memory:

Channels' `InMemoryChannelLayer` scans every channel and group for expired entries on every
`receive` and `group_send`, and `group_send` spawns one task per member. With hundreds of open
sockets each streaming deltas that made the layer the largest single cost on the hot path
(bench/REPORT.md). Here the scan runs at most once a second (expiry is measured in tens of
seconds, so nothing expires noticeably later) and a group send puts the message on each
member's queue directly (each put never waits, so the tasks bought nothing), copying a flat
message of scalars with dict.copy rather than deepcopy.
"""

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from copy import deepcopy
from typing import Any

import redis.exceptions
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

logger = logging.getLogger(__name__)

CLEAN_EVERY = 1.0
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
# What a Redis outage raises (a refused or reset connection, a read that timed out).
REDIS_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
RECEIVE_RETRY_FIRST = 0.1
RECEIVE_RETRY_MAX = 2.0
PUMP_IDLE_SECONDS = 5.0
# How long a send to other processes may wait on Redis before it counts as failed: a Redis
# that stops answering (a stall, not a cut) would otherwise hold the sender until the client's
# socket timeout, and with it everything queued behind that send.
REMOTE_SEND_TIMEOUT = 5.0
# Frames for other processes that may wait per group while Redis is slow: beyond it the oldest
# replaceable one is dropped (its viewers see the gap and ask for a snapshot).
REMOTE_BACKLOG = 64
# How long a group's members on other processes, as read from Redis, serve the frames a later
# one makes up for: a stream whose viewers are all in this process then sends them no Redis
# command at all. A viewer that joins elsewhere meanwhile gets the turn and the end of the reply
# at once (those always read the members) and deltas within this long; it asks for a snapshot
# when it connects and again at the first gap, so it misses nothing.
REMOTE_MEMBERS_FRESH_SECONDS = 0.5
# Groups whose members are remembered before those not sent to lately are forgotten.
REMOTE_MEMBERS_GROUPS = 256


def _copy(message: dict[str, Any]) -> dict[str, Any]:
    """What deepcopy gives, without its cost for the usual flat message of scalars."""
    for value in message.values():
        if type(value) not in _SCALARS:
            return deepcopy(message)
    return message.copy()


class FastInMemoryChannelLayer(InMemoryChannelLayer):
    _next_clean = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_clean:
            return
        self._next_clean = now + CLEAN_EVERY
        super()._clean_expired()  # type: ignore[misc]  # private, so absent from the stubs

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        queue = self.channels.get(channel)
        if queue is None:  # (the base class builds a throwaway Queue on every send)
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        entry = (time.time() + self.expiry, _copy(message))
        try:
            queue.put_nowait(entry)
        except asyncio.QueueFull:
            # Make room by dropping the oldest frame a later one makes up for (as FrameBuffer
            # does): the end of a reply or a turn is never what a full socket loses.
            held = [queue.get_nowait() for _ in range(queue.qsize())]
            drop = next(
                (i for i, (_, held_message) in enumerate(held) if _replaceable(held_message)), None
            )
            for index, kept in enumerate(held):
                if index != drop:
                    queue.put_nowait(kept)
            if drop is None:
                raise ChannelFull(channel) from None
            queue.put_nowait(entry)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        members = self.groups.get(group)
        if not members:
            return
        for channel in list(members):
            with contextlib.suppress(ChannelFull):
                await self.send(channel, message)


class FrameBuffer(asyncio.Queue[dict[str, Any]]):
    """One socket's buffer of messages: when full it drops the oldest frame that a later one
    makes up for (a delta or render: the next delta shows the gap and brings a snapshot; a
    sidebar update: the next one redraws it all), never the end of a reply or a turn."""

    def put_nowait(self, item: dict[str, Any]) -> None:
        if self.full():
            held = [self.get_nowait() for _ in range(self.qsize())]
            drop = next((index for index, message in enumerate(held) if _replaceable(message)), 0)
            for index, message in enumerate(held):
                if index != drop:
                    super().put_nowait(message)
        super().put_nowait(item)


REPLACEABLE = frozenset({"reply.delta", "reply.render", "reply.notice", "sidebar.changed"})


def _replaceable(message: Any) -> bool:
    return isinstance(message, dict) and message.get("type") in REPLACEABLE


def _drop_oldest_replaceable(
    backlog: collections.deque[tuple[dict[str, Any], asyncio.Future[None] | None]],
) -> None:
    for index, (_, done) in enumerate(backlog):
        if done is None:
            del backlog[index]
            return


class LocalFirstRedisChannelLayer(RedisChannelLayer):  # type: ignore[misc]  # untyped library
    """channels_redis's layer, with this process's own sockets served without Redis.

    Every process-local channel of a process shares one Redis queue and its capacity, so
    under a burst that queue fills and sends to the process fail (`ChannelFull`), and every
    frame to a socket in the generating process made a round trip through Redis for nothing.
    Here a message for a channel of this process goes straight into the layer's own receive
    buffer (in order, per channel; a buffer that is full drops its oldest message, which the
    offset-stamped deltas turn into a snapshot request), and only other processes' channels
    cross Redis. This process's group members are mirrored in memory for that.

    One pump task per process reads the process's Redis queue into the same buffers. While
    Redis is unreachable it waits and tries again instead of failing (a failed receive would
    end the socket's consumer): sockets stay open, local deliveries go on, and messages from
    other processes resume when Redis is back.

    A group send never waits on Redis for the frames a later one makes up for (deltas, renders,
    notices, sidebars): their way to other processes is a per-group queue sent in order in the
    background, so a Redis that stalls costs other processes' viewers frames (they catch up
    from a snapshot), never this process's sockets theirs. Other messages (a turn, the end of a
    reply, snapshots) go through the same queue but the sender waits for them, at most
    REMOTE_SEND_TIMEOUT a message, and learns of a failure.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._remote_timeout = float(kwargs.pop("remote_send_timeout", REMOTE_SEND_TIMEOUT))
        super().__init__(*args, **kwargs)
        # Per group: messages for other processes not yet sent, each with the future its
        # sender waits on (None for a replaceable frame), and the task sending them in order.
        self._remote_backlog: dict[
            str, collections.deque[tuple[dict[str, Any], asyncio.Future[None] | None]]
        ] = {}
        self._remote_senders: dict[str, asyncio.Task[None]] = {}
        self._remote_failing = False
        self.receive_buffer: collections.defaultdict[str, FrameBuffer] = collections.defaultdict(
            functools.partial(FrameBuffer, self.capacity)
        )
        self._local_groups: dict[str, set[str]] = {}
        # Per group: until when the members on other processes last read from Redis serve
        # replaceable frames, and those members.
        self._remote_members_read: dict[str, tuple[float, list[str]]] = {}
        self._home_loop: asyncio.AbstractEventLoop | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._pump_idle: asyncio.TimerHandle | None = None
        self._waiting: dict[str, int] = {}
        # The Redis queue every channel of this process shares (`new_channel`'s default).
        self._own_queue = f"specific.{self.client_prefix}!"

    def _is_local(self, channel: str) -> bool:
        return channel.startswith(self._own_queue)

    def _deliver_locally(self, channel: str, message: dict[str, Any]) -> None:
        copy = _copy(message)
        home = self._home_loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if home is not None and running is not home and not home.is_closed():
            # A send from another thread's loop (async_to_sync in a sync view): the buffers
            # belong to the receiving loop.
            home.call_soon_threadsafe(self._buffer_put, channel, copy)
        else:
            self._buffer_put(channel, copy)

    def _buffer_put(self, channel: str, message: dict[str, Any]) -> None:
        self.receive_buffer[channel].put_nowait(message)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if self._is_local(channel):
            assert isinstance(message, dict), "message is not a dict"
            self._deliver_locally(channel, message)
            return
        async with asyncio.timeout(self._remote_timeout):
            await _once_more_if_stale(
                lambda: super(LocalFirstRedisChannelLayer, self).send(channel, message)
            )

    async def receive(self, channel: str) -> dict[str, Any]:
        if not self._is_local(channel):
            remote: dict[str, Any] = await super().receive(channel)
            return remote
        loop = asyncio.get_running_loop()
        if self._home_loop is not loop:
            self._home_loop, self._pump_task = loop, None
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = loop.create_task(self._pump(), name="channel-layer-pump")
        if self._pump_idle is not None:
            self._pump_idle.cancel()
            self._pump_idle = None
        queue = self.receive_buffer[channel]
        self._waiting[channel] = self._waiting.get(channel, 0) + 1
        try:
            return await queue.get()
        finally:
            self._waiting[channel] -= 1
            if not self._waiting[channel]:
                del self._waiting[channel]
                if queue.empty() and self.receive_buffer.get(channel) is queue:
                    del self.receive_buffer[channel]
            if not self._waiting:
                # Stop reading Redis once nothing has listened for a while (not between two
                # messages of the same socket).
                self._pump_idle = loop.call_later(PUMP_IDLE_SECONDS, self._pump_stop)

    def _pump_stop(self) -> None:
        self._pump_idle = None
        if not self._waiting and self._pump_task is not None:
            # Safe: channels_redis keeps a message it popped in a backup queue until handled.
            self._pump_task.cancel()
            self._pump_task = None

    async def _pump(self) -> None:
        """Move the messages other processes sent to this one into the receive buffers."""
        pause = RECEIVE_RETRY_FIRST
        failing = False
        while True:
            try:
                target, message = await self.receive_single(self._own_queue)
            except REDIS_UNREACHABLE as exc:
                if not failing:
                    logger.warning("channel layer unreachable (%s); receiving again", exc)
                    failing = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECEIVE_RETRY_MAX)
                continue
            if failing:
                logger.warning("channel layer reachable again")
                failing, pause = False, RECEIVE_RETRY_FIRST
            for channel in target if isinstance(target, list) else [target]:
                self._buffer_put(channel, _copy(message))

    async def group_add(self, group: str, channel: str) -> None:
        if self._is_local(channel):
            self._local_groups.setdefault(group, set()).add(channel)
        await _once_more_if_stale(
            lambda: super(LocalFirstRedisChannelLayer, self).group_add(group, channel)
        )

    async def group_discard(self, group: str, channel: str) -> None:
        members = self._local_groups.get(group)
        if members is not None:
            members.discard(channel)
            if not members:
                del self._local_groups[group]
        await _once_more_if_stale(
            lambda: super(LocalFirstRedisChannelLayer, self).group_discard(group, channel)
        )

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """This process's members first and directly, then the others through Redis: in the
        background for a replaceable frame; else awaited, a failure raised (it costs only the
        other processes' viewers)."""
        assert self.require_valid_group_name(group), "Group name not valid"
        for channel in list(self._local_groups.get(group, ())):
            self._deliver_locally(channel, message)
        if asyncio.get_running_loop() is not self._home_loop:
            # A send from another loop (a sync view's async_to_sync, a script): no background
            # task may outlive it, so it waits, bounded.
            async with asyncio.timeout(self._remote_timeout):
                await _once_more_if_stale(lambda: self._group_send_remote(group, message))
            return
        done: asyncio.Future[None] | None = None
        if not _replaceable(message):
            done = asyncio.get_running_loop().create_future()
        elif self._remote_members_known(group) == []:
            return
        backlog = self._remote_backlog.setdefault(group, collections.deque())
        backlog.append((_copy(message), done))
        if len(backlog) > REMOTE_BACKLOG:
            _drop_oldest_replaceable(backlog)
        if group not in self._remote_senders:
            self._remote_senders[group] = asyncio.get_running_loop().create_task(
                self._remote_send_backlog(group), name="channel-layer-remote-send"
            )
        if done is not None:
            # Behind at most the messages already queued, each bounded; a failure after the
            # first drops the replaceable ones, so this waits a few timeouts at worst.
            async with asyncio.timeout(self._remote_timeout * 2):
                await done

    async def _remote_send_backlog(self, group: str) -> None:
        backlog = self._remote_backlog[group]
        try:
            while backlog:
                message, done = backlog.popleft()
                if done is not None and done.done():
                    continue  # its sender gave up waiting: it will send again if it must
                try:
                    async with asyncio.timeout(self._remote_timeout):
                        await _once_more_if_stale(
                            functools.partial(self._group_send_remote, group, message)
                        )
                except Exception as exc:
                    if done is not None and not done.done():
                        done.set_exception(exc)
                    if not self._remote_failing:
                        logger.warning("sends to other processes fail (%r); going on", exc)
                        self._remote_failing = True
                    # Each would wait out the timeout too: drop the frames that others replace.
                    kept = [entry for entry in backlog if entry[1] is not None]
                    backlog.clear()
                    backlog.extend(kept)
                    continue
                if self._remote_failing:
                    logger.warning("sends to other processes work again")
                    self._remote_failing = False
                if done is not None and not done.done():
                    done.set_result(None)
        finally:
            del self._remote_senders[group]
            if not backlog:
                del self._remote_backlog[group]

    async def _group_send_remote(self, group: str, message: dict[str, Any]) -> None:
        remote = self._remote_members_known(group) if _replaceable(message) else None
        if remote is None:
            remote = await self._remote_members(group)
        if remote:
            await self._send_through_redis(group, remote, message)

    def _remote_members_known(self, group: str) -> list[str] | None:
        """The group's members on other processes, if read from Redis recently enough."""
        read = self._remote_members_read.get(group)
        if read is None or read[0] < time.monotonic():
            return None
        return read[1]

    async def _remote_members(self, group: str) -> list[str]:
        key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        await connection.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
        remote = [
            name
            for name in (member.decode("utf8") for member in await connection.zrange(key, 0, -1))
            if not self._is_local(name)
        ]
        now = time.monotonic()
        if len(self._remote_members_read) > REMOTE_MEMBERS_GROUPS:
            # Groups no longer sent to (conversations nobody streams) are forgotten.
            for stale in [g for g, (until, _) in self._remote_members_read.items() if until < now]:
                del self._remote_members_read[stale]
        self._remote_members_read[group] = (now + REMOTE_MEMBERS_FRESH_SECONDS, remote)
        return remote

    async def _send_through_redis(
        self, group: str, channels: list[str], message: dict[str, Any]
    ) -> None:
        """channels_redis's group send, for the given members only."""
        by_connection, messages, capacities = self._map_channel_keys_to_connection(
            channels, message
        )
        for index, keys in by_connection.items():
            connection = self.connection(index)
            pipe = connection.pipeline()
            for key in keys:
                pipe.zremrangebyscore(key, min=0, max=int(time.time()) - int(self.expiry))
            await pipe.execute()
            args = [messages[key] for key in keys] + [capacities[key] for key in keys]
            args += [time.time(), self.expiry]
            over = await connection.eval(_GROUP_SEND_LUA, len(keys), *keys, *args)
            if over:
                logger.info("%s of %s channels over capacity in group %s", over, len(keys), group)


async def _once_more_if_stale(command: Callable[[], Awaitable[None]]) -> None:
    """Run a Redis command, and once more if the connection failed: after an outage the pool
    still holds connections the server closed, and only the next attempt gets a fresh one."""
    try:
        await command()
    except REDIS_UNREACHABLE:
        await command()


# channels_redis's script: add the message to each channel's queue that has room.
_GROUP_SEND_LUA = """
    local over_capacity = 0
    local current_time = ARGV[#ARGV - 1]
    local expiry = ARGV[#ARGV]
    for i=1,#KEYS do
        if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
            redis.call('ZADD', KEYS[i], current_time, ARGV[i])
            redis.call('EXPIRE', KEYS[i], expiry)
        else
            over_capacity = over_capacity + 1
        end
    end
    return over_capacity
"""
