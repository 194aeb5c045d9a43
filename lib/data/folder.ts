/**
 * Image files on disk as {@link SampleSource}s: a folder per identity ({@link ImageFolder}, torchvision
 * ImageFolder's layout, SPEC §9.1) or a list file ({@link ImageList}). Both yield encoded bytes; the
 * loader decodes them.
 *
 * ImageFolder (torchvision's rules): the classes are the sub-folders of `root`, sorted by name (code
 * unit order, as Python sorts), label = position in that order. A class's images are the files under
 * its folder, recursively (links followed), whose names end in .jpg, .jpeg or .png (any case), sorted
 * by path within each folder as os.walk + sorted does. A class folder without images is an error, as
 * in torchvision (labels would otherwise silently refer to nothing).
 *
 * ImageList: one sample per non-empty line, "relative/path label"; the label is the last
 * whitespace-separated field (so paths may contain spaces) and a non-negative integer; lines starting
 * with '#' are comments. Paths are relative to `root` (default: the list file's folder); absolute
 * paths are used as they are. numClasses = largest label + 1.
 *
 * Failures: a missing root or list is `IO_ERROR`; a malformed list line is `CORRUPT_FILE` naming the
 * file and line; a sample whose file cannot be read is `IO_ERROR` naming the path.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { FacecudaError, invalidParameterError } from '../errors';
import { assertInteger, is } from '../validate';
import type { Sample, SampleSource, SourceDescriptor } from './types';

/** File name endings ImageFolder accepts (compared case-insensitively). */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png'];

function hasImageExtension(name: string): boolean {
  const lower = name.toLowerCase();
  return IMAGE_EXTENSIONS.some((e) => lower.endsWith(e));
}

function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function readSample(file: string, label: number): Promise<Sample> {
  try {
    const buf = await fsp.readFile(file);
    return { label, encoded: new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) };
  } catch (err) {
    throw new FacecudaError('IO_ERROR', `Cannot read image ${file}: ${(err as Error).message}`);
  }
}

/**
 * Lists image files under `dir`, recursively, in torchvision's order: folders sorted by their whole
 * path (sorted(os.walk(dir))), the files of each folder sorted by name.
 */
async function listImages(dir: string): Promise<string[]> {
  const folders: Array<{ dir: string; files: string[] }> = [];
  const visit = async (d: string): Promise<void> => {
    const entries = await fsp.readdir(d, { withFileTypes: true });
    const files: string[] = [];
    for (const e of entries) {
      const full = path.join(d, e.name);
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        const st = await fsp.stat(full).catch(() => null);
        isDir = !!st?.isDirectory();
        isFile = !!st?.isFile();
      }
      if (isDir) await visit(full);
      else if (isFile && hasImageExtension(e.name)) files.push(e.name);
    }
    files.sort(byName);
    folders.push({ dir: d, files });
  };
  await visit(dir);
  folders.sort((a, b) => byName(a.dir, b.dir));
  const out: string[] = [];
  for (const f of folders) for (const name of f.files) out.push(path.join(f.dir, name));
  return out;
}

/**
 * A folder per identity.
 *
 * @example
 * const src = await ImageFolder.open('/data/faces_train');
 * console.log(src.size, src.numClasses, src.classes[0]);
 */
export class ImageFolder implements SampleSource {
  readonly size: number;
  readonly numClasses: number;
  /** Class folder names, in label order. */
  readonly classes: readonly string[];
  private readonly files: string[];
  private readonly labels: Int32Array;

  private constructor(readonly root: string, classes: string[], files: string[], labels: Int32Array) {
    this.classes = classes;
    this.files = files;
    this.labels = labels;
    this.size = files.length;
    this.numClasses = classes.length;
  }

  /** Scans `root`. */
  static async open(root: string): Promise<ImageFolder> {
    // Validate arguments
    if (!is.string(root) || root.length === 0) throw invalidParameterError('root', 'a folder path', root);
    // Interpret options
    const abs = path.resolve(root);
    let entries;
    try {
      entries = await fsp.readdir(abs, { withFileTypes: true });
    } catch (err) {
      throw new FacecudaError('IO_ERROR', `Cannot read image folder ${abs}: ${(err as Error).message}`);
    }
    const classes: string[] = [];
    for (const e of entries) {
      if (e.isDirectory() || (e.isSymbolicLink() && (await fsp.stat(path.join(abs, e.name)).catch(() => null))?.isDirectory())) {
        classes.push(e.name);
      }
    }
    classes.sort(byName);
    if (classes.length === 0) throw new FacecudaError('IO_ERROR', `Image folder ${abs} has no class sub-folders`);
    const files: string[] = [];
    const labels: number[] = [];
    const empty: string[] = [];
    for (let c = 0; c < classes.length; c++) {
      const found = await listImages(path.join(abs, classes[c]));
      if (found.length === 0) empty.push(classes[c]);
      for (const f of found) {
        files.push(f);
        labels.push(c);
      }
    }
    if (empty.length > 0) {
      const names = empty.slice(0, 5).join(', ') + (empty.length > 5 ? `, … (${empty.length} in all)` : '');
      throw new FacecudaError('IO_ERROR', `Image folder ${abs}: no ${IMAGE_EXTENSIONS.join('/')} files for the classes ${names}`);
    }
    return new ImageFolder(abs, classes, files, Int32Array.from(labels));
  }

