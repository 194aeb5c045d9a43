// The closing table of `npm run bench` and the Markdown of scripts/bench-table.js: one line per
// record with its headline figure (the first of the throughput/latency fields a benchmark reports),
// the achieved fraction of the floor where it has one, and the peer ratio where a peer ran.
'use strict';

const HEADLINE = [
  ['samplesPerSecond', 'samples/s'], ['imagesPerSecond', 'images/s'], ['queriesPerSecond', 'queries/s'], ['pairsPerSecond', 'pairs/s'],
  ['msPerFace', 'ms/face'], ['gflops', 'GFLOP/s'], ['chosen_gflops', 'GFLOP/s'], ['gbPerSecond', 'GB/s'], ['medianSeconds', 's'],
];
const RATIO = ['ratio', 'speedupVsOrt', 'speedupVsPeer', 'vsPeer', 'speedup', 'speedupVsFaiss', 'speedupVsUsearch', 'speedupVsTorch'];

function fmt(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '-';
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 0.01 ? v.toFixed(3) : v.toExponential(2);
}

/** [bench, shape, figure, of floor, vs peer] for one record. */
function row(r) {
  const h = HEADLINE.find(([k]) => typeof r[k] === 'number' && Number.isFinite(r[k]));
  const ratioKey = RATIO.find((k) => typeof r[k] === 'number' && Number.isFinite(r[k]));
  const frac = typeof r.fractionOfPeak === 'number' ? r.fractionOfPeak : typeof r.fractionOfFloor === 'number' ? r.fractionOfFloor : null;
  return [
    r.bench || '',
    String(r.shape ?? r.name ?? ''),
    h ? `${fmt(r[h[0]])} ${h[1]}` : '-',
    frac === null ? '-' : `${(100 * frac).toFixed(0)}%`,
    ratioKey ? `${fmt(r[ratioKey])}x (${ratioKey})` : r.note ? String(r.note).slice(0, 60) : '-',
  ];
}

const HEADER = ['bench', 'shape', 'result', 'of floor', 'ratio (field)'];

function textTable(records) {
  const rows = [HEADER, ...records.map(row)];
  const w = HEADER.map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r, i) => r.map((x, c) => x.padEnd(w[c])).join('  ') + (i === 0 ? `\n${w.map((n) => '-'.repeat(n)).join('  ')}` : '')).join('\n');
}

function markdownTable(records) {
  const esc = (s) => s.replace(/\|/g, '\\|');
  return [`| ${HEADER.join(' | ')} |`, `|${HEADER.map(() => '---').join('|')}|`, ...records.map((r) => `| ${row(r).map(esc).join(' | ')} |`)].join('\n');
}

module.exports = { row, textTable, markdownTable };
