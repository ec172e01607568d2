"""Remove orphaned attachments: `manage.py attachments_sweep` once, or `--every 3600` to keep
sweeping from a small sidecar process (or run it from cron / a systemd timer)."""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from conversations.attachments.services import attachments_sweep


class Command(BaseCommand):
    help = (
        "Delete attachments no message refers to, uploads never sent within "
        "CHAT_ATTACHMENT_UNSENT_TTL_HOURS, and stored files without a row."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--every",
            type=float,
            default=0,
            help="Sweep again every this many seconds (0: once, the default).",
        )

    def handle(self, *args: Any, every: float = 0, **options: Any) -> None:
        while True:
            result = attachments_sweep()
            self.stdout.write(f"Removed {result.rows} attachment rows and {result.files} files.")
            if every <= 0:
                return
            time.sleep(every)
