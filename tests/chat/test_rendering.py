"""Tests for conversations.chat.rendering (pure functions; no Django needed)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pygments.token import STANDARD_TYPES

from conversations.chat.rendering import (
    markdown_to_html,
    plain_text_to_html,
    pygments_css,
    write_pygments_css,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN_TAGS = {
    "script",
    "iframe",
    "object",
    "embed",
    "style",
    "form",
    "input",
    "meta",
    "base",
    "link",
    "svg",
    "math",
    "img",
    "textarea",
    "select",
    "video",
    "audio",
    "source",
    "frame",
    "frameset",
    "template",
}
FORBIDDEN_ATTR_PREFIXES = ("on", "hx-", "data-", "ws-", "xlink")
FORBIDDEN_ATTRS = {"style", "id", "srcdoc", "formaction", "src", "action", "background", "name"}
ALLOWED_HREF = re.compile(r"^(https?|mailto):", re.IGNORECASE)
# Every class the renderer may legitimately emit; anything else means the allowlist leaked.
ALLOWED_CLASSES = {
    "codeblock",
    "codeblock-bar",
    "codeblock-lang",
    "copy-code",
    "hl",
    "align-left",
    "align-center",
    "align-right",
} | {cls for cls in STANDARD_TYPES.values() if cls}
LANGUAGE_CLASS = re.compile(r"^language-[A-Za-z0-9_+-]{1,30}$")
COPY_BUTTON = '<button type="button" class="copy-code" aria-label="Copy code">Copy</button>'


class _Doc(HTMLParser):
    """Collects elements and visible text, the way a browser would tokenise the fragment."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text_parts: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [dict(attrs) for tag, attrs in self.elements if tag == name]


def code_text(markup: str) -> list[str]:
    """Text of each rendered code block, i.e. what the Copy button would copy."""
    return [
        _Doc(inner).text
        for inner in re.findall(r"<pre[^>]*><code[^>]*>(.*?)</code></pre>", markup, re.DOTALL)
    ]


def assert_safe(markup: str) -> _Doc:
    doc = _Doc(markup)
    for tag, attrs in doc.elements:
        assert tag not in FORBIDDEN_TAGS, f"forbidden <{tag}> in {markup!r}"
        for name, value in attrs:
            assert not name.startswith(FORBIDDEN_ATTR_PREFIXES), f"{name} on <{tag}>"
            assert name not in FORBIDDEN_ATTRS, f"{name} on <{tag}>"
            if name == "href":
                assert value is not None and ALLOWED_HREF.match(value), f"href={value!r}"
            if name == "target":
                assert value == "_blank"
            if name == "class":
                for cls in (value or "").split():
                    assert cls in ALLOWED_CLASSES or (
                        tag == "code" and LANGUAGE_CLASS.match(cls)
                    ), f"class {cls!r} on <{tag}>"
        if tag == "a":
            attr_map = dict(attrs)
            assert attr_map.get("target") == "_blank"
            assert attr_map.get("rel") == "noopener noreferrer"
        if tag == "button":
            # The only button allowed is the trusted copy button, with exactly these attributes.
            assert dict(attrs) == {
                "type": "button",
                "class": "copy-code",
                "aria-label": "Copy code",
            }
    return doc


# --- Markdown features ---------------------------------------------------------------------


def test_bold_and_italic() -> None:
    # Arrange
    source = "**bold** and *italic* and _also_"

    # Act
    result = markdown_to_html(source)

    # Assert
    assert result.strip() == "<p><strong>bold</strong> and <em>italic</em> and <em>also</em></p>"


def test_unordered_and_ordered_lists() -> None:
    source = "- one\n- two\n\n3. three\n4. four\n"

    result = markdown_to_html(source)

    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in result
    assert '<ol start="3">\n<li>three</li>\n<li>four</li>\n</ol>' in result


