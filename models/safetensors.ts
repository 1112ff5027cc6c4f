// safetensors reader: one file or a sharded set (model.safetensors.index.json). Headers are
// validated up front; tensors are read one at a time at their offsets, so a 16 GB model never
// sits in memory at once (the engine converts and keeps its own copy).
// Format: u64 LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}, data.

import { ModelError } from "./config.ts";

export type StDtype = "F32" | "F16" | "BF16";
export const DTYPE_BYTES: Record<StDtype, number> = { F32: 4, F16: 2, BF16: 2 };
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo {
  name: string;
  dtype: StDtype;
  shape: number[];
  file: string;
  start: number; // absolute byte offset in file
  bytes: number;
}

export class SafetensorsSet implements Disposable {
  readonly tensors: Map<string, TensorInfo>;
  #files = new Map<string, Deno.FsFile>();

  constructor(tensors: Map<string, TensorInfo>) {
    this.tensors = tensors;
  }

  get(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new ModelError(`tensor ${name} not found in the safetensors files`);
    return t;
  }

  /** Reads one tensor's raw bytes (little-endian, dtype as stored). */
  async read(name: string): Promise<Uint8Array<ArrayBuffer>> {
    const t = this.get(name);
    let f = this.#files.get(t.file);
    if (!f) {
      f = await Deno.open(t.file, { read: true });
      this.#files.set(t.file, f);
    }
    await f.seek(t.start, Deno.SeekMode.Start);
    const buf = new Uint8Array(t.bytes);
    let got = 0;
    while (got < t.bytes) {
      const n = await f.read(buf.subarray(got));
      if (n === null) {
        throw new ModelError(`${t.file}: unexpected end of file reading tensor ${name}`);
      }
      got += n;
    }
    return buf;
  }

  close(): void {
    for (const f of this.#files.values()) f.close();
    this.#files.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Opens a .safetensors file, or a directory with model.safetensors(.index.json). */
export async function openSafetensors(path: string): Promise<SafetensorsSet> {
  const stat = await statOrNull(path);
  if (stat === null) throw new ModelError(`${path}: not found`);
  if (stat.isFile) return new SafetensorsSet(await readHeader(path));
  const index = `${path}/model.safetensors.index.json`;
  if (await statOrNull(index)) return new SafetensorsSet(await readSharded(path, index));
  const single = `${path}/model.safetensors`;
  if (await statOrNull(single)) return new SafetensorsSet(await readHeader(single));
  throw new ModelError(`${path}: no model.safetensors or model.safetensors.index.json`);
}

async function readSharded(dir: string, index: string): Promise<Map<string, TensorInfo>> {
  let weightMap: unknown;
  try {
    weightMap = JSON.parse(await Deno.readTextFile(index)).weight_map;
  } catch (e) {
    throw new ModelError(`${index}: invalid JSON (${(e as Error).message})`);
  }
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new ModelError(`${index}: "weight_map" must be an object of tensor name -> shard file`);
  }
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== "string" || shard.includes("/") || shard.includes("..")) {
      throw new ModelError(
        `${index}: tensor ${name} maps to an invalid shard ${JSON.stringify(shard)}`,
      );
    }
    byShard.set(shard, [...byShard.get(shard) ?? [], name]);
  }
  const all = new Map<string, TensorInfo>();
  for (const [shard, names] of byShard) {
    const tensors = await readHeader(`${dir}/${shard}`);
    for (const name of names) {
      const t = tensors.get(name);
      if (!t) {
        throw new ModelError(`${index}: tensor ${name} is listed in ${shard} but not stored there`);
      }
      all.set(name, t);
    }
  }
  return all;
}

