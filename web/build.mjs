// Builds dist/clinic-chat.js: src/widget.js with socket.io-client bundled, one file.
//
// The first line of the output names the SHA-256 of its sources (this file,
// package.json, package-lock.json and src/*), so scripts/setup.sh can tell whether
// the committed file is up to date without node. Keep the list in step with
// widget_sources_hash() in scripts/setup.sh.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { build } from "esbuild";

const here = new URL(".", import.meta.url);
const sources = [
  "build.mjs",
  "package.json",
  "package-lock.json",
  ...readdirSync(new URL("src/", here))
    .sort()
    .map((name) => `src/${name}`),
];
const hash = createHash("sha256");
for (const path of sources) hash.update(readFileSync(new URL(path, here)));

await build({
  entryPoints: [new URL("src/widget.js", here).pathname],
  outfile: new URL("dist/clinic-chat.js", here).pathname,
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2019"],
  minify: true,
  legalComments: "eof",
  banner: {
    js:
      `/* clinic-chat.js: built from web/, sources sha256:${hash.digest("hex")} */\n` +
      "/* Includes socket.io-client, engine.io-client and their dependencies (MIT). */",
  },
  logLevel: "warning",
});
