#!/usr/bin/env node
// The benchmark runner: `npm run bench [-- <filter>...] [--device cpu|cuda] [--json out.json] [--quick]`.
// Every bench/<name>.js (except this file and harness.js) exports `async run(opts)` returning an
// array of result records; filters select benchmarks by name (substring). Needs the compiled dist/.
'use strict';
const fs = require('fs');
const path = require('path');

function parseArgs(argv) {
  const opts = { filters: [], device: 'cpu', json: null, quick: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--device') opts.device = argv[++i];
    else if (a.startsWith('--device=')) opts.device = a.slice(9);
    else if (a === '--json') opts.json = argv[++i];
    else if (a.startsWith('--json=')) opts.json = a.slice(7);
    else if (a === '--quick') opts.quick = true;
    else if (a === '--help' || a === '-h') opts.help = true;
    else opts.filters.push(a);
  }
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const names = fs
    .readdirSync(__dirname)
    .filter((f) => f.endsWith('.js') && f !== 'run.js' && f !== 'harness.js')
    .map((f) => f.slice(0, -3))
    .sort();
  if (opts.help) {
    process.stdout.write(`usage: npm run bench -- [filter...] [--device cpu|cuda] [--json out.json] [--quick]\nbenchmarks: ${names.join(', ')}\n`);
    return 0;
  }
  if (!fs.existsSync(path.join(__dirname, '..', 'dist', 'index.js'))) {
    process.stderr.write('bench: dist/ is missing; run `npm run build` first\n');
    return 1;
  }
  const selected = opts.filters.length ? names.filter((n) => opts.filters.some((f) => n.includes(f))) : names;
  if (!selected.length) {
    process.stderr.write(`bench: no benchmark matches ${opts.filters.join(' ')} (have: ${names.join(', ')})\n`);
    return 1;
  }
  const results = [];
  for (const name of selected) {
    // eslint-disable-next-line global-require
    const mod = require(path.join(__dirname, `${name}.js`));
    const records = await mod.run({ ...opts, filter: opts.filters });
    for (const r of records || []) results.push({ bench: name, ...r });
  }
  if (opts.json) {
    const fc = require('../dist/index.js');
    const info = await fc.system.info();
    fs.mkdirSync(path.dirname(path.resolve(opts.json)), { recursive: true });
    const tmp = `${opts.json}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify({ date: new Date().toISOString(), device: opts.device, info, results }, null, 2));
    fs.renameSync(tmp, opts.json);
    process.stdout.write(`bench: wrote ${opts.json}\n`);
  }
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`bench: ${e && e.stack ? e.stack : e}\n`);
    process.exitCode = 1;
  },
);
