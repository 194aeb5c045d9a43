#!/usr/bin/env node
/**
 * The facecuda command line.
 *
 *   facecuda demo [--json]     trains and evaluates a small model on synthetic faces (the main job)
 *   facecuda train --config f  trains from an arcface_torch-style JSON config
 *   facecuda info [--json]     package, addon, CPU and CUDA facts (and why CUDA is unavailable)
 *   facecuda embed / search / eval   embeddings, 1:N search, verification packs with a report
 *   facecuda bench [...]       the microbenchmark suite (bench/run.js) on this machine
 *   facecuda help
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { packageRoot } from './binding';
import { FacecudaError } from './errors';
import { info, SystemInfo, version } from './system';

const USAGE = `Usage: facecuda <command> [options]

Commands:
  demo [--json] [--device cpu|cuda|auto] [--loss arcface|adaface] [--compare arcface,adaface]
       [--output DIR] [--seed N]
                  the main job on built-in synthetic faces: trains a small IResNet with a margin
                  head, then reports held-out verification (10-fold accuracy, TAR at FAR 1e-3),
                  cross-quality verification, 1:N top-1 and a raw-pixel linear baseline
  train --config FILE.json [--resume CHECKPOINT] [--json]
                  trains from an arcface_torch-style config (network, embedding_size, loss or
                  margin_list, sample_rate, batch_size, lr, momentum, weight_decay, num_epoch,
                  warmup_epoch, rec, val_targets, fp16, output, ...); Ctrl-C saves a checkpoint
  info [--json]   package version, the addon loaded and how it was chosen, CPU model and SIMD
                  features, CUDA availability (and why not), devices and library versions
  embed --model M.safetensors|M.onnx [--flip] [--landmarks L.json] [--out E.json] IMAGE...
                  unit embeddings (and raw norms) of face crops; --landmarks aligns raw photos
                  from 5 points per image (JSON [[x,y] x 5] per file) to the ArcFace template
  search --index G.fidx|--gallery E.json [--key-file K] (--queries E.json | --model M IMAGE...)
         [--k 5] [--save G.fidx] [--json]
                  exact 1:N cosine search of a gallery (a saved FaceIndex or the output of embed)
  eval --model M --bin lfw.bin [--bin cfp_fp.bin ...] [--no-flip] [--output DIR] [--json]
                  the verification protocol (10-fold accuracy with flip, XNorm, VAL, TAR@FAR, AUC,
                  EER) per pack, printed as insightface does; writes DIR/report.json and report.html
  bench [FILTER...] [--device cpu|cuda] [--json OUT.json] [--quick]
                  the microbenchmark suite (gemm, heads, backbone, train, search, eval) with
                  peers side by side where installed (onnxruntime-node, usearch, PyTorch, faiss)
  help            this text
  version         the package version
`;

/** --name value pairs and flags; unknown names are errors. */
function parseArgs(cmd: string, rest: string[], values: readonly string[], flags: readonly string[]): Record<string, string | true> {
  const out: Record<string, string | true> = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    const name = a.replace(/^--/, '');
    if (!a.startsWith('--')) throw new FacecudaError('INVALID_ARGUMENT', `facecuda ${cmd}: unexpected argument '${a}'`);
    if (flags.includes(name)) out[name] = true;
    else if (values.includes(name)) {
      if (i + 1 >= rest.length) throw new FacecudaError('INVALID_ARGUMENT', `facecuda ${cmd}: ${a} needs a value`);
      out[name] = rest[++i];
    } else throw new FacecudaError('INVALID_ARGUMENT', `facecuda ${cmd}: unknown option ${a}`);
  }
  return out;
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

