"""What can go wrong talking to the gateway, as a small class hierarchy (like httpx's).

Every error carries ``message``, a sentence fit to show the user with the API key scrubbed out,
``status`` (the HTTP status when there was one) and ``retryable`` (the same request may succeed
later; the UI may offer "try again"). The client retries automatically only the classes in
``AUTO_RETRIED`` and only before anything reached the user.
"""

from __future__ import annotations

from typing import Final

from conversations.gateway.dialect import Aspect


class GatewayError(Exception):
    """A failure talking to the model, with a message fit to show the user."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, retryable={self.retryable!r}, "
            f"message={self.message!r})"
        )

    def with_message(self, message: str) -> GatewayError:
        """The same error (same class and facts) with another message."""
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        Exception.__init__(copy, message)
        copy.message = message
        return copy


class AuthError(GatewayError):
    """The API key was rejected (401)."""


class CreditsError(GatewayError):
    """The account is out of credits (403)."""


class RateLimited(GatewayError):
    """Too many requests (429)."""


class ServerError(GatewayError):
    """The gateway or the model failed (5xx, 529)."""


class ModelUnavailable(GatewayError):
    """The model id is retired or unknown (a 400/404/410 naming the model)."""

    def __init__(self, message: str, *, model: str = "", status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.model = model


class BadRequest(GatewayError):
    """The gateway refused the request itself (4xx): nothing to retry as is."""


class ShapeRejected(BadRequest):
    """A 400 that names a part of the request's shape the model does not take; switching the
    dialect's ``aspect`` may make the same turn acceptable."""

    def __init__(self, message: str, *, aspect: Aspect, status: int | None = 400) -> None:
        super().__init__(message, status=status)
        self.aspect = aspect


class ContextTooLong(BadRequest):
    """The prompt does not fit the model's context ("prompt is too long: N tokens > M")."""

    def __init__(
        self, message: str, *, prompt_tokens: int, limit: int, status: int | None = 400
    ) -> None:
        super().__init__(message, status=status)
        self.prompt_tokens = prompt_tokens
        self.limit = limit


class Timeout(GatewayError):
    """No content arrived within the configured time."""


class ConnectionFailed(GatewayError):
    """The gateway could not be reached, or the connection was lost."""


class StreamBroken(GatewayError):
    """The gateway reported an error inside a 200 reply (mid-stream or in the JSON body)."""


class ProtocolError(GatewayError):
    """The gateway answered with something that is not a reply at all (HTML, bad JSON…)."""


class UnreadableStream(ProtocolError):
    """Data arrived, but nothing in it is a shape the parser knows: never an empty answer.

    ``raw_event`` holds the first data event (bounded, key scrubbed) for staff.
    """

    def __init__(self, message: str, *, raw_event: str) -> None:
        super().__init__(message)
        self.raw_event = raw_event


# Worth an automatic retry before the first token; timeouts are excluded because another full
# timeout before anything appears is worse than letting the user decide.
AUTO_RETRIED: Final = (RateLimited, ServerError, ConnectionFailed, StreamBroken)
