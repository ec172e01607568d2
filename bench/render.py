"""Render CPU per flush while a reply streams: a short reply against a long one.

Replays a seeded, Markdown-shaped reply token by token and renders the text so far every
`--tokens-per-render` tokens (20 tokens/s and one render every 0.3 s make 6), the way a
streaming reply is re-rendered, with both the full renderer (`markdown_to_html`, what `main`
does) and `StreamingMarkdown` (only the unfinished end). CPU is this thread's
(`time.thread_time`), so other processes on the machine count only through cache and
frequency effects; the ratios are within one run.

    python -m bench.render --short 200 --long 4000 [--json bench/results/render-NAME.json]

The bar: CPU per render of the long reply within 1.5x that of the short one.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BAR_RATIO = 1.5


def markdown_reply_tokens(*, seed: int, count: int) -> list[str]:
    """A reply shaped like a model's, in tokens of 2-6 characters (about 4, as with a BPE
    tokenizer). It repeats one section of about 200 tokens (heading, paragraph, list, code
    fence, table, quote) with different words, so a short reply and a long one hold the same
    kinds of blocks in the same sizes and only their length differs."""
    rng = random.Random(seed)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "**bold**",
        "`code`",
        "*em*",
        "<b>",
        "a&b",
        "café",
        "🚀",
    ]

    def some(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    def section() -> str:
        items = "\n".join(f"{n}. {some(4)}" for n in range(1, 5))
        code = "\n".join(f"    value_{n} = compute({n}) < limit" for n in range(5))
        rows = "\n".join(f"| {rng.choice(words)} | {n} |" for n in range(4))
        return (
            f"## {some(3)}\n\n{some(30)}\n\n{items}\n\n"
            f"```python\ndef f():\n{code}\n```\n\n"
            f"| name | n |\n|---|--:|\n{rows}\n\n> {some(8)}\n\n"
        )

    tokens: list[str] = []
    text = ""
    position = 0
    while len(tokens) < count:
        if position >= len(text):
            text += section()
        size = rng.randint(2, 6)
        tokens.append(text[position : position + size])
        position += size
    return tokens


def cpu_per_render(
    tokens: list[str], *, tokens_per_render: int, render: Callable[[str], str]
) -> dict[str, float]:
    """Render the text so far after every `tokens_per_render` tokens; CPU ms per render."""
    times: list[float] = []
    text = ""
    for index, token in enumerate(tokens, start=1):
        text += token
        if index % tokens_per_render == 0 or index == len(tokens):
            started = time.thread_time()
            render(text)
            times.append((time.thread_time() - started) * 1000)
    last_tenth = times[-max(1, len(times) // 10) :]
    return {
        "renders": len(times),
        "chars": len(text),
        "mean_ms": statistics.fmean(times),
        "last_tenth_mean_ms": statistics.fmean(last_tenth),
        "total_ms": sum(times),
    }


def measure(
    *, short: int, long: int, tokens_per_render: int, seed: int, repeats: int
) -> dict[str, Any]:
    from conversations.chat.rendering import StreamingMarkdown, markdown_to_html

    # The short reply is the beginning of the long one, so both have the same kinds of blocks.
    long_tokens = markdown_reply_tokens(seed=seed, count=long)
    # Warm caches (lexer classes, regexes) so the first measured case is not charged for them.
    markdown_to_html("".join(long_tokens[:short]))
    results: dict[str, Any] = {
        "tokens_per_render": tokens_per_render,
        "seed": seed,
        "repeats": repeats,
    }
    for label, tokens in (("short", long_tokens[:short]), ("long", long_tokens)):
        full_text = "".join(tokens)
        case: dict[str, Any] = {"tokens": len(tokens)}
        for renderer in ("full", "streaming"):
            # Least of a few runs: other processes on the machine only ever add time.
            runs = []
            # The full renderer is quadratic: one run of it is plenty and takes long enough.
            for _ in range(repeats if renderer == "streaming" else 1):
                render = markdown_to_html if renderer == "full" else StreamingMarkdown().render
                runs.append(
                    cpu_per_render(tokens, tokens_per_render=tokens_per_render, render=render)
                )
            case[renderer] = min(runs, key=lambda run: run["mean_ms"])
        case["final_equal"] = StreamingMarkdown().render(full_text) == markdown_to_html(full_text)
        results[label] = case
    for renderer in ("full", "streaming"):
        results[f"{renderer}_ratio"] = (
            results["long"][renderer]["mean_ms"] / results["short"][renderer]["mean_ms"]
        )
    results["bar_ratio"] = BAR_RATIO
    results["passes"] = results["streaming_ratio"] <= BAR_RATIO and all(
        results[label]["final_equal"] for label in ("short", "long")
    )
    return results


def summary_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "| renderer | CPU per render, short reply | long reply | long / short |",
        "|---|---|---|---|",
    ]
    short, long = results["short"], results["long"]
    for renderer, name in (("full", "full re-render (`main`)"), ("streaming", "StreamingMarkdown")):
        lines.append(
            f"| {name} | {short[renderer]['mean_ms']:.2f} ms ({short['tokens']} tokens) "
            f"| {long[renderer]['mean_ms']:.2f} ms ({long['tokens']} tokens) "
            f"| {results[f'{renderer}_ratio']:.2f}x |"
        )
    verdict = "pass" if results["passes"] else "MISS"
    lines.append(
        f"\nBar: long / short <= {results['bar_ratio']}x with StreamingMarkdown: {verdict}; "
        f"final render equal to a full render: short {short['final_equal']}, "
        f"long {long['final_equal']}."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", type=int, default=200, help="tokens in the short reply")
    parser.add_argument("--long", type=int, default=4000, help="tokens in the long reply")
    parser.add_argument("--tokens-per-render", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the least counts")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    results = measure(
        short=args.short,
        long=args.long,
        tokens_per_render=args.tokens_per_render,
        seed=args.seed,
        repeats=args.repeats,
    )
    print("\n".join(summary_lines(results)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    sys.exit(0 if results["passes"] else 1)


if __name__ == "__main__":
    main()
