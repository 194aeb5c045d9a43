/**
 * Verification `.bin` packs (lfw.bin, cfp_fp.bin, agedb_30.bin, calfw.bin, cplfw.bin; SPEC §10.1):
 * a Python pickle of the 2-tuple (bins, issame_list). bins holds 2P encoded images (JPEG files),
 * bins[2k] and bins[2k+1] being pair k; issame_list holds P Python bools.
 *
 * Reading. The packs come from three kinds of writers, and {@link parseBinPack} reads all of them:
 *
 * - InsightFace's legacy lfw2pack.py (Python 2, protocol 2): images are py2 `str`, i.e.
 *   BINSTRING / SHORT_BINSTRING.
 * - Python 3 with protocol 2: `bytes` become `_codecs.encode(<latin-1 text>, 'latin1')` (a GLOBAL, a
 *   BINUNICODE and a REDUCE), and b'' becomes `__builtin__.bytes()`; with protocol 3+: BINBYTES /
 *   SHORT_BINBYTES / BINBYTES8, with FRAME and MEMOIZE from protocol 4.
 * - build_eval_pack.py (Python 3): images are 1-D uint8 numpy arrays (cv2.imencode output), pickled
 *   through `numpy.core.multiarray._reconstruct` (numpy 2: `numpy._core.multiarray`) + BUILD with
 *   the raw bytes, or with protocol 5 through `numpy.core.numeric._frombuffer` (numpy 2:
 *   `numpy._core.numeric`) with the bytes in a BYTEARRAY8.
 *
 * The reader is a small pickle machine that knows exactly the opcodes these streams use: PROTO,
 * FRAME, EMPTY_LIST, EMPTY_TUPLE, MARK, APPEND, APPENDS, BINPUT, LONG_BINPUT, BINGET, LONG_BINGET,
 * MEMOIZE, BINSTRING, SHORT_BINSTRING, BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8, BINUNICODE,
 * SHORT_BINUNICODE, NEWTRUE, NEWFALSE, NONE, TUPLE, TUPLE1, TUPLE2, TUPLE3, BININT, BININT1, BININT2,
 * GLOBAL, STACK_GLOBAL, REDUCE, BUILD, NEWOBJ and STOP. It never imports or calls anything: GLOBAL
 * resolves only the names above (numpy's `_reconstruct`, `_frombuffer`, `ndarray`, `dtype`,
 * `_codecs.encode`/`codecs.encode` with a latin-1 codec, and `bytes` with no argument), each to a
 * built-in imitation, and refuses every other name (`os.system`, ...). Any other opcode, an unknown
 * global, a truncated stream, a length past the end, bytes after STOP, a stack underflow or a result
 * that is not (list of byte strings or uint8 vectors, list of bools) with 2P images for P pairs is a
 * FacecudaError `CORRUPT_FILE` naming the byte offset (and the opcode).
 *
 * Writing. {@link writeBinPack} writes the legacy stream, byte for byte what Python 2's `pickle`
 * module writes for `pickle.dump((bins, issame), f, protocol=2)` with `str` images (what
 * lfw2pack.py did; test/fixtures/gen_binpack.py produces the reference with a real Python 2):
 * PROTO 2; EMPTY_LIST BINPUT 0; the images in batches of 1000 (MARK … APPENDS, a lone last item with
 * APPEND), each as SHORT_BINSTRING (< 256 bytes) or BINSTRING then BINPUT/LONG_BINPUT n; EMPTY_LIST
 * BINPUT; the bools as NEWTRUE/NEWFALSE in the same batches; TUPLE2 BINPUT; STOP. (Python 2 would
 * write BINGET for the same string object twice; this writer never does, which loads the same.)
 * Python 3 loads it with `pickle.load(f, encoding='bytes')`. The file is written to a temporary name,
 * fsynced, and renamed over the target.
 *
 * Images are returned as views into the file's bytes when reading a path (one allocation for the
 * whole pack), and as copies when parsing caller-owned bytes.
 */
