#!/usr/bin/env node
// Runs an ONNX model written by `bnorm export` with onnxruntime, as a client
// that has never seen bnorm would, and optionally compares its outputs with
// the ones `bnorm predict --output Y.npy` wrote for the same inputs.
//
// Usage:
//   node scripts/onnx_check.mjs --model M.onnx --input X [--limit N] [--output OUT.npy]
//        [--expect Y.npy [--tol 1e-4] [--no-labels]] [--batch 1000] [--graph-opt all]
//
// X is an .npy file (float32, float64 or uint8, C order) or an unsigned-byte
// IDX file, gzipped or not: the raw values `bnorm predict` reads. They are fed
// unchanged, reshaped to the model's input shape, in batches of --batch.
// With --expect, the largest absolute difference must be <= --tol and, unless
// --no-labels (regression), each row's argmax must be the same (but for rows
// whose two best expected values are within --tol: ties, counted apart). --graph-opt
// is onnxruntime's graph optimization level (disabled, basic, extended, all),
// to see whether its rewrites of the graph move the numbers.
// onnxruntime-node is loaded from tools/onnx/node_modules (see tools/onnx/package.json).
// Exit status: 0 agreement, 1 a mismatch or an error, 77 onnxruntime-node not installed.
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const SKIP = 77;
const here = path.dirname(fileURLToPath(import.meta.url));

class CheckError extends Error {}

function parseArgs(argv) {
  const args = { limit: Infinity, tol: 1e-4, labels: true, batch: 1000, graphOpt: "all" };
  for (let i = 0; i < argv.length; ++i) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new CheckError(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === "--model") args.model = value();
    else if (flag === "--input") args.input = value();
    else if (flag === "--output") args.output = value();
    else if (flag === "--expect") args.expect = value();
    else if (flag === "--limit") args.limit = Number(value());
    else if (flag === "--tol") args.tol = Number(value());
    else if (flag === "--batch") args.batch = Number(value());
    else if (flag === "--graph-opt") args.graphOpt = value();
    else if (flag === "--no-labels") args.labels = false;
    else throw new CheckError(`unknown argument ${flag}`);
  }
  if (!args.model || !args.input) throw new CheckError("--model and --input are required");
  if (!(args.limit > 0) || !(args.batch >= 1) || !(args.tol >= 0)) throw new CheckError("bad --limit, --batch or --tol");
  return args;
}

// NPY: magic, version, little-endian header length, a Python dict literal.
function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 10 || buf.toString("latin1", 0, 6) !== "\x93NUMPY") throw new CheckError(`${file}: not an NPY file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  const header = buf.toString("latin1", major === 1 ? 10 : 12, start);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || shapeText === undefined) throw new CheckError(`${file}: NPY header lacks descr or shape: ${header}`);
  if (/'fortran_order':\s*True/.test(header)) throw new CheckError(`${file}: Fortran order is not supported`);
  const shape = shapeText.split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const body = buf.subarray(start);
  const sizes = { "<f4": 4, "<f8": 8, "|u1": 1 };
  if (!(descr in sizes)) throw new CheckError(`${file}: dtype ${descr} (expected <f4, <f8 or |u1)`);
  if (body.length !== count * sizes[descr]) throw new CheckError(`${file}: body holds ${body.length} bytes for shape (${shape})`);
  const data = new Float32Array(count);
  for (let i = 0; i < count; ++i) {
    if (descr === "<f4") data[i] = body.readFloatLE(4 * i);
    else if (descr === "<f8") data[i] = body.readDoubleLE(8 * i);
    else data[i] = body[i];
  }
  return { shape, data };
}

// IDX as the images come: 0x00 0x00 0x08 (unsigned byte), rank, big-endian dims.
function readIdx(file) {
  let buf = fs.readFileSync(file);
  if (buf[0] === 0x1f && buf[1] === 0x8b) buf = zlib.gunzipSync(buf);
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0 || buf[2] !== 8) throw new CheckError(`${file}: not an unsigned-byte IDX file`);
  const rank = buf[3];
  const shape = [];
  for (let d = 0; d < rank; ++d) shape.push(buf.readUInt32BE(4 + 4 * d));
  const start = 4 + 4 * rank;
  const count = shape.reduce((a, b) => a * b, 1);
  if (buf.length - start !== count) throw new CheckError(`${file}: dimensions (${shape}) do not match its size`);
  return { shape, data: Float32Array.from(buf.subarray(start)) };
}

function writeNpy(file, shape, data) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(", ")}${shape.length === 1 ? "," : ""}), }`;
  header += " ".repeat(63 - ((10 + header.length) % 64)) + "\n";  // data starts on a 64-byte boundary
  const head = Buffer.alloc(10);
  head.write("\x93NUMPY", 0, "latin1");
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, Buffer.concat([head, Buffer.from(header, "latin1"), body]));
  fs.renameSync(tmp, file);
}

