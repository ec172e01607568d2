"""A storage backend that fails like a full disk or an unreachable bucket, for fault tests."""

from typing import Any

from django.core.files.storage import FileSystemStorage


class StorageFailed(OSError):
    pass


class FailingStorage(FileSystemStorage):
    """The local filesystem, except that the `fail_on`-th file this instance saves raises.

    Configured through STORAGES["default"]["OPTIONS"]; Django builds a new instance when the
    setting changes, so the count starts afresh for each test."""

    def __init__(self, *, fail_on: int, **options: Any) -> None:
        super().__init__(**options)
        self.fail_on = fail_on
        self.saved = 0

    def _save(self, name: str, content: Any) -> str:
        self.saved += 1
        if self.saved == self.fail_on:
            raise StorageFailed(f"the storage refused {name}")
        return super()._save(name, content)
