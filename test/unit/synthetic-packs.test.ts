// SyntheticFaces written as a RecordIO pack and a .bin pack, read back through the real readers.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { readBinPack } from '../../lib/data/binpack';
import { decodeImage } from '../../lib/data/image';
import { RecordIO } from '../../lib/data/recordio';
import { SyntheticFaces } from '../../lib/data/synthetic';
import { writeSyntheticBinPack, writeSyntheticRecordIO } from '../../lib/data/synthetic-packs';
import { SEED } from '../helpers';

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

test('synthetic identities → RecordIO and .bin → the readers give the same labels and (JPEG-close) pixels', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-synth-packs-'));
  try {
    const seed = SEED % 1000;
    const faces = new SyntheticFaces({ seed, identities: 5, samplesPerIdentity: 3, size: 56 });
    const { size } = await writeSyntheticRecordIO(faces, path.join(dir, 'train'));
    expect(size).toBe(15);
    const rec = await RecordIO.open(path.join(dir, 'train'));
    expect(rec.size).toBe(15);
    expect(rec.numClasses).toBe(5);
    for (let i = 0; i < 15; i++) {
      const s = await rec.get(i);
      const want = await faces.get(i);
      expect(s.label).toBe(want.label);
      const img = await decodeImage(s.encoded as Uint8Array, { size: 56 });
      expect(meanAbsDiff(img.data, want.pixels!.data)).toBeLessThan(6); // JPEG quality 95
    }
    await rec.close();

    const held = new SyntheticFaces({ seed, identities: 4, samplesPerIdentity: 4, size: 56, firstIdentity: 5 });
    const pairs = held.pairs({ count: 6, seed: 3, crossQuality: true });
    const file = path.join(dir, 'val.bin');
    await writeSyntheticBinPack(pairs, file);
    const pack = await readBinPack(file);
    expect(pack.issame).toEqual(pairs.issame);
    expect(pack.images.length).toBe(12);
    const first = await decodeImage(pack.images[0], { size: 56 });
    expect(meanAbsDiff(first.data, pairs.images[0].data)).toBeLessThan(6);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);
