#!/usr/bin/env node
// A contact sheet of SyntheticFaces for your own eyes: rows are identities, columns are samples
// (column 0: the frontal quality-1 "ID photo"), written as a PNG.
//   node scripts/synthetic-preview.js [--out /tmp/synthetic.png] [--seed 1] [--ids 8] [--samples 10]
//     [--difficulty default] [--first 0] [--quality q]
// Loads the TypeScript sources directly (transpiled in memory), so it needs no build.
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const ts = require('typescript');

require.extensions['.ts'] = (module, filename) => {
  const src = fs.readFileSync(filename, 'utf8');
  const out = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 }, fileName: filename });
  module._compile(out.outputText, filename);
};

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

function crc32(buf) {
  let c = ~0;
  for (let i = 0; i < buf.length; i++) {
    c ^= buf[i];
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

function png(width, height, rgb) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width * 3 + 1)] = 0;
    rgb.copy ? rgb.copy(raw, y * (width * 3 + 1) + 1, y * width * 3, (y + 1) * width * 3)
      : raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * (width * 3 + 1) + 1);
  }
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

const { SyntheticFaces } = require(path.join(__dirname, '..', 'lib', 'data', 'synthetic.ts'));
const ids = Number(arg('ids', 8));
const samples = Number(arg('samples', 10));
const out = arg('out', '/tmp/synthetic.png');
const q = arg('quality', undefined);
const src = new SyntheticFaces({
  seed: Number(arg('seed', 1)), identities: Number(arg('first', 0)) + ids, samplesPerIdentity: samples,
  difficulty: arg('difficulty', 'default'),
});
const S = src.imageSize;
const first = Number(arg('first', 0));
const W = S * samples;
const H = S * ids;
const sheet = new Uint8Array(W * H * 3);
const t0 = process.hrtime.bigint();
for (let k = 0; k < ids; k++) {
  for (let j = 0; j < samples; j++) {
    const img = j === 0 ? src.render(first + k, 0, { frontal: true }) : src.render(first + k, j, q === undefined ? undefined : { quality: Number(q) });
    for (let y = 0; y < S; y++) sheet.set(img.data.subarray(y * S * 3, (y + 1) * S * 3), ((k * S + y) * W + j * S) * 3);
  }
}
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
fs.writeFileSync(out, png(W, H, sheet));
console.log(`${out}: ${ids}×${samples} faces, ${(ms / (ids * samples)).toFixed(3)} ms per image (incl. warm-up)`);
