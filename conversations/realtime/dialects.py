"""The gateway client's dialect memory, kept in the database for every server process.

The client asks for the dialect that worked for a model before each turn and tells the memory
when the gateway accepted a switched one; with the rows shared, a process that never saw the
refusal sends its first turn in the learned shape straight away.
"""

import logging

from conversations.catalogue import selectors, services
from conversations.chat.orm import orm_concurrent
from conversations.gateway.dialect import Dialect

logger = logging.getLogger(__name__)


class DatabaseDialects:
    """The working dialect per model at one gateway (named by its base URL). A database that
    cannot be reached costs at most one refused request, never the turn."""

    def __init__(self, *, gateway: str) -> None:
        self.gateway = gateway

    async def get(self, model_id: str) -> Dialect | None:
        try:
            stored = await orm_concurrent(selectors.dialect_remembered)(
                gateway=self.gateway, model_id=model_id
            )
        except Exception:
            logger.warning("could not read the remembered dialect of %s", model_id, exc_info=True)
            return None
        return Dialect.from_json(stored) if stored is not None else None

    async def remember(self, model_id: str, dialect: Dialect) -> None:
        try:
            await orm_concurrent(services.dialect_remember)(
                gateway=self.gateway, model_id=model_id, dialect=dialect.as_json()
            )
        except Exception:
            logger.warning("could not store the dialect of %s", model_id, exc_info=True)
            return
        logger.warning(
            "the gateway %s takes %s as: %s (remembered for every process)",
            self.gateway,
            model_id,
            dialect.summary(),
        )