def test_gfm_table_with_alignment_classes_instead_of_style() -> None:
    source = "| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |\n"

    result = markdown_to_html(source)

    doc = assert_safe(result)
    assert "<table>" in result and "<thead>" in result and "<tbody>" in result
    assert [th.get("class") for th in doc.tags("th")] == [
        "align-left",
        "align-center",
        "align-right",
    ]
    assert [td.get("class") for td in doc.tags("td")] == [
        "align-left",
        "align-center",
        "align-right",
    ]
    assert "style" not in result


def test_table_without_alignment_has_no_class() -> None:
    result = markdown_to_html("| a |\n|---|\n| 1 |\n")

    assert "<th>a</th>" in result
    assert "<td>1</td>" in result


def test_strikethrough() -> None:
    result = markdown_to_html("~~gone~~")

    assert result.strip() == "<p><s>gone</s></p>"


def test_block_quote() -> None:
    result = markdown_to_html("> quoted\n> text")

    assert result.strip() == "<blockquote>\n<p>quoted\ntext</p>\n</blockquote>"


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5, 6])
def test_headings_have_no_id(level: int) -> None:
    result = markdown_to_html("#" * level + " Title")

    assert result.strip() == f"<h{level}>Title</h{level}>"


def test_horizontal_rule_and_hard_break() -> None:
    result = markdown_to_html("a  \nb\n\n---\n")

    assert "a<br />\nb" in result or "a<br>\nb" in result
    assert "<hr" in result


def test_inline_code_is_escaped() -> None:
    result = markdown_to_html("use `a < b && <script>` here")

    assert "<code>a &lt; b &amp;&amp; &lt;script&gt;</code>" in result


def test_fenced_code_block_shape_and_highlighting() -> None:
    source = "```python\ndef f(x):\n    return x\n```\n"

    result = markdown_to_html(source)

    assert result.startswith(
        '<div class="codeblock"><div class="codeblock-bar">'
        f'<span class="codeblock-lang">python</span>{COPY_BUTTON}</div>'
        '<pre class="hl"><code class="language-python">'
    )
    assert result.rstrip().endswith("</code></pre></div>")
    assert '<span class="k">def</span>' in result
    assert '<span class="nf">f</span>' in result
    assert_safe(result)
    assert code_text(result) == ["def f(x):\n    return x\n"]


def test_fenced_code_without_language_is_plain_and_wrapped() -> None:
    result = markdown_to_html("```\na < b\n```\n")

    assert result.strip() == (
        '<div class="codeblock"><div class="codeblock-bar"><span class="codeblock-lang"></span>'
        f'{COPY_BUTTON}</div><pre class="hl"><code>a &lt; b\n</code></pre></div>'
    )


def test_unknown_language_falls_back_to_escaped_text() -> None:
    result = markdown_to_html("```notalanguage\n<b>x</b>\n```\n")

    assert '<span class="codeblock-lang">notalanguage</span>' in result
    assert '<code class="language-notalanguage">&lt;b&gt;x&lt;/b&gt;\n</code>' in result


def test_language_alias_is_highlighted_case_insensitively() -> None:
    result = markdown_to_html("```JS\nconst a = 1;\n```\n")

    assert '<code class="language-JS">' in result
    assert '<span class="kd">const</span>' in result


def test_indented_code_block_gets_the_same_wrapper() -> None:
    result = markdown_to_html("para\n\n    indented <code>\n")

    assert COPY_BUTTON in result
    assert "indented &lt;code&gt;\n</code></pre></div>" in result


def test_code_block_inside_list_item_is_wrapped() -> None:
    result = markdown_to_html("- item\n\n  ```py\n  x = 1\n  ```\n")

    assert result.count('<div class="codeblock">') == 1
    assert "<li>" in result and "</li>" in result
    assert result.index('<div class="codeblock">') > result.index("<li>")


def test_multiple_code_blocks_keep_their_order() -> None:
    source = "".join(f"```text\nblock{i}\n```\n\n" for i in range(12))

    result = markdown_to_html(source)

    positions = [result.index(f">block{i}\n<") for i in range(12)]
    assert positions == sorted(positions)
    assert result.count(COPY_BUTTON) == 12