  /** The path of sample i. */
  path(i: number): string {
    assertInteger(i, 'i', 0, this.size - 1);
    return this.files[i];
  }

  /** The label of sample i without reading the file. */
  label(i: number): number {
    assertInteger(i, 'i', 0, this.size - 1);
    return this.labels[i];
  }

  async get(i: number): Promise<Sample> {
    assertInteger(i, 'i', 0, this.size - 1);
    return readSample(this.files[i], this.labels[i]);
  }

  describe(): SourceDescriptor {
    return { kind: 'folder', root: this.root };
  }

  async close(): Promise<void> {
    // No handles are held between reads.
  }
}

/**
 * Samples listed in a text file, "relative/path label" per line.
 *
 * @example
 * const src = await ImageList.open('/data/train.txt', '/data/images');
 */
export class ImageList implements SampleSource {
  readonly size: number;
  readonly numClasses: number;
  private readonly files: string[];
  private readonly labels: Int32Array;

  private constructor(readonly listPath: string, readonly root: string | undefined, files: string[], labels: Int32Array) {
    this.files = files;
    this.labels = labels;
    this.size = files.length;
    let max = -1;
    for (let i = 0; i < labels.length; i++) if (labels[i] > max) max = labels[i];
    this.numClasses = max + 1;
  }

  /** Reads and parses the list; files are not opened until {@link get}. */
  static async open(listPath: string, root?: string): Promise<ImageList> {
    // Validate arguments
    if (!is.string(listPath) || listPath.length === 0) throw invalidParameterError('listPath', 'a file path', listPath);
    if (root !== undefined && (!is.string(root) || root.length === 0)) throw invalidParameterError('root', 'a folder path', root);
    // Interpret options
    const absList = path.resolve(listPath);
    const base = root === undefined ? path.dirname(absList) : path.resolve(root);
    let text: string;
    try {
      text = await fsp.readFile(absList, 'utf8');
    } catch (err) {
      throw new FacecudaError('IO_ERROR', `Cannot read image list ${absList}: ${(err as Error).message}`);
    }
    const files: string[] = [];
    const labels: number[] = [];
    const lines = text.split(/\r?\n/);
    for (let n = 0; n < lines.length; n++) {
      const line = lines[n].trim();
      if (line.length === 0 || line.startsWith('#')) continue;
      const m = /^(.*\S)\s+(\S+)$/.exec(line);
      if (!m || !/^\d+$/.test(m[2]) || !Number.isSafeInteger(Number(m[2])) || Number(m[2]) > 0x7fffffff) {
        throw new FacecudaError('CORRUPT_FILE', `Image list ${absList} line ${n + 1}: expected "relative/path label" (label a non-negative integer), got ${JSON.stringify(line.slice(0, 80))}`);
      }
      files.push(path.resolve(base, m[1]));
      labels.push(Number(m[2]));
    }
    if (files.length === 0) throw new FacecudaError('CORRUPT_FILE', `Image list ${absList} lists no images`);
    return new ImageList(absList, root === undefined ? undefined : base, files, Int32Array.from(labels));
  }

  /** The path of sample i. */
  path(i: number): string {
    assertInteger(i, 'i', 0, this.size - 1);
    return this.files[i];
  }

  /** The label of sample i without reading the file. */
  label(i: number): number {
    assertInteger(i, 'i', 0, this.size - 1);
    return this.labels[i];
  }

  async get(i: number): Promise<Sample> {
    assertInteger(i, 'i', 0, this.size - 1);
    return readSample(this.files[i], this.labels[i]);
  }

  describe(): SourceDescriptor {
    return this.root === undefined ? { kind: 'list', path: this.listPath } : { kind: 'list', path: this.listPath, root: this.root };
  }

  async close(): Promise<void> {
    // No handles are held between reads.
  }
}
