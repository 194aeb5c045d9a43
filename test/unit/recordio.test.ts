// RecordIO: reader vs the independent Python writer's fixtures (test/fixtures/gen_recordio.py), the
// writer byte for byte against them, random round trips (forced magic words → multi-part records),
// and truncated/corrupted files → CORRUPT_FILE, never a crash or a hang.
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FacecudaError } from '../../lib/errors';
import { encodeRecord, packImages, packRecord, RECORDIO_MAGIC, RecordIO, RecordIOWriter } from '../../lib/data/recordio';
import { rng, SEED } from '../helpers';

const FIXTURES = path.join(__dirname, '..', 'fixtures');
const MAGIC = Uint8Array.of(0x0a, 0x23, 0xd7, 0xce);
let dir: string;
let counter = 0;
const tmpPrefix = async (name = 'pack'): Promise<string> => {
  const d = path.join(dir, `${name}-${counter++}`);
  await fsp.mkdir(d);
  return path.join(d, 'train');
};

beforeAll(async () => {
  console.log(`recordio tests: seed ${SEED}`);
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'facecuda-rec-'));
});

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

// ----------------------------------------------------------------------------------------------
// The fixtures' contents, restated from gen_recordio.py

type Label = number | number[];
const TINY: [Label, number, number[]][] = [
  [0, 37, []],
  [0, 64, [8, 20]],
  [1, 41, [13]],
  [[2, 1.0], 50, [0, 44]],
  [2, 12, [8]],
  [[2, 0.0], 3, []],
  [4, 300, [100]],
];
const NOMETA: Record<number, [Label, number, number[]]> = {
  0: [[1, 0.5], 9, []],
  1: [0, 28, [4]],
  2: [3, 5, []],
  3: [2, 16, [1]],
};
const NOMETA_ORDER = [2, 0, 3, 1];

function imageBytes(s: number, length: number, magics: number[]): Uint8Array {
  const b = new Uint8Array(length);
  for (let j = 0; j < length; j++) b[j] = (s * 37 + j * 11 + 5) & 0xff;
  for (const m of magics) b.set(MAGIC, m);
  return b;
}

/** Python's recordio.pack, written here again (not the library's packRecord). */
function logical(label: Label, image: Uint8Array, id: number, id2 = 0): Uint8Array {
  const labels = Array.isArray(label) ? label : [];
  const out = new Uint8Array(24 + 4 * labels.length + image.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, labels.length, true);
  dv.setFloat32(4, Array.isArray(label) ? 0 : label, true);
  dv.setBigUint64(8, BigInt(id), true);
  dv.setBigUint64(16, BigInt(id2), true);
  labels.forEach((l, i) => dv.setFloat32(24 + 4 * i, l, true));
  out.set(image, 24 + 4 * labels.length);
  return out;
}

async function expectCorrupt(p: Promise<unknown>, pattern?: RegExp): Promise<FacecudaError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(FacecudaError);
  expect((err as FacecudaError).code).toBe('CORRUPT_FILE');
  if (pattern) expect((err as Error).message).toMatch(pattern);
  return err as FacecudaError;
}

// ----------------------------------------------------------------------------------------------

