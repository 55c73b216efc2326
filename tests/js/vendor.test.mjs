// The vendored browser libraries (static/vendor/) are exactly the npm packages' files, at the
// versions pinned there, and tests/js pins the same versions (so the Node helpers and the
// browser run the same client). Run: `npm ci --prefix tests/js && node --test tests/js/`.
// To refresh the vendored files: scripts/vendor-refresh (see static/vendor/README.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, '..', '..', 'static', 'vendor');
const modules = join(here, 'node_modules');

// vendored name -> [package, file inside the package]; keep in step with scripts/vendor-refresh.
const FILES = {
  'socket.io.min.js': ['socket.io-client', 'dist/socket.io.min.js'],
  'uPlot.iife.min.js': ['uplot', 'dist/uPlot.iife.min.js'],
  'uPlot.min.css': ['uplot', 'dist/uPlot.min.css'],
  'socket.io-client.LICENSE': ['socket.io-client', 'LICENSE'],
  'uplot.LICENSE': ['uplot', 'LICENSE'],
};
const PACKAGES = [...new Set(Object.values(FILES).map(([pkg]) => pkg))];

const json = (path) => JSON.parse(readFileSync(path, 'utf8'));
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

test('node_modules of tests/js is installed', () => {
  for (const pkg of PACKAGES) {
    assert.ok(
      existsSync(join(modules, pkg, 'package.json')),
      `${pkg} missing in ${modules}: run \`npm ci --prefix tests/js\``,
    );
  }
});

test('static/vendor and tests/js pin the same exact versions and integrity hashes', () => {
  const vendorPkg = json(join(vendor, 'package.json'));
  const vendorLock = json(join(vendor, 'package-lock.json'));
  const testsPkg = json(join(here, 'package.json'));
  const testsLock = json(join(here, 'package-lock.json'));
  for (const pkg of PACKAGES) {
    const pinned = vendorPkg.dependencies?.[pkg];
    assert.match(pinned ?? '', /^\d+\.\d+\.\d+$/, `static/vendor pins ${pkg} to an exact version`);
    assert.equal(testsPkg.dependencies?.[pkg], pinned, `tests/js/package.json pins ${pkg}@${pinned}`);
    const a = vendorLock.packages?.[`node_modules/${pkg}`];
    const b = testsLock.packages?.[`node_modules/${pkg}`];
    assert.ok(a && b, `${pkg} in both package-lock.json files`);
    assert.equal(a.version, pinned, `static/vendor/package-lock.json has ${pkg}@${pinned}`);
    assert.equal(b.version, pinned, `tests/js/package-lock.json has ${pkg}@${pinned}`);
    assert.equal(a.integrity, b.integrity, `${pkg}: same integrity hash in both locks`);
    const installed = json(join(modules, pkg, 'package.json')).version;
    assert.equal(installed, pinned, `tests/js/node_modules has ${pkg}@${pinned} (run npm ci)`);
  }
  const sio = vendorPkg.dependencies['socket.io-client'];
  assert.match(sio, /^4\./, 'socket.io-client stays on 4.x (Socket.IO v5 protocol)');
});

test('every vendored file is byte-identical to its package file', () => {
  for (const [name, [pkg, file]] of Object.entries(FILES)) {
    const vendored = readFileSync(join(vendor, name));
    const original = readFileSync(join(modules, pkg, file));
    assert.ok(
      vendored.equals(original),
      `static/vendor/${name} differs from ${pkg}/${file}: run scripts/vendor-refresh`,
    );
  }
});

test('static/vendor/README.md lists each file with its version and SHA-256', () => {
  const readme = readFileSync(join(vendor, 'README.md'), 'utf8');
  const pins = json(join(vendor, 'package.json')).dependencies;
  for (const [name, [pkg]] of Object.entries(FILES)) {
    const hash = sha256(readFileSync(join(vendor, name)));
    const row = readme.split('\n').find((l) => l.startsWith(`| \`${name}\` |`));
    assert.ok(row, `README row for ${name} (run scripts/vendor-refresh)`);
    assert.ok(row.includes(`| ${pins[pkg]} |`), `README row for ${name} names ${pkg}@${pins[pkg]}`);
    assert.ok(row.includes(hash), `README row for ${name} has its SHA-256 ${hash}`);
  }
});