import { promises as fsp } from 'fs';

import { atomicWriteFile, ioError } from '../fsutil';
import { FacecudaError, invalidParameterError, outOfRangeError } from '../errors';
import { assertString } from '../validate';

/** A verification pack: 2P encoded images and P same/different flags. */
export interface BinPack {
  readonly images: Uint8Array[];
  readonly issame: boolean[];
}

// ---------------------------------------------------------------------------------------------
// The pickle machine's values

class PList {
  constructor(readonly items: PValue[]) {}
}
class PTuple {
  constructor(readonly items: PValue[]) {}
}
type Callable = 'reconstruct' | 'frombuffer' | 'ndarray' | 'dtype' | 'encode' | 'bytes';
class PGlobal {
  constructor(readonly name: string, readonly fn: Callable) {}
}
class PDtype {
  constructor(readonly str: string) {}
  byteorder: string | null = null;
}
class PNdArray {
  shape: number[] = [0];
  dtype: PDtype | null = null;
  fortran = false;
  data: Uint8Array | null = null;
  built = false;
}
type PValue = null | boolean | number | string | Uint8Array | PList | PTuple | PGlobal | PDtype | PNdArray;

/** The globals a pack may name, each to its imitation. Everything else is refused. */
const GLOBALS: ReadonlyMap<string, Callable> = new Map([
  ['numpy.core.multiarray._reconstruct', 'reconstruct'],
  ['numpy._core.multiarray._reconstruct', 'reconstruct'],
  ['numpy.core.numeric._frombuffer', 'frombuffer'],
  ['numpy._core.numeric._frombuffer', 'frombuffer'],
  ['numpy.ndarray', 'ndarray'],
  ['numpy.dtype', 'dtype'],
  ['_codecs.encode', 'encode'],
  ['codecs.encode', 'encode'],
  ['__builtin__.bytes', 'bytes'],
  ['builtins.bytes', 'bytes'],
]);

const OPNAMES: Record<number, string> = {
  0x80: 'PROTO', 0x95: 'FRAME', 0x5d: 'EMPTY_LIST', 0x29: 'EMPTY_TUPLE', 0x28: 'MARK', 0x61: 'APPEND', 0x65: 'APPENDS',
  0x71: 'BINPUT', 0x72: 'LONG_BINPUT', 0x68: 'BINGET', 0x6a: 'LONG_BINGET', 0x94: 'MEMOIZE', 0x54: 'BINSTRING',
  0x55: 'SHORT_BINSTRING', 0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES', 0x8e: 'BINBYTES8', 0x96: 'BYTEARRAY8',
  0x58: 'BINUNICODE', 0x8c: 'SHORT_BINUNICODE', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x4e: 'NONE', 0x74: 'TUPLE',
  0x85: 'TUPLE1', 0x86: 'TUPLE2', 0x87: 'TUPLE3', 0x4a: 'BININT', 0x4b: 'BININT1', 0x4d: 'BININT2', 0x63: 'GLOBAL',
  0x93: 'STACK_GLOBAL', 0x52: 'REDUCE', 0x62: 'BUILD', 0x81: 'NEWOBJ', 0x2e: 'STOP',
};

/** Names of the opcodes this reader refuses, for the error message. */
const OTHER_OPNAMES: Record<number, string> = {
  0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT', 0x4c: 'LONG', 0x50: 'PERSID', 0x51: 'BINPERSID',
  0x53: 'STRING', 0x56: 'UNICODE', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x67: 'GET', 0x69: 'INST', 0x6c: 'LIST', 0x6f: 'OBJ',
  0x70: 'PUT', 0x73: 'SETITEM', 0x75: 'SETITEMS', 0x47: 'BINFLOAT', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x8a: 'LONG1',
  0x8b: 'LONG4', 0x8d: 'BINUNICODE8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX',
  0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

function describe(v: PValue): string {
  if (v === null) return 'None';
  if (typeof v === 'boolean') return 'a bool';
  if (typeof v === 'number') return 'an int';
  if (typeof v === 'string') return 'a str';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof PList) return 'a list';
  if (v instanceof PTuple) return 'a tuple';
  if (v instanceof PGlobal) return `the global ${v.name}`;
  if (v instanceof PDtype) return 'a numpy dtype';
  return 'a numpy array';
}

