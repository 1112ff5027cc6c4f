// The API key: an empty one (`--api-key "$KEY"` with KEY unset) must not start an open server,
// the key may come from NSN_API_KEY, and a key no HTTP client can send is refused at start.

import assert from "node:assert/strict";
import { parseCli } from "../main.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function runMain(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "--port", "0", "--backend", "cpu", ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("an empty --api-key refuses to start with exit 2 and a message", async () => {
  const r = await runMain(["--api-key", ""]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /api-key.*empty/i);
  assert.doesNotMatch(r.stderr, /listening on/);
});

Deno.test("an empty NSN_API_KEY refuses to start with exit 2", async () => {
  const r = await runMain([], { NSN_API_KEY: "" });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /NSN_API_KEY.*empty/);
});

Deno.test("the API key comes from NSN_API_KEY when --api-key is absent; the flag wins", () => {
  const env = (k: string) => k === "NSN_API_KEY" ? "sk-from-env" : undefined;
  assert.deepEqual(parseCli([], env), { apiKey: "sk-from-env" });
  assert.deepEqual(parseCli(["--api-key", "sk-flag"], env), { apiKey: "sk-flag" });
  assert.deepEqual(parseCli([], () => undefined), {});
});

Deno.test("an API key no HTTP client can send (non-ASCII, spaces) is refused", () => {
  for (const key of ["clé", "sk key", "sk\tkey", "ключ", " sk"]) {
    assert.throws(() => parseCli(["--api-key", key], () => undefined), /printable ASCII/, key);
    const env = (k: string) => k === "NSN_API_KEY" ? key : undefined;
    assert.throws(() => parseCli([], env), /printable ASCII/, key);
  }
});
