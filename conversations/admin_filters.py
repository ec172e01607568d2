"""What the admin's list filters of fixed choices share, whichever sub-domain's admin uses them."""

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest


class FixedChoicesFilter(admin.SimpleListFilter):
    """A list filter whose choices, (value, label) pairs, are known when the class is written."""

    fixed_choices: tuple[tuple[str, str], ...] = ()

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return list(self.fixed_choices)


class YesNoFilter(FixedChoicesFilter):
    """Rows that meet `condition()` (yes) or do not (no); any other value filters nothing. A
    subclass may relabel the two choices, never revalue them."""

    fixed_choices = (("yes", "Yes"), ("no", "No"))

    def condition(self) -> Q:
        raise NotImplementedError

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(self.condition())
        if self.value() == "no":
            return queryset.exclude(self.condition())
        return queryset
