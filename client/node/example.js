#!/usr/bin/env node
// Example Node.js client of attnbench: GetCapabilities, one small Run, and a small Sweep.
//
//   npm ci && node example.js --target=localhost:50051
//   node example.js --phase=backward --backward_timing=training_step --return_output=true
//   node example.js --mask_mod='doc[q] == doc[kv]' --aux=doc=doc.txt --score_mod='30 * tanh(s / 30)'
//
// The API is loaded at run time from proto/attnbench/v1/attnbench.proto with
// @grpc/proto-loader (--proto_dir overrides where proto/ is). Field names stay as in the proto
// (keepCase), enums are their names ("DTYPE_FLOAT32"), 64-bit integers are strings. The
// channel uses the round_robin policy, so a dns:/// or ipv4:a,b target spreads calls over
// replicas. Prints one line per step, "key=value" pairs after a keyword; on a failed call
// prints "error <CODE>: <message>" to stderr and exits 1.
// --score_mod and --mask_mod are expressions (docs/expressions.md) sent as written;
// --aux=name=FILE[,name=FILE...] reads each FILE in the CLI's text format (numbers, one row per
// line) into a float32 aux tensor; --print_request=true prints the Run request as JSON and
// exits without calling.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

function parseArgs(argv) {
  const args = {
    target: 'localhost:50051',
    proto_dir: path.join(__dirname, '..', '..', 'proto'),
    backend: 'auto',
    seq_lens: '32,64',
    layouts: 'mha:4,gqa:4/2',
    timeout: 120,
    phase: 'prefill',
    backward_timing: '',
    return_output: 'false',
    score_mod: '',
    mask_mod: '',
    aux: '',
    print_request: 'false',
  };
  for (const arg of argv) {
    const match = /^--([a-z_]+)=(.*)$/.exec(arg);
    if (!match || !(match[1] in args)) {
      throw new Error(`unknown argument ${arg} (flags: ${Object.keys(args).join(', ')})`);
    }
    args[match[1]] = match[2];
  }
  return args;
}

// "gqa:4/2" -> a HeadLayout, in the attnbench CLI's compact form (the common layouts only).
function parseLayout(text) {
  const [name, counts] = text.split(':');
  const n = (counts || '').split('/').map(Number);
  switch (name) {
    case 'mha': return {mha: {num_heads: n[0]}};
    case 'mqa': return {mqa: {num_heads: n[0]}};
    case 'gqa': return {gqa: {num_query_heads: n[0], num_kv_heads: n[1]}};
    case 'sqa': return {sqa: {baseline_heads: n[0], num_query_heads: n[1], num_kv_heads: n[2]}};
    default: throw new Error(`layout ${text}: this example knows mha, mqa, gqa and sqa`);
  }
}

function layoutToString(layout) {
  const kind = layout.layout;
  const v = layout[kind];
  switch (kind) {
    case 'mha': return `mha:${v.num_heads}`;
    case 'mqa': return `mqa:${v.num_heads}`;
    case 'gqa': return `gqa:${v.num_query_heads}/${v.num_kv_heads}`;
    case 'sqa': return `sqa:${v.baseline_heads}/${v.num_query_heads}/${v.num_kv_heads}`;
    default: return kind || 'unset';
  }
}

