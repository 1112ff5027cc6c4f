// The committed codebooks (cuda/src/quant/codebooks.cpp) are exactly what the generator makes:
// regenerating with the fixed seeds must give the same bytes.

import assert from "node:assert/strict";

const TOOL = new URL("../tools/gen_codebooks.ts", import.meta.url).pathname;

Deno.test("codebooks.cpp matches tools/gen_codebooks.ts --check", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", TOOL, "--check"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  const out = dec.decode(stdout) + dec.decode(stderr);
  assert.equal(code, 0, out);
  // The quality it prints is the ceiling of every NSN reconstruction; keep it from regressing.
  const cos = [...out.matchAll(/cos\/128-vector ([0-9.]+)/g)].map((m) => Number(m[1]));
  assert.equal(cos.length, 2, out);
  assert.ok(cos[0] > 0.82 && cos[1] > 0.95, out);
});
