// models/safetensors.ts: round trips of f32/f16/bf16 tensors through single and sharded files,
// and every kind of malformed header.

import assert from "node:assert/strict";
import {
  encodeSafetensors,
  openSafetensors,
  readHeader,
  type StDtype,
  toFloat32,
} from "../models/safetensors.ts";
import { ModelError } from "../models/config.ts";

// Values exact in bf16 and f16, so every dtype reads back bit-identical.
const VALUES = [0, 1, -2, 0.5, 3.25, -0.125, 1024, -7];

function encode(values: number[], dtype: StDtype): Uint8Array {
  const n = values.length;
  const bytes = new Uint8Array(n * (dtype === "F32" ? 4 : 2));
  const v = new DataView(bytes.buffer);
  values.forEach((x, i) => {
    if (dtype === "F32") v.setFloat32(4 * i, x, true);
    else if (dtype === "F16") v.setFloat16(2 * i, x, true);
    else {
      const f = new DataView(new ArrayBuffer(4));
      f.setFloat32(0, x);
      v.setUint16(2 * i, f.getUint32(0) >>> 16, true);
    }
  });
  return bytes;
}

async function withTemp(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "st_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("single file: f32, f16, bf16 tensors read back exactly", async () => {
  await withTemp(async (dir) => {
    const tensors = (["F32", "F16", "BF16"] as StDtype[]).map((dtype) => ({
      name: `w.${dtype}`,
      dtype,
      shape: [2, 4],
      data: encode(VALUES, dtype),
    }));
    tensors.push({ name: "odd", dtype: "BF16", shape: [3], data: encode([1, 2, 3], "BF16") });
    await Deno.writeFile(`${dir}/model.safetensors`, encodeSafetensors(tensors));
    using st = await openSafetensors(dir);
    assert.equal(st.tensors.size, 4);
    for (const dtype of ["F32", "F16", "BF16"] as StDtype[]) {
      const t = st.get(`w.${dtype}`);
      assert.deepEqual(t.shape, [2, 4]);
      assert.equal(t.dtype, dtype);
      assert.deepEqual([...toFloat32(await st.read(t.name), dtype)], VALUES);
    }
    assert.deepEqual([...toFloat32(await st.read("odd"), "BF16")], [1, 2, 3]);
    assert.throws(() => st.get("nope"), /tensor nope not found/);
  });
});

Deno.test("sharded: model.safetensors.index.json across two files", async () => {
  await withTemp(async (dir) => {
    const a = { name: "a", dtype: "F32" as const, shape: [8], data: encode(VALUES, "F32") };
    const b = { name: "b", dtype: "BF16" as const, shape: [4, 2], data: encode(VALUES, "BF16") };
    await Deno.writeFile(`${dir}/model-00001-of-00002.safetensors`, encodeSafetensors([a]));
    await Deno.writeFile(`${dir}/model-00002-of-00002.safetensors`, encodeSafetensors([b]));
    const index = {
      metadata: { total_size: 48 },
      weight_map: { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors" },
    };
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
    using st = await openSafetensors(dir);
    assert.deepEqual([...st.tensors.keys()].sort(), ["a", "b"]);
    assert.deepEqual([...toFloat32(await st.read("b"), "BF16")], VALUES);
    assert.deepEqual([...toFloat32(await st.read("a"), "F32")], VALUES);

    index.weight_map.b = "model-00001-of-00002.safetensors";
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
    await assert.rejects(
      openSafetensors(dir),
      /tensor b is listed in model-00001-of-00002\.safetensors but not stored/,
    );
  });
});

/** A file with a raw header string and `dataBytes` zero bytes of data. */
function rawFile(header: string, dataBytes = 0, lenOverride?: bigint): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, lenOverride ?? BigInt(h.length), true);
  out.set(h, 8);
  return out;
}

Deno.test("malformed headers fail naming the file and the problem", async () => {
  await withTemp(async (dir) => {
    const cases: [Uint8Array, RegExp][] = [
      [new Uint8Array(4), /too small/],
      [rawFile("{}", 0, 1n << 40n), /header length \d+ exceeds the file/],
      [rawFile("{not json"), /header is not valid JSON/],
      [rawFile("[1,2]"), /header is not a JSON object/],
      [
        rawFile(JSON.stringify({ x: { dtype: "I64", shape: [1], data_offsets: [0, 8] } }), 8),
        /tensor x: unsupported dtype "I64"/,
      ],
      [
        rawFile(JSON.stringify({ x: { dtype: "F8_E4M3", shape: [1], data_offsets: [0, 1] } }), 1),
        /tensor x: unsupported dtype "F8_E4M3"/,
      ],
      [
        rawFile(JSON.stringify({ x: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }), 4),
        /tensor x: shape/,
      ],
      [
        rawFile(JSON.stringify({ x: { dtype: "F32", shape: [2], data_offsets: [0] } }), 8),
        /data_offsets must be/,
      ],
      [
        rawFile(JSON.stringify({ x: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }), 4),
        /outside the data section/,
      ],
      [
        rawFile(JSON.stringify({ x: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }), 8),
        /shape \[3\] of F32 needs 12 bytes, data_offsets span 8/,
      ],
      [
        rawFile(
          JSON.stringify({
            x: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
            y: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
          }),
          12,
        ),
        /tensors x and y overlap/,
      ],
    ];
    for (const [i, [bytes, pattern]] of cases.entries()) {
      const file = `${dir}/bad${i}.safetensors`;
      await Deno.writeFile(file, bytes);
      await assert.rejects(readHeader(file), (e: unknown) => {
        assert.ok(e instanceof ModelError);
        assert.ok(e.message.startsWith(file), e.message);
        assert.match(e.message, pattern);
        return true;
      });
    }
    await assert.rejects(openSafetensors(`${dir}/none`), /not found/);
    await Deno.mkdir(`${dir}/empty`);
    await assert.rejects(openSafetensors(`${dir}/empty`), /no model\.safetensors/);
  });
});

Deno.test("__metadata__ is skipped", async () => {
  await withTemp(async (dir) => {
    const header = JSON.stringify({
      __metadata__: { format: "pt" },
      x: { dtype: "F16", shape: [2], data_offsets: [0, 4] },
    });
    await Deno.writeFile(`${dir}/m.safetensors`, rawFile(header, 4));
    using st = await openSafetensors(`${dir}/m.safetensors`);
    assert.deepEqual([...st.tensors.keys()], ["x"]);
  });
});