def test_placeholder_lookalike_text_is_left_alone() -> None:
    source = "cb0123456789abcdefx0x and cbx1x\n\n```\nreal\n```\n"

    result = markdown_to_html(source)

    assert "<p>cb0123456789abcdefx0x and cbx1x</p>" in result
    assert result.count(COPY_BUTTON) == 1


@pytest.mark.parametrize(
    ("info", "label"),
    [
        ("python", "python"),
        ("c++", "c++"),
        ("objective-c", "objective-c"),
        ("python title=x.py", "python"),
        ("a" * 31, ""),
        ('"><script>alert(1)</script>', ""),
        ("py<x>", ""),
        ("c#", ""),
    ],
)
def test_language_label_is_restricted(info: str, label: str) -> None:
    result = markdown_to_html(f"```{info}\nx\n```\n")

    assert f'<span class="codeblock-lang">{label}</span>' in result
    assert_safe(result)


def test_math_is_left_as_text() -> None:
    source = "Inline $a_1 + b_2$ and $x^2$.\n\n$$\\int x$$\n"

    result = markdown_to_html(source)

    doc = assert_safe(result)
    assert "$a_1 + b_2$" in doc.text
    assert "$x^2$" in doc.text
    assert "$$\\int x$$" in doc.text


def test_math_is_subject_to_ordinary_commonmark_escapes() -> None:
    # No math plugin: a backslash before ASCII punctuation is a Markdown escape, even in "$...$".
    result = markdown_to_html("$a\\,b$")

    assert _Doc(result).text.strip() == "$a,b$"


def test_links_open_in_new_tab_without_opener() -> None:
    result = markdown_to_html('[site](https://example.com/a?b=1&c=2 "Title")')

    doc = assert_safe(result)
    assert doc.tags("a") == [
        {
            "href": "https://example.com/a?b=1&c=2",
            "title": "Title",
            "target": "_blank",
            "rel": "noopener noreferrer",
        }
    ]


def test_autolink_and_mailto() -> None:
    result = markdown_to_html("<https://example.com> <mailto:a@example.com> <b@example.com>")

    doc = assert_safe(result)
    assert [a["href"] for a in doc.tags("a")] == [
        "https://example.com",
        "mailto:a@example.com",
        "mailto:b@example.com",
    ]


def test_relative_links_lose_their_href() -> None:
    result = markdown_to_html("[a](/admin/delete) [b](//evil.example) [c](#top)")

    doc = assert_safe(result)
    assert [a.get("href") for a in doc.tags("a")] == [None, None, None]
    assert doc.text.strip() == "a b c"


def test_image_becomes_link_not_img() -> None:
    result = markdown_to_html('![a *chart*](https://example.com/c.png "T")')

    doc = assert_safe(result)
    assert doc.tags("a") == [
        {
            "href": "https://example.com/c.png",
            "title": "T",
            "target": "_blank",
            "rel": "noopener noreferrer",
        }
    ]
    assert doc.text.strip() == "a chart"


def test_image_inside_link_degrades_to_alt_text() -> None:
    result = markdown_to_html("[![badge](https://x.example/b.svg)](https://x.example)")

    doc = assert_safe(result)
    assert doc.tags("a") == [
        {"href": "https://x.example", "target": "_blank", "rel": "noopener noreferrer"}
    ]
    assert doc.text.strip() == "badge"


def test_empty_input() -> None:
    assert markdown_to_html("") == ""


def test_rendering_is_deterministic() -> None:
    source = "# T\n\n```python\nx = 1\n```\n\n| a |\n|---|\n| b |\n"

    first = markdown_to_html(source)
    second = markdown_to_html(source)

    assert first == second


def test_large_code_beyond_budget_is_still_rendered_plain() -> None:
    code = "x = 1\n" * 20_000  # 120 KB: over the per-render highlighting budget

    result = markdown_to_html(f"```python\n{code}```\n")

    assert COPY_BUTTON in result
    assert "<span" not in result.split("<pre", 1)[1]
    assert code_text(result) == [code]


# --- XSS corpus ------------------------------------------------------------------------------

