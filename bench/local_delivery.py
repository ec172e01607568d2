"""How many Redis round trips the frames of one process cost, with and without local delivery.

One process, `SOCKETS` sockets in one conversation group each receiving `FRAMES` deltas: the
channels_redis layer sends every frame through Redis and reads it back; the local-first layer
(chatsite.layers) delivers them in the process. Counts the Redis commands the client issues
and the wall time until every socket has every frame.

Run: REDIS_URL=redis://127.0.0.1:6379/1 DJANGO_DEBUG=1 .venv/bin/python -m bench.local_delivery
"""

import asyncio
import os
import time
import uuid
from collections import Counter

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django.setup()

import redis.asyncio.client  # noqa: E402
from channels_redis.core import RedisChannelLayer  # noqa: E402

from chatsite.layers import LocalFirstRedisChannelLayer  # noqa: E402

SOCKETS = 20
FRAMES = 200
commands: Counter[str] = Counter()
_execute = redis.asyncio.client.Redis.execute_command


async def _counted(self, *args, **options):  # type: ignore[no-untyped-def]
    commands[str(args[0]).upper()] += 1
    return await _execute(self, *args, **options)


redis.asyncio.client.Redis.execute_command = _counted  # type: ignore[method-assign]


async def measure(layer_class: type[RedisChannelLayer]) -> tuple[int, float, Counter[str]]:
    url = os.environ["REDIS_URL"]
    layer = layer_class(hosts=[{"address": url}], prefix=f"measure-{uuid.uuid4().hex[:8]}")
    group = "chat.measure"
    channels = [await layer.new_channel() for _ in range(SOCKETS)]
    for channel in channels:
        await layer.group_add(group, channel)

    async def read_all(channel: str) -> None:
        for _ in range(FRAMES):
            await layer.receive(channel)

    commands.clear()
    started = time.perf_counter()
    readers = [asyncio.create_task(read_all(channel)) for channel in channels]
    for offset in range(FRAMES):
        await layer.group_send(group, {"type": "reply.delta", "offset": offset, "text": "x" * 20})
    await asyncio.gather(*readers)
    elapsed = time.perf_counter() - started
    for channel in channels:
        await layer.group_discard(group, channel)
    counted = commands.copy()
    await layer.flush()
    return sum(counted.values()), elapsed, counted


async def main() -> None:
    for layer_class in (RedisChannelLayer, LocalFirstRedisChannelLayer):
        total, elapsed, counted = await measure(layer_class)
        top = ", ".join(f"{name} {count}" for name, count in counted.most_common(4))
        print(
            f"{layer_class.__name__}: {SOCKETS} sockets × {FRAMES} frames in {elapsed:.2f} s, "
            f"{total} Redis commands ({top})"
        )


if __name__ == "__main__":
    asyncio.run(main())