/** Parses and validates one file's header; no tensor data is read. */
export async function readHeader(file: string): Promise<Map<string, TensorInfo>> {
  const fail = (msg: string): never => {
    throw new ModelError(`${file}: ${msg}`);
  };
  using f = await Deno.open(file, { read: true }).catch((e) => fail(`cannot open (${e.message})`));
  const size = (await f.stat()).size;
  if (size < 8) fail(`too small for a safetensors file (${size} bytes)`);
  const lenBuf = await readExact(f, 8, file);
  const headerLen = new DataView(lenBuf.buffer).getBigUint64(0, true);
  if (headerLen > BigInt(Math.min(MAX_HEADER_BYTES, size - 8))) {
    fail(
      `header length ${headerLen} exceeds the file (${size} bytes) or the ${MAX_HEADER_BYTES}-byte limit`,
    );
  }
  const n = Number(headerLen);
  let header: unknown;
  try {
    header = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(await readExact(f, n, file)),
    );
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    fail("header is not a JSON object");
  }
  const dataStart = 8 + n;
  const dataBytes = size - dataStart;
  const tensors = new Map<string, TensorInfo>();
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") continue;
    const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof t !== "object" || t === null) fail(`tensor ${name}: entry is not an object`);
    const dtype = t.dtype;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      fail(
        `tensor ${name}: unsupported dtype ${JSON.stringify(dtype)} (supported: F32, F16, BF16)`,
      );
    }
    const shape = t.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(
        `tensor ${name}: shape must be a list of non-negative integers, got ${
          JSON.stringify(shape)
        }`,
      );
    }
    const offs = t.data_offsets;
    if (
      !Array.isArray(offs) || offs.length !== 2 ||
      !offs.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      fail(`tensor ${name}: data_offsets must be [begin, end], got ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as number[];
    if (begin > end || end > dataBytes) {
      fail(
        `tensor ${name}: data_offsets [${begin}, ${end}] outside the data section (${dataBytes} bytes)`,
      );
    }
    const elems = (shape as number[]).reduce((a, b) => a * b, 1);
    const want = elems * DTYPE_BYTES[dtype as StDtype];
    if (end - begin !== want) {
      fail(
        `tensor ${name}: shape [${shape}] of ${dtype} needs ${want} bytes, data_offsets span ${
          end - begin
        }`,
      );
    }
    tensors.set(name, {
      name,
      dtype: dtype as StDtype,
      shape: shape as number[],
      file,
      start: dataStart + begin,
      bytes: want,
    });
  }
  checkNoOverlap(file, [...tensors.values()]);
  return tensors;
}

function checkNoOverlap(file: string, tensors: TensorInfo[]): void {
  const sorted = tensors.filter((t) => t.bytes > 0).sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    if (prev.start + prev.bytes > sorted[i].start) {
      throw new ModelError(`${file}: tensors ${prev.name} and ${sorted[i].name} overlap`);
    }
  }
}

async function readExact(
  f: Deno.FsFile,
  n: number,
  file: string,
): Promise<Uint8Array<ArrayBuffer>> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await f.read(buf.subarray(got));
    if (r === null) throw new ModelError(`${file}: unexpected end of file`);
    got += r;
  }
  return buf;
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch {
    return null;
  }
}

/** Decodes raw tensor bytes to float32 (tests and tools; the engine converts natively). */
export function toFloat32(bytes: Uint8Array, dtype: StDtype): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  const f32 = new DataView(new ArrayBuffer(4));
  for (let i = 0; i < n; i++) {
    if (dtype === "F32") out[i] = v.getFloat32(4 * i, true);
    else if (dtype === "F16") out[i] = v.getFloat16(2 * i, true);
    else {
      f32.setUint32(0, v.getUint16(2 * i, true) << 16);
      out[i] = f32.getFloat32(0);
    }
  }
  return out;
}

/** Serializes tensors into safetensors bytes (tests and tools). Data is little-endian. */
export function encodeSafetensors(
  tensors: { name: string; dtype: StDtype; shape: number[]; data: Uint8Array }[],
): Uint8Array<ArrayBuffer> {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + t.data.byteLength],
    };
    offset += t.data.byteLength;
  }
  const raw = new TextEncoder().encode(JSON.stringify(header));
  // Space padding keeps the data 8-aligned, like the reference writer.
  const head = new Uint8Array(raw.byteLength + (8 - (raw.byteLength % 8)) % 8).fill(0x20);
  head.set(raw);
  const out = new Uint8Array(8 + head.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.byteLength), true);
  out.set(head, 8);
  let pos = 8 + head.byteLength;
  for (const t of tensors) {
    out.set(t.data, pos);
    pos += t.data.byteLength;
  }
  return out;
}
