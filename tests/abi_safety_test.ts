// The C ABI under abuse, called directly through ffi/symbols.ts (no NativeEngine in between,
// so nothing on the TS side filters the bad arguments first): every call of
// tests/helpers/abi_abuse.ts must return a non-OK status with a non-empty nsn_last_error(),
// leave nsn_engine_check passing and the sequences as they were, and the engine must still
// step correctly afterwards. tests/asan_slow_test.ts runs the same calls under AddressSanitizer.

import assert from "node:assert";
import { openLibrary } from "../ffi/library.ts";
import { NSN_OK } from "../ffi/symbols.ts";
import { lastError, RawEngine, runAbuse, warmUp } from "./helpers/abi_abuse.ts";

Deno.test("C ABI: abusive calls fail cleanly and leave the engine intact", async () => {
  const lib = await openLibrary();
  const r = await RawEngine.create(lib);
  try {
    const live = await warmUp(r);
    const lengths = live.map((s) => r.seqLength(s));
    const results = await runAbuse(r, live);
    const bad = results.filter((x) => x.status === NSN_OK || x.error === "" || x.damage !== "");
    console.log(`${results.length} abusive calls, ${results.length - bad.length} failed cleanly`);
    assert.deepStrictEqual(
      bad.map((x) => `${x.name}: status ${x.status}, error "${x.error}" ${x.damage}`),
      [],
      "calls that did not fail cleanly",
    );
    assert(results.length >= 150, `only ${results.length} calls`);

    // Still a working engine: the two untouched sequences decode, then everything is freed.
    assert.strictEqual(r.check(), NSN_OK, lastError(lib));
    const [a, b, c] = live;
    assert.deepStrictEqual([r.seqLength(a), r.seqLength(b)], lengths.slice(0, 2));
    const st = await r.step(
      [{ seq: a, n: 1, off: 0, sample: true }, {
        seq: b,
        n: 2,
        off: 1,
        sample: true,
        logprobs: true,
        next: 3,
      }],
      [5, 6, 7],
      { topN: 20 },
    );
    assert.strictEqual(st, NSN_OK, lastError(lib));
    for (const s of [a, b, c]) assert.strictEqual(r.seqFree(s), NSN_OK);
    assert.strictEqual(r.check(), NSN_OK, lastError(lib));
  } finally {
    r.destroy();
  }
});