describe('RecordIO reader vs the independent fixtures', () => {
  test('tiny: InsightFace layout with the meta record last in the file', async () => {
    for (const p of [path.join(FIXTURES, 'tiny'), path.join(FIXTURES, 'tiny.rec')]) {
      const rec = await RecordIO.open(p);
      try {
        expect(rec.path).toBe(path.join(FIXTURES, 'tiny.rec'));
        expect(rec.size).toBe(7);
        expect(rec.numClasses).toBe(5);
        expect(rec.header).toEqual({ imageKeys: [1, 8], identityKeys: [8, 13] });
        expect(rec.property).toEqual({ numClasses: 5, height: 112, width: 112 });
        expect(rec.keyCount).toBe(13);
        expect(rec.describe()).toEqual({ kind: 'recordio', path: path.join(FIXTURES, 'tiny.rec') });
        for (let s = 0; s < TINY.length; s++) {
          const [label, length, magics] = TINY[s];
          const got = await rec.get(s);
          expect(got.key).toBe(s + 1);
          expect(got.id).toBe(s + 1);
          expect(got.label).toBe(Array.isArray(label) ? label[0] : label);
          if (Array.isArray(label)) expect(Array.from(got.labels!)).toEqual(label);
          else expect(got.labels).toBeUndefined();
          expect(Buffer.from(got.encoded).equals(Buffer.from(imageBytes(s, length, magics)))).toBe(true);
          const raw = await rec.readRecordBytes(s + 1);
          expect(Buffer.from(raw).equals(Buffer.from(logical(label, imageBytes(s, length, magics), s + 1)))).toBe(true);
        }
        // Identity records: [start, end) per class; class 3 has none.
        const ranges = [[1, 3], [3, 4], [4, 7], [7, 7], [7, 8]];
        for (let c = 0; c < 5; c++) {
          const r = await rec.readKey(8 + c);
          expect(r.header.flag).toBe(2);
          expect(Array.from(r.labels!)).toEqual(ranges[c]);
          expect(r.payload.length).toBe(0);
          expect(r.header.id).toBe(BigInt(8 + c));
        }
        const meta = await rec.readKey(0);
        expect(meta.offset).toBe(980);
        expect(meta.offset + 40).toBe(rec.byteLength); // the last record of the file
        expect(meta.header).toEqual({ flag: 2, label: 0, id: 0n, id2: 1n });
        expect(Array.from(meta.labels!)).toEqual([8, 13]);
      } finally {
        await rec.close();
      }
    }
  });

  test('tiny: the multi-part records really are split on disk (cflag 1, 2, 3)', async () => {
    const file = await fsp.readFile(path.join(FIXTURES, 'tiny.rec'));
    const partsAt = (offset: number): number[] => {
      const flags: number[] = [];
      for (let at = offset; ;) {
        expect(file.readUInt32LE(at)).toBe(RECORDIO_MAGIC);
        const lrec = file.readUInt32LE(at + 4);
        const cflag = lrec >>> 29;
        flags.push(cflag);
        at += 8 + (((lrec & (2 ** 29 - 1)) + 3) & ~3);
        if (cflag === 0 || cflag === 3) return flags;
      }
    };
    const idx = (await fsp.readFile(path.join(FIXTURES, 'tiny.idx'), 'utf8')).trim().split('\n').map((l) => l.split('\t').map(Number));
    const off = new Map(idx.map(([k, o]) => [k, o]));
    expect(partsAt(off.get(1)!)).toEqual([0]);
    expect(partsAt(off.get(2)!)).toEqual([1, 2, 3]);
    expect(partsAt(off.get(3)!)).toEqual([0]); // unaligned magic: not split
    expect(partsAt(off.get(4)!)).toEqual([1, 2, 3]);
    expect(partsAt(off.get(5)!)).toEqual([1, 3]);
    expect(partsAt(off.get(7)!)).toEqual([1, 3]);
    // Sample 5 (key 5): the magic is the last aligned word, so the last part is empty.
    const at5 = off.get(5)!;
    const firstLen = file.readUInt32LE(at5 + 4) & (2 ** 29 - 1);
    expect(file.readUInt32LE(at5 + 8 + firstLen + 4)).toBe((3 << 29) >>> 0);
  });

  test('nometa: no meta record → every .idx key in .idx order; key 0 with image bytes is an image', async () => {
    const rec = await RecordIO.open(path.join(FIXTURES, 'nometa.rec'));
    try {
      expect(rec.header).toBeNull();
      expect(rec.size).toBe(4);
      expect(rec.numClasses).toBe(5); // the property file in the same folder
      for (let i = 0; i < 4; i++) {
        const key = NOMETA_ORDER[i];
        const [label, length, magics] = NOMETA[key];
        const got = await rec.get(i);
        expect(got.key).toBe(key);
        expect(got.label).toBe(Array.isArray(label) ? label[0] : label);
        if (Array.isArray(label)) expect(Array.from(got.labels!)).toEqual(label);
        expect(Buffer.from(got.encoded).equals(Buffer.from(imageBytes(100 + key, length, magics)))).toBe(true);
      }
      expect(rec.hasKey(3)).toBe(true);
      expect(rec.hasKey(4)).toBe(false);
    } finally {
      await rec.close();
    }
  });

  test('meta labels above 2^24 are resolved to exact keys from the .idx', async () => {
    // A sparse pack (the .idx may list any keys): N + 1 = 2^24 + 3 is not a float32; it is stored
    // as 2^24 + 4. Images at keys 1 and N only; the identity record at key N + 1 has labels[0] = 1.
    const N = 2 ** 24 + 2;
    expect(Math.fround(N + 1)).toBe(N + 2);
    const prefix = await tmpPrefix('big');
    const parts: Uint8Array[] = [];
    const idx: string[] = [];
    let off = 0;
    const put = (key: number, record: Uint8Array): void => {
      const phys = encodeRecord(record);
      idx.push(`${key}\t${off}\n`);
      parts.push(phys);
      off += phys.length;
    };
    put(1, packRecord(0, Uint8Array.of(1, 2, 3), 1));
    put(N, packRecord(0, Uint8Array.of(4, 5), N));
    put(N + 1, packRecord([1, N + 1], new Uint8Array(0), N + 1));
    put(0, packRecord([N + 1, N + 2], new Uint8Array(0), 0, 1));
    await fsp.writeFile(prefix + '.rec', Buffer.concat(parts));
    await fsp.writeFile(prefix + '.idx', idx.join(''));
    const rec = await RecordIO.open(prefix);
    try {
      expect(Array.from((await rec.readKey(0)).labels!)).toEqual([N + 2, N + 2]); // what the file says
      expect(rec.header).toEqual({ imageKeys: [1, N + 1], identityKeys: [N + 1, N + 2] });
      expect(rec.size).toBe(N);
      expect(rec.numClasses).toBe(1);
      expect(Array.from((await rec.get(N - 1)).encoded)).toEqual([4, 5]);
      await expectCorrupt(rec.get(5), /no such key/);
    } finally {
      await rec.close();
    }
  });

  test('numClasses: the option wins over property', async () => {
    const rec = await RecordIO.open(path.join(FIXTURES, 'tiny'), { numClasses: 9 });
    expect(rec.numClasses).toBe(9);
    await rec.close();
  });
});