async function demo(rest: string[]): Promise<number> {
  const a = parseArgs('demo', rest, ['device', 'loss', 'compare', 'output', 'seed', 'epochs'], ['json']);
  const { runDemo } = await import('./demo');
  const loss = a.loss as string | undefined;
  if (loss !== undefined && loss !== 'arcface' && loss !== 'adaface') throw new FacecudaError('INVALID_ARGUMENT', `facecuda demo: --loss must be arcface or adaface, not '${loss}'`);
  const compare = typeof a.compare === 'string' ? a.compare.split(',').map((x) => x.trim()) : undefined;
  if (compare && !compare.every((x) => x === 'arcface' || x === 'adaface')) throw new FacecudaError('INVALID_ARGUMENT', `facecuda demo: --compare takes arcface,adaface`);
  const json = a.json === true;
  const r = await runDemo({
    device: a.device as string | undefined, loss: loss as 'arcface' | 'adaface' | undefined, compare: compare as ('arcface' | 'adaface')[] | undefined,
    output: a.output as string | undefined, seed: a.seed !== undefined ? Number(a.seed) : undefined,
    epochs: a.epochs !== undefined ? Number(a.epochs) : undefined,
    progress: !json && Boolean(process.stderr.isTTY), log: json ? undefined : (l) => process.stdout.write(`${l}\n`),
  });
  if (json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return 0;
  }
  const lines = [
    '',
    `facecuda demo on ${r.device}: ${r.seconds.toFixed(0)} s (data: ${r.data.identities} synthetic identities × ${r.data.samplesPerIdentity}, ${r.data.heldOutIdentities} held out)`,
  ];
  for (const m of r.models) {
    lines.push(
      `  ${m.loss.padEnd(8)} trained ${m.seconds.toFixed(0)} s (${m.iterations} steps, loss ${m.finalLoss.toFixed(3)}): ` +
        `verification ${pct(m.verification.accuracy)} ± ${pct(m.verification.accuracyStd)}, TAR@FAR1e-3 ${pct(m.verification.tarAtFar1e3)}, ` +
        `cross-quality ${pct(m.crossQuality.accuracy)}, 1:N top-1 ${pct(m.identification.top1)} (${m.identification.probes} probes, ${m.identification.gallery} gallery)`,
    );
  }
  lines.push(`  baseline ${r.baseline.method}: verification ${pct(r.baseline.accuracy)} ± ${pct(r.baseline.accuracyStd)}`);
  lines.push(`  model  ${r.model}`, `  report ${r.report}`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

async function train(rest: string[]): Promise<number> {
  const a = parseArgs('train', rest, ['config', 'resume'], ['json']);
  if (typeof a.config !== 'string') throw new FacecudaError('INVALID_ARGUMENT', 'facecuda train: --config FILE.json is required');
  const { runTraining } = await import('./train/run');
  const json = a.json === true;
  const r = await runTraining(a.config, {
    resume: a.resume as string | undefined, handleSignals: true, progress: !json && Boolean(process.stderr.isTTY),
    log: json ? undefined : (l) => process.stdout.write(`${l}\n`),
  });
  if (json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  else {
    process.stdout.write(`training ${r.stopped} after ${r.iterations} iterations (${r.seconds.toFixed(0)} s), last loss ${r.lastLoss.toFixed(4)}\n`);
    if (r.diagnosis) process.stdout.write(`diagnosis: ${r.diagnosis}\n`);
    process.stdout.write(`model ${r.model}\ncheckpoint ${r.checkpoint}\n`);
  }
  return r.stopped === 'diverged' ? 1 : 0;
}

/** Paths or repeated values of a flag (--bin a --bin b). */
function multi(rest: string[], name: string): { values: string[]; rest: string[] } {
  const values: string[] = [];
  const others: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === `--${name}`) {
      if (i + 1 >= rest.length) throw new FacecudaError('INVALID_ARGUMENT', `--${name} needs a value`);
      values.push(rest[++i]);
    } else others.push(rest[i]);
  }
  return { values, rest: others };
}

/** `--name value` options and flags first, then positional arguments (image files). */
function splitPositional(rest: string[], values: readonly string[]): { options: string[]; positional: string[] } {
  const options: string[] = [];
  const positional: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (a.startsWith('--')) {
      options.push(a);
      if (values.includes(a.slice(2)) && i + 1 < rest.length) options.push(rest[++i]);
    } else positional.push(a);
  }
  return { options, positional };
}

async function openEmbedder(model: string, device: string | undefined, flip: boolean) {
  const { FaceEmbedder } = await import('./embed');
  return FaceEmbedder.create({ model, flip, ...(device ? { device: device as 'cpu' } : {}) });
}

