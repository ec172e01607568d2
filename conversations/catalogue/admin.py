"""Staff's side of the models: which are offered to whom, what the gateway last said about
them, which request shape each model was found to take, and which conversations sit on a model
that is retiring."""

from django.contrib import admin
from django.db.models import Q
from django.http import HttpRequest

from conversations.admin_filters import YesNoFilter
from conversations.catalogue import selectors
from conversations.gateway.dialect import Dialect
from conversations.models import GatewayModel, ModelDialect, ModelOffer


class RetiringModelFilter(YesNoFilter):
    """Conversations whose model retires within the notice period or already has: their next
    turn goes to another model."""

    title = "model retiring"
    parameter_name = "model_retiring"
    fixed_choices = (("yes", "Retiring or retired"), ("no", "No"))

    def condition(self) -> Q:
        ids = selectors.retiring_model_ids(
            catalogue=selectors.catalogue_current(), on=selectors.today()
        )
        return Q(model__in=ids)


@admin.register(ModelOffer)
class ModelOfferAdmin(admin.ModelAdmin[ModelOffer]):
    list_display = ("model_id", "groups_column")
    filter_horizontal = ("groups",)

    @admin.display(description="Offered to")
    def groups_column(self, offer: ModelOffer) -> str:
        names = [group.name for group in offer.groups.all()]
        return ", ".join(names) or "Everyone"


@admin.register(GatewayModel)
class GatewayModelAdmin(admin.ModelAdmin[GatewayModel]):
    """Read-only: the background refresh writes these; the operator's file overrides them."""

    list_display = (
        "model_id",
        "display_name",
        "kind",
        "context_window",
        "max_output_tokens",
        "status",
        "shutdown_at",
        "replaced_by",
        "refreshed_at",
    )
    list_filter = ("listed", "status")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ModelDialect)
class ModelDialectAdmin(admin.ModelAdmin[ModelDialect]):
    """What the gateway was found to take, per model, in words. Deleting a row makes the next
    turn start from the configured dialect again (and learn anew if it is refused)."""

    list_display = ("model_id", "gateway", "dialect_column", "updated_at")
    fields = ("model_id", "gateway", "dialect_column", "updated_at")
    readonly_fields = fields
    list_filter = ("gateway",)

    @admin.display(description="Request shape")
    def dialect_column(self, row: ModelDialect) -> str:
        dialect = Dialect.from_json(row.dialect)
        return dialect.summary() if dialect is not None else "not readable (ignored)"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
