"""What the admin's yes/no list filters share, whichever sub-domain's admin uses them."""

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest


class YesNoFilter(admin.SimpleListFilter):
    """Rows that meet `condition()` (yes) or do not (no); any other value filters nothing."""

    yes_label = "Yes"
    no_label = "No"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [("yes", self.yes_label), ("no", self.no_label)]

    def condition(self) -> Q:
        raise NotImplementedError

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(self.condition())
        if self.value() == "no":
            return queryset.exclude(self.condition())
        return queryset
