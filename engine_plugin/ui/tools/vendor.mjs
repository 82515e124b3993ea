// Vendors the part of PatternFly 5 that the Diagnostics pages use into static/vendor/patternfly/.
//
// Why a subset: the full patternfly.css is 1.7 MB and the package ships 27 MB of assets; the pages
// use a dozen components. The stylesheets of those components (886 KB) are then cut by PurgeCSS to
// the rules whose selectors can match what the templates and the page script write (class names,
// element names, attributes), the custom properties those rules use (transitively), and the font
// faces of the font families left: the browser parses and matches this on every page it opens.
// The output is committed, so the Python package ships it and the pages never load anything from
// the internet. Re-run after changing the PatternFly version, a template or the page script:
//     cd engine_plugin/ui && npm ci && npm run vendor
// (tests/ui/test_vendored_css.py fails when the committed file is not what this script makes.)
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { PurgeCSS } from "purgecss";

const here = dirname(fileURLToPath(import.meta.url));
const uiRoot = join(here, "..");
const pkgRoot = join(uiRoot, "node_modules", "@patternfly", "patternfly");
const outRoot = join(here, "..", "static", "vendor", "patternfly");

// Base (tokens, fonts, reset) first, then components in dependency order.
const parts = [
  "patternfly-base.css",
  "components/Page/page.css",
  "components/Title/title.css",
  "components/Content/content.css",
  "components/Button/button.css",
  "components/Alert/alert.css",
  "components/Card/card.css",
  "components/DescriptionList/description-list.css",
  "components/EmptyState/empty-state.css",
  "components/Form/form.css",
  "components/FormControl/form-control.css",
  "components/Label/label.css",
  "components/Label/label-group.css",
  "components/Pagination/pagination.css",
  "components/Table/table.css",
  "components/Table/table-grid.css",
  "components/Toolbar/toolbar.css",
  "components/Divider/divider.css",
  "components/JumpLinks/jump-links.css",
  "components/Progress/progress.css",
  "layouts/Flex/flex.css",
  "layouts/Grid/grid.css",
  "layouts/Stack/stack.css",
  "layouts/Split/split.css",
  "layouts/Gallery/gallery.css",
  "utilities/Spacing/spacing.css",
  "utilities/Text/text.css",
  "utilities/Accessibility/accessibility.css",
];

if (!existsSync(pkgRoot)) {
  console.error("PatternFly is not installed: run `npm ci` in engine_plugin/ui first.");
  process.exit(1);
}
const version = JSON.parse(readFileSync(join(pkgRoot, "package.json"), "utf8")).version;

rmSync(outRoot, { recursive: true, force: true });
mkdirSync(outRoot, { recursive: true });

const chunks = [];
for (const part of parts) {
  const css = readFileSync(join(pkgRoot, part), "utf8");
  const partDir = dirname(part);
  // Rewrite every relative url() so it resolves from the output folder.
  const rewritten = css.replace(/url\(["']?(\.{1,2}\/[^"')]+)["']?\)/g, (match, rel) => {
    const fromPkg = join(partDir, rel).replace(/\\/g, "/");
    return `url("./${fromPkg}")`;
  });
  chunks.push(`/* ${part} */`, rewritten.replace(/\/\*# sourceMappingURL=.*?\*\//g, ""));
}
const full = chunks.join("\n");

// What can carry a class, element or attribute on the pages: the templates (every class name is
// written out in them, never assembled) and the page script (the messages it builds itself).
const [purged] = await new PurgeCSS().purge({
  content: [join(uiRoot, "templates", "*.html"), join(uiRoot, "static", "vmdiag.js")],
  css: [{ raw: full }],
  variables: true,
  // font faces are kept: their families are named through custom properties, which PurgeCSS
  // does not follow for fonts; the browser fetches only the faces a page uses.
  fontFace: false,
  keyframes: true,
  // The document root the custom properties hang on, and states set at run time by the browser.
  safelist: { standard: [/^:root$/, /^html$/, /^body$/], greedy: [/:where\(:root\)/] },
});
// Comments and blank lines carry nothing the browser needs.
const css = purged.css
  .replace(/\/\*[\s\S]*?\*\//g, "")
  .replace(/\n\s*\n+/g, "\n");
const out = `/* PatternFly ${version} (MIT), subset vendored by tools/vendor.mjs */\n` + css;
writeFileSync(join(outRoot, "patternfly-vmdiag.css"), out);
// Served instead to browsers that accept gzip (aiohttp's FileResponse looks for <name>.gz).
// No file name or time in the header (RFC 1952's MTIME 0), so the output is reproducible.
writeFileSync(join(outRoot, "patternfly-vmdiag.css.gz"), gzipSync(out, { level: 9 }));

const assets = new Set();
for (const match of css.matchAll(/url\("\.\/([^"]+)"\)/g)) {
  assets.add(match[1]);
}
let copied = 0;
for (const asset of assets) {
  const src = join(pkgRoot, asset);
  // Icon fonts referenced by the base CSS are only fetched when an icon class is used; the pages
  // draw their own SVG status icons, so a missing optional asset is skipped, not an error.
  if (!existsSync(src) || !/\.(woff2|svg|png)$/.test(asset) || /fontawesome|webfonts|pficon/.test(asset)) {
    continue;
  }
  mkdirSync(dirname(join(outRoot, asset)), { recursive: true });
  copyFileSync(src, join(outRoot, asset));
  copied += 1;
}
writeFileSync(
  join(outRoot, "VENDORED.md"),
  `PatternFly ${version} (MIT License, https://github.com/patternfly/patternfly).\n` +
    `Generated by engine_plugin/ui/tools/vendor.mjs from ${parts.length} stylesheets ` +
    `(${full.length} bytes), cut by PurgeCSS to ${css.length} bytes; ` +
    `${copied} font files copied. Do not edit by hand.\n`,
);
console.log(`vendored PatternFly ${version}: ${parts.length} stylesheets, ${copied} assets -> ${outRoot}`);
