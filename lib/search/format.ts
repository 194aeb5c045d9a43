/**
 * The FaceIndex file format (version 1), little-endian:
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 8 | magic `FCINDEX\0` |
 * | 8 | 4 | format version (1) |
 * | 12 | 4 | flags: bit 0 = encrypted |
 * | 16 | 4 | dim |
 * | 20 | 4 | storage: 0 = f32, 1 = f16 |
 * | 24 | 8 | n, the number of rows (u64) |
 * | 32 | 4 | chunk size in bytes of the encrypted payload (0 when not encrypted) |
 * | 36 | 8 | nonce salt (random per save; zero when not encrypted) |
 * | 44 | 4 | `normalize` flag of the index (bit 0) |
 * | 48 | … | body |
 * | end − 32 | 32 | SHA-256 of every byte before it |
 *
 * The payload is n ids (u64) then the n rows (n·dim f32, or n·dim IEEE half words). Without a key
 * the body is the payload. With a key it is the payload in chunks of `chunk size` bytes (the last one
 * shorter), each AES-256-GCM encrypted and followed by its 16-byte tag; chunk i uses the nonce
 * salt ‖ u32-BE(i) and authenticates header ‖ u32-BE(i) ‖ u8(last), so chunks cannot be dropped,
 * reordered or moved between files. Only live rows are written (removed rows are compacted away).
 * The checksum catches corruption before decryption; the GCM tags catch a wrong key and deliberate
 * tampering.
 */
import { webcrypto } from 'crypto';

import { FacecudaError } from '../errors';

export const MAGIC = Buffer.from('FCINDEX\0', 'latin1');
export const VERSION = 1;
export const HEADER_BYTES = 48;
export const CHECKSUM_BYTES = 32;
export const TAG_BYTES = 16;
export const DEFAULT_CHUNK = 64 << 20;

export interface Header {
  encrypted: boolean;
  dim: number;
  storage: 'f32' | 'f16';
  n: number;
  chunk: number;
  salt: Buffer;
  normalize: boolean;
}

const subtle = webcrypto.subtle;

export function corrupt(path: string, why: string): FacecudaError {
  return new FacecudaError('CORRUPT_FILE', `'${path}' is not a valid FaceIndex file: ${why}`);
}

export function writeHeader(h: Header): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(VERSION, 8);
  b.writeUInt32LE(h.encrypted ? 1 : 0, 12);
  b.writeUInt32LE(h.dim, 16);
  b.writeUInt32LE(h.storage === 'f16' ? 1 : 0, 20);
  b.writeBigUInt64LE(BigInt(h.n), 24);
  b.writeUInt32LE(h.chunk, 32);
  h.salt.copy(b, 36, 0, 8);
  b.writeUInt32LE(h.normalize ? 1 : 0, 44);
  return b;
}

export function readHeader(b: Buffer, path: string): Header {
  if (b.length < HEADER_BYTES + CHECKSUM_BYTES) throw corrupt(path, `${b.length} bytes is shorter than a header and checksum`);
  if (!b.subarray(0, 8).equals(MAGIC)) throw corrupt(path, 'bad magic (not written by FaceIndex.save)');
  const version = b.readUInt32LE(8);
  if (version !== VERSION) throw corrupt(path, `format version ${version}; this facecuda reads version ${VERSION}`);
  const flags = b.readUInt32LE(12);
  const dim = b.readUInt32LE(16);
  const st = b.readUInt32LE(20);
  const n = b.readBigUInt64LE(24);
  const chunk = b.readUInt32LE(32);
  const norm = b.readUInt32LE(44);
  if ((flags & ~1) !== 0 || st > 1 || dim < 1 || dim > 65536 || (norm & ~1) !== 0) throw corrupt(path, 'bad header fields');
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(path, 'bad row count');
  const encrypted = (flags & 1) === 1;
  if (encrypted ? chunk < 1024 || chunk % 16 !== 0 : chunk !== 0) throw corrupt(path, 'bad chunk size');
  return { encrypted, dim, storage: st === 1 ? 'f16' : 'f32', n: Number(n), chunk, salt: Buffer.from(b.subarray(36, 44)), normalize: norm === 1 };
}

export function payloadBytes(h: Header): number {
  return h.n * 8 + h.n * h.dim * (h.storage === 'f16' ? 2 : 4);
}

export function chunkCount(h: Header): number {
  return Math.max(1, Math.ceil(payloadBytes(h) / h.chunk));
}

export function fileBytes(h: Header): number {
  const p = payloadBytes(h);
  return HEADER_BYTES + (h.encrypted ? p + chunkCount(h) * TAG_BYTES : p) + CHECKSUM_BYTES;
}

export async function sha256(data: Uint8Array): Promise<Buffer> {
  return Buffer.from(await subtle.digest('SHA-256', data));
}

function nonce(salt: Buffer, i: number): Uint8Array {
  const n = Buffer.alloc(12);
  salt.copy(n, 0, 0, 8);
  n.writeUInt32BE(i, 8);
  return n;
}

function aad(header: Buffer, i: number, last: boolean): Uint8Array {
  const a = Buffer.alloc(HEADER_BYTES + 5);
  header.copy(a, 0);
  a.writeUInt32BE(i, HEADER_BYTES);
  a[HEADER_BYTES + 4] = last ? 1 : 0;
  return a;
}

export async function importKey(key: Uint8Array): Promise<webcrypto.CryptoKey> {
  return subtle.importKey('raw', key, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
}

/** Encrypts `payload` chunk by chunk into `out` at `offset` (AES-256-GCM on libuv's thread pool). */
export async function encryptInto(key: webcrypto.CryptoKey, h: Header, header: Buffer, payload: Uint8Array, out: Buffer, offset: number): Promise<void> {
  const count = chunkCount(h);
  for (let i = 0; i < count; i++) {
    const part = payload.subarray(i * h.chunk, Math.min(payload.length, (i + 1) * h.chunk));
    const ct = new Uint8Array(
      await subtle.encrypt({ name: 'AES-GCM', iv: nonce(h.salt, i), additionalData: aad(header, i, i === count - 1), tagLength: 128 }, key, part),
    );
    out.set(ct, offset);
    offset += ct.length;
  }
}

/** Decrypts the body into a new payload buffer; a failed tag is CORRUPT_FILE (wrong key or tampering). */
export async function decrypt(key: webcrypto.CryptoKey, h: Header, header: Buffer, body: Uint8Array, path: string): Promise<Buffer> {
  const count = chunkCount(h);
  const payload = Buffer.alloc(payloadBytes(h));
  let off = 0;
  for (let i = 0; i < count; i++) {
    const plain = Math.min(h.chunk, payload.length - i * h.chunk);
    const part = body.subarray(off, off + plain + TAG_BYTES);
    off += plain + TAG_BYTES;
    let pt: ArrayBuffer;
    try {
      pt = await subtle.decrypt({ name: 'AES-GCM', iv: nonce(h.salt, i), additionalData: aad(header, i, i === count - 1), tagLength: 128 }, key, part);
    } catch {
      throw new FacecudaError(
        'CORRUPT_FILE',
        `Cannot decrypt '${path}': AES-256-GCM authentication failed (chunk ${i} of ${count}): the key is wrong or the file was modified`,
      );
    }
    payload.set(new Uint8Array(pt), i * h.chunk);
  }
  return payload;
}
