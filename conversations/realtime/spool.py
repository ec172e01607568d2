"""The last resort for a finished reply the database would not take: a local append-only file.

A reply whose final save still fails after CHAT_SAVE_RETRY_SECONDS is written, whole, as one
JSON line to this process's file in CHAT_SPOOL_DIR (flushed and fsynced before the reply is
let go). Every process replays every file at start-up and before each recovery sweep: a
replayed line is saved exactly as the final save would have saved it, so the reply ends
complete (or stopped, or errored) with all its text, never `interrupted`.
"""

import dataclasses
import json
import logging
import os
import time
import uuid
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import InterfaceError, OperationalError

from conversations.chat import services

logger = logging.getLogger(__name__)

SUFFIX = ".jsonl"
# What a database that is away raises; anything else is a bug a retry would not fix.
DATABASE_AWAY = (OperationalError, InterfaceError)
ABANDONED_AFTER_SECONDS = 600


def spool_dir() -> Path:
    return Path(settings.CHAT_SPOOL_DIR)


def _file_for(worker: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in worker)
    return spool_dir() / f"{safe}{SUFFIX}"


def _encode(*, message_id: uuid.UUID, outcome: services.ReplyOutcome) -> str:
    fields = dataclasses.asdict(outcome)
    # Rendered again when the record is saved: the spool keeps what cannot be made again.
    del fields["content_html"]
    if fields["cost_usd"] is not None:
        fields["cost_usd"] = str(fields["cost_usd"])
    return json.dumps({"message_id": str(message_id), "outcome": fields}, ensure_ascii=False)


def _decode(line: str) -> tuple[uuid.UUID, services.ReplyOutcome]:
    record = json.loads(line)
    fields = record["outcome"]
    if fields.get("cost_usd") is not None:
        fields["cost_usd"] = Decimal(fields["cost_usd"])
    return uuid.UUID(record["message_id"]), services.ReplyOutcome(**fields)


def reply_spool(*, worker: str, message_id: uuid.UUID, outcome: services.ReplyOutcome) -> Path:
    """Append the reply's end to this process's spool file, durably."""
    path = _file_for(worker)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as spool:
        spool.write(_encode(message_id=message_id, outcome=outcome) + "\n")
        spool.flush()
        os.fsync(spool.fileno())
    logger.warning("reply %s spooled to %s until the database is back", message_id, path)
    return path


def spool_replay(*, worker: str) -> int:
    """Save every spooled reply (sync: call it off the event loop); returns how many.

    Each file is renamed before it is read, so a process still appending starts a new file
    rather than writing into one being replayed; lines the database still refuses go back to
    this process's own file."""
    directory = spool_dir()
    if not directory.is_dir():
        return 0
    saved = 0
    # A claimed file whose replayer died midway is claimed again once it is clearly abandoned.
    abandoned = [
        path
        for path in directory.glob(f"*{SUFFIX}.replaying-*")
        if path.stat().st_mtime < time.time() - ABANDONED_AFTER_SECONDS
    ]
    for path in sorted(directory.glob(f"*{SUFFIX}")) + abandoned:
        original = path.name.partition(".replaying-")[0]
        claimed = path.with_name(f"{original}.replaying-{uuid.uuid4().hex[:8]}")
        try:
            path.rename(claimed)
            os.utime(claimed)  # Claimed now: not abandoned.
            lines = claimed.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            continue  # Another process claimed it first.
        left: list[str] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                message_id, outcome = _decode(line)
            except (ValueError, KeyError, TypeError):
                logger.error("unreadable line in spool file %s dropped: %.200s", path, line)
                continue
            if left:
                left.append(line)  # The database is away: keep the rest in order.
                continue
            try:
                services.reply_finish(message_id=message_id, outcome=outcome)
            except DATABASE_AWAY:
                left.append(line)
                continue
            saved += 1
        if left:
            with _file_for(worker).open("a", encoding="utf-8") as spool:
                spool.write("".join(line + "\n" for line in left))
                spool.flush()
                os.fsync(spool.fileno())
        claimed.unlink(missing_ok=True)
    if saved:
        logger.warning("saved %d spooled replies", saved)
    return saved
