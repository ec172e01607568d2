"""The one place the app turns a reply's stored parameters into a request.

The gateway package builds the body from a model profile; this adapter feeds it the profile
the catalogue knows for the model and the stored parameters, in the configured dialect (the
client negotiates it further when the gateway refuses an aspect of it).
"""

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings

from conversations.catalogue import selectors as catalogue
from conversations.gateway.content import RequestStyle
from conversations.gateway.dialect import Dialect
from conversations.gateway.payload import TurnRequest, options_from_params


def turn_request(
    *,
    model_id: str,
    params: Mapping[str, Any],
    messages: Sequence[Mapping[str, Any]],
    system_prompt: str,
    current_catalogue: catalogue.Catalogue | None = None,
) -> TurnRequest:
    """`current_catalogue`: the one the caller has read already (read here when None)."""
    return TurnRequest(
        profile=(current_catalogue or catalogue.catalogue_current()).profile(model_id),
        options=options_from_params(model=model_id, params=params),
        messages=messages,
        system_prompt=system_prompt,
        dialect=Dialect.of(RequestStyle(settings.CHAT_REQUEST_STYLE)),
    )
