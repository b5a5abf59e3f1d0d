// tokenizer_ref.js — the JavaScript references for GPT-2's BPE, run with node from the checkout's
// node_modules (jobs/setup.sh installs them from package.json):
//   node tests/tokenizer_ref.js tiktoken FILE       ids of tiktoken's gpt2 encode_ordinary (the real
//                                                    tiktoken compiled to WASM), one JSON array
//   node tests/tokenizer_ref.js gpt3 FILE           ids of gpt-3-encoder's encode, one JSON array
//   node tests/tokenizer_ref.js bench FILE REPEAT ROUNDS G3_BYTES
//       throughput lines "NAME MB_PER_S TOKENS MS" (medians over ROUNDS): tiktoken on FILE repeated
//       REPEAT times in one call; gpt-3-encoder on its first G3_BYTES, in pieces of about 16 KiB cut at
//       line ends (its encode concatenates arrays token by token: quadratic in one call's length)
// FILE must be valid UTF-8 (a JavaScript string cannot carry anything else): exit 2 otherwise.
'use strict';
const fs = require('fs');

function readUtf8(path) {
  const bytes = fs.readFileSync(path);
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (e) {
    process.stderr.write(`tokenizer_ref.js: ${path} is not valid UTF-8\n`);
    process.exit(2);
  }
}

function median(xs) {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function nowMs() { return Number(process.hrtime.bigint()) / 1e6; }

const [mode, file, ...rest] = process.argv.slice(2);
if (!mode || !file) {
  process.stderr.write('usage: node tokenizer_ref.js tiktoken|gpt3|bench FILE [REPEAT ROUNDS G3_BYTES]\n');
  process.exit(2);
}
const text = readUtf8(file);
if (mode === 'tiktoken' || mode === 'gpt3') {
  let ids;
  if (mode === 'tiktoken') {
    const { get_encoding } = require('tiktoken');
    const enc = get_encoding('gpt2');
    ids = Array.from(enc.encode_ordinary(text));
    enc.free();
  } else {
    ids = require('gpt-3-encoder').encode(text);
  }
  process.stdout.write(JSON.stringify(ids) + '\n');
} else if (mode === 'bench') {
  const repeat = parseInt(rest[0] || '1', 10), rounds = parseInt(rest[1] || '5', 10);
  const g3Bytes = parseInt(rest[2] || '262144', 10);
  const big = text.repeat(repeat), bigBytes = Buffer.byteLength(big);
  const { get_encoding } = require('tiktoken');
  const enc = get_encoding('gpt2');
  enc.encode_ordinary(text.slice(0, 10000));   // warm up (WASM instantiation, first-call costs)
  const tt = [];
  let ttTokens = 0;
  for (let r = 0; r < rounds; r++) {
    const t0 = nowMs();
    ttTokens = enc.encode_ordinary(big).length;
    tt.push(nowMs() - t0);
  }
  enc.free();
  const ms = median(tt);
  process.stdout.write(`tiktoken ${bigBytes / 1e3 / ms} ${ttTokens} ${ms}\n`);
  // gpt-3-encoder on pieces of ~16 KiB of the text's first g3Bytes, cut after a newline
  const g3 = require('gpt-3-encoder');
  const pieces = [];
  let at = 0, g3Total = 0;
  const head = Buffer.from(text).subarray(0, g3Bytes).toString('utf8');
  while (at < head.length) {
    let end = Math.min(head.length, at + 16384);
    const nl = head.indexOf('\n', end);
    end = nl < 0 ? head.length : nl + 1;
    pieces.push(head.slice(at, end));
    at = end;
  }
  for (const p of pieces) g3Total += Buffer.byteLength(p);
  g3.encode(pieces[0].slice(0, 1000));   // warm up
  const tg = [];
  let g3Tokens = 0;
  for (let r = 0; r < Math.min(rounds, 3); r++) {
    const t0 = nowMs();
    g3Tokens = 0;
    for (const p of pieces) g3Tokens += g3.encode(p).length;
    tg.push(nowMs() - t0);
  }
  const gms = median(tg);
  process.stdout.write(`gpt-3-encoder ${g3Total / 1e3 / gms} ${g3Tokens} ${gms}\n`);
} else {
  process.stderr.write(`tokenizer_ref.js: unknown mode ${mode}\n`);
  process.exit(2);
}