function argmax(row) {
  let best = 0;
  for (let j = 1; j < row.length; ++j) if (row[j] > row[best]) best = j;
  return best;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = createRequire(path.join(here, "..", "tools", "onnx", "package.json"))("onnxruntime-node");
  } catch (e) {
    console.log(`SKIP: onnxruntime-node is not installed in tools/onnx (${e.message.split("\n")[0]})`);
    process.exit(SKIP);
  }

  const input = args.input.endsWith(".npy") ? readNpy(args.input) : readIdx(args.input);
  const total = Math.min(input.shape[0], args.limit);
  const perExample = input.data.length / input.shape[0];
  const session = await ort.InferenceSession.create(args.model, { graphOptimizationLevel: args.graphOpt });
  const inputName = session.inputNames[0];
  const outputName = session.outputNames[0];
  // The model fixes every dimension but the batch; a 28x28 image feeds a
  // (1, 28, 28) convolutional input or a (784) MLP alike.
  const meta = session.inputMetadata?.[0];
  const exampleShape = meta?.isTensor ? meta.shape.slice(1).map(Number) : input.shape.slice(1);
  if (exampleShape.reduce((a, b) => a * b, 1) !== perExample)
    throw new CheckError(`${args.input}: ${perExample} values per example, the model takes (${exampleShape})`);

  let outputs = null;
  let outWidth = 0;
  for (let begin = 0; begin < total; begin += args.batch) {
    const n = Math.min(args.batch, total - begin);
    const x = new ort.Tensor("float32", input.data.subarray(begin * perExample, (begin + n) * perExample), [n, ...exampleShape]);
    const result = (await session.run({ [inputName]: x }))[outputName];
    outWidth = result.data.length / n;
    if (!outputs) outputs = new Float32Array(total * outWidth);
    outputs.set(result.data, begin * outWidth);
  }
  console.log(`ran ${args.model} on ${total} examples: ${outputName} (${total}, ${outWidth}) with onnxruntime ${ort.env.versions?.node ?? ""}`);
  if (args.output) writeNpy(args.output, [total, outWidth], outputs);
  if (!args.expect) return 0;

  const expected = readNpy(args.expect);
  if (expected.shape[0] !== total || expected.data.length !== total * outWidth)
    throw new CheckError(`${args.expect}: shape (${expected.shape}), onnxruntime gave (${total}, ${outWidth})`);
  let maxDiff = 0;
  let notFinite = 0;
  let labelsDiffer = 0;
  let ties = 0;
  for (let i = 0; i < total; ++i) {
    const a = outputs.subarray(i * outWidth, (i + 1) * outWidth);
    const b = expected.data.subarray(i * outWidth, (i + 1) * outWidth);
    for (let j = 0; j < outWidth; ++j) {
      const d = Math.abs(a[j] - b[j]);
      if (!Number.isFinite(d)) ++notFinite;
      else if (d > maxDiff) maxDiff = d;
    }
    if (args.labels && argmax(a) !== argmax(b)) {
      // Where bnorm's two best logits are within the tolerance of each other
      // the label is a tie that rounding may break either way, not a fault.
      const top = argmax(b);
      const other = argmax(b.map((v, j) => (j === top ? -Infinity : v)));
      if (b[top] - b[other] <= args.tol) ++ties;
      else ++labelsDiffer;
    }
  }
  const tieText = ties ? ` (and on ${ties} ties within the tolerance)` : "";
  const labelText = args.labels ? `, labels differ on ${labelsDiffer} of ${total}${tieText}` : "";
  const finiteText = notFinite ? `, ${notFinite} values not finite` : "";
  console.log(`max |onnxruntime - bnorm| = ${maxDiff.toExponential(3)} (tol ${args.tol})${labelText}${finiteText}`);
  return maxDiff <= args.tol && labelsDiffer === 0 && notFinite === 0 ? 0 : 1;
}

main().then(
  (status) => process.exit(status),
  (e) => {
    console.error(`onnx_check: ${e instanceof CheckError ? "" : "error: "}${e.message}`);
    process.exit(1);
  },
);
