"""Numbers and text from the gateway, made safe before the app sees them.

Every value a reply carries ends up in a database column or on a socket, so each is bounded
here: token counts to a sane range, cost to what a ``Decimal(max_digits=12, decimal_places=6)``
column holds, text to what PostgreSQL ``text`` and UTF-8 can hold.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Final

# More tokens than any model reads or writes in one turn: a larger count is a gateway bug.
MAX_TOKENS_COUNT: Final = 10_000_000
# DecimalField(max_digits=12, decimal_places=6): six places, below a million dollars.
COST_PLACES: Final = Decimal("0.000001")
MAX_COST: Final = Decimal("999999.999999")

REPLACEMENT: Final = "\ufffd"
# NUL cannot be stored in PostgreSQL text; a lone surrogate cannot be encoded as UTF-8.
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")


def token_count(value: object) -> int | None:
    """A token count, or None (unknown) when absent, not an integer, negative or absurd."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int):
        return None
    if 0 <= value <= MAX_TOKENS_COUNT:
        return value
    return None


def cost_usd(value: object) -> Decimal | None:
    """A cost in dollars rounded to six places, or None when it is not a sane amount."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, str) and len(value) > 64:
        return None
    try:
        # str() first so a float like 0.0012 does not become 0.00119999999...
        amount = Decimal(str(value).strip())
        if not amount.is_finite():
            return None
        amount = amount.quantize(COST_PLACES, rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        return None
    if amount < 0 or amount > MAX_COST:
        return None
    return amount


def storable_text(text: str) -> str:
    """``text`` without NUL and with every lone surrogate replaced by U+FFFD."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else REPLACEMENT, text)


def _join_pair(high: str, low: str) -> str:
    return (high + low).encode("utf-16-le", "surrogatepass").decode("utf-16-le")


class TextJoiner:
    """Joins one stream of text pieces whose UTF-16 surrogate pairs may be split in two.

    JSON escapes a character outside the BMP as two ``\\uXXXX`` halves; a gateway that cuts text
    between them sends ``"\\ud83d"`` in one chunk and ``"\\ude00"`` in the next. The first half
    is held back until the next piece shows whether its partner follows.
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = ""

    def feed(self, piece: str) -> str:
        if self._held:
            if piece and "\udc00" <= piece[0] <= "\udfff":
                piece = _join_pair(self._held, piece[0]) + piece[1:]
            else:
                piece = REPLACEMENT + piece
            self._held = ""
        if piece and "\ud800" <= piece[-1] <= "\udbff":
            self._held, piece = piece[-1], piece[:-1]
        return storable_text(piece)

    def flush(self) -> str:
        """What is still held at the end of the stream (a half that never found its pair)."""
        held, self._held = self._held, ""
        return REPLACEMENT if held else ""


def bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
