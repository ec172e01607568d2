"""The browser path: a real Chromium page, Enter → first text and → the finished reply.

Each run opens a fresh conversation's page (signed in by session cookie), waits for its
websocket, types a bench spec into the composer and presses Enter. In the page, a capture-phase
keydown listener stamps Enter and a MutationObserver on the transcript stamps the first text of
the new reply and the moment it is marked complete (`performance.now()`, before paint). The
direct reference reads the same replies straight from the bench upstream with httpx, in the
same run. With `trace_path`, a Chromium performance trace of the last run is written (what the
page does per frame: scripting, htmx swaps, layout) for chrome://tracing or Perfetto.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# Stamps, in the page's own clock; `seen` holds the articles already there before Enter.
PAGE_PROBE = """
(() => {
  const bench = { t0: null, first: null, done: null, frames: 0, seen: null };
  window.__bench = bench;
  document.addEventListener("htmx:wsOpen", () => { window.__wsOpen = true; });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && event.target.id === "message") {
      bench.t0 = performance.now();
      bench.seen = new Set([...document.querySelectorAll("#transcript article")].map((a) => a.id));
    }
  }, true);
  const start = () => {
    const transcript = document.getElementById("transcript");
    if (!transcript) { requestAnimationFrame(start); return; }
    new MutationObserver(() => {
      if (bench.t0 === null || bench.done !== null) return;
      bench.frames += 1;
      const replies = [...transcript.querySelectorAll('article[data-role="assistant"]')]
        .filter((a) => !bench.seen.has(a.id));
      const reply = replies[replies.length - 1];
      if (!reply) return;
      const now = performance.now();
      // The reply's text, not the article's: its "Claude" label is there from the turn's start.
      const body = document.getElementById(`${reply.id}-content`);
      if (bench.first === null && body && body.textContent.trim().length > 0) {
        bench.first = now - bench.t0;
      }
      if (reply.dataset.status === "complete") bench.done = now - bench.t0;
    }).observe(transcript, {
      childList: true, subtree: true, characterData: true, attributes: true,
    });
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
"""


def measure_page(
    *,
    base_url: str,
    cookie: str,
    conversation_ids: list[str],
    messages: list[str],
    timeout: float,
    trace_path: Path | None = None,
) -> list[dict[str, Any]]:
    """One run per conversation: Enter → first text, Enter → complete (ms, page clock)."""
    from playwright.sync_api import sync_playwright

    runs: list[dict[str, Any]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
        )
        context = browser.new_context()
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": base_url}])
        context.add_init_script(PAGE_PROBE)
        page = context.new_page()
        for index, (conversation_id, message) in enumerate(
            zip(conversation_ids, messages, strict=True)
        ):
            tracing = trace_path is not None and index == len(messages) - 1
            page.goto(f"{base_url}/c/{conversation_id}/")
            page.wait_for_function("() => window.__wsOpen === true", timeout=timeout * 1000)
            page.fill("#message", message)
            if tracing:
                browser.start_tracing(page=page, screenshots=False, categories=TRACE_CATEGORIES)
            page.press("#message", "Enter")
            page.wait_for_function("() => window.__bench.done !== null", timeout=timeout * 1000)
            if tracing:
                trace_path.write_bytes(browser.stop_tracing())  # type: ignore[union-attr]
            stamps = page.evaluate(
                "() => ({first: __bench.first, done: __bench.done, mutations: __bench.frames})"
            )
            runs.append({"ttft": stamps["first"], "total": stamps["done"], **stamps})
        browser.close()
    return runs


TRACE_CATEGORIES = [
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "disabled-by-default-devtools.timeline.frame",
    "blink.user_timing",
    "v8.execute",
]


def trace_summary(trace_path: Path) -> dict[str, Any]:
    """Per-frame page work from a Chromium trace: how many animation frames ran, and the
    time spent in scripting (event handlers, htmx), style/layout and paint, in total and at
    most in one frame."""
    events = json.loads(trace_path.read_text())
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    groups = {
        "scripting": {
            "FunctionCall",
            "EventDispatch",
            "EvaluateScript",
            "TimerFire",
            "RunMicrotasks",
        },
        "style_layout": {"UpdateLayoutTree", "Layout", "RecalculateStyles"},
        "paint": {"Paint", "PaintImage", "CompositeLayers", "Commit"},
    }
    totals = {name: 0.0 for name in groups}
    longest = {name: 0.0 for name in groups}
    frames = 0
    for event in events:
        name = event.get("name")
        if name in ("BeginFrame", "BeginMainThreadFrame"):
            frames += 1
        if event.get("ph") != "X":
            continue
        for group, names in groups.items():
            if name in names:
                duration = event.get("dur", 0) / 1000
                totals[group] += duration
                longest[group] = max(longest[group], duration)
    return {
        "frames": frames,
        "total_ms": {k: round(v, 2) for k, v in totals.items()},
        "longest_ms": {k: round(v, 2) for k, v in longest.items()},
    }
