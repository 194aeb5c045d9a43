#!/usr/bin/env node
// The benchmark runner: `npm run bench [-- <filter>...] [--device cpu|cuda] [--json out.json] [--quick]`,
// also `npx facecuda bench ...` from an installed package (bench/ ships in it).
// Every bench/<name>.js (except this file and harness.js) exports `async run(opts)` returning an
// array of result records; filters select benchmarks by name (substring). Each benchmark prints its
// own tables (device, shape, median and spread, floor, peers); the runner closes with one table of
// every record's headline figure (bench/summary.cjs) and, with --json, writes the records with the
// machine, the build, the commit and the date. Needs the compiled dist/.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { textTable } = require('./summary.cjs');

/** The git commit of the checkout (or the package version when installed from npm). */
function commitOf(root) {
  const r = spawnSync('git', ['-C', root, 'rev-parse', 'HEAD'], { encoding: 'utf8' });
  if (r.status === 0) {
    const dirty = spawnSync('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).stdout;
    return `${r.stdout.trim()}${dirty && dirty.trim() ? '-dirty' : ''}`;
  }
  return `package ${JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version}`;
}

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
    .filter((f) => f.endsWith('.js') && f !== 'run.js' && f !== 'harness.js' && !f.startsWith('_'))
    .map((f) => f.slice(0, -3))
    .sort();
  if (opts.help) {
    process.stdout.write(`usage: npm run bench -- [filter...] [--device cpu|cuda] [--json out.json] [--quick]\nbenchmarks: ${names.join(', ')}\n`);
    return 0;
  }
  if (!fs.existsSync(path.join(__dirname, '..', 'dist', 'index.js'))) {
    process.stderr.write('bench: dist/ is missing; run `npm run compile` first\n');
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
  if (results.length) process.stdout.write(`\n==== summary (${results.length} records)\n${textTable(results)}\n`);
  if (opts.json) {
    const fc = require('../dist/index.js');
    const info = await fc.system.info();
    fs.mkdirSync(path.dirname(path.resolve(opts.json)), { recursive: true });
    const tmp = `${opts.json}.tmp-${process.pid}`;
    const commit = commitOf(path.join(__dirname, '..'));
    fs.writeFileSync(tmp, JSON.stringify({ date: new Date().toISOString(), commit, device: opts.device, info, results }, null, 2));
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