async function evalCmd(rest: string[]): Promise<number> {
  const bins = multi(rest, 'bin');
  const a = parseArgs('eval', bins.rest, ['model', 'output', 'device', 'batch-size'], ['no-flip', 'json']);
  if (typeof a.model !== 'string') throw new FacecudaError('INVALID_ARGUMENT', 'facecuda eval: --model FILE (.safetensors or .onnx) is required');
  if (!bins.values.length) throw new FacecudaError('INVALID_ARGUMENT', 'facecuda eval: at least one --bin PACK.bin is required');
  const { evaluateVerification, formatVerificationTable, writeReport } = await import('./eval');
  const flip = a['no-flip'] !== true;
  const embedder = await openEmbedder(a.model, a.device as string | undefined, flip);
  const results: Record<string, Awaited<ReturnType<typeof evaluateVerification>>> = {};
  try {
    for (const bin of bins.values) {
      const name = path.basename(bin).replace(/\.bin$/, '');
      results[name] = await evaluateVerification(embedder, bin, { flip, ...(a['batch-size'] ? { batchSize: Number(a['batch-size']) } : {}) });
      if (a.json !== true) process.stdout.write(formatVerificationTable({ [name]: results[name] }) + '\n');
    }
  } finally {
    embedder.dispose();
  }
  const output = path.resolve((a.output as string | undefined) ?? 'facecuda-eval');
  const files = await writeReport(output, results, { title: `facecuda eval: ${path.basename(a.model)}`, info: { model: path.resolve(a.model), flip } });
  if (a.json === true) {
    const brief = Object.fromEntries(Object.entries(results).map(([k, m]) => [k, {
      accuracy: m.accuracy, accuracyStd: m.accuracyStd, threshold: m.threshold, xnorm: m.xnorm, val: m.val, auc: m.auc, eer: m.eer,
      tarAtFar: Object.fromEntries(Object.entries(m.tarAtFar).map(([f, t]) => [f, t.nearest])),
    }]));
    process.stdout.write(JSON.stringify({ results: brief, report: files }, null, 2) + '\n');
  } else {
    process.stdout.write(`report ${files.json}\n       ${files.html}\n`);
  }
  return 0;
}

async function embedCmd(rest: string[]): Promise<number> {
  const { options, positional } = splitPositional(rest, ['model', 'out', 'device', 'landmarks']);
  const a = parseArgs('embed', options, ['model', 'out', 'device', 'landmarks'], ['flip']);
  if (typeof a.model !== 'string') throw new FacecudaError('INVALID_ARGUMENT', 'facecuda embed: --model FILE (.safetensors or .onnx) is required');
  if (!positional.length) throw new FacecudaError('INVALID_ARGUMENT', 'facecuda embed: name at least one image file');
  const images = await Promise.all(positional.map(async (f) => {
    try {
      return new Uint8Array(await fs.promises.readFile(f));
    } catch (e) {
      throw new FacecudaError('IO_ERROR', `facecuda embed: cannot read ${f}: ${(e as Error).message}`);
    }
  }));
  const embedder = await openEmbedder(a.model, a.device as string | undefined, a.flip === true);
  let r;
  try {
    if (typeof a.landmarks === 'string') {
      // A JSON file: one [[x, y] × 5] per image, in the order of the files.
      const lm = JSON.parse(await fs.promises.readFile(a.landmarks, 'utf8')) as number[][][];
      if (!Array.isArray(lm) || lm.length !== images.length) throw new FacecudaError('SHAPE_MISMATCH', `facecuda embed: --landmarks needs ${images.length} entries of 5 [x, y] points`);
      r = await embedder.embedFaces(images, Float32Array.from(lm.flat(2)));
    } else {
      r = await embedder.embed(images);
    }
  } finally {
    embedder.dispose();
  }
  const rows = positional.map((file, i) => ({ file, norm: r.norms[i], embedding: Array.from(r.embeddings.subarray(i * r.dim, (i + 1) * r.dim)) }));
  const text = JSON.stringify({ model: path.resolve(a.model), dim: r.dim, flip: a.flip === true, embeddings: rows });
  if (typeof a.out === 'string') {
    const { atomicWriteFile } = await import('./fsutil');
    await atomicWriteFile(a.out, new TextEncoder().encode(text));
    process.stdout.write(`${rows.length} embeddings (${r.dim}-d) written to ${a.out}\n`);
  } else {
    process.stdout.write(text + '\n');
  }
  return 0;
}

