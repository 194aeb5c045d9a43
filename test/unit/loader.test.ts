// The addon loader runs in a child process: the addon is loaded once per process, and these cases
// need a fresh one with a different environment.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..', '..');
const haveDist = fs.existsSync(path.join(root, 'dist', 'index.js'));

function node(code: string, env: Record<string, string>): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, ['-e', code], { cwd: root, encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: r.status, out: (r.stdout ?? '') + (r.stderr ?? '') };
}

(haveDist ? describe : describe.skip)('addon loader', () => {
  it('FACECUDA_ADDON pointing at a missing file fails with ADDON_LOAD_FAILED and lists what was tried', () => {
    const missing = path.join(os.tmpdir(), `no-such-facecuda-${process.pid}.node`);
    const r = node(
      "try { require('./dist/index.js').system.cpuThreads(); } catch (e) { console.log(e.code); console.log(e.message); process.exit(3); }",
      { FACECUDA_ADDON: missing },
    );
    expect(r.status).toBe(3);
    expect(r.out).toContain('ADDON_LOAD_FAILED');
    expect(r.out).toContain(`${missing}: not found`);
  });

  it('a file that is not an addon is reported with the loader error, never a crash', () => {
    const bogus = path.join(os.tmpdir(), `bogus-facecuda-${process.pid}.node`);
    fs.writeFileSync(bogus, 'not an ELF file');
    try {
      const r = node("try { require('./dist/index.js').system.cpuThreads(); } catch (e) { console.log(e.code, e.message); process.exit(3); }", {
        FACECUDA_ADDON: bogus,
      });
      expect(r.status).toBe(3);
      expect(r.out).toMatch(/ADDON_LOAD_FAILED[\s\S]*bogus-facecuda/);
    } finally {
      fs.unlinkSync(bogus);
    }
  });

  it('without an override it says which file it chose and why', () => {
    const env: Record<string, string> = {};
    if (process.env.FACECUDA_ADDON) env.FACECUDA_ADDON = process.env.FACECUDA_ADDON;
    const r = node("const s=require('./dist/index.js').system; s.info().then(i => console.log(JSON.stringify(i.addon)))", env);
    expect(r.status).toBe(0);
    const a = JSON.parse(r.out.trim().split('\n').pop()!);
    expect(fs.existsSync(a.path)).toBe(true);
    expect(a.how).toMatch(/local build|prebuild|FACECUDA_ADDON/);
  });
});