XSS_PAYLOADS: list[tuple[str, str | None]] = [
    # (payload, text that must remain visible, or None when no specific text is promised)
    ("<script>alert(1)</script>", "<script>alert(1)</script>"),
    ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>"),
    ("[x](javascript:alert(1))", None),
    ("[x](JaVaScRiPt:alert(1))", None),
    ("[x](java&#x09;script:alert(1))", None),
    ("[x](data:text/html;base64,PHNjcmlwdD4=)", None),
    ("[x](vbscript:msgbox(1))", None),
    ("[x]( javascript:alert(1))", None),
    ("[x](<javascript:alert(1)>)", None),
    ("[x](\\javascript:alert(1))", None),
    ("<svg onload=alert(1)>", "<svg onload=alert(1)>"),
    ("<svg><script>alert(1)</script></svg>", "<svg><script>alert(1)</script></svg>"),
    ('<a href="javascript:alert(1)">x</a>', '<a href="javascript:alert(1)">x</a>'),
    ('<div hx-get="/admin" hx-trigger="load">x</div>', '<div hx-get="/admin"'),
    ('<div hx-on:click="alert(1)">', '<div hx-on:click="alert(1)">'),
    ("<button ws-send>", "<button ws-send>"),
    ("<iframe src=//evil>", "<iframe src=//evil>"),
    ('<math><mi xlink:href="javascript:alert(1)">', "<math><mi"),
    ("<style>@import 'x'</style>", "<style>@import 'x'</style>"),
    ("<form action=x><input>", "<form action=x><input>"),
    (
        '<meta http-equiv=refresh content="0;url=javascript:alert(1)">',
        "<meta http-equiv=refresh",
    ),
    ("<object data=x>", "<object data=x>"),
    ("<embed src=x>", "<embed src=x>"),
    ("<base href=//evil>", "<base href=//evil>"),
    ("<link rel=import href=x>", "<link rel=import href=x>"),
    ("`<script>alert(1)</script>`", "<script>alert(1)</script>"),
    ('```"><script>alert(1)</script>\ncode\n```', "code"),
    ("```python\n</code></pre><script>alert(1)</script>\n```", "</code></pre><script>"),
    ("<javascript:alert(1)>", "<javascript:alert(1)>"),
    ("![x](javascript:alert(1))", None),
    ("![x](https://tracker/pixel.png)", "x"),
    ("![x](data:image/png;base64,iVBORw0KGgo=)", None),
    ("[x][r]\n\n[r]: javascript:alert(1)", None),
    ("[x]\n\n[x]: JAVASCRIPT:alert(1) 'title'", None),
    ("&lt;script&gt;alert(1)&lt;/script&gt;", "<script>alert(1)</script>"),
    ('<a href="&#106;avascript:alert(1)">x</a>', "avascript:alert(1)"),
    ("[x](&#106;avascript:alert(1))", None),
    ('[x](https://ok.example "title\\" onmouseover=\\"alert(1))', None),
    ("| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | ok |", "<img src=x onerror"),
    ("<!-- <script>alert(1)</script> -->", "<!--"),
    ("<x onmouseover=alert(1)>hover</x>", "<x onmouseover=alert(1)>"),
    ('<p style="background:url(javascript:alert(1))">', "<p style="),
    ('<span id="messages" data-x="1">', '<span id="messages"'),
    ("<template><script>alert(1)</script></template>", "<template>"),
    ('<noscript><p title="</noscript><img src=x onerror=alert(1)>">', "<noscript>"),
    ("\x00<script>alert(1)</script>", "<script>"),
    ("<scr\x00ipt>alert(1)</script>", "alert(1)"),
    ('[x](https://ok.example/" onclick="alert(1))', None),
    ('<https://ok.example/"onclick="alert(1)>', None),
    ("[x](mailto:a@b.example?body=<script>)", None),
    ("> <script>alert(1)</script>\n> - <iframe>", "<script>alert(1)</script>"),
    ("# <script>alert(1)</script>", "<script>alert(1)</script>"),
    ("~~<script>~~ **<img src=x>**", "<script>"),
]