/** The rows of an `embed --out` file: files, vectors [n·dim], dim. */
async function readEmbeddingsFile(file: string, what: string): Promise<{ files: string[]; vectors: Float32Array; dim: number }> {
  let j: { dim?: unknown; embeddings?: { file?: string; embedding?: number[] }[] };
  try {
    j = JSON.parse(await fs.promises.readFile(file, 'utf8'));
  } catch (e) {
    throw new FacecudaError('CORRUPT_FILE', `facecuda search: ${what} ${file} is not an embeddings file of facecuda embed (${(e as Error).message})`);
  }
  const dim = j.dim;
  if (typeof dim !== 'number' || !Array.isArray(j.embeddings) || !j.embeddings.every((r) => Array.isArray(r.embedding) && r.embedding.length === dim)) {
    throw new FacecudaError('CORRUPT_FILE', `facecuda search: ${what} ${file} needs { dim, embeddings: [{ file, embedding: number[dim] }] } (facecuda embed --out)`);
  }
  return { files: j.embeddings.map((r, i) => r.file ?? String(i)), vectors: Float32Array.from(j.embeddings.flatMap((r) => r.embedding as number[])), dim };
}

async function searchCmd(rest: string[]): Promise<number> {
  const names = ['index', 'gallery', 'key-file', 'queries', 'model', 'k', 'save', 'device'];
  const { options, positional } = splitPositional(rest, names);
  const a = parseArgs('search', options, names, ['json', 'flip']);
  const { FaceIndex } = await import('./search');
  const key = typeof a['key-file'] === 'string' ? new Uint8Array(await fs.promises.readFile(a['key-file'])) : undefined;
  if (key && key.length !== 32) throw new FacecudaError('INVALID_ARGUMENT', `facecuda search: --key-file must hold 32 bytes (AES-256), not ${key.length}`);
  let index;
  let names2: string[] | null = null;
  if (typeof a.index === 'string') {
    index = await FaceIndex.load(a.index, { ...(key ? { key } : {}) });
  } else if (typeof a.gallery === 'string') {
    const g = await readEmbeddingsFile(a.gallery, '--gallery');
    index = new FaceIndex({ dim: g.dim });
    index.add(Array.from(g.files, (_, i) => i), g.vectors);
    names2 = g.files;
  } else {
    throw new FacecudaError('INVALID_ARGUMENT', 'facecuda search: --index FILE.fidx or --gallery EMBEDDINGS.json is required');
  }
  try {
    let queries: Float32Array;
    let queryNames: string[];
    if (typeof a.queries === 'string') {
      const q = await readEmbeddingsFile(a.queries, '--queries');
      queries = q.vectors;
      queryNames = q.files;
    } else if (typeof a.model === 'string' && positional.length) {
      const images = await Promise.all(positional.map((f) => fs.promises.readFile(f).then((b) => new Uint8Array(b))));
      const embedder = await openEmbedder(a.model, a.device as string | undefined, a.flip === true);
      try {
        queries = (await embedder.embed(images)).embeddings;
      } finally {
        embedder.dispose();
      }
      queryNames = positional;
    } else if (typeof a.save === 'string') {
      queries = new Float32Array(0);
      queryNames = [];
    } else {
      throw new FacecudaError('INVALID_ARGUMENT', 'facecuda search: --queries EMBEDDINGS.json, or --model M with image files, is required');
    }
    const k = a.k !== undefined ? Number(a.k) : 5;
    const out: { query: string; matches: { id: number; file?: string; score: number }[] }[] = [];
    if (queryNames.length) {
      const r = await index.search(queries, k);
      queryNames.forEach((q, i) => {
        const matches = [];
        for (let j = 0; j < r.k; j++) {
          const id = r.ids[i * r.k + j];
          if (id < 0) continue;
          matches.push({ id, ...(names2 ? { file: names2[id] } : {}), score: r.scores[i * r.k + j] });
        }
        out.push({ query: q, matches });
      });
    }
    if (typeof a.save === 'string') await index.save(a.save, { ...(key ? { key } : {}) });
    if (a.json === true) process.stdout.write(JSON.stringify({ gallery: index.size, k, queries: out }, null, 2) + '\n');
    else {
      for (const q of out) {
        process.stdout.write(`${q.query}\n`);
        for (const m of q.matches) process.stdout.write(`  ${m.score.toFixed(4)}  ${m.file ?? m.id}\n`);
      }
      if (typeof a.save === 'string') process.stdout.write(`index of ${index.size} entries saved to ${a.save}${key ? ' (AES-256-GCM)' : ''}\n`);
    }
  } finally {
    index.dispose();
  }
  return 0;
}

