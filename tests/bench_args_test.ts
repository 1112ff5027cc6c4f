// `deno task bench` and `deno task eval` options: --help works, and every value that is not
// what its flag means is an error naming the flag, before any model loads.

import assert from "node:assert/strict";
import { BENCH_USAGE, parseBenchArgs, runBench } from "../bench/bench.ts";

const ROOT = new URL("../", import.meta.url).pathname;

async function run(script: string, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}bench/${script}`, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("bench: bad option values are errors naming the flag", () => {
  const bad: [string[], RegExp][] = [
    [["--concurrency", "0"], /--concurrency must be an integer >= 1, got "0"/],
    [["--concurrency", "abc"], /--concurrency must be an integer/],
    [["--concurrency", "4,,8"], /--concurrency must be a comma-separated list/],
    [["--num-prompts", "0"], /--num-prompts must be an integer >= 1/],
    [["--input-len", "-5"], /--input-len/],
    [["--output-len", "1e3"], /--output-len/],
    [["--request-rate", "0"], /--request-rate must be a number > 0 or "inf"/],
    [["--request-rate", "fast"], /--request-rate/],
    [["--backend", "tpu"], /--backend must be one of auto, cpu, cuda/],
    [["--kv-bits", "3"], /kv bits must be 16, 2 or 1/],
    [["--kv-bits", ""], /at least one/],
    [["--batches", "0"], /--batches/],
    [["--seed", "x"], /--seed/],
    [["--url", "localhost:8000"], /--url must be http/],
    [["--url", "http://h:1", "--model", "demo"], /give one of them/],
  ];
  for (const [args, message] of bad) {
    assert.throws(() => parseBenchArgs(args), message, args.join(" "));
  }
  const ok = parseBenchArgs(["--concurrency", "1,4", "--num-prompts", "auto", "--seed", "3"]);
  assert.deepEqual(ok.concurrency, [1, 4]);
  assert.equal(ok.numPrompts, "auto");
  assert.equal(ok.requestRate, Infinity);
});

Deno.test("bench: --input-len beyond the model's context says so before starting", async () => {
  const a = parseBenchArgs(["--backend", "cpu", "--input-len", "100000", "--no-progress"]);
  await assert.rejects(
    runBench(a),
    /--input-len 100000 \+ --output-len 32 is more than the model's context \(\d+ tokens of demo\)/,
  );
});

Deno.test("bench --help and eval --help print usage; bad eval values exit 1 naming the flag", async () => {
  const bench = await run("bench.ts", ["--help"]);
  assert.equal(bench.code, 0);
  assert.equal(bench.stdout.trim(), BENCH_USAGE);
  const evalHelp = await run("eval.ts", ["--help"]);
  assert.equal(evalHelp.code, 0);
  assert.match(evalHelp.stdout, /--no-progress/);
  const cases: [string[], RegExp][] = [
    [["--windows", "0"], /--windows must be an integer >= 1/],
    [["--ctx", "abc"], /--ctx must be an integer/],
    [["--ctx", "1000000", "--backend", "cpu"], /--ctx 1000000 is longer than the model's context/],
  ];
  for (const [args, message] of cases) {
    const r = await run("eval.ts", args);
    assert.equal(r.code, 1, args.join(" "));
    assert.match(r.stderr, message);
  }
  const b = await run("bench.ts", ["--concurrency", "0"]);
  assert.equal(b.code, 1);
  assert.match(b.stderr, /--concurrency must be an integer >= 1/);
});

Deno.test("eval: fewer full windows in the text than --windows asks is said, then run", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const text = `${dir}/short.txt`;
    await Deno.writeTextFile(text, "The dog ran to the park and back again. ".repeat(40));
    const r = await run("eval.ts", [
      ...["--text", text, "--ctx", "64", "--windows", "1000", "--kv-bits", "16"],
      ...["--backend", "cpu", "--no-progress"],
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /--windows 1000: the text holds (\d+) full windows of 64 tokens/);
    const n = /holds (\d+) full windows/.exec(r.stderr)![1];
    assert.match(r.stdout, new RegExp(`ctx 64 \\| ${n} windows`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
