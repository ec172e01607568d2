"""StreamingMarkdown: a reply re-rendered as it grows, equal to a full render at every length,
and keeping finished blocks so each render only redoes the end (pure functions; no Django)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations.chat.rendering import StreamingMarkdown, markdown_to_html

# Whole blocks and block openings, including the ones that reach across a blank line (lists,
# indented code, unclosed fences), the ones decided by the next line (setext headings, tables)
# and reference definitions, which change links above them.
_BLOCKS = [
    "# Heading *em*",
    "### h",
    "Setext\n===",
    "Setext two\n---",
    "---",
    "***",
    "```python\ndef f(x):\n    return x < 1\n```",
    "```\nunclosed fence",
    "~~~js\nlet a = '<b>';\n~~~",
    "````\n```\n````",
    "    indented code <x>",
    "- item",
    "* star item",
    "+ plus item",
    "1. one",
    "2) two",
    "10. ten",
    "  - nested",
    "   continued text",
    "-",
    "1.",
    "> quote",
    "> > nested quote",
    ">",
    "| a | b |\n|---|:-:|\n| 1 | 2 |",
    "| x | y |",
    "|---|---|",
    "<div>html</div>",
    "<script>alert(1)</script>",
    "<!-- comment -->",
    "[ref]: https://e.example/ref",
    "[ref] and [other][ref]",
    "[a](https://x.example) ![i](https://i.example/p.png)",
    "para **bold** `code` ~~gone~~",
    "text",
    "   ",
    "\t- tabbed",
]
_INLINE = ["<", ">", "&", "`", "*", "_", "[", "]", "(", ")", "|", "\\", "x", " ", "\x00", "é"]
_SEPARATORS = ["\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", "\n \n"]

_markdown = st.lists(
    st.tuples(
        st.sampled_from(_BLOCKS),
        st.lists(st.sampled_from(_INLINE), max_size=3).map("".join),
        st.sampled_from(_SEPARATORS),
    ),
    min_size=1,
    max_size=12,
).map(lambda parts: "".join(block + inline + sep for block, inline, sep in parts))

# Line by line, so that block markers meet each other often: a list item after a list, a
# heading marker that turns out not to be one, an underline under a paragraph, a table row.
_MARKERS = ["", "", "# ", "#", "- ", "-", "* ", "1. ", "1.", "1", "2) ", "> ", ">", "    ", "  "]
_MARKERS += ["```", "~~~", "| ", "|---|", "---", "===", "[r]: https://r.example ", "\t", "<div>"]
_WORDS = ["", "a", "x y", "[r]", "*b*", "`c`", "| d |", "#e", "1. f", "<i>", "&amp;", "ü"]
_lines = st.lists(
    st.tuples(st.sampled_from(_MARKERS), st.sampled_from(_WORDS), st.sampled_from(_SEPARATORS)),
    min_size=1,
    max_size=14,
).map(lambda parts: "".join(marker + words + sep for marker, words, sep in parts))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_lines)
def test_every_prefix_of_marker_heavy_lines_renders_as_a_full_render_would(text: str) -> None:
    streaming = StreamingMarkdown()

    for end in range(len(text) + 1):
        prefix = text[:end]
        assert streaming.render(prefix) == markdown_to_html(prefix), repr(prefix)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_markdown)
def test_every_prefix_renders_as_a_full_render_would(text: str) -> None:
    streaming = StreamingMarkdown()

    for end in range(len(text) + 1):
        prefix = text[:end]
        assert streaming.render(prefix) == markdown_to_html(prefix), repr(prefix)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_markdown, st.lists(st.integers(min_value=1, max_value=40), max_size=60))
def test_renders_at_arbitrary_chunk_boundaries_match_and_the_last_is_exact(
    text: str, chunk_sizes: list[int]
) -> None:
    streaming = StreamingMarkdown()
    end = 0
    for size in chunk_sizes:
        end = min(len(text), end + size)
        assert streaming.render(text[:end]) == markdown_to_html(text[:end])

    assert streaming.render(text) == markdown_to_html(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_lines, st.lists(st.integers(min_value=1, max_value=30), max_size=40))
def test_updates_applied_to_a_page_give_the_full_render(text: str, chunk_sizes: list[int]) -> None:
    # A page that appends `finished` and replaces the unfinished rest shows, after every
    # update, exactly the full render of the text so far.
    streaming = StreamingMarkdown()
    shown_finished = ""
    end = 0
    for size in [*chunk_sizes, len(text)]:
        end = min(len(text), end + size)
        update = streaming.update(text[:end])
        if update.restart:
            shown_finished = ""
        shown_finished += update.finished

        assert shown_finished + update.unfinished == markdown_to_html(text[:end])


def test_finished_blocks_are_kept_so_only_the_last_block_is_rendered_again() -> None:
    paragraphs = [f"Paragraph {n} with **bold** and `code`." for n in range(200)]
    text = "\n\n".join(paragraphs) + "\n\nThe last one is still being wri"
    streaming = StreamingMarkdown()

    for end in range(0, len(text) + 1, 97):
        streaming.render(text[:end])
    html = streaming.render(text)

    assert html == markdown_to_html(text)
    # Everything up to the last paragraph, still open, is rendered for good.
    assert streaming.final_length == text.index("The last one")


def test_a_list_item_on_an_incomplete_line_does_not_freeze_the_list_above() -> None:
    # "1" alone is a paragraph after the list; once it reads "1. b" it continues the list and
    # makes it loose, which changes how "a" renders.
    streaming = StreamingMarkdown()

    assert streaming.render("1. a\n\n1") == markdown_to_html("1. a\n\n1")
    assert streaming.render("1. a\n\n1. b\n") == markdown_to_html("1. a\n\n1. b\n")
    assert "<p>a</p>" in streaming.render("1. a\n\n1. b\n\nafter\n")


def test_a_heading_marker_on_an_incomplete_line_does_not_end_the_paragraph_above() -> None:
    # "#" alone is an empty heading that ends the paragraph; "#x" is more paragraph text.
    streaming = StreamingMarkdown()

    assert streaming.render("text\n#") == markdown_to_html("text\n#")
    assert streaming.render("text\n#x\n") == markdown_to_html("text\n#x\n")


def test_a_reference_definition_further_down_changes_a_link_already_rendered() -> None:
    streaming = StreamingMarkdown()
    before = "See [the docs].\n\nMore text.\n\nAnd more.\n\n"
    after = before + "[the docs]: https://docs.example/\n"

    assert "href" not in streaming.render(before)
    html = streaming.render(after)

    assert html == markdown_to_html(after)
    assert 'href="https://docs.example/"' in html


def test_text_that_does_not_continue_the_previous_one_starts_over() -> None:
    streaming = StreamingMarkdown()
    streaming.render("First paragraph.\n\nSecond paragraph.\n\nThird")

    html = streaming.render("Something else.\n\n- a list")

    assert html == markdown_to_html("Something else.\n\n- a list")


def test_code_highlighting_budget_is_spent_in_document_order_across_renders() -> None:
    from conversations.chat.rendering import HIGHLIGHT_BUDGET_CHARS

    block = "```python\n" + "x = 1\n" * (HIGHLIGHT_BUDGET_CHARS // 12) + "```\n\n"
    text = block * 3 + "tail"
    streaming = StreamingMarkdown()

    for end in range(0, len(text) + 1, len(block) // 3):
        streaming.render(text[:end])

    assert streaming.render(text) == markdown_to_html(text)
