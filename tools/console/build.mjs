// The console's build: bundles host/api/console/src (and the TypeScript
// client it imports, host/api/client/src) with esbuild into
// host/api/console/dist — index.html plus content-hashed assets — and
// writes SHA256SUMS of the result. Deterministic: the same sources and
// the pinned dependencies (package-lock.json) give the same bytes, which a
// Go test checks. Usage: node build.mjs [OUTDIR]
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const src = join(root, "host/api/console/src");
const dist = join(root, "host/api/console/dist");
const out = resolve(process.argv[2] || dist);

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });

const res = await build({
  entryPoints: [join(src, "main.js")],
  absWorkingDir: root,
  bundle: true,
  splitting: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "eof",
  charset: "utf8",
  outdir: join(out, "assets"),
  entryNames: "app-[hash]",
  chunkNames: "chunk-[hash]",
  assetNames: "[name]-[hash]",
  // The client's own import (openapi-fetch) resolves to this recipe's
  // node_modules, never to host/api/client/node_modules (there when the
  // client's tests or make client ran): one pinned set of dependencies, and
  // output names that do not depend on what else is installed.
  alias: {
    "@logline/client": join(root, "host/api/client/src/index.ts"),
    "openapi-fetch": join(here, "node_modules/openapi-fetch"),
  },
  nodePaths: [join(here, "node_modules")],
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.keys(res.metafile.outputs).map((p) => relative(join(out, "assets"), resolve(root, p)));
const js = outputs.find((p) => /^app-.*\.js$/.test(p));
const css = outputs.find((p) => /^app-.*\.css$/.test(p));
if (!js || !css) throw new Error(`build: no app js/css among ${outputs.join(", ")}`);
const html = readFileSync(join(src, "index.html"), "utf8").replace("{{js}}", js).replace("{{css}}", css);
writeFileSync(join(out, "index.html"), html);

// SHA256SUMS: every file of the build, sorted, as sha256sum prints them.
const files = [];
const walk = (d) => {
  for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = join(d, e.name);
    if (e.isDirectory()) walk(p);
    else files.push(relative(out, p));
  }
};
walk(out);
const sums = files.sort().map((f) => `${createHash("sha256").update(readFileSync(join(out, f))).digest("hex")}  ${f}`).join("\n") + "\n";
// (Kept beside the recipe, for the committed build only: a check build
// elsewhere is compared with dist itself.)
if (out === dist) writeFileSync(join(here, "SHA256SUMS"), sums);
console.log(`console: ${files.length} files in ${relative(root, out) || out}`);
