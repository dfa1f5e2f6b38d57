"""axe-core in the page: `check(page, name)` runs every rule axe enables by default (WCAG 2.0 to
2.2 A and AA, and its best practices) on the page as it is now, and fails on any serious or
critical violation. A moderate or minor one fails too, unless it is listed in ALLOWED below with the
reason it is accepted. Each run's violations are saved as JSON in artifacts/e2e/axe/.

axe-core comes inside axe-playwright-python (pinned in requirements.txt); nothing is downloaded.
It is evaluated through the DevTools protocol, which the page's Content-Security-Policy does not
govern, and it writes no HTML through a Trusted Types sink, so the pages' policy stays on."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

ARTIFACTS = Path(os.environ.get("E2E_ARTIFACTS") or Path(__file__).resolve().parents[2] / "artifacts" / "e2e")

BLOCKING = {"serious", "critical"}

# Moderate or minor violations that are accepted, by rule id, each with the reason. Empty today:
# every state the suite reaches passes axe's rules outright. An entry needs a comment saying why
# the page cannot (or should not) do what the rule asks; serious and critical ones are never allowed.
ALLOWED: dict[str, str] = {}

_axe = Axe()


def violations(page: Page) -> list[dict]:
    """axe's violations for the page as it is now (the whole document, open dialogs included)."""
    results = _axe.run(page, options={"resultTypes": ["violations"]})
    return results.response["violations"]


def describe(found: list[dict]) -> str:
    lines = []
    for v in found:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']} [{v['helpUrl']}]")
        for node in v["nodes"][:5]:
            lines.append(f"    {', '.join(map(str, node['target']))}: {node.get('failureSummary', '').strip()}".replace("\n", " "))
        if len(v["nodes"]) > 5:
            lines.append(f"    ... and {len(v['nodes']) - 5} more")
    return "\n".join(lines)


def check(page: Page, name: str) -> None:
    """Fails when axe finds a violation on the page that ALLOWED does not excuse."""
    found = violations(page)
    folder = ARTIFACTS / "axe"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"url": page.url, "violations": found}, indent=2))
    failing = [v for v in found if v["impact"] in BLOCKING or v["id"] not in ALLOWED]
    assert not failing, f"axe: {name} ({page.url}) has accessibility violations:\n{describe(failing)}"


# ---- non-text contrast: axe has no rule for it ------------------------------------------------

def luminance(css_colour: str) -> float:
    """WCAG relative luminance of a computed `rgb(...)`/`rgba(...)` colour (alpha ignored)."""
    match = re.match(r"rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)", css_colour)
    assert match, f"not an rgb() colour: {css_colour}"

    def channel(value: str) -> float:
        c = float(value) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in match.groups())
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    high, low = sorted([luminance(a), luminance(b)], reverse=True)
    return (high + 0.05) / (low + 0.05)


FIELD_EDGES = """() => {
  const opaque = (c) => c && c !== "transparent" && !/rgba\\([^)]*,\\s*0\\)$/.test(c);
  const behind = (el) => {
    for (let n = el.parentElement; n; n = n.parentElement) {
      const c = getComputedStyle(n).backgroundColor;
      if (opaque(c)) return c;
    }
    return "rgb(255, 255, 255)";
  };
  return [...document.querySelectorAll("input")]
    .filter((el) => el.checkVisibility() && el.type !== "hidden")
    .map((el) => {
      const s = getComputedStyle(el);
      return { field: el.id || el.name, edge: s.borderTopColor, width: parseFloat(s.borderTopWidth),
               inside: opaque(s.backgroundColor) ? s.backgroundColor : behind(el), outside: behind(el) };
    });
}"""


def expect_field_edges(page: Page, minimum: float = 3.0) -> None:
    """Each visible text field's border stands out 3:1 from both the field's background and what
    surrounds it (WCAG 2.2 SC 1.4.11, non-text contrast): the edge is how a person finds the field."""
    fields = page.evaluate(FIELD_EDGES)
    assert fields, f"{page.url}: no visible field to check"
    for f in fields:
        assert f["width"] >= 1, f
        for side in ("inside", "outside"):
            ratio = contrast(f["edge"], f[side])
            assert ratio >= minimum, f"{page.url}: #{f['field']} border {f['edge']} on {f[side]} ({side}) is {ratio:.2f}:1"
