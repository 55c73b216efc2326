// The committed page bundles are what esbuild makes of the current sources (see bundle.mjs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { bundles, staticDir } from './bundle.mjs';

test('the committed bundles match the sources (run scripts/bundle after changing static/js)', async () => {
  const built = await bundles();
  assert.ok(built.length >= 4, 'two bundles and their maps');
  for (const { file, contents } of built) {
    const name = path.relative(staticDir, file);
    assert.ok(fs.existsSync(file), `${name} is missing: run scripts/bundle`);
    const committed = fs.readFileSync(file);
    assert.ok(Buffer.compare(committed, Buffer.from(contents)) === 0, `${name} is stale: run scripts/bundle`);
  }
});

test('each page loads its bundle and nothing of static/js besides', () => {
  for (const [page, bundle] of [['modules.html', 'modules.bundle.js'], ['admin.html', 'admin.bundle.js']]) {
    const html = fs.readFileSync(path.join(staticDir, page), 'utf8');
    const scripts = [...html.matchAll(/(?:src|href)="\/js\/([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(scripts, [bundle], `${page} loads ${scripts.join(', ')}`);
  }
});
