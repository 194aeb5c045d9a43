// Runs the native op test harness (native/tests, built by CMake as build/Release/facecuda_tests) in
// its test and grad modes. The harness prints one line per case and "N passed, N failed, N skipped".
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { SEED } from '../helpers';

const bin = process.env.FACECUDA_TESTS_BIN ?? path.resolve(__dirname, '..', '..', 'build', 'Release', 'facecuda_tests');
const present = fs.existsSync(bin);
if (!present) {
  console.log(`native op harness skipped: ${bin} was not built (node-gyp builds only the addon; CMake builds the harness)`);
}

function runMode(mode: string): { status: number | null; out: string } {
  const r = spawnSync(bin, ['--mode', mode, '--seed', String(SEED)], { encoding: 'utf8', timeout: 600_000 });
  return { status: r.status, out: (r.stdout ?? '') + (r.stderr ?? '') };
}

(present ? describe : describe.skip)('native op harness', () => {
  for (const mode of ['test', 'grad']) {
    it(`mode ${mode}: every case passes`, () => {
      const { status, out } = runMode(mode);
      const summary = /^(\d+) passed, (\d+) failed, (\d+) skipped$/m.exec(out);
      const failures = out.split('\n').filter((l) => l.startsWith('FAIL'));
      if (status !== 0 || !summary) console.log(out);
      expect(failures).toEqual([]);
      expect(summary).not.toBeNull();
      expect(Number(summary![1])).toBeGreaterThan(0);
      expect(Number(summary![2])).toBe(0);
      expect(status).toBe(0);
    });
  }
});
