"""The vendored PatternFly subset (engine_plugin/ui/tools/vendor.mjs): PurgeCSS cut it to the
rules the pages can match, so a class a template or the page script writes must keep its
rules. Pixel-compared once against the uncut stylesheet (docs/ui.md); this pins it in CI."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from engine_plugin.ui.rendering import STATIC_DIR, TEMPLATES_DIR

VENDORED = STATIC_DIR / "vendor" / "patternfly"
#: PatternFly classes the pages write that have no rule of their own in the subset, and why:
#: ``pf-m-first``/``pf-m-last`` are styled only inside a bottom pagination (``pf-m-bottom``,
#: which the pages do not use), ``pf-m-horizontal`` only on description lists (the pages put
#: it on jump links), ``pf-m-prev``/``pf-m-next`` have no rule in PatternFly 5 at all.
NO_RULE = {"pf-m-first", "pf-m-last", "pf-m-horizontal", "pf-m-prev", "pf-m-next"}


def written_classes() -> set:
    sources = [p.read_text() for p in sorted(Path(TEMPLATES_DIR).glob("*.html"))]
    sources.append((STATIC_DIR / "vmdiag.js").read_text())
    pattern = r"\bpf-(?:v5-[a-z]-[A-Za-z0-9_-]+|m-[A-Za-z0-9-]+|v5-screen-reader)"
    return {m for text in sources for m in re.findall(pattern, text)}


def has_rule(css: str, name: str) -> bool:
    return re.search(r"\." + re.escape(name) + r"(?![A-Za-z0-9_-])", css) is not None


def test_every_patternfly_class_the_pages_write_keeps_its_rules() -> None:
    css = (VENDORED / "patternfly-vmdiag.css").read_text()
    used = written_classes()
    assert len(used) > 50  # the pattern finds what the templates write
    missing = sorted(c for c in used - NO_RULE if not has_rule(css, c))
    assert missing == [], "re-run `npm run vendor` in engine_plugin/ui: %s" % missing
    # and the exceptions are still exceptions (a rule appearing means the list is stale)
    assert sorted(c for c in NO_RULE & used if has_rule(css, c)) == []


def test_the_subset_keeps_the_tokens_and_fonts_its_rules_use() -> None:
    css = (VENDORED / "patternfly-vmdiag.css").read_text()
    assert len(css) < 200_000  # the uncut stylesheets of these components: 886 KB
    # The global tokens hang on the root, so every one a kept rule uses must be kept. (A
    # component's own properties may be set only by a parent the pages do not use, e.g.
    # ``.pf-v5-c-form`` for form labels: unset then, as in the uncut stylesheet.)
    defined = set(re.findall(r"(--pf-v5-global-[A-Za-z0-9_-]+)\s*:", css))
    used = set(re.findall(r"var\((--pf-v5-global-[A-Za-z0-9_-]+)", css))
    # (PatternFly 5.4.2 itself uses one global token it never defines.)
    assert len(used) > 50
    assert sorted(used - defined) == ["--pf-v5-global--link--FontWeight"]
    assert "@font-face" in css and "RedHatText-Regular.woff2" in css


def test_the_gzipped_copy_is_the_stylesheet() -> None:
    css = (VENDORED / "patternfly-vmdiag.css").read_bytes()
    assert gzip.decompress((VENDORED / "patternfly-vmdiag.css.gz").read_bytes()) == css