describe('RecordIO writer', () => {
  test('writes the fixture byte for byte (.rec, .idx, property)', async () => {
    const prefix = await tmpPrefix('same');
    const w = await RecordIOWriter.create(prefix, { numClasses: 5, imageSize: 112 });
    for (let s = 0; s < TINY.length; s++) {
      const [label, length, magics] = TINY[s];
      expect(await w.append(label, imageBytes(s, length, magics))).toBe(s + 1);
    }
    await w.close();
    for (const [mine, theirs] of [['train.rec', 'tiny.rec'], ['train.idx', 'tiny.idx'], ['property', 'property']]) {
      const a = await fsp.readFile(path.join(path.dirname(prefix), mine));
      const b = await fsp.readFile(path.join(FIXTURES, theirs));
      expect({ file: mine, same: a.equals(b) }).toEqual({ file: mine, same: true });
    }
    // Nothing but the three files (the temporaries were renamed).
    expect((await fsp.readdir(path.dirname(prefix))).sort()).toEqual(['property', 'train.idx', 'train.rec']);
  });

  test('encodeRecord splits exactly at aligned magic words (first/middle/last parts)', () => {
    const payload = new Uint8Array(20).fill(1);
    payload.set(MAGIC, 4);
    payload.set(MAGIC, 9); // unaligned
    payload.set(MAGIC, 16);
    const out = encodeRecord(payload);
    const dv = new DataView(out.buffer);
    // [magic, lrec(1, 4), 4 bytes] [magic, lrec(2, 8), 8 bytes] [magic, lrec(3, 0)]
    expect(out.length).toBe(8 + 4 + 8 + 8 + 8);
    expect(dv.getUint32(4, true)).toBe(((1 << 29) | 4) >>> 0);
    expect(dv.getUint32(16, true)).toBe(((2 << 29) | 8) >>> 0);
    expect(dv.getUint32(32, true)).toBe((3 << 29) >>> 0);
    expect(encodeRecord(new Uint8Array(5)).length).toBe(16); // 8 + 5 + 3 padding
  });

  test('random round trip (fresh randomness, forced magic words, large records)', async () => {
    const r = rng(SEED ^ 0x5eed);
    const prefix = await tmpPrefix('random');
    const n = 40 + Math.floor(r() * 40);
    const samples: { label: Label; encoded: Uint8Array }[] = [];
    let cls = 0;
    for (let i = 0; i < n; i++) {
      if (r() < 0.3) cls += 1 + Math.floor(r() * 3); // gaps: classes without images
      const len = r() < 0.1 ? 16000 + Math.floor(r() * 30000) : Math.floor(r() * 600);
      const enc = new Uint8Array(len);
      for (let j = 0; j < len; j++) enc[j] = Math.floor(r() * 256);
      const k = Math.floor(r() * 4);
      for (let m = 0; m < k && len >= 4; m++) enc.set(MAGIC, Math.floor(r() * (len - 3)) & (r() < 0.7 ? ~3 : ~0));
      const label: Label = r() < 0.3 ? [cls, Math.fround(r())] : cls;
      samples.push({ label, encoded: enc });
    }
    const numClasses = cls + 1 + Math.floor(r() * 3);
    const w = await RecordIOWriter.create(prefix, { numClasses, imageSize: [112, 96] });
    await Promise.all(samples.map((s) => w.append(s.label, s.encoded))); // appends are serialized
    expect(w.count).toBe(n);
    await w.close();
    const rec = await RecordIO.open(prefix);
    try {
      expect(rec.size).toBe(n);
      expect(rec.numClasses).toBe(numClasses);
      expect(rec.property).toEqual({ numClasses, height: 112, width: 96 });
      expect(rec.header).toEqual({ imageKeys: [1, n + 1], identityKeys: [n + 1, n + 1 + numClasses] });
      const got = await Promise.all(samples.map((_, i) => rec.get(i)));
      got.forEach((g, i) => {
        const s = samples[i];
        expect(g.label).toBe(Array.isArray(s.label) ? s.label[0] : s.label);
        if (Array.isArray(s.label)) expect(Array.from(g.labels!)).toEqual(s.label);
        expect(Buffer.from(g.encoded).equals(Buffer.from(s.encoded))).toBe(true);
      });
      for (let c = 0; c < numClasses; c++) {
        const idr = await rec.readKey(n + 1 + c);
        const first = samples.findIndex((s) => (Array.isArray(s.label) ? s.label[0] : s.label) >= c);
        const start = first < 0 ? n + 1 : first + 1;
        const count = samples.filter((s) => (Array.isArray(s.label) ? s.label[0] : s.label) === c).length;
        expect(Array.from(idr.labels!)).toEqual([start, start + count]);
      }
    } finally {
      await rec.close();
    }
  });

  test('meta: false writes an im2rec-style pack (keys 0..N-1, no meta); packImages takes an async iterable', async () => {
    const prefix = await tmpPrefix('nometa');
    async function* gen(): AsyncGenerator<{ label: number; encoded: Uint8Array }> {
      for (const label of [3, 1, 2, 0]) yield { label, encoded: Uint8Array.of(label, 0x0a, 0x23, 0xd7, 0xce, 9, 9, 9) };
    }
    const res = await packImages(prefix, gen(), { meta: false });
    expect(res.size).toBe(4);
    const rec = await RecordIO.open(prefix + '.rec');
    try {
      expect(rec.header).toBeNull();
      expect(rec.size).toBe(4);
      expect(rec.numClasses).toBe(4);
      expect((await rec.get(0)).label).toBe(3);
      expect(Array.from((await rec.get(2)).encoded)).toEqual([2, 0x0a, 0x23, 0xd7, 0xce, 9, 9, 9]);
    } finally {
      await rec.close();
    }
  });

  test('packImages with meta: an empty pack is valid', async () => {
    const prefix = await tmpPrefix('empty');
    await packImages(prefix, []);
    const rec = await RecordIO.open(prefix);
    expect(rec.size).toBe(0);
    expect(rec.numClasses).toBe(0);
    expect(rec.header).toEqual({ imageKeys: [1, 1], identityKeys: [1, 1] });
    await rec.close();
  });

  test('argument checks', async () => {
    const prefix = await tmpPrefix('args');
    const w = await RecordIOWriter.create(prefix, { numClasses: 3 });
    await expect(w.append(3, new Uint8Array(1))).rejects.toThrow(RangeError);
    await expect(w.append(-1, new Uint8Array(1))).rejects.toThrow(RangeError);
    await expect(w.append(0.5, new Uint8Array(1))).rejects.toThrow(RangeError);
    await expect(w.append(1, [1, 2, 3] as unknown as Uint8Array)).rejects.toThrow(TypeError);
    await expect(w.append([] as number[], new Uint8Array(1))).rejects.toThrow(TypeError);
    await w.append(2, new Uint8Array(1));
    await expect(w.append(1, new Uint8Array(1))).rejects.toThrow(/non-decreasing/);
    await w.abort();
    expect(await fsp.readdir(path.dirname(prefix))).toEqual([]);
    await expect(RecordIOWriter.create(prefix, { numclasses: 3 } as never)).rejects.toThrow(/numClasses/);
    await expect(RecordIOWriter.create(prefix, { imageSize: [1, 2, 3] as never })).rejects.toThrow(TypeError);
    await expect(RecordIO.open('')).rejects.toThrow(TypeError);
    const rec = await RecordIO.open(path.join(FIXTURES, 'tiny'));
    await expect(rec.get(7)).rejects.toThrow(RangeError);
    await expect(rec.get(-1)).rejects.toThrow(RangeError);
    await expect(rec.get(1.5)).rejects.toThrow(TypeError);
    await expect(rec.readKey(13)).rejects.toThrow(RangeError);
    await rec.close();
    await rec.close(); // idempotent
    await expect(rec.get(0)).rejects.toMatchObject({ code: 'DISPOSED' });
    await expect(RecordIO.open(path.join(dir, 'missing'))).rejects.toMatchObject({ code: 'IO_ERROR' });
  });

  test('packRecord matches mxnet pack (scalar and array labels)', () => {
    const img = Uint8Array.of(1, 2, 3);
    expect(Buffer.from(packRecord(7, img, 3, 4)).equals(Buffer.from(logical(7, img, 3, 4)))).toBe(true);
    expect(Buffer.from(packRecord([7, 0.25], img, 3)).equals(Buffer.from(logical([7, 0.25], img, 3)))).toBe(true);
  });
});