// ---------------------------------------------------------------------------------------------
// The machine

/**
 * Parses a `.bin` pack from its bytes (see the module notes).
 *
 * @param bytes the whole file
 * @param source a name for error messages
 * @param copy copy the images out of `bytes` (default true; false returns views into `bytes`)
 * @throws `CORRUPT_FILE` for anything but a well-formed pack
 */
export function parseBinPack(bytes: Uint8Array, source = 'bytes', copy = true): BinPack {
  if (!(bytes instanceof Uint8Array)) throw invalidParameterError('bytes', 'a Uint8Array', bytes);
  const where = source === 'bytes' ? '.bin pack' : `.bin pack '${source}'`;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.length;
  let pos = 0;
  let opAt = 0;
  let op = 0;
  const fail = (msg: string): FacecudaError => {
    const name = OPNAMES[op] ?? OTHER_OPNAMES[op];
    const opText = name ? `${name} (0x${op.toString(16).padStart(2, '0')})` : `opcode 0x${op.toString(16).padStart(2, '0')}`;
    const e = new FacecudaError('CORRUPT_FILE', `Corrupt ${where} at byte ${opAt}, ${opText}: ${msg}`);
    Object.defineProperty(e, 'byteOffset', { value: opAt, enumerable: false });
    return e;
  };
  const need = (k: number): void => {
    if (pos + k > n) throw fail(`truncated: needs ${k} more bytes at byte ${pos}, the data ends at ${n}`);
  };
  const take = (k: number): Uint8Array => {
    need(k);
    const out = copy ? bytes.slice(pos, pos + k) : bytes.subarray(pos, pos + k);
    pos += k;
    return out;
  };
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const text = (k: number): string => {
    need(k);
    try {
      return utf8.decode(bytes.subarray(pos, (pos += k)));
    } catch {
      throw fail('invalid UTF-8 in a unicode string');
    }
  };

  // Python's unpickler model: MARK moves the current stack onto the metastack and starts a new one.
  let stack: PValue[] = [];
  const metastack: PValue[][] = [];
  const memo = new Map<number, PValue>();
  const pop = (): PValue => {
    if (stack.length === 0) throw fail('stack underflow');
    return stack.pop()!;
  };
  const top = (): PValue => {
    if (stack.length === 0) throw fail('stack underflow (nothing to memoize)');
    return stack[stack.length - 1];
  };
  const popMark = (): PValue[] => {
    const items = stack;
    const prev = metastack.pop();
    if (!prev) throw fail('no MARK on the stack');
    stack = prev;
    return items;
  };
  const get = (i: number): PValue => {
    if (!memo.has(i)) throw fail(`memo key ${i} was never stored`);
    return memo.get(i)!;
  };
  const appendTo = (list: PValue, items: PValue[]): void => {
    if (!(list instanceof PList)) throw fail(`cannot append to ${describe(list)}`);
    for (const it of items) list.items.push(it);
  };
  const tupleItems = (v: PValue, what: string): PValue[] => {
    if (!(v instanceof PTuple)) throw fail(`${what} must be a tuple, got ${describe(v)}`);
    return v.items;
  };
  const shapeOf = (v: PValue): number[] => {
    const items = tupleItems(v, 'an array shape');
    return items.map((d) => {
      if (typeof d !== 'number' || d < 0) throw fail('an array shape must hold non-negative ints');
      return d;
    });
  };
  const call = (f: PValue, args: PValue[], how: string): PValue => {
    if (!(f instanceof PGlobal)) throw fail(`${how} of ${describe(f)}, which is not a known global`);
    switch (f.fn) {
      case 'reconstruct': {
        // _reconstruct(ndarray, shape, b'b'): an empty array, filled by BUILD.
        if (args.length !== 3 || !(args[0] instanceof PGlobal) || args[0].fn !== 'ndarray') throw fail('_reconstruct expects (numpy.ndarray, shape, typecode)');
        const a = new PNdArray();
        a.shape = shapeOf(args[1]);
        return a;
      }
      case 'frombuffer': {
        // _frombuffer(buffer, dtype, shape, order)
        if (args.length !== 4 || !(args[0] instanceof Uint8Array) || !(args[1] instanceof PDtype)) throw fail('_frombuffer expects (bytes, dtype, shape, order)');
        const a = new PNdArray();
        a.data = args[0];
        a.dtype = args[1];
        a.shape = shapeOf(args[2]);
        a.fortran = args[3] === 'F';
        a.built = true;
        return a;
      }
      case 'ndarray':
        if (how !== 'NEWOBJ') throw fail('numpy.ndarray may only be created through _reconstruct or NEWOBJ');
        return new PNdArray();
      case 'dtype':
        if (args.length < 1 || typeof args[0] !== 'string') throw fail('numpy.dtype expects a type string');
        return new PDtype(args[0]);
      case 'encode': {
        if (args.length !== 2 || typeof args[0] !== 'string' || typeof args[1] !== 'string') throw fail('codecs.encode expects (str, encoding)');
        if (!/^(latin[-_]?1|iso[-_]?8859[-_]1|l1)$/i.test(args[1])) throw fail(`codecs.encode with encoding '${args[1]}' (only latin-1 is accepted)`);
        const s = args[0];
        const out = new Uint8Array(s.length);
        for (let i = 0; i < s.length; i++) {
          const c = s.charCodeAt(i);
          if (c > 0xff) throw fail('a latin-1 string holds a character above U+00FF');
          out[i] = c;
        }
        return out;
      }
      case 'bytes':
        if (args.length !== 0) throw fail('bytes() is accepted only without arguments');
        return new Uint8Array(0);
    }
  };

  let proto = 0;
  let result: PValue | undefined;
  while (result === undefined) {
    opAt = pos;
    op = 0;
    if (pos >= n) throw fail('truncated: the stream ends before STOP');
    op = bytes[pos++];
    switch (op) {
      case 0x80: // PROTO
        need(1);
        proto = bytes[pos++];
        if (proto < 2 || proto > 5) throw fail(`unsupported protocol ${proto}`);
        break;
      case 0x95: { // FRAME: a length prefix; the frame's contents are read as usual
        need(8);
        const len = dv.getBigUint64(pos, true);
        pos += 8;
        if (len > BigInt(n - pos)) throw fail(`truncated: a frame of ${len} bytes, ${n - pos} left`);
        break;
      }
      case 0x5d: stack.push(new PList([])); break;
      case 0x29: stack.push(new PTuple([])); break;
      case 0x28: metastack.push(stack); stack = []; break;
      case 0x61: { const v = pop(); appendTo(top(), [v]); break; }
      case 0x65: { const items = popMark(); appendTo(top(), items); break; }
      case 0x71: need(1); memo.set(bytes[pos++], top()); break;
      case 0x72: need(4); memo.set(dv.getUint32(pos, true), top()); pos += 4; break;
      case 0x94: memo.set(memo.size, top()); break;
      case 0x68: need(1); stack.push(get(bytes[pos++])); break;
      case 0x6a: { need(4); const i = dv.getUint32(pos, true); pos += 4; stack.push(get(i)); break; }
      case 0x54: { // BINSTRING: i32 length
        need(4);
        const len = dv.getInt32(pos, true);
        pos += 4;
        if (len < 0) throw fail(`negative length ${len}`);
        stack.push(take(len));
        break;
      }
      case 0x55: case 0x43: { need(1); const len = bytes[pos++]; stack.push(take(len)); break; }
      case 0x42: { need(4); const len = dv.getUint32(pos, true); pos += 4; stack.push(take(len)); break; }
      case 0x8e: case 0x96: {
        need(8);
        const len = dv.getBigUint64(pos, true);
        pos += 8;
        if (len > BigInt(n - pos)) throw fail(`truncated: ${len} bytes announced, ${n - pos} left`);
        stack.push(take(Number(len)));
        break;
      }
      case 0x58: { need(4); const len = dv.getUint32(pos, true); pos += 4; stack.push(text(len)); break; }
      case 0x8c: { need(1); const len = bytes[pos++]; stack.push(text(len)); break; }
      case 0x88: stack.push(true); break;
      case 0x89: stack.push(false); break;
      case 0x4e: stack.push(null); break;
      case 0x74: { const items = popMark(); stack.push(new PTuple(items)); break; } // (popMark replaces `stack`)
      case 0x85: { const a = pop(); stack.push(new PTuple([a])); break; }
      case 0x86: { const b = pop(); const a = pop(); stack.push(new PTuple([a, b])); break; }
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); stack.push(new PTuple([a, b, c])); break; }
      case 0x4a: need(4); stack.push(dv.getInt32(pos, true)); pos += 4; break;
      case 0x4b: need(1); stack.push(bytes[pos++]); break;
      case 0x4d: need(2); stack.push(dv.getUint16(pos, true)); pos += 2; break;
      case 0x63: case 0x93: { // GLOBAL "module\nname\n" / STACK_GLOBAL (module, name on the stack)
        let module: string;
        let name: string;
        if (op === 0x63) {
          const readLine = (): string => {
            const end = bytes.indexOf(0x0a, pos);
            if (end < 0 || end - pos > 256) throw fail('truncated or overlong GLOBAL name');
            let s = '';
            for (let i = pos; i < end; i++) {
              const c = bytes[i];
              if (c < 0x20 || c > 0x7e) throw fail('a GLOBAL name holds a non-printable byte');
              s += String.fromCharCode(c);
            }
            pos = end + 1;
            return s;
          };
          module = readLine();
          name = readLine();
        } else {
          const nm = pop();
          const md = pop();
          if (typeof nm !== 'string' || typeof md !== 'string') throw fail('STACK_GLOBAL expects two strings');
          module = md;
          name = nm;
        }
        const full = `${module}.${name}`;
        const fn = GLOBALS.get(full);
        if (!fn) throw fail(`refusing the global '${full.length > 100 ? full.slice(0, 100) + '…' : full}' (a .bin pack may only name numpy's array reconstruction helpers, numpy.ndarray, numpy.dtype, codecs.encode and bytes)`);
        stack.push(new PGlobal(full, fn));
        break;
      }
      case 0x52: { const args = pop(); const f = pop(); stack.push(call(f, tupleItems(args, 'REDUCE arguments'), 'REDUCE')); break; }
      case 0x81: { const args = pop(); const cls = pop(); stack.push(call(cls, tupleItems(args, 'NEWOBJ arguments'), 'NEWOBJ')); break; }
      case 0x62: { // BUILD: obj.__setstate__(state)
        const state = pop();
        const obj = top();
        if (obj instanceof PNdArray) {
          let s = tupleItems(state, 'an array state');
          if (s.length === 5) s = s.slice(1); // (version, shape, dtype, is_fortran, rawdata)
          if (s.length !== 4) throw fail('an array state must be (version, shape, dtype, is_fortran, data)');
          if (!(s[1] instanceof PDtype)) throw fail(`an array's dtype must be a numpy dtype, got ${describe(s[1])}`);
          if (typeof s[2] !== 'boolean' && typeof s[2] !== 'number') throw fail('an array state has a non-boolean is_fortran');
          if (!(s[3] instanceof Uint8Array)) throw fail(`an array's data must be bytes, got ${describe(s[3])} (object arrays are not image bytes)`);
          obj.shape = shapeOf(s[0]);
          obj.dtype = s[1];
          obj.fortran = Boolean(s[2]);
          obj.data = s[3];
          obj.built = true;
        } else if (obj instanceof PDtype) {
          const s = tupleItems(state, 'a dtype state');
          if (s.length >= 2 && typeof s[1] === 'string') obj.byteorder = s[1];
        } else {
          throw fail(`BUILD on ${describe(obj)}`);
        }
        break;
      }
      case 0x2e: { // STOP
        if (metastack.length !== 0) throw fail('STOP inside an unclosed MARK');
        if (stack.length !== 1) throw fail(`STOP with ${stack.length} values on the stack (expected 1)`);
        result = stack.pop()!;
        if (pos !== n) throw fail(`${n - pos} bytes after STOP`);
        break;
      }
      default:
        throw fail(OTHER_OPNAMES[op] ? 'an opcode .bin packs do not use' : 'an unknown opcode');
    }
  }

  // The result: (bins, issame_list).
  opAt = n;
  op = 0x2e;
  const bad = (msg: string): FacecudaError => new FacecudaError('CORRUPT_FILE', `Corrupt ${where}: ${msg}`);
  if (!(result instanceof PTuple || result instanceof PList) || result.items.length !== 2) {
    throw bad(`the pickle holds ${describe(result)}${result instanceof PTuple || result instanceof PList ? ` of length ${result.items.length}` : ''}, expected the pair (bins, issame_list)`);
  }
  const [bins, flags] = result.items;
  if (!(bins instanceof PList)) throw bad(`bins is ${describe(bins)}, expected a list`);
  if (!(flags instanceof PList)) throw bad(`issame_list is ${describe(flags)}, expected a list`);
  const issame = flags.items.map((v, k) => {
    if (typeof v !== 'boolean') throw bad(`issame_list[${k}] is ${describe(v)}, expected a bool`);
    return v;
  });
  if (bins.items.length !== 2 * issame.length) {
    throw bad(`${bins.items.length} images for ${issame.length} pairs (expected ${2 * issame.length})`);
  }
  const images = bins.items.map((v, k) => {
    if (v instanceof Uint8Array) return v;
    if (v instanceof PNdArray) {
      if (!v.built || !v.data || !v.dtype) throw bad(`bins[${k}] is a numpy array that was never given its data`);
      if (!/^[|<>=]?(u1|uint8|B)$/.test(v.dtype.str)) throw bad(`bins[${k}] is a numpy array of dtype '${v.dtype.str}', expected uint8`);
      if (v.shape.length !== 1) throw bad(`bins[${k}] is a numpy array of shape (${v.shape.join(', ')}), expected 1-D encoded bytes`);
      if (v.data.length !== v.shape[0]) throw bad(`bins[${k}] is a numpy array of ${v.shape[0]} elements with ${v.data.length} bytes of data`);
      return v.data;
    }
    throw bad(`bins[${k}] is ${describe(v)}, expected bytes or a uint8 numpy array`);
  });
  return { images, issame };
}

