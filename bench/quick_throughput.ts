// Quick serving throughput: generated tokens/s through the whole HTTP stack with N concurrent
// clients, per kv_bits. Not the full benchmark (bench/bench.ts); a smoke number for the
// scheduler's batching.
//   deno run -A bench/quick_throughput.ts [--model demo] [--backend cpu] [--clients 1,16]
//     [--kv-bits 16,2,1] [--max-tokens 64] [--requests-per-client 2]

import { parseArgs } from "node:util";
import { startServer } from "../main.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "demo" },
    backend: { type: "string", default: "cpu" },
    clients: { type: "string", default: "1,16" },
    "kv-bits": { type: "string", default: "16,2,1" },
    "max-tokens": { type: "string", default: "64" },
    "requests-per-client": { type: "string", default: "2" },
  },
});
const maxTokens = Number(values["max-tokens"]);
const perClient = Number(values["requests-per-client"]);
const clients = values.clients.split(",").map(Number);
const bits = values["kv-bits"].split(",");

const srv = startServer({
  model: values.model,
  backend: values.backend as "cpu" | "cuda" | "auto",
  port: 0,
  quiet: true,
  maxNumSeqs: Math.max(...clients),
});
await srv.ready;

async function client(kvBits: string, i: number): Promise<number> {
  let tokens = 0;
  for (let r = 0; r < perClient; r++) {
    const res = await fetch(`${srv.url}/v1/completions`, {
      method: "POST",
      headers: { "X-KV-Bits": kvBits, "Content-Type": "application/json" },
      body: JSON.stringify({
        prompt: `Request ${i}.${r}: once upon a time`,
        max_tokens: maxTokens,
        temperature: 0,
        ignore_eos: true,
      }),
    });
    tokens += (await res.json()).usage.completion_tokens;
  }
  return tokens;
}

await client("16", -1); // warm-up
const rows: { kv_bits: string; clients: number; tokens: number; seconds: number; tok_s: number }[] =
  [];
for (const b of bits) {
  for (const c of clients) {
    const t0 = performance.now();
    const counts = await Promise.all(Array.from({ length: c }, (_, i) => client(b, i)));
    const seconds = (performance.now() - t0) / 1000;
    const tokens = counts.reduce((a, x) => a + x, 0);
    rows.push({ kv_bits: b, clients: c, tokens, seconds, tok_s: tokens / seconds });
  }
}
const info = srv.state.ready!.model.engine.info();
console.log(
  `model ${values.model}, backend ${info.backend} (${info.deviceName}), ` +
    `max_tokens ${maxTokens}, ${perClient} requests per client`,
);
console.log("kv_bits  clients  tokens  seconds  generated tok/s");
for (const r of rows) {
  console.log(
    `${r.kv_bits.padStart(7)}  ${String(r.clients).padStart(7)}  ${String(r.tokens).padStart(6)}` +
      `  ${r.seconds.toFixed(2).padStart(7)}  ${r.tok_s.toFixed(1).padStart(15)}`,
  );
}
console.log(JSON.stringify(rows));
await srv.shutdown();
