#!/usr/bin/env node
// Example Node.js client of attnbench: GetCapabilities, one small Run, and a small Sweep.
//
//   npm ci && node example.js --target=localhost:50051
//   node example.js --phase=backward --backward_timing=training_step --return_output=true
//
// The API is loaded at run time from proto/attnbench/v1/attnbench.proto with
// @grpc/proto-loader (--proto_dir overrides where proto/ is). Field names stay as in the proto
// (keepCase), enums are their names ("DTYPE_FLOAT32"), 64-bit integers are strings. The
// channel uses the round_robin policy, so a dns:/// or ipv4:a,b target spreads calls over
// replicas. Prints one line per step, "key=value" pairs after a keyword; on a failed call
// prints "error <CODE>: <message>" to stderr and exits 1.
'use strict';

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
  // Each tensor the check compared ("output"; for backward "dq", "dk", "dv") and whether it
  // passed.
  if (check.tensors && check.tensors.length > 0) {
    fields.push(`tensor_checks=${check.tensors.map((t) => `${t.name}:${t.passed}`).join(',')}`);
  }
  // The tensors returned inline (return_output): name:shape, shape as BxSxHxD.
  const returned = ['output', 'dq', 'dk', 'dv'].filter((name) => result[name]);
  if (returned.length > 0) {
    fields.push(`returned=${returned.map((name) => `${name}:${result[name].shape.join('x')}`)
        .join(',')}`);
  }
  return fields.join(' ');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const api = loadApi(args.proto_dir);
  const client = new api.AttnBench(args.target, grpc.credentials.createInsecure(), {
    'grpc.service_config': JSON.stringify({loadBalancingConfig: [{round_robin: {}}]}),
  });
  const timeout = Number(args.timeout);
  try {
    const caps = await unary(client, 'GetCapabilities', {}, timeout);
    console.log(`capabilities server_version=${caps.server_version} backends=` +
                caps.backends.map((b) => b.name).join(','));

    const run = await unary(client, 'Run', baseRequest(args), timeout);
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