/**
 * Reads a `.bin` pack from a path or from its bytes.
 *
 * @example
 * const { images, issame } = await readBinPack('faces_emore/lfw.bin'); // 12,000 JPEGs, 6,000 flags
 * @throws TypeError for a bad argument; `IO_ERROR` when the file cannot be read; `CORRUPT_FILE` when
 *   it is not a well-formed pack
 */
export async function readBinPack(source: string | Uint8Array): Promise<BinPack> {
  if (source instanceof Uint8Array) return parseBinPack(source, 'bytes', true);
  assertString(source, 'source');
  let bytes: Buffer;
  try {
    bytes = await fsp.readFile(source);
  } catch (err) {
    throw ioError('read .bin pack', source, err);
  }
  return parseBinPack(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), source, false);
}

// ---------------------------------------------------------------------------------------------
// The writer

const BATCHSIZE = 1000;

/**
 * The legacy protocol-2 pickle of (images, issame), as Python 2's pickle module writes it with `str`
 * images (see the module notes).
 *
 * @throws TypeError / RangeError for bad arguments (2P Uint8Arrays and P booleans)
 */
export function encodeBinPack(images: readonly Uint8Array[], issame: readonly boolean[]): Uint8Array {
  // Validate arguments
  if (!Array.isArray(images)) throw invalidParameterError('images', 'an array of Uint8Array', images);
  if (!Array.isArray(issame)) throw invalidParameterError('issame', 'an array of booleans', issame);
  images.forEach((im, k) => {
    if (!(im instanceof Uint8Array)) throw invalidParameterError(`images[${k}]`, 'a Uint8Array', im);
    if (im.length > 0x7fffffff) throw outOfRangeError(`images[${k}]`, 'fewer than 2^31 bytes', im.length);
  });
  issame.forEach((v, k) => {
    if (typeof v !== 'boolean') throw invalidParameterError(`issame[${k}]`, 'a boolean', v);
  });
  if (images.length !== 2 * issame.length) throw outOfRangeError('images', `${2 * issame.length} images (2 per pair)`, images.length);

  // Size the stream, then fill it.
  const batches = (count: number): number => Math.floor(count / BATCHSIZE) * 2 + (count % BATCHSIZE > 1 ? 2 : count % BATCHSIZE);
  const putSize = (i: number): number => (i < 256 ? 2 : 5);
  let size = 2 + 1 + putSize(0) + batches(images.length) + 1 + putSize(images.length + 1) + batches(issame.length) + issame.length + 1 + putSize(images.length + 2) + 1;
  images.forEach((im, k) => {
    size += (im.length < 256 ? 2 : 5) + im.length + putSize(k + 1);
  });
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  let o = 0;
  let memo = 0;
  const put = (): void => {
    const i = memo++;
    if (i < 256) {
      out[o++] = 0x71;
      out[o++] = i;
    } else {
      out[o++] = 0x72;
      dv.setUint32(o, i, true);
      o += 4;
    }
  };
  const list = <T>(items: readonly T[], save: (x: T) => void): void => {
    out[o++] = 0x5d; // EMPTY_LIST
    put();
    for (let b = 0; b < items.length; b += BATCHSIZE) {
      const m = Math.min(BATCHSIZE, items.length - b);
      if (m > 1) {
        out[o++] = 0x28; // MARK
        for (let i = b; i < b + m; i++) save(items[i]);
        out[o++] = 0x65; // APPENDS
      } else {
        save(items[b]);
        out[o++] = 0x61; // APPEND
      }
    }
  };
  out[o++] = 0x80;
  out[o++] = 2;
  list(images, (im) => {
    if (im.length < 256) {
      out[o++] = 0x55;
      out[o++] = im.length;
    } else {
      out[o++] = 0x54;
      dv.setInt32(o, im.length, true);
      o += 4;
    }
    out.set(im, o);
    o += im.length;
    put();
  });
  list(issame, (v) => {
    out[o++] = v ? 0x88 : 0x89;
  });
  out[o++] = 0x86; // TUPLE2
  put();
  out[o++] = 0x2e; // STOP
  if (o !== size) throw new FacecudaError('INTERNAL', `encodeBinPack sized ${size} bytes but wrote ${o}`);
  return out;
}

/**
 * Writes a `.bin` pack (the legacy protocol-2 stream, see the module notes), atomically: to
 * `path + '.tmp-<pid>-<random>'`, fsynced, then renamed over `path`.
 *
 * @example
 * await writeBinPack('my_lfw.bin', jpegs, issame);
 * @throws TypeError / RangeError for bad arguments; `IO_ERROR` when the file cannot be written
 */
export async function writeBinPack(path: string, images: readonly Uint8Array[], issame: readonly boolean[]): Promise<void> {
  assertString(path, 'path');
  if (path.length === 0) throw invalidParameterError('path', 'a non-empty path', path);
  const bytes = encodeBinPack(images, issame);
  await atomicWriteFile(path, bytes);
}