function loadApi(protoDir) {
  const definition = protoLoader.loadSync('attnbench/v1/attnbench.proto', {
    includeDirs: [protoDir],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).attnbench.v1;
}

// Promise wrappers: a unary call, and a server stream collected into an array.
function unary(client, method, request, timeoutSeconds) {
  return new Promise((resolve, reject) => {
    client[method](request, {deadline: Date.now() + timeoutSeconds * 1000}, (err, response) => {
      if (err) reject(err); else resolve(response);
    });
  });
}

function collect(client, method, request, timeoutSeconds, onItem) {
  return new Promise((resolve, reject) => {
    const items = [];
    const call = client[method](request, {deadline: Date.now() + timeoutSeconds * 1000});
    call.on('data', (item) => {
      items.push(item);
      try {
        onItem(item);
      } catch (err) {
        call.cancel();
        reject(err);
      }
    });
    call.on('error', reject);
    call.on('end', () => resolve(items));
  });
}

// --phase (prefill|decode|backward) and --backward_timing (backward_only|training_step) as the
// proto's enum names.
const PHASES = {prefill: 'PHASE_PREFILL', decode: 'PHASE_DECODE', backward: 'PHASE_BACKWARD'};
const BACKWARD_TIMINGS = {
  backward_only: 'BACKWARD_TIMING_BACKWARD_ONLY',
  training_step: 'BACKWARD_TIMING_TRAINING_STEP',
};

function enumOf(table, flag, value) {
  if (!(value in table)) {
    throw new Error(`--${flag}=${value}: expected ${Object.keys(table).join('|')}`);
  }
  return table[value];
}

// A 1-D or 2-D array of numbers (rows: arrays of equal length) as an aux tensor: a NamedTensor
// of float32. Integers must be exact in float32 (|v| <= 2^24) and every value finite.
function auxTensor(name, values) {
  const twoD = values.length > 0 && values.every(Array.isArray);
  const flat = twoD ? values.flat() : values;
  const shape = twoD ? [values.length, values[0].length] : [values.length];
  if (flat.length === 0) throw new Error(`aux ${name}: empty`);
  if (twoD && values.some((row) => row.length !== shape[1])) {
    throw new Error(`aux ${name}: the rows of a 2-D tensor must be as long`);
  }
  const data = Buffer.alloc(4 * flat.length);
  flat.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new Error(`aux ${name}: element ${i} is ${v}; aux tensors are finite numbers`);
    }
    if (Number.isInteger(v) && Math.abs(v) > 2 ** 24) {
      throw new Error(`aux ${name}: element ${i} is the integer ${v}, not exact in float32`);
    }
    data.writeFloatLE(v, 4 * i);
  });
  return {name, tensor: {dtype: 'DTYPE_FLOAT32', shape, data}};
}

// The CLI's text format: whitespace-separated numbers, one row per line, '#' comments. One line,
// or one number on every line, is 1-D; otherwise 2-D.
function readAuxText(name, file) {
  const rows = fs.readFileSync(file, 'utf8').split('\n')
      .map((line) => line.replace(/#.*/, '').trim())
      .filter((line) => line.length > 0)
      .map((line, i) => line.split(/\s+/).map((token) => {
        if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(token)) {
          throw new Error(`aux ${name}: ${file}: '${token}' on row ${i + 1} is not a number`);
        }
        return Number(token);
      }));
  const oneD = rows.length === 1 || rows.every((row) => row.length === 1);
  return auxTensor(name, oneD ? rows.flat() : rows);
}

// --aux=name=FILE[,name=FILE...] -> NamedTensors, in the order given.
function parseAux(text) {
  if (!text) return [];
  return text.split(',').map((item) => {
    const eq = item.indexOf('=');
    const name = eq < 0 ? '' : item.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || eq === item.length - 1) {
      throw new Error(`--aux: '${item}' is not of the form name=FILE`);
    }
    return readAuxText(name, item.slice(eq + 1));
  });
}

function baseRequest(args) {
  const request = {
    backend: args.backend,
    spec: {
      batch_size: 1, seq_len_q: 64, seq_len_kv: 64, head_dim_qk: 32,
      layout: {mha: {num_heads: 4}}, mask: {causal: {}}, dtype: 'DTYPE_FLOAT32',
      phase: enumOf(PHASES, 'phase', args.phase),
    },
    measurement: {warmup_iterations: 1, min_iterations: 2, max_iterations: 3},
    check: {mode: 'CHECK_MODE_FULL'},
    // O (and for backward dQ, dK, dV) inline in the result.
    return_output: args.return_output === 'true',
  };
  if (args.backward_timing) {
    request.measurement.backward_timing =
        enumOf(BACKWARD_TIMINGS, 'backward_timing', args.backward_timing);
  }
  if (args.score_mod) request.spec.score_mod = {expression: args.score_mod};
  if (args.mask_mod) request.spec.mask_mod = {expression: args.mask_mod};
  const aux = parseAux(args.aux);
  if (aux.length > 0) request.spec.aux = aux;
  return request;
}

// "prefill", "backward", ... from an enum name.
function shortName(table, value) {
  return Object.keys(table).find((k) => table[k] === value) || 'unspecified';
}

