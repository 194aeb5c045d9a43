#!/usr/bin/env node
/**
 * The facecuda command line.
 *
 *   facecuda info [--json]     package, addon, CPU and CUDA facts (and why CUDA is unavailable)
 *   facecuda help
 */
import { FacecudaError } from './errors';
import { info, SystemInfo, version } from './system';

const USAGE = `Usage: facecuda <command> [options]

Commands:
  info [--json]   package version, the addon loaded and how it was chosen, CPU model and SIMD
                  features, CUDA availability (and why not), devices and library versions
  help            this text
  version         the package version
`;

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
