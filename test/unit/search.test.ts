// FaceIndex (exact 1:N search) against an independent float64 brute force on fresh random data (the
// seed is printed; FACECUDA_TEST_SEED reproduces a run): both CPU paths (the scan serves Q <= 8, the
// GEMM Q > 8), k up to 1024, exact ties (integer-valued vectors make fp32 scores exact, so the order
// must be exactly score desc, id asc), add/remove/update, filters, range search, f16 storage against
// f16-rounded references, multi-image aggregation, save/load with and without a key, corruption, and
// the shard merge against one index.
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';

import { FacecudaError } from '../../lib/errors';
import { FaceIndex, mergeTopK, SearchResult } from '../../lib/search';
import { randomFloats, rng, SEED } from '../helpers';

const r = rng(SEED ^ 0x51a4c4);
beforeAll(() => console.log(`search tests: seed ${SEED}`));

let tmp: string;
beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'facecuda-search-'));
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

// ---- references

/** IEEE half round-to-nearest-even of a float32 value, returned as a number (independent of the engine). */
function roundHalf(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  if (a >= 65520) return Math.sign(x) * Infinity;
  // Quantum: 2^(e-10) for normal halves (e >= -14), 2^-24 for subnormals.
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  let q = Math.pow(2, e - 10);
  if (a / q >= 2048) q *= 2; // log2 rounding at a power of two
  const m = a / q;
  let rm = Math.round(m);
  if (Math.abs(m - Math.trunc(m) - 0.5) < 1e-12 && rm % 2 === 1) rm -= 1; // ties to even
  return Math.sign(x) * rm * q;
}

interface Row { id: number; v: Float32Array | Float64Array }

function refScores(rows: Row[], q: Float32Array, qi: number, D: number): { id: number; s: number }[] {
  return rows.map(({ id, v }) => {
    let s = 0;
    for (let d = 0; d < D; d++) s += v[d] * q[qi * D + d];
    return { id, s };
  });
}
const order = (a: { id: number; s: number }, b: { id: number; s: number }): number => (a.s !== b.s ? b.s - a.s : a.id - b.id);

/** Checks a top-k result against the float64 brute force; tol covers fp32 rounding of the dot products. */
function expectTopK(res: SearchResult, rows: Row[], q: Float32Array, Q: number, D: number, k: number, tol: number): void {
  expect(res.k).toBe(k);
  expect(res.ids.length).toBe(Q * k);
  for (let qi = 0; qi < Q; qi++) {
    const ref = refScores(rows, q, qi, D).sort(order);
    const byId = new Map<number, number[]>(); // an id's row scores (several rows per id with aggregate 'none')
    for (const e of ref) byId.set(e.id, [...(byId.get(e.id) ?? []), e.s]);
    const avail = Math.min(k, ref.length);
    const got = new Set<number>();
    for (let j = 0; j < k; j++) {
      const id = res.ids[qi * k + j];
      const s = res.scores[qi * k + j];
      if (j >= avail) {
        expect(id).toBe(-1);
        expect(s).toBe(-Infinity);
        continue;
      }
      expect(Math.abs(s - ref[j].s)).toBeLessThanOrEqual(tol); // the j-th best score
      expect(byId.has(id)).toBe(true);
      expect(Math.min(...byId.get(id)!.map((x) => Math.abs(x - ref[j].s)))).toBeLessThanOrEqual(2 * tol); // a row that truly scores that
      if (j > 0) {
        const ps = res.scores[qi * k + j - 1];
        expect(ps > s || (ps === s && res.ids[qi * k + j - 1] <= id)).toBe(true); // best first, ties by id
      }
      got.add(id);
    }
    // Everything clearly better than the k-th best is present.
    if (avail > 0) for (const e of ref) if (e.s > ref[avail - 1].s + 2 * tol) expect(got.has(e.id)).toBe(true);
  }
}

function randomRows(n: number, D: number, firstId = 0): Row[] {
  return Array.from({ length: n }, (_, i) => ({ id: firstId + i, v: randomFloats(D, r) }));
}
function flat(rows: Row[], D: number): Float32Array {
  const out = new Float32Array(rows.length * D);
  rows.forEach((x, i) => out.set(x.v, i * D));
  return out;
}
function build(rows: Row[], D: number, storage: 'f32' | 'f16' = 'f32'): FaceIndex {
  const ix = new FaceIndex({ dim: D, storage, normalize: false });
  if (rows.length) ix.add(rows.map((x) => x.id), flat(rows, D));
  return ix;
}

// ---- exactness

describe('FaceIndex exact top-k', () => {
  const D = 48;
  const rows = randomRows(3000, D, 10);
  // Shuffled, sparse ids: ties by id must not rely on insertion order.
  rows.forEach((x) => (x.id = Math.floor(r() * 1e12)));
  const ix = build(rows, D);
  afterAll(() => ix.dispose());

  test.each([
    [1, 1], [1, 10], [3, 10], [8, 100], [9, 10], [20, 1], [40, 50], [300, 10], [2, 1024], [17, 1024],
  ])('Q=%i k=%i matches the float64 brute force', async (Q, k) => {
    const q = randomFloats(Q * D, r);
    const res = await ix.search(q, k, { aggregate: 'none' });
    expectTopK(res, rows, q, Q, D, k, 2e-5 * D);
  });

  test('k larger than the index pads with id -1 and -Infinity', async () => {
    const few = randomRows(5, D);
    const small = build(few, D);
    for (const Q of [1, 12]) {
      const q = randomFloats(Q * D, r);
      const res = await small.search(q, 9);
      expectTopK(res, few, q, Q, D, 9, 2e-5 * D);
    }
    small.dispose();
  });
});

describe('ties and duplicates (exact integer scores)', () => {
  // Components in {-1, 0, 1}: every dot product is a small integer, exact in fp32 in any order, so
  // the expected order (score desc, id asc) is fully determined and checked exactly.
  const D = 37;
  const intRows = (n: number): Row[] =>
    Array.from({ length: n }, () => ({ id: 0, v: Float32Array.from({ length: D }, () => Math.floor(r() * 3) - 1) }));

  test.each([[1], [5], [9], [64]])('Q=%i: exact order with many ties and duplicate vectors', async (Q) => {
    const base = intRows(400);
    const rows: Row[] = [];
    const ids = Array.from({ length: 1200 }, (_, i) => i * 7 + 3).sort(() => r() - 0.5);
    for (let i = 0; i < 1200; i++) rows.push({ id: ids[i], v: base[i % 400].v }); // every vector 3 times
    for (const storage of ['f32', 'f16'] as const) {
      const ix = build(rows, D, storage);
      const q = Float32Array.from({ length: Q * D }, () => Math.floor(r() * 5) - 2);
      const k = 100;
      const res = await ix.search(q, k, { aggregate: 'none' });
      for (let qi = 0; qi < Q; qi++) {
        const ref = refScores(rows, q, qi, D).sort(order).slice(0, k);
        expect(Array.from(res.ids.subarray(qi * k, qi * k + k))).toEqual(ref.map((e) => e.id));
        expect(Array.from(res.scores.subarray(qi * k, qi * k + k))).toEqual(ref.map((e) => e.s));
      }
      ix.dispose();
    }
  });
});

describe('f16 storage', () => {
  test.each([[1], [4], [33]])('Q=%i matches a float64 reference over f16-rounded rows', async (Q) => {
    const D = 64;
    const rows = randomRows(2000, D);
    const ix = build(rows, D, 'f16');
    const rounded = rows.map(({ id, v }) => ({ id, v: Float64Array.from(v, roundHalf) }));
    const q = randomFloats(Q * D, r);
    const k = 25;
    expectTopK(await ix.search(q, k, { aggregate: 'none' }), rounded, q, Q, D, k, 2e-5 * D);
    // And the rounding is real: against unrounded rows the scores differ by far more than fp32 noise.
    const res = await ix.search(q, 1, { aggregate: 'none' });
    const exact = refScores(rows, q, 0, D).sort(order)[0];
    const diff = Math.abs(res.scores[0] - exact.s);
    expect(diff).toBeGreaterThan(0);
    ix.dispose();
  });

  test('values beyond the fp16 range are rejected', () => {
    const ix = new FaceIndex({ dim: 2, storage: 'f16', normalize: false });
    expect(() => ix.add([1], new Float32Array([7e4, 0]))).toThrow(expect.objectContaining({ code: 'OUT_OF_RANGE' }));
    expect(ix.size).toBe(0);
  });
});

// ---- mutations, filters, range

describe('add / remove / update', () => {
  test('a random sequence of operations matches a mirror of the rows', async () => {
    const D = 24;
    const ix = new FaceIndex({ dim: D, normalize: false });
    const mirror = new Map<number, Float32Array>();
    let next = 0;
    for (let step = 0; step < 60; step++) {
      const op = r();
      if (op < 0.5 || mirror.size < 5) {
        const n = 1 + Math.floor(r() * 40);
        const ids = Array.from({ length: n }, () => next++);
        const v = randomFloats(n * D, r);
        ix.add(ids, v);
        ids.forEach((id, i) => mirror.set(id, v.slice(i * D, i * D + D)));
      } else if (op < 0.8) {
        const keys = [...mirror.keys()];
        const del = keys.filter(() => r() < 0.2);
        del.push(next + 1000); // unknown ids are ignored
        expect(ix.remove(del)).toBe(del.length - 1);
        del.forEach((id) => mirror.delete(id));
      } else {
        const keys = [...mirror.keys()];
        const id = keys[Math.floor(r() * keys.length)];
        const v = randomFloats(D, r);
        ix.update(id, v);
        mirror.set(id, v);
      }
      expect(ix.size).toBe(mirror.size);
      if (step % 10 === 9) {
        const rows = [...mirror].map(([id, v]) => ({ id, v }));
        for (const Q of [2, 11]) {
          const q = randomFloats(Q * D, r);
          expectTopK(await ix.search(q, 15), rows, q, Q, D, 15, 2e-5 * D);
        }
      }
    }
    expect(() => ix.update(next + 5, randomFloats(D, r))).toThrow(expect.objectContaining({ code: 'OUT_OF_RANGE' }));
    ix.dispose();
  });

  test('a search sees the index as it was when it was called (copy-on-write)', async () => {
    const D = 16;
    const rows = randomRows(5000, D);
    const ix = build(rows, D);
    const q = randomFloats(D, r);
    const pending = ix.search(q, 20, { aggregate: 'none' });
    ix.remove(rows.map((x) => x.id)); // everything, while the search may still run
    ix.add([99999], randomFloats(D, r));
    expectTopK(await pending, rows, q, 1, D, 20, 2e-5 * D);
    const after = await ix.search(q, 3);
    expect(Array.from(after.ids)).toEqual([99999, -1, -1]);
    ix.dispose();
  });
});

describe('filters and range search', () => {
  const D = 32;
  const rows = randomRows(2500, D, 1);
  const ix = build(rows, D);
  afterAll(() => ix.dispose());

  test.each([[1], [6], [30]])('Q=%i: a filter restricts results to its ids', async (Q) => {
    const allowed = rows.filter(() => r() < 0.1);
    const filter = [...allowed.map((x) => x.id), 10 ** 9]; // an id not in the index is ignored
    const q = randomFloats(Q * D, r);
    const res = await ix.search(q, 40, { filter });
    expectTopK(res, allowed, q, Q, D, 40, 2e-5 * D);
    const set = await ix.search(q, 40, { filter: new Set(filter) });
    expect(set.ids).toEqual(res.ids);
    const none = await ix.search(q, 3, { filter: [] });
    expect(Array.from(none.ids)).toEqual(new Array(3 * Q).fill(-1));
  });

  test.each([[1], [12]])('Q=%i: searchRange returns every entry above minScore, best first', async (Q) => {
    const q = randomFloats(Q * D, r);
    // Threshold between the 60th and 61st best of query 0.
    const r0 = refScores(rows, q, 0, D).sort(order);
    const minScore = (r0[59].s + r0[60].s) / 2;
    const allowed = rows.filter(() => r() < 0.5);
    for (const [filter, subset] of [[undefined, rows], [allowed.map((x) => x.id), allowed]] as const) {
      const res = await ix.searchRange(q, minScore, filter ? { filter } : undefined);
      expect(res.offsets.length).toBe(Q + 1);
      for (let qi = 0; qi < Q; qi++) {
        const ref = refScores(subset, q, qi, D).sort(order);
        const got = Array.from(res.ids.subarray(res.offsets[qi], res.offsets[qi + 1]));
        const gs = res.scores.subarray(res.offsets[qi], res.offsets[qi + 1]);
        const tol = 2e-5 * D;
        for (const e of ref) {
          if (e.s > minScore + tol) expect(got).toContain(e.id);
          if (e.s < minScore - tol) expect(got).not.toContain(e.id);
        }
        for (let j = 0; j < gs.length; j++) {
          expect(gs[j]).toBeGreaterThanOrEqual(minScore);
          if (j) expect(gs[j - 1] > gs[j] || (gs[j - 1] === gs[j] && got[j - 1] < got[j])).toBe(true);
        }
        if (!filter && qi === 0) expect(got.length).toBeGreaterThanOrEqual(58);
      }
    }
  });
});

// ---- multi-image enrolment

describe('several embeddings per id', () => {
  test.each([[1], [10]])('Q=%i: aggregate max / mean / none', async (Q) => {
    const D = 20;
    const rows: Row[] = [];
    for (let id = 0; id < 300; id++) {
      const m = 1 + Math.floor(r() * 4);
      for (let j = 0; j < m; j++) rows.push({ id: id * 3 + 1, v: randomFloats(D, r) });
    }
    rows.sort(() => r() - 0.5);
    const ix = new FaceIndex({ dim: D, normalize: true });
    ix.add(rows.map((x) => x.id), flat(rows, D));
    expect(ix.size).toBe(rows.length);
    expect(ix.identities).toBe(300);
    // The index stores normalized rows; the references use the same fp32 normalized values.
    const unit = rows.map(({ id, v }) => {
      let s = 0;
      for (const x of v) s += x * x;
      return { id, v: Float32Array.from(v, (x) => x / Math.sqrt(s)) };
    });
    const qRaw = randomFloats(Q * D, r);
    const q = new Float32Array(qRaw);
    for (let qi = 0; qi < Q; qi++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += q[qi * D + d] ** 2;
      for (let d = 0; d < D; d++) q[qi * D + d] /= Math.sqrt(s);
    }
    const k = 30;
    const tol = 1e-5;
    // max: each id by its best row.
    const res = await ix.search(qRaw, k, { aggregate: 'max' });
    for (let qi = 0; qi < Q; qi++) {
      const per = new Map<number, number>();
      for (const e of refScores(unit, q, qi, D)) per.set(e.id, Math.max(per.get(e.id) ?? -Infinity, e.s));
      const ref = [...per].map(([id, s]) => ({ id, s })).sort(order);
      const ids = Array.from(res.ids.subarray(qi * k, qi * k + k));
      expect(new Set(ids).size).toBe(k);
      for (let j = 0; j < k; j++) {
        expect(Math.abs(res.scores[qi * k + j] - ref[j].s)).toBeLessThanOrEqual(tol);
        expect(Math.abs(per.get(ids[j])! - ref[j].s)).toBeLessThanOrEqual(2 * tol);
      }
    }
    // mean: each id by its normalized mean embedding.
    const sums = new Map<number, Float64Array>();
    for (const { id, v } of unit) {
      const a = sums.get(id) ?? new Float64Array(D);
      v.forEach((x, d) => (a[d] += x));
      sums.set(id, a);
    }
    const means: Row[] = [...sums].map(([id, a]) => {
      const n = Math.sqrt(a.reduce((s, x) => s + x * x, 0));
      return { id, v: Float64Array.from(a, (x) => x / n) };
    });
    expectTopK(await ix.search(qRaw, k, { aggregate: 'mean' }), means, q, Q, D, k, 1e-5);
    // none: rows (an id may repeat).
    expectTopK(await ix.search(qRaw, k, { aggregate: 'none' }), unit, q, Q, D, k, 1e-5);
    // Removing an id removes all of its rows.
    const victim = rows[0].id;
    const count = rows.filter((x) => x.id === victim).length;
    expect(ix.remove([victim])).toBe(count);
    expect(ix.has(victim)).toBe(false);
    ix.dispose();
  });
});