// Unset message fields decode as null, so each one read here falls back to its defaults.
function describe(result) {
  const s = result.spec;
  const device = result.device || {name: ''};
  const timing = result.timing || {median_ms: 0};
  const rates = result.throughput || {achieved_tflops: 0};
  const check = result.correctness || {checked: false, passed: false, tensors: []};
  const summary = result.output_summary || {non_finite_elements: '0'};
  const measurement = result.measurement || {backward_timing: 'BACKWARD_TIMING_UNSPECIFIED'};
  const fields = [
    `backend=${result.backend}`, `server=${result.server || '-'}`,
    `device=${JSON.stringify(device.name)}`, `layout=${layoutToString(s.layout)}`,
    `mask=${(s.mask && s.mask.kind) || 'none'}`, `seq_len=${s.seq_len_q}`,
    `head_dim=${s.head_dim_qk}`, `median_ms=${timing.median_ms.toFixed(4)}`,
    `tflops=${rates.achieved_tflops.toFixed(5)}`, `checked=${check.checked}`,
    `passed=${check.passed}`, `non_finite=${summary.non_finite_elements}`,
    `phase=${shortName(PHASES, s.phase)}`,
  ];
  if (s.phase === 'PHASE_BACKWARD') {
    fields.push(`backward_timing=${shortName(BACKWARD_TIMINGS, measurement.backward_timing)}`);
  }
  // The client-written expressions the spec carries, quoted.
  for (const field of ['score_mod', 'mask_mod']) {
    if (s[field] && s[field].expression) {
      fields.push(`${field}=${JSON.stringify(s[field].expression)}`);
    }
  }
  // Each tensor the check compared ("output"; for backward "dq", "dk", "dv", at layer scope "dx",
  // "dw_q", "dw_k", "dw_v", "dw_o") and whether it passed.
  if (check.tensors && check.tensors.length > 0) {
    fields.push(`tensor_checks=${check.tensors.map((t) => `${t.name}:${t.passed}`).join(',')}`);
  }
  // The tensors returned inline (return_output): name:shape, shape as BxSxHxD (a weight's
  // gradient as its two dimensions).
  const returned = ['output', 'dq', 'dk', 'dv', 'dx', 'dw_q', 'dw_k', 'dw_v', 'dw_o']
      .filter((name) => result[name]);
  if (returned.length > 0) {
    fields.push(`returned=${returned.map((name) => `${name}:${result[name].shape.join('x')}`)
        .join(',')}`);
  }
  return fields.join(' ');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  // Built first, so that a bad flag or --aux file fails before any call.
  const request = baseRequest(args);
  if (args.print_request === 'true') {
    // Bytes as base64, as in the proto's JSON mapping.
    console.log(JSON.stringify(request,
                               (key, value) => (value && value.type === 'Buffer' ?
                                 Buffer.from(value.data).toString('base64') : value)));
    return;
  }
  const api = loadApi(args.proto_dir);
  const client = new api.AttnBench(args.target, grpc.credentials.createInsecure(), {
    'grpc.service_config': JSON.stringify({loadBalancingConfig: [{round_robin: {}}]}),
  });
  const timeout = Number(args.timeout);
  try {
    const caps = await unary(client, 'GetCapabilities', {}, timeout);
    console.log(`capabilities server_version=${caps.server_version} backends=` +
                caps.backends.map((b) => b.name).join(','));

    const run = await unary(client, 'Run', request, timeout);
    console.log(`run ${describe(run.result)}`);

    // A grid: sequence lengths x layouts, the last axis fastest.
    const seqLens = args.seq_lens.split(',').map(Number);
    const layouts = args.layouts.split(',').map(parseLayout);
    const sweep = {
      base: baseRequest(args),
      axes: [{seq_len: {values: seqLens}}, {layout: {values: layouts}}],
    };
    sweep.base.check.mode = 'CHECK_MODE_OFF';
    sweep.base.return_output = false;
    const points = await collect(client, 'Sweep', sweep, timeout, (item) => {
      const where = `point=${item.point_index}/${item.total_points}`;
      if (item.outcome === 'error') {
        console.log(`sweep ${where} error=${item.error.code} ${item.error.message}`);
      } else {
        console.log(`sweep ${where} ${describe(item.result)}`);
      }
    });
    console.log(`sweep done points=${points.length}`);
  } finally {
    client.close();
  }
}

main().catch((err) => {
  const code = typeof err.code === 'number' ? grpc.status[err.code] : 'CLIENT';
  console.error(`error ${code}: ${err.details || err.message}`);
  process.exit(1);
});
