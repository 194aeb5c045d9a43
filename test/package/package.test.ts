// The package as users get it (scripts/pack-test.js): npm pack, npm install <tarball> into an empty
// project with no compiler on PATH, then facecuda info, a head step, an embedding and a search from
// CommonJS and ES modules, and the import/require types. Also the API-docs check (every exported
// class has an @example) and the README's performance tables match bench/results/.
import { spawnSync } from 'child_process';
import * as path from 'path';

const root = path.resolve(__dirname, '..', '..');

function node(script: string, args: string[] = [], timeout = 600_000) {
  const r = spawnSync(process.execPath, [path.join(root, script), ...args], { cwd: root, encoding: 'utf8', timeout, maxBuffer: 64 << 20 });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

test('npm pack → npm install <tarball> with no compiler → info, train step, embed, search, import/require types', () => {
  const r = node('scripts/pack-test.js');
  console.log(r.out);
  expect(r.out).toMatch(/pack-test: \d+ passed, 0 failed/);
  expect(r.status).toBe(0);
}, 900_000);

test('every exported class has an @example and every exported function a description (npm run docs)', () => {
  const r = node('scripts/docs.js', ['--check'], 120_000);
  expect(r.out).toContain('every exported class has an @example');
  expect(r.status).toBe(0);
});

test("the README's performance tables are generated from bench/results/", () => {
  const r = node('scripts/bench-table.js', ['--check'], 60_000);
  expect(r.out).toBe('');
  expect(r.status).toBe(0);
});