// ----------------------------------------------------------------------------------------------
// Corruption

/** Opens a pack and reads every record; returns normally or throws (the caller checks the code). */
async function readAll(prefix: string): Promise<void> {
  const rec = await RecordIO.open(prefix);
  try {
    for (const k of rec.keys()) await rec.readKey(k);
    for (let i = 0; i < rec.size; i++) await rec.get(i);
  } finally {
    await rec.close();
  }
}

async function onlyCorrupt(p: Promise<unknown>): Promise<boolean> {
  try {
    await p;
    return false;
  } catch (e) {
    if (!(e instanceof FacecudaError) || (e as FacecudaError).code !== 'CORRUPT_FILE') throw e;
    return true;
  }
}

describe('RecordIO corruption → CORRUPT_FILE', () => {
  test('the .rec truncated at every 4-byte boundary, the .idx kept', async () => {
    const rec = await fsp.readFile(path.join(FIXTURES, 'tiny.rec'));
    const idx = await fsp.readFile(path.join(FIXTURES, 'tiny.idx'));
    const prefix = await tmpPrefix('trunc');
    await fsp.writeFile(prefix + '.idx', idx);
    let failures = 0;
    for (let cut = 0; cut < rec.length; cut += 4) {
      await fsp.writeFile(prefix + '.rec', rec.subarray(0, cut));
      if (await onlyCorrupt(readAll(prefix))) failures++;
    }
    expect(failures).toBe(rec.length / 4); // every truncation is detected
  });

  test('truncated records with the key and byte offset in the message', async () => {
    const rec = await fsp.readFile(path.join(FIXTURES, 'tiny.rec'));
    const prefix = await tmpPrefix('trunc2');
    // Keep only keys 1..3 in the .idx, cut the .rec inside record 3 (offset 176).
    await fsp.writeFile(prefix + '.idx', '1\t0\n2\t72\n3\t176\n');
    await fsp.writeFile(prefix + '.rec', rec.subarray(0, 200));
    const r = await RecordIO.open(prefix);
    expect((await r.get(1)).encoded.length).toBe(64);
    const e = await expectCorrupt(r.get(2), /key 3 at byte offset 176.*truncated/);
    expect((e as unknown as { key: number }).key).toBe(3);
    expect((e as unknown as { byteOffset: number }).byteOffset).toBe(176);
    await r.close();
    // Inside a multi-part record: cut after its first part.
    await fsp.writeFile(prefix + '.idx', '1\t0\n2\t72\n');
    await fsp.writeFile(prefix + '.rec', rec.subarray(0, 72 + 8 + 32 + 4));
    const r2 = await RecordIO.open(prefix);
    await expectCorrupt(r2.readKey(2), /key 2 at byte offset 72/);
    await r2.close();
  });

  test('every byte flipped (random xor): CORRUPT_FILE or a clean read, never another error', async () => {
    const r = rng(SEED ^ 0xf11b);
    const rec = await fsp.readFile(path.join(FIXTURES, 'tiny.rec'));
    const prefix = await tmpPrefix('flip');
    await fsp.copyFile(path.join(FIXTURES, 'tiny.idx'), prefix + '.idx');
    let detected = 0;
    for (let i = 0; i < rec.length; i++) {
      const bad = Buffer.from(rec);
      bad[i] ^= 1 + Math.floor(r() * 255);
      await fsp.writeFile(prefix + '.rec', bad);
      if (await onlyCorrupt(readAll(prefix))) detected++;
    }
    // Every record header byte (magic, lrec) is checked; image bytes are not (no checksum in RecordIO).
    expect(detected).toBeGreaterThan(13 * 4);
  });

  test('bad magic, bad cflag sequence, short IRHeader, too many labels', async () => {
    const prefix = await tmpPrefix('craft');
    const write = async (bytes: Uint8Array, idx = '0\t0\n'): Promise<void> => {
      await fsp.writeFile(prefix + '.rec', bytes);
      await fsp.writeFile(prefix + '.idx', idx);
    };
    const rec = (cflag: number, len: number, pad = (4 - (len % 4)) % 4): Uint8Array => {
      const b = new Uint8Array(8 + len + pad);
      const dv = new DataView(b.buffer);
      dv.setUint32(0, RECORDIO_MAGIC, true);
      dv.setUint32(4, ((cflag << 29) | len) >>> 0, true);
      return b;
    };
    await write(Uint8Array.of(1, 2, 3, 4, 0, 0, 0, 0));
    await expectCorrupt(RecordIO.open(prefix), /bad magic/);
    await write(rec(2, 24));
    await expectCorrupt(RecordIO.open(prefix), /cflag 2/);
    await write(Buffer.concat([rec(1, 8), rec(0, 24)]));
    await expectCorrupt(RecordIO.open(prefix), /part 1 .*cflag 0/);
    await write(Buffer.concat([rec(1, 6, 2), rec(3, 24)]));
    await expectCorrupt(RecordIO.open(prefix), /not a multiple of 4/);
    await write(rec(0, 10));
    await expectCorrupt(RecordIO.open(prefix), /fewer than the 24-byte IRHeader/);
    const many = rec(0, 28);
    new DataView(many.buffer).setUint32(8, 5, true); // flag 5 → 20 label bytes, only 4 present
    await write(many);
    await expectCorrupt(RecordIO.open(prefix), /flag 5/);
    // Meta record with impossible ranges.
    await write(encodeRecord(packRecord([3, 2], new Uint8Array(0))));
    await expectCorrupt(RecordIO.open(prefix), /meta record/);
    // Meta record whose image keys are not in the .idx.
    await write(encodeRecord(packRecord([5, 6], new Uint8Array(0))));
    await expectCorrupt(RecordIO.open(prefix), /lacks key/);
  });

  test('malformed .idx and property files', async () => {
    const prefix = await tmpPrefix('idx');
    await fsp.copyFile(path.join(FIXTURES, 'tiny.rec'), prefix + '.rec');
    const cases: [string, RegExp][] = [
      ['1\t0\nx\t72\n', /line 2.*unexpected byte/],
      ['1\t0\n1\t72\n', /key 1 appears twice|appears twice/],
      ['1\t2\n', /not a multiple of 4/],
      ['1\t4096\n', /beyond the end/],
      ['1\n', /expected/],
      ['1\t0 7\n', /unexpected digit/],
      ['1\t99999999999999999999\n', /too large/],
    ];
    for (const [text, pattern] of cases) {
      await fsp.writeFile(prefix + '.idx', text);
      await expectCorrupt(RecordIO.open(prefix), pattern);
    }
    // Duplicates in a non-increasing index are found too.
    await fsp.writeFile(prefix + '.idx', '2\t72\n1\t0\n2\t72\n');
    await expectCorrupt(RecordIO.open(prefix), /appears twice/);
    // A truncated .idx (cut inside a line) never crashes.
    const idx = await fsp.readFile(path.join(FIXTURES, 'tiny.idx'));
    for (let cut = 0; cut <= idx.length; cut++) {
      await fsp.writeFile(prefix + '.idx', idx.subarray(0, cut));
      try {
        await readAll(prefix);
      } catch (e) {
        expect(e).toBeInstanceOf(FacecudaError);
        expect(['CORRUPT_FILE']).toContain((e as FacecudaError).code);
      }
    }
    await fsp.copyFile(path.join(FIXTURES, 'tiny.idx'), prefix + '.idx');
    await fsp.writeFile(path.join(path.dirname(prefix), 'property'), '5;112;112\n');
    await expectCorrupt(RecordIO.open(prefix), /property/);
    await fsp.unlink(prefix + '.idx');
    await expect(RecordIO.open(prefix)).rejects.toMatchObject({ code: 'IO_ERROR' });
  });
});
