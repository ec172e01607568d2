"""Races between threads, each with its own database connection."""

import threading
from collections.abc import Callable

from django.db import close_old_connections, connection


def race(target: Callable[[], object], count: int) -> list[BaseException | None]:
    """Run `target` in `count` threads released at once; what each raised, if anything."""
    barrier = threading.Barrier(count)
    outcomes: list[BaseException | None] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            target()
        except BaseException as exc:  # recorded for the assertion
            outcomes[index] = exc
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes
