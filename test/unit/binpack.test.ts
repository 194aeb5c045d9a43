// Verification .bin packs: the reader vs pickles written by Python itself (test/fixtures/gen_binpack.py:
// Python 2.7 legacy str images, Python 3 protocols 2 and 4, numpy uint8 arrays with protocols 2 and
// 5 under numpy 2 and numpy 1), the writer byte for byte against Python 2's pickle, random round
// trips (also loaded by Python's pickle when python3 exists), refused globals, and truncation.
import { execFileSync } from 'child_process';
import { createHash } from 'crypto';
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FacecudaError } from '../../lib/errors';
import { encodeBinPack, parseBinPack, readBinPack, writeBinPack } from '../../lib/data/binpack';
import { hasPython, rng, SEED } from '../helpers';

const FIXTURES = path.join(__dirname, '..', 'fixtures');
/** Whether `python3` with its pickle module runs here (checked once: starting Python is slow). */
const PYTHON = hasPython('pickle');
const fixture = (name: string): string => path.join(FIXTURES, name);
let dir: string;

beforeAll(async () => {
  console.log(`binpack tests: seed ${SEED}`);
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'facecuda-bin-'));
});

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

/** The fixtures' contents, restated from gen_binpack.py. */
function image(k: number): Uint8Array {
  const n = k === 5 ? 300 : ((k * 5) % 7) + 2;
  const b = new Uint8Array(n);
  for (let j = 0; j < n; j++) b[j] = (k * 37 + j * 11 + 5) & 0xff;
  return b;
}
function content(pairs: number): { images: Uint8Array[]; issame: boolean[] } {
  return {
    images: Array.from({ length: 2 * pairs }, (_, k) => image(k)),
    issame: Array.from({ length: pairs }, (_, p) => p % 3 !== 1),
  };
}

function expectPack(got: { images: Uint8Array[]; issame: boolean[] }, want: { images: Uint8Array[]; issame: boolean[] }): void {
  expect(got.issame).toEqual(want.issame);
  expect(got.images.length).toBe(want.images.length);
  got.images.forEach((im, k) => {
    if (!(im instanceof Uint8Array) || !Buffer.from(im).equals(Buffer.from(want.images[k]))) throw new Error(`image ${k} differs`);
  });
}

function corruptError(fn: () => unknown): FacecudaError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(FacecudaError);
    expect((e as FacecudaError).code).toBe('CORRUPT_FILE');
    return e as FacecudaError;
  }
  throw new Error('expected CORRUPT_FILE, nothing was thrown');
}

describe('.bin reader vs Python pickles', () => {
  test('legacy.bin: Python 2 pickle, str images (BINSTRING/SHORT_BINSTRING, batches, LONG_BINPUT, lone APPEND)', async () => {
    const got = await readBinPack(fixture('legacy.bin'));
    expectPack(got, content(1001));
  });

  test('py3_proto2.bin: _codecs.encode + BINUNICODE, __builtin__.bytes() for b""', async () => {
    const want = content(3);
    want.images[2] = new Uint8Array(0);
    expectPack(await readBinPack(fixture('py3_proto2.bin')), want);
  });

  test('py3_proto4.bin: FRAME, MEMOIZE, SHORT_BINBYTES/BINBYTES', async () => {
    expectPack(await readBinPack(fixture('py3_proto4.bin')), content(3));
  });

  test.each(['numpy_proto2.bin', 'numpy_proto5.bin', 'numpy1_proto2.bin'])('%s: 1-D uint8 numpy arrays', async (name) => {
    expectPack(await readBinPack(fixture(name)), content(2));
  });

  test('bytes input is copied; path input gives views of one buffer', async () => {
    const bytes = new Uint8Array(await fsp.readFile(fixture('py3_proto4.bin')));
    const fromBytes = await readBinPack(bytes);
    expect(fromBytes.images[0].buffer).not.toBe(bytes.buffer);
    const fromPath = await readBinPack(fixture('py3_proto4.bin'));
    expect(fromPath.images[0].buffer).toBe(fromPath.images[1].buffer);
  });
});

describe('.bin writer', () => {
  test('writes legacy.bin byte for byte (Python 2 pickle.dump(..., protocol=2))', async () => {
    const want = await fsp.readFile(fixture('legacy.bin'));
    const { images, issame } = content(1001);
    expect(Buffer.from(encodeBinPack(images, issame)).equals(want)).toBe(true);
    const out = path.join(dir, 'legacy.bin');
    await writeBinPack(out, images, issame);
    expect((await fsp.readFile(out)).equals(want)).toBe(true);
    expect((await fsp.readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  test('random round trip (sizes around the 256-byte and 1000-item boundaries); Python loads it', async () => {
    const r = rng(SEED ^ 0xb1);
    const written: { out: string; images: Uint8Array[]; issame: boolean[] }[] = [];
    for (const pairs of [0, 1, 2, 499, 500, 501, 1000 + Math.floor(r() * 600)]) {
      const images = Array.from({ length: 2 * pairs }, () => {
        const n = r() < 0.2 ? 250 + Math.floor(r() * 12) : Math.floor(r() * (r() < 0.5 ? 4 : 600));
        const b = new Uint8Array(n);
        for (let j = 0; j < n; j++) b[j] = Math.floor(r() * 256);
        return b;
      });
      const issame = Array.from({ length: pairs }, () => r() < 0.5);
      const out = path.join(dir, `rt-${pairs}.bin`);
      await writeBinPack(out, images, issame);
      expectPack(await readBinPack(out), { images, issame });
      written.push({ out, images, issame });
    }
    if (!PYTHON) {
      console.log('binpack: python3 not found, skipping the "Python loads our output" check');
      return;
    }
    // One interpreter for every file (starting Python is the slow part).
    const script = [
      'import pickle, sys, hashlib, json',
      'res = []',
      'for path in sys.argv[1:]:',
      '    b, s = pickle.load(open(path, "rb"), encoding="bytes")',
      '    assert isinstance(b, list) and isinstance(s, list) and all(isinstance(x, bytes) for x in b)',
      '    assert all(isinstance(x, bool) for x in s)',
      '    res.append([len(b), [len(x) for x in b], hashlib.sha256(b"".join(b)).hexdigest(), s])',
      'print(json.dumps(res))',
    ].join('\n');
    const res = JSON.parse(execFileSync('python3', ['-c', script, ...written.map((w) => w.out)], { encoding: 'utf8' }));
    expect(res).toEqual(written.map(({ images, issame }) => [
      images.length, images.map((x) => x.length), createHash('sha256').update(Buffer.concat(images)).digest('hex'), issame,
    ]));
  });

  test('argument checks', async () => {
    expect(() => encodeBinPack([new Uint8Array(1)], [true])).toThrow(RangeError);
    expect(() => encodeBinPack([new Uint8Array(1), [1] as unknown as Uint8Array], [true])).toThrow(TypeError);
    expect(() => encodeBinPack([new Uint8Array(1), new Uint8Array(1)], [1 as unknown as boolean])).toThrow(TypeError);
    expect(() => encodeBinPack('x' as never, [])).toThrow(TypeError);
    await expect(writeBinPack('', [], [])).rejects.toThrow(TypeError);
    await expect(writeBinPack(path.join(dir, 'no', 'such', 'dir.bin'), [], [])).rejects.toMatchObject({ code: 'IO_ERROR' });
    await expect(readBinPack(path.join(dir, 'missing.bin'))).rejects.toMatchObject({ code: 'IO_ERROR' });
  });
});

describe('.bin reader refuses what packs never hold', () => {
  test('GLOBAL os.system is refused by name (never executed)', () => {
    // pickle.dumps of a __reduce__ returning (os.system, ('echo pwned',)), protocol 2.
    const evil = Buffer.concat([Buffer.from('\x80\x02cposix\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.', 'latin1')]);
    expect(corruptError(() => parseBinPack(evil)).message).toMatch(/refusing the global 'posix\.system'.*GLOBAL \(0x63\)|GLOBAL \(0x63\).*refusing the global 'posix\.system'/);
    const evil2 = Buffer.from('\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.', 'latin1');
    expect(corruptError(() => parseBinPack(evil2)).message).toMatch(/at byte 2, GLOBAL.*'os\.system'/);
  });

  test('STACK_GLOBAL builtins.eval is refused by name', () => {
    const evil = Buffer.concat([
      Buffer.from([0x80, 0x04, 0x8c, 8]), Buffer.from('builtins'), Buffer.from([0x8c, 4]), Buffer.from('eval'), Buffer.from([0x93]),
      Buffer.from([0x8c, 1]), Buffer.from('1'), Buffer.from([0x85, 0x52, 0x2e]),
    ]);
    expect(corruptError(() => parseBinPack(evil)).message).toMatch(/STACK_GLOBAL.*'builtins\.eval'/);
  });

  test('Python-made pickles with other opcodes are named in the error', () => {
    if (!PYTHON) {
      console.log('binpack: python3 not found, skipping the Python-made bad pickles');
      return;
    }
    const exprs: Record<string, string> = {
      dict: '({}, [])', float: '([1.5], [])', long: '([2**40], [])', intFlag: '([b"a", b"b"], [1])', odd: '([b"a"], [True])', notPair: '[b"a"]',
      f32: '([np.zeros(2, np.float32), np.zeros(2, np.uint8)], [True])', twoD: '([np.zeros((2,2), np.uint8), np.zeros(2, np.uint8)], [True])',
    };
    const script = [
      'import pickle, json, sys',
      'try:\n    import numpy as np\nexcept ImportError:\n    np = None',
      `exprs = json.loads(sys.argv[1])`,
      'out = {}',
      'for k, e in exprs.items():',
      '    if np is None and "np." in e: continue',
      '    out[k] = pickle.dumps(eval(e), protocol=2).hex()',
      'print(json.dumps(out))',
    ].join('\n');
    const made: Record<string, string> = JSON.parse(execFileSync('python3', ['-c', script, JSON.stringify(exprs)], { encoding: 'utf8' }));
    const msg = (k: string): string => corruptError(() => parseBinPack(Buffer.from(made[k], 'hex'))).message;
    expect(msg('dict')).toMatch(/EMPTY_DICT \(0x7d\)/);
    expect(msg('float')).toMatch(/BINFLOAT/);
    expect(msg('long')).toMatch(/LONG1/);
    // Well-formed pickles that are not packs.
    expect(msg('intFlag')).toMatch(/issame_list\[0\] is an int/);
    expect(msg('odd')).toMatch(/1 images for 1 pairs/);
    expect(msg('notPair')).toMatch(/expected the pair/);
    if (made.f32) {
      expect(msg('f32')).toMatch(/dtype '<?f4'/);
      expect(msg('twoD')).toMatch(/shape \(2, 2\)/);
    } else {
      console.log('binpack: python3 has no numpy, skipping the bad numpy arrays');
    }
  });

  test('every truncation of every fixture → CORRUPT_FILE with a byte offset', async () => {
    for (const name of ['py3_proto2.bin', 'py3_proto4.bin', 'numpy_proto2.bin', 'numpy_proto5.bin', 'numpy1_proto2.bin', 'legacy.bin']) {
      const full = new Uint8Array(await fsp.readFile(fixture(name)));
      const step = name === 'legacy.bin' ? 37 : 1;
      for (let cut = 0; cut < full.length; cut += step) {
        const e = corruptError(() => parseBinPack(full.subarray(0, cut), name));
        expect(e.message).toMatch(/at byte \d+/);
      }
      // Trailing bytes after STOP are refused too.
      corruptError(() => parseBinPack(Buffer.concat([full, Buffer.from([0])])));
    }
  });

  test('random byte corruption: CORRUPT_FILE or a consistent pack, never another error', async () => {
    const r = rng(SEED ^ 0xc0);
    for (const name of ['py3_proto2.bin', 'py3_proto4.bin', 'numpy_proto2.bin', 'numpy_proto5.bin', 'numpy1_proto2.bin']) {
      const full = new Uint8Array(await fsp.readFile(fixture(name)));
      for (let i = 0; i < full.length; i++) {
        const bad = full.slice();
        bad[i] ^= 1 + Math.floor(r() * 255);
        try {
          const p = parseBinPack(bad);
          expect(p.images.length).toBe(2 * p.issame.length);
        } catch (e) {
          if (!(e instanceof FacecudaError) || (e as FacecudaError).code !== 'CORRUPT_FILE') throw e;
        }
      }
    }
  });
});
