// The polynomial tables of the CPU SiLU/sigmoid/GELU kernels (native/src/cpu/act_smooth_math.h)
// against their accuracy claims, re-derived with mpmath by scripts/fit_act_smooth.py (40 digits,
// 1001 points per interval). Needs a python3 with numpy and mpmath; skipped (and said so) without.
import { spawnSync } from 'child_process';
import * as path from 'path';

import { hasPython } from '../helpers';

const HAVE = hasPython('mpmath') && hasPython('numpy');
const maybe = HAVE ? it : it.skip;

describe('act_smooth tables (scripts/fit_act_smooth.py)', () => {
  if (!HAVE) it('is skipped: python3 lacks numpy or mpmath', () => expect(HAVE).toBe(false));
  maybe('kExpC and kQ meet the fit errors the header states', () => {
    const r = spawnSync('python3', [path.join(__dirname, '..', '..', 'scripts', 'fit_act_smooth.py')], { encoding: 'utf8', timeout: 120_000 });
    expect(r.stdout).toMatch(/kExpC: max relative error of 1 \+ e .*: ([0-9.e-]+) \(claim < 3\.2e-9\)/);
    expect(r.stdout).toMatch(/kQ: {4}max relative fit error per interval: worst ([0-9.e-]+) at k = \d+ \(claim < 5\.1e-9\)/);
    expect(r.stdout.trim().split('\n').pop()).toBe('ok');
    expect(r.status).toBe(0);
  }, 120_000);
});
