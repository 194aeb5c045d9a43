#!/usr/bin/env node
/**
 * The facecuda command line.
 *
 *   facecuda demo [--json]     trains and evaluates a small model on synthetic faces (the main job)
 *   facecuda train --config f  trains from an arcface_torch-style JSON config
 *   facecuda info [--json]     package, addon, CPU and CUDA facts (and why CUDA is unavailable)
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