function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${n} B`;
}

function fmtCudaVersion(v: number): string {
  return v ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : 'none';
}

function printInfo(i: SystemInfo): void {
  const out: string[] = [];
  out.push(`facecuda ${i.version} (Node ${i.node}, ${i.platform})`);
  out.push(`addon     ${i.addon.path}`);
  out.push(`          chosen: ${i.addon.how}; built with ${i.addon.build.tool}, Node-API ${i.addon.build.napiVersion}, ` +
    `CUDA backend ${i.addon.build.cuda ? 'compiled in' : 'not compiled in'}`);
  const req = i.addon.requirements;
  if (req) {
    const drv = req.cuda.minDriver ? `, NVIDIA driver ${req.cuda.minDriver.cuda13}+ (>= ${req.cuda.minDriver.linux}) for CUDA` : '';
    const archs = Array.isArray(req.cuda.architectures) ? req.cuda.architectures.join(' ') : req.cuda.architectures;
    out.push(`          prebuild needs glibc >= ${req.glibc}${drv}; CUDA ${req.cuda.runtime} for ${archs}; ${(req.bytes / 1048576).toFixed(1)} MiB, built ${req.built}`);
  }
  for (const t of i.addon.tried.filter((t) => t.error)) out.push(`          skipped ${t.path}: ${t.error}`);
  out.push(`cpu       ${i.cpu.model}, ${i.cpu.logicalCores} logical cores, ${i.cpu.threads} worker threads`);
  out.push(`          SIMD in use: ${i.cpu.simd} (CPU has: ${i.cpu.features.join(' ')})`);
  out.push(`          GEMM kernel: ${i.cpu.gemmKernel}; bf16: ${i.cpu.gemmKernelBf16}`);
  const c = i.cuda;
  if (c.available) {
    out.push(`cuda      available: ${c.devices.length} device(s); runtime ${fmtCudaVersion(c.runtimeVersion)}, driver ${fmtCudaVersion(c.driverVersion)}, archs ${c.compiledArchs}`);
    for (const d of c.devices) {
      out.push(`          cuda:${d.index} ${d.name}, ${fmtBytes(d.totalMemory)} (${fmtBytes(d.freeMemory)} free), compute capability ${d.computeCapability}, ${d.multiprocessors} SMs`);
    }
  } else {
    out.push(`cuda      unavailable: ${c.reason}`);
    out.push('          using the CPU backend');
    if (c.compiled) out.push(`          runtime ${fmtCudaVersion(c.runtimeVersion)}, driver ${fmtCudaVersion(c.driverVersion)}, archs ${c.compiledArchs}`);
  }
  for (const l of c.libraries ?? []) {
    if (l.found) {
      out.push(`          ${l.name}: ${l.version || 'version unknown'} at ${l.path}`);
    } else {
      out.push(`          ${l.name}: not found${l.error ? ` (${l.error})` : ''}`);
      if (l.tried.length) out.push(`            looked in: ${l.tried.slice(0, 12).join('\n                       ')}${l.tried.length > 12 ? `\n                       ... and ${l.tried.length - 12} more` : ''}`);
    }
  }
  process.stdout.write(out.join('\n') + '\n');
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'demo':
      return demo(rest);
    case 'train':
      return train(rest);
    case 'info': {
      const unknown = rest.filter((a) => a !== '--json');
      if (unknown.length) {
        process.stderr.write(`facecuda info: unknown option ${unknown[0]}\n${USAGE}`);
        return 2;
      }
      const i = await info({ libraries: true });
      if (rest.includes('--json')) process.stdout.write(JSON.stringify(i, null, 2) + '\n');
      else printInfo(i);
      return 0;
    }
    case 'eval':
      return evalCmd(rest);
    case 'embed':
      return embedCmd(rest);
    case 'search':
      return searchCmd(rest);
    case 'bench': {
      // The same runner as `npm run bench`, from the package root (bench/ ships in the package).
      const runner = path.join(packageRoot, 'bench', 'run.js');
      if (!fs.existsSync(runner)) {
        process.stderr.write(`facecuda bench: ${runner} is missing from this installation\n`);
        return 1;
      }
      const r = spawnSync(process.execPath, [runner, ...rest], { stdio: 'inherit', cwd: process.cwd() });
      return r.status ?? 1;
    }
    case 'version':
    case '--version':
    case '-v':
      process.stdout.write(version() + '\n');
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return 0;
    default:
      process.stderr.write(`facecuda: unknown command '${cmd}'\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const code = err instanceof FacecudaError ? ` [${(err as FacecudaError).code}]` : '';
    process.stderr.write(`facecuda: ${err instanceof Error ? err.message : String(err)}${code}\n`);
    process.exitCode = 1;
  },
);
