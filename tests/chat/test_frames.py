"""The HTML fragments websocket frames carry while a reply streams."""

from conversations.chat import frames

MID = "5b0c3c8e-0000-4000-8000-000000000001"


def test_deltas_append_to_the_tail_not_after_the_rendered_blocks() -> None:
    frame = frames.text_appended(message_id=MID, text="more <b>", reasoning="")

    assert f'hx-swap-oob="beforeend:#msg-{MID}-tail"' in frame
    assert "more &lt;b&gt;" in frame


def test_rendered_markdown_keeps_the_tail_inside_its_last_paragraph() -> None:
    frame = frames.text_rendered(
        message_id=MID, html="<p>Set <code>KEY</code> to</p>", tail=" talk `to"
    )

    assert frame.endswith(
        f'<p>Set <code>KEY</code> to<span id="msg-{MID}-tail" class="stream-tail">'
        " talk `to</span></p></div>"
    )


def test_rendered_markdown_keeps_the_tail_inside_the_last_list_item_and_code() -> None:
    listed = frames.text_rendered(message_id=MID, html="<ul>\n<li>one</li>\n</ul>\n", tail="")
    coded = frames.text_rendered(
        message_id=MID, html='<div class="codeblock"><pre><code>x = 1</code></pre></div>', tail="+"
    )

    assert f'<li>one<span id="msg-{MID}-tail" class="stream-tail"></span></li>' in listed
    assert f'<code>x = 1<span id="msg-{MID}-tail" class="stream-tail">+</span></code>' in coded


def test_a_snapshot_starts_a_fresh_tail() -> None:
    frame = frames.text_replaced(message_id=MID, text="so far", reasoning="")

    assert f'<span id="msg-{MID}-tail" class="stream-tail">so far</span>' in frame


def test_the_tail_never_joins_inline_emphasis() -> None:
    frame = frames.text_rendered(
        message_id=MID, html="<p>Some <strong>bold</strong></p>\n", tail=""
    )

    assert f'<strong>bold</strong><span id="msg-{MID}-tail"' in frame
