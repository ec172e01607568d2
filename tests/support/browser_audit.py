"""Checks every browser test can run on the page it is looking at: axe-core's accessibility
rules and the Content-Security-Policy violations the page reported.

axe-core is vendored (tests/vendor/axe, from the npm registry's axe-core 4.x) and evaluated
through Playwright, which the page's CSP does not govern, so the policy stays as strict as in
production while it runs.
"""

from functools import cache
from pathlib import Path
from typing import Any

AXE_SOURCE = Path(__file__).parent.parent / "vendor" / "axe" / "axe.min.js"

# Listens from the first script on every document, so violations during load are caught too.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__reportCspViolation({
    directive: event.violatedDirective,
    blocked: event.blockedURI,
    source: event.sourceFile,
    line: event.lineNumber,
    sample: event.sample,
    page: document.location.pathname,
  });
});
"""


@cache
def _axe_source() -> str:
    return AXE_SOURCE.read_text(encoding="utf-8")


def watch_csp(context: Any) -> list[dict[str, Any]]:
    """Records every CSP violation any page of `context` reports, in the returned list."""
    violations: list[dict[str, Any]] = []
    context.expose_binding(
        "__reportCspViolation", lambda _source, violation: violations.append(violation)
    )
    context.add_init_script(CSP_LISTENER)
    return violations


def axe_violations(page: Any) -> list[dict[str, Any]]:
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(_axe_source())
    result = page.evaluate(
        """async () => {
          const result = await axe.run(document, {resultTypes: ["violations"]});
          return result.violations.map((v) => ({
            id: v.id,
            impact: v.impact,
            help: v.help,
            nodes: v.nodes.map((n) => ({target: n.target, summary: n.failureSummary})),
          }));
        }"""
    )
    return list(result)


def assert_accessible(page: Any, state: str) -> None:
    """Fails with axe's own words when the page, in the state the test put it in, breaks a rule."""
    violations = axe_violations(page)
    assert violations == [], f"axe-core on {state} ({page.url}): " + "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        f" {v['nodes'][0]['summary']}"
        for v in violations
    )
