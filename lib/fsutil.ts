/**
 * File-writing helpers shared by the writers (safetensors, RecordIO, .bin packs, reports): the
 * IO_ERROR wording, a complete write of a buffer, and the atomic "temporary name, fsync, rename"
 * write of a whole file, so nothing a user saved is ever left half-written.
 */
import { randomBytes } from 'crypto';
import { promises as fsp } from 'fs';
import type { FileHandle } from 'fs/promises';
import { dirname } from 'path';

import { FacecudaError } from './errors';

/** `IO_ERROR` "Cannot <action> '<path>': <reason>", keeping the original error as `cause`. */
export function ioError(action: string, path: string, err: unknown): FacecudaError {
  const detail = err instanceof Error ? err.message : String(err);
  const e = new FacecudaError('IO_ERROR', `Cannot ${action} '${path}': ${detail}`);
  Object.defineProperty(e, 'cause', { value: err, enumerable: false, writable: true, configurable: true });
  return e;
}

/** Writes all of `bytes` at the handle's position (fh.write may write less than asked). */
export async function writeAll(fh: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done);
    done += bytesWritten;
  }
}

/** A fresh temporary name next to `path`: `<path>.tmp-<pid>-<random>`. */
export function temporaryName(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/**
 * Writes `bytes` to `path` atomically: to a temporary name, fsynced, renamed over `path`, then the
 * directory fsynced (best effort). On failure the temporary file is removed and `path` is untouched.
 *
 * @throws `IO_ERROR` naming the file and the step that failed
 */
export async function atomicWriteFile(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = temporaryName(path);
  let fh: FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, 'wx');
  } catch (err) {
    throw ioError('create', tmp, err);
  }
  try {
    await writeAll(fh, bytes);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.rename(tmp, path);
  } catch (err) {
    if (fh) await fh.close().catch(() => undefined);
    await fsp.unlink(tmp).catch(() => undefined);
    throw ioError(fh ? 'write' : 'rename into place', fh ? tmp : path, err);
  }
  try {
    const dir = await fsp.open(dirname(path), 'r');
    await dir.sync().catch(() => undefined);
    await dir.close();
  } catch {
    // best effort
  }
}