@pytest.mark.parametrize(
    ("payload", "visible"),
    XSS_PAYLOADS,
    ids=[f"xss{i:02d}" for i in range(len(XSS_PAYLOADS))],
)
def test_xss_payload_is_neutralised(payload: str, visible: str | None) -> None:
    # Act
    result = markdown_to_html(payload)

    # Assert
    doc = assert_safe(result)
    if visible is not None:
        assert visible in doc.text


def test_xss_corpus_is_large_enough() -> None:
    assert len(XSS_PAYLOADS) >= 30


def test_script_in_paragraph_is_shown_escaped() -> None:
    result = markdown_to_html("<script>alert(1)</script>")

    assert result.strip() == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"


def test_htmx_attributes_in_markdown_text_stay_text() -> None:
    result = markdown_to_html('<div hx-post="/x" hx-trigger="load" ws-send>y</div>')

    doc = assert_safe(result)
    assert doc.tags("div") == []
    assert 'hx-post="/x"' in doc.text


# --- Property-based ------------------------------------------------------------------------

_MARKDOWN_FRAGMENTS = [
    "<",
    ">",
    "&",
    '"',
    "'",
    "`",
    "```",
    "~~~",
    "\n",
    "\n\n",
    "    ",
    "[",
    "]",
    "(",
    ")",
    "](",
    "![",
    "*",
    "_",
    "~~",
    "|",
    "|---|",
    "# ",
    "> ",
    "- ",
    "1. ",
    "$",
    "\\",
    "&#106;",
    "&#x09;",
    "&lt;",
    "javascript:",
    "data:",
    "https://e.example",
    "//evil",
    "script",
    "img",
    "onerror=",
    "hx-get=",
    "style=",
    "python",
    "x",
    " ",
    "\x00",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text_renders_safely(text: str) -> None:
    assert_safe(markdown_to_html(text))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_MARKDOWN_FRAGMENTS), max_size=60).map("".join))
def test_markdown_shaped_text_renders_safely(text: str) -> None:
    assert_safe(markdown_to_html(text))


# --- plain_text_to_html --------------------------------------------------------------------


def test_plain_text_escapes_markup_and_quotes() -> None:
    result = plain_text_to_html("<b>\"a\" & 'b'</b>")

    assert result == "&lt;b&gt;&quot;a&quot; &amp; &#x27;b&#x27;&lt;/b&gt;"


def test_plain_text_keeps_newlines_verbatim() -> None:
    result = plain_text_to_html("line 1\nline 2\n\n  indented")

    assert result == "line 1\nline 2\n\n  indented"


def test_plain_text_does_not_interpret_markdown() -> None:
    assert plain_text_to_html("**x** [a](javascript:1)") == "**x** [a](javascript:1)"


@given(st.text())
def test_plain_text_output_has_no_markup(text: str) -> None:
    result = plain_text_to_html(text)

    assert "<" not in result and ">" not in result and '"' not in result
    assert _Doc(result).elements == []


# --- Pygments stylesheet -------------------------------------------------------------------


def test_write_pygments_css_scopes_both_themes(tmp_path: Path) -> None:
    target = tmp_path / "css" / "pygments.css"

    write_pygments_css(target)

    css = target.read_text(encoding="utf-8")
    assert "[data-theme=light] .hl .k " in css
    assert "[data-theme=dark] .hl .k " in css
    assert "@media (prefers-color-scheme: dark)" in css
    assert ":root:not([data-theme=light]) .hl .k " in css
    assert "@media not all and (prefers-color-scheme: dark)" in css
    assert ":root:not([data-theme=dark]) .hl .k " in css
    # No unscoped rules that would restyle every <pre> on the page.
    assert not re.search(r"^\s*(pre|td|span)\b", css, re.MULTILINE)


def test_checked_in_pygments_css_is_up_to_date() -> None:
    checked_in = (REPO_ROOT / "static" / "css" / "pygments.css").read_text(encoding="utf-8")

    assert checked_in == pygments_css()
