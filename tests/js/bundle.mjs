// The dashboard pages load one bundled, minified ES module each (static/js/*.bundle.js, with a
// source map) instead of their ~10 modules: one request instead of ten and less for Chromium to
// link and evaluate before the first paint (BENCHMARKS.md, "First paint"). The sources in
// static/js/ stay the truth (the unit tests import them); the bundles are committed, built by
// esbuild (pinned in package.json) with `scripts/bundle`; bundle.test.mjs fails when one is
// stale.
//
//   node tests/js/bundle.mjs --write   # what scripts/bundle runs
import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const staticDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../static');

/** entry (under static/js) -> bundle (under static/js) */
export const BUNDLES = [
  ['modules-page.js', 'modules.bundle.js'],
  ['admin-page.js', 'admin.bundle.js'],
];

/** Builds every bundle in memory: [{ file (absolute), contents (Uint8Array) }], map files included. */
export async function bundles() {
  const out = [];
  for (const [entry, bundle] of BUNDLES) {
    const result = await build({
      entryPoints: [path.join(staticDir, 'js', entry)],
      outfile: path.join(staticDir, 'js', bundle),
      bundle: true,
      format: 'esm',
      minify: true,
      sourcemap: 'linked',
      // paths in the map relative to the bundle (static/js): the same on every machine
      sourceRoot: '',
      legalComments: 'none',
      charset: 'utf8',
      write: false,
      logLevel: 'silent',
    });
    for (const f of result.outputFiles) out.push({ file: f.path, contents: f.contents });
  }
  return out;
}

if (process.argv.includes('--write')) {
  for (const { file, contents } of await bundles()) {
    fs.writeFileSync(file, contents);
    console.log(`${path.relative(process.cwd(), file)}: ${contents.length} bytes`);
  }
}
