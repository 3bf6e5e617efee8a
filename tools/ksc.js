// Drive the official Kaitai Struct compiler (npm kaitai-struct-compiler) through its JS API.
// Usage: node tools/ksc.js OUTDIR SPEC.ksy...   (compiles to Python; exit 1 on any error)
// The npm packages live in <repo>/.cache/kaitai/node_modules (tools/install-ksc.sh puts them there).
"use strict";
const fs = require("fs");
const path = require("path");
const modules = process.env.KSC_MODULES || path.join(__dirname, "..", ".cache", "kaitai", "node_modules");
const KaitaiStructCompiler = require(path.join(modules, "kaitai-struct-compiler"));
const YAML = require(path.join(modules, "js-yaml"));
const compiler = KaitaiStructCompiler;

async function main() {
  const [outDir, ...specs] = process.argv.slice(2);
  if (!outDir || specs.length === 0) {
    console.error("usage: node tools/ksc.js OUTDIR SPEC.ksy...");
    process.exit(2);
  }
  fs.mkdirSync(outDir, { recursive: true });
  let failed = 0;
  for (const spec of specs) {
    try {
      const ksy = YAML.load(fs.readFileSync(spec, "utf8"));
      const files = await compiler.compile("python", ksy, null, false);
      for (const [name, text] of Object.entries(files)) {
        fs.writeFileSync(path.join(outDir, name), text);
      }
    } catch (err) {
      failed += 1;
      const msg = err && err.message ? err.message : String(err);
      console.error(`${spec}: ${msg}`);
    }
  }
  process.exit(failed ? 1 : 0);
}
main();
