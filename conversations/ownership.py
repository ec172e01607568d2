"""The one rule for an id that comes from a client: it finds a row only among the user's own."""

import uuid
from typing import TypeVar

from django.contrib.auth.models import User
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db.models import Model, QuerySet

RowT = TypeVar("RowT", bound=Model)


def owned_row_get(
    rows: QuerySet[RowT], *, row_id: uuid.UUID | str, user: User, owner: str
) -> RowT | None:
    """The row with this id whose `owner` lookup (a path to a user, e.g. "conversation__owner")
    leads to `user`; None for a signed-out user, no such row and someone else's row alike, so
    the answer never tells them apart."""
    if not user.is_authenticated:
        return None
    try:
        return rows.get(id=row_id, **{owner: user})
    except (ObjectDoesNotExist, ValidationError, ValueError, TypeError):
        # ValidationError: text that is no UUID (Django's UUIDField says so, not ValueError).
        return None
