// `facecuda demo` end to end at a tiny size (the full demo runs for minutes; its accuracy goal is
// checked by running it, see the README): the report has the documented JSON shape, the model file
// loads back, and the numbers are in range.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Backbone } from '../../lib/backbones/model';
import { runDemo } from '../../lib/demo';

test('runDemo at a tiny size, --compare arcface,adaface: report shape, files, ranges', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-demo-'));
  try {
    const r = await runDemo({
      device: 'cpu', output: dir, identities: 12, samplesPerIdentity: 6, heldOutIdentities: 8, pairs: 40, epochs: 2, size: 32, baseWidth: 4, embeddingSize: 16,
      compare: ['arcface', 'adaface'],
    });
    expect(r.models.map((m) => m.loss)).toEqual(['arcface', 'adaface']);
    expect(fs.existsSync(r.models[1].model)).toBe(true);
    expect(r.device).toBe('cpu');
    for (const v of [r.verification.accuracy, r.crossQuality.accuracy, r.identification.top1, r.baseline.accuracy]) {
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThanOrEqual(1);
    }
    expect(r.verification.accuracyStd).toBeGreaterThanOrEqual(0);
    expect(Number.isFinite(r.verification.tarAtFar1e3)).toBe(true);
    expect(r.models[0].iterations).toBe(2 * Math.floor((12 * 6) / 64));
    expect(JSON.parse(fs.readFileSync(r.report, 'utf8')).verification).toEqual(r.verification);
    const m = await Backbone.load(r.model);
    expect(m.embeddingSize).toBe(16);
    m.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 180_000);