// ---- persistence

describe('save / load', () => {
  const D = 40;
  const key = Buffer.from(Array.from({ length: 32 }, () => Math.floor(r() * 256)));

  async function roundTrip(storage: 'f32' | 'f16', withKey: boolean): Promise<void> {
    const rows = randomRows(700, D, 5);
    const ix = build(rows, D, storage);
    ix.remove([rows[3].id, rows[100].id]);
    const file = path.join(tmp, `rt-${storage}-${withKey}.fcx`);
    await ix.save(file, withKey ? { key } : undefined);
    const back = await FaceIndex.load(file, withKey ? { key } : undefined);
    expect(back.size).toBe(698);
    expect(back.storage).toBe(storage);
    expect(back.has(rows[3].id)).toBe(false);
    for (const Q of [1, 13]) {
      const q = randomFloats(Q * D, r);
      const a = await ix.search(q, 20);
      const b = await back.search(q, 20);
      expect(b.ids).toEqual(a.ids);
      expect(b.scores).toEqual(a.scores);
    }
    ix.dispose();
    back.dispose();
  }
  test.each([['f32', false], ['f32', true], ['f16', false], ['f16', true]] as const)('%s key=%s round trip', roundTrip);

  test('an empty index round-trips', async () => {
    const file = path.join(tmp, 'empty.fcx');
    const ix = new FaceIndex({ dim: 8 });
    await ix.save(file, { key });
    const back = await FaceIndex.load(file, { key });
    expect(back.size).toBe(0);
    expect(Array.from((await back.search(randomFloats(8, r), 2)).ids)).toEqual([-1, -1]);
  });

  test('a removed embedding leaves no bytes in the saved file', async () => {
    const rows = randomRows(300, D);
    const ix = build(rows, D);
    const file = path.join(tmp, 'compact.fcx');
    const needle = (i: number): Buffer => Buffer.from(rows[i].v.buffer, rows[i].v.byteOffset, rows[i].v.byteLength);
    await ix.save(file);
    let bytes = await fsp.readFile(file);
    expect(bytes.indexOf(needle(7))).toBeGreaterThanOrEqual(0); // the search below can fail
    expect(bytes.indexOf(needle(299))).toBeGreaterThanOrEqual(0);
    ix.remove([rows[7].id]);
    ix.update(rows[20].id, randomFloats(D, r));
    await ix.save(file);
    bytes = await fsp.readFile(file);
    // Not the vector, nor any 16-byte piece of it.
    for (const i of [7, 20]) {
      const n = needle(i);
      for (let off = 0; off + 16 <= n.length; off += 16) expect(bytes.indexOf(n.subarray(off, off + 16))).toBe(-1);
    }
    expect(bytes.indexOf(needle(299))).toBeGreaterThanOrEqual(0);
    // Encrypted: no plaintext at all.
    await ix.save(file, { key });
    bytes = await fsp.readFile(file);
    expect(bytes.indexOf(needle(299).subarray(0, 16))).toBe(-1);
    ix.dispose();
  });

  test('wrong key, tampering, truncation and a missing key are errors', async () => {
    const ix = build(randomRows(200, D), D);
    const enc = path.join(tmp, 'enc.fcx');
    const plain = path.join(tmp, 'plain.fcx');
    await ix.save(enc, { key });
    await ix.save(plain);
    const other = Buffer.from(key);
    other[5] ^= 1;
    await expect(FaceIndex.load(enc, { key: other })).rejects.toMatchObject({ code: 'CORRUPT_FILE', message: expect.stringMatching(/key is wrong/) });
    await expect(FaceIndex.load(enc)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(FaceIndex.load(plain, { key })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(FaceIndex.load(enc, { key: Buffer.alloc(16) })).rejects.toMatchObject({ code: 'OUT_OF_RANGE' });

    const { createHash } = await import('crypto');
    for (const f of [enc, plain]) {
      const good = await fsp.readFile(f);
      const at = 48 + Math.floor(r() * (good.length - 48 - 32));
      // A flipped byte: the checksum fails.
      const bad = Buffer.from(good);
      bad[at] ^= 0x40;
      await fsp.writeFile(f + '.bad', bad);
      await expect(FaceIndex.load(f + '.bad', f === enc ? { key } : undefined)).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
      // Deliberate tampering that also recomputes the (unkeyed) checksum: GCM catches it.
      if (f === enc) {
        createHash('sha256').update(bad.subarray(0, bad.length - 32)).digest().copy(bad, bad.length - 32);
        await fsp.writeFile(f + '.bad', bad);
        await expect(FaceIndex.load(f + '.bad', { key })).rejects.toMatchObject({ code: 'CORRUPT_FILE', message: expect.stringMatching(/authentication failed/) });
      }
      // Truncated, extended, and a damaged header.
      await fsp.writeFile(f + '.bad', good.subarray(0, good.length - 100));
      await expect(FaceIndex.load(f + '.bad', f === enc ? { key } : undefined)).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
      await fsp.writeFile(f + '.bad', Buffer.concat([good, Buffer.alloc(3)]));
      await expect(FaceIndex.load(f + '.bad', f === enc ? { key } : undefined)).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
      await fsp.writeFile(f + '.bad', good.subarray(0, 20));
      await expect(FaceIndex.load(f + '.bad')).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
      const hdr = Buffer.from(good);
      hdr[0] = 0x58;
      await fsp.writeFile(f + '.bad', hdr);
      await expect(FaceIndex.load(f + '.bad')).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
    }
    await expect(FaceIndex.load(path.join(tmp, 'missing.fcx'))).rejects.toMatchObject({ code: 'IO_ERROR' });
    ix.dispose();
  });
});

// ---- sharding

describe('mergeTopK', () => {
  test.each([[1], [7], [25]])('Q=%i: merged shards equal one index', async (Q) => {
    const D = 36;
    const rows = randomRows(3000, D);
    rows.forEach((x) => (x.id = Math.floor(r() * 1e9)));
    // Some exact duplicates across shards, so ties by id are exercised in the merge.
    for (let i = 0; i < 50; i++) rows[i + 1000].v = rows[i].v;
    const whole = build(rows, D);
    const parts = [0, 1, 2].map((s) => build(rows.filter((_, i) => i % 3 === s), D));
    const q = randomFloats(Q * D, r);
    for (const k of [1, 10, 200]) {
      const want = await whole.search(q, k);
      const got = mergeTopK(await Promise.all(parts.map((p) => p.search(q, k))), k);
      expect(got.ids).toEqual(want.ids);
      expect(got.scores).toEqual(want.scores);
    }
    expect(() => mergeTopK([], 3)).toThrow(TypeError);
    expect(() => mergeTopK([{ ids: new Float64Array(2), scores: new Float32Array(2), k: 1 }, { ids: new Float64Array(3), scores: new Float32Array(3), k: 1 }], 1)).toThrow(
      expect.objectContaining({ code: 'SHAPE_MISMATCH' }),
    );
    whole.dispose();
    parts.forEach((p) => p.dispose());
  });
});

// ---- arguments

describe('argument errors', () => {
  test('constructor, add, search', async () => {
    expect(() => new FaceIndex({ dim: 0 })).toThrow(RangeError);
    expect(() => new FaceIndex({ dim: 1.5 })).toThrow(TypeError);
    expect(() => new FaceIndex({ dim: 4, storage: 'f8' as never })).toThrow(TypeError);
    expect(() => new FaceIndex({ dim: 4, dimension: 3 } as never)).toThrow(/known option/);
    expect(() => new FaceIndex(undefined as never)).toThrow(TypeError);
    const ix = new FaceIndex({ dim: 4 });
    expect(() => ix.add([1], new Float32Array([NaN, 0, 0, 1]))).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => ix.add([1], new Float32Array([0, 0, 0, 0]))).toThrow(/non-zero norm/);
    expect(() => ix.add([1, 2], new Float32Array(4).fill(1))).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH' }));
    expect(() => ix.add([-1], new Float32Array(4).fill(1))).toThrow(RangeError);
    expect(() => ix.add([2 ** 53], new Float32Array(4).fill(1))).toThrow(RangeError);
    expect(() => ix.add([1.5], new Float32Array(4).fill(1))).toThrow(TypeError);
    expect(() => ix.add(['a'] as never, new Float32Array(4).fill(1))).toThrow(TypeError);
    expect(() => ix.add([1], new Float32Array(5))).toThrow(TypeError);
    expect(ix.size).toBe(0);
    ix.add([1, 2], [[1, 0, 0, 0], [0, 1, 0, 0]]);
    expect(ix.size).toBe(2);
    await expect(ix.search(new Float32Array(4).fill(1), 0)).rejects.toThrow(RangeError);
    await expect(ix.search(new Float32Array(4).fill(1), 20000)).rejects.toThrow(RangeError);
    await expect(ix.search(new Float32Array(4).fill(1), 2.5)).rejects.toThrow(TypeError);
    await expect(ix.search(new Float32Array(3), 2)).rejects.toThrow(TypeError);
    await expect(ix.search(new Float32Array([1, Infinity, 0, 0]), 2)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(ix.search(new Float32Array(4).fill(1), 2, { aggregate: 'min' as never })).rejects.toThrow(TypeError);
    await expect(ix.search(new Float32Array(4).fill(1), 2, { filter: [-3] })).rejects.toThrow(RangeError);
    await expect(ix.searchRange(new Float32Array(4).fill(1), NaN)).rejects.toThrow(TypeError);
    await expect(ix.save('', {})).rejects.toThrow(TypeError);
    await expect(ix.save(path.join(tmp, 'x.fcx'), { key: new Uint8Array(31) })).rejects.toThrow(RangeError);
    await expect(ix.save(path.join(tmp, 'no-such-dir', 'x.fcx'))).rejects.toMatchObject({ code: 'IO_ERROR' });
    const res = await ix.search([[1, 0, 0, 0]], 2);
    expect(Array.from(res.ids)).toEqual([1, 2]);
    expect(res.scores[0]).toBeCloseTo(1, 6);
    ix.dispose();
    expect(() => ix.size).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
    await expect(ix.search(new Float32Array(4), 1)).rejects.toMatchObject({ code: 'DISPOSED' });
  });

  test('an empty index returns empty slots', async () => {
    const ix = new FaceIndex({ dim: 3 });
    const res = await ix.search(randomFloats(2 * 3, r), 4);
    expect(Array.from(res.ids)).toEqual(new Array(8).fill(-1));
    expect(Array.from(res.scores)).toEqual(new Array(8).fill(-Infinity));
    const rr = await ix.searchRange(randomFloats(3, r), -10);
    expect(Array.from(rr.offsets)).toEqual([0, 0]);
    const none = await ix.search(new Float32Array(0), 4);
    expect(none.ids.length).toBe(0);
  });

  test('errors are FacecudaErrors', () => {
    try {
      new FaceIndex({ dim: -2 });
    } catch (e) {
      expect(e).toBeInstanceOf(FacecudaError);
      expect((e as FacecudaError).code).toBe('OUT_OF_RANGE');
    }
  });
});
