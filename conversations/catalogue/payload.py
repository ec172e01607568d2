"""The one place the app turns a reply's stored parameters into a request body.

The gateway package builds the body; this adapter feeds it the model and the stored
parameters, so that a change in how bodies are built (profiles, dialects) lands here only.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings

from conversations.gateway.client import RequestStyle, TurnOptions, build_payload


def request_payload(
    *,
    model_id: str,
    params: Mapping[str, Any],
    messages: Sequence[Mapping[str, str]],
    system_prompt: str,
) -> dict[str, Any]:
    options = TurnOptions(
        model=model_id,
        max_tokens=params["max_tokens"],
        temperature=params.get("temperature"),
        top_p=params.get("top_p"),
        reasoning_effort=params.get("reasoning_effort"),
        stop=tuple(params.get("stop", ())),
    )
    return build_payload(
        options=options,
        messages=messages,
        system_prompt=system_prompt,
        style=RequestStyle(settings.CHAT_REQUEST_STYLE),
    )
