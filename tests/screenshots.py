"""`make screenshots`: the chat page in light and dark, desktop and phone, from a real Daphne.

Not collected by the normal suite (the name does not start with test_); the Makefile passes the
file to pytest explicitly. Images go to docs/screenshots/ and are committed for the README.
"""

from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from conversations.chat import services
from conversations.chat.rendering import markdown_to_html
from conversations.models import Conversation, Message
from tests.conftest import DaphneServer, sign_in
from tests.support.factories import exchange
from tests.support.upstream_server import FakeUpstream

pytestmark = pytest.mark.browser

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 860}, "phone": {"width": 375, "height": 812}}

QUESTION = "How do I read a large CSV in Python without running out of memory?"
ANSWER = """Read it **in chunks** instead of all at once. With pandas:

```python
import pandas as pd

total = 0
for chunk in pd.read_csv("big.csv", chunksize=100_000):
    total += chunk["amount"].sum()
print(total)
```

| Approach | Memory | Speed |
|---|---|---|
| `read_csv()` whole file | high | fast |
| `chunksize=` | bounded | fast |
| `csv` module, row by row | tiny | slower |

> Tip: pass `usecols=` and `dtype=` to cut memory further.
"""
FOLLOW_UP = "And with the standard library only?"
SECOND = """Use `csv.DictReader`, which yields one row at a time:

```python
import csv

with open("big.csv", newline="") as f:
    total = sum(float(row["amount"]) for row in csv.DictReader(f))
```

Memory stays flat whatever the file size."""


def _seed(user) -> Conversation:
    for title in ["Trip ideas for Lisbon", "Regex for ISO dates", "Explain CRDTs simply"]:
        other = services.conversation_create(owner=user)
        exchange(other, title, "…")
        services.conversation_rename(conversation_id=other.id, owner=user, title=title)
    conversation = Conversation.objects.create(owner=user, title="Reading big CSV files")
    parent = None
    turns = [
        (QUESTION, ANSWER, "The user wants bounded memory: chunked reading."),
        (FOLLOW_UP, SECOND, ""),
    ]
    for question, answer, reasoning in turns:
        asked = Message.objects.create(
            conversation=conversation, parent=parent, role=Message.Role.USER, content=question
        )
        parent = Message.objects.create(
            conversation=conversation,
            parent=asked,
            role=Message.Role.ASSISTANT,
            content=answer,
            content_html=markdown_to_html(answer),
            reasoning=reasoning,
            finish_reason="stop",
            model="anthropic/claude-sonnet-4.5",
            prompt_tokens=412,
            completion_tokens=236,
            reasoning_tokens=48 if reasoning else None,
            cost_usd=Decimal("0.004776"),
            time_to_first_token_ms=640,
            duration_ms=4210,
        )
    conversation.active_leaf = parent
    conversation.updated_at = timezone.now()
    conversation.save()
    return conversation


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_screenshot(
    chromium_browser, live: DaphneServer, upstream: FakeUpstream, user, theme: str, device: str
) -> None:
    conversation = _seed(user)
    context = chromium_browser.new_context(
        base_url=live.url, viewport=VIEWPORTS[device], color_scheme=theme, device_scale_factor=1
    )
    page: Page = context.new_page()
    sign_in(page, username=user.username)
    page.goto(f"/c/{conversation.id}/")
    expect(page.locator("article")).to_have_count(4)
    page.evaluate("document.getElementById('transcript').scrollTo(0, 0)")
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / f"chat-{theme}-{device}.png"))
    context.close()
