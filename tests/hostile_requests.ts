// Generator of hostile HTTP requests for tests/hostile_test.ts. Every request here is invalid
// in one deliberate way on top of an otherwise valid one, so the only right answer is a 4xx
// with the OpenAI error shape. Bodies are raw text or bytes (never JSON.stringify of a JS
// value alone), because the interesting cases are the ones JSON.stringify cannot produce:
// NaN, 1e309, invalid UTF-8, duplicate keys, trailing garbage, lone surrogates. Headers,
// authorization, /tokenize and odd methods are in tests/helpers/hostile_http.ts.

import { httpCases } from "./helpers/hostile_http.ts";

export interface HostileRequest {
  kind: string; // category, for the report
  name: string; // unique, says what is wrong
  method: string;
  path: string;
  /** Header pairs; a name may repeat (fetch joins repeats into one "a, b" value). */
  headers: [string, string][];
  body?: string | Uint8Array<ArrayBuffer>;
  /** The exact status required; default: any 4xx. */
  status?: number;
  /** Send the server's API key (the auth cases set false and bring their own). */
  auth: boolean;
}

export interface GeneratorContext {
  vocabSize: number; // the demo model: 4096
  maxModelLen: number; // the demo model: 2048
  bodyLimit: number; // bytes (routes/state.ts: 32 MiB)
  apiKey: string;
}

export type AddCase = (
  kind: string,
  name: string,
  body: string | Uint8Array<ArrayBuffer> | undefined,
  extra?: Partial<HostileRequest>,
) => void;

/** One case per line of a raw template (no quoting, no escaping: what you see is sent). */
const lines = (s: string) => s.split("\n").slice(1, -1);

// Bodies that are not JSON, or not a JSON object (with three that need real control bytes).
const BROKEN = [
  ...lines(String.raw`
{
}
[
{"prompt":
{"prompt":"a"
{"prompt":"a",}
{'prompt':'a'}
{prompt:"a"}
{"prompt":"a"} trailing
{"prompt":"a"}{}
{"prompt":"a" /* c */}
{"prompt":"a"} // c
{"prompt":"\x41"}
{"prompt":"\u12"}
{"max_tokens":012,"prompt":"a"}
{"max_tokens":+1,"prompt":"a"}
{"max_tokens":.5,"prompt":"a"}
{"max_tokens":1.,"prompt":"a"}
{"max_tokens":1e,"prompt":"a"}
{"max_tokens":--1,"prompt":"a"}
{"max_tokens":0x10,"prompt":"a"}
{"prompt":NaN}
{"prompt":"a","temperature":NaN}
{"prompt":"a","temperature":Infinity}
{"prompt":"a","temperature":-Infinity}
{"prompt":undefined}
{"prompt":"a",,}
{"prompt" "a"}
{"prompt"::"a"}
{"prompt":"a"]
["prompt","a"}
null
true
false
42
-1
"prompt"
[]
[{"prompt":"a"}]
[[[]]]
{}
{"":""}
{"Prompt":"a"}
{"prompt ":"a"}
prompt=a&max_tokens=2
`),
  "",
  " ",
  '{"prompt":"a\nb"}',
  '{"prompt":"a\u0000"}',
  "\u0000",
  "\uFEFF{",
];

// Type-wrong JSON snippets, by the JSON type they have.
const NOT_NUMBER = ['"1"', '"abc"', '""', "true", "false", "[]", "[1]", "{}", '{"v":1}'];
const NOT_BOOL = ['"true"', '"false"', "1", "0", '""', "[]", "{}", "[true]", "0.0"];
const NOT_STRING = ["1", "0", "true", "[]", '["a"]', "{}", '{"a":"b"}', "1e309"];
// Numbers that JSON.parse turns into Infinity / -Infinity.
const OVERFLOW = ["1e309", "-1e309", "1e400", "-2e308"];

/** Integer fields: [lo, hi] inclusive, then more out-of-range values. */
const INT_FIELDS: Record<string, [number, number, ...string[]]> = {
  max_tokens: [0, 1 << 30, "2047", "2048", "4096", "1073741825", "2147483648", "1e20"],
  n: [1, 128, "1000000"],
  best_of: [1, 128],
  logprobs: [0, 20, "100", "-100"],
  top_k: [-1, 4096, "-2147483649"],
  min_tokens: [0, 1 << 30, "3"], // 3 > max_tokens 2 of the base body
  seed: [-(2 ** 53) + 1, 2 ** 53 - 1, "9007199254740993", "1e20", "-1e20"],
};

/** Number fields: [lo, hi, lo excluded?]. */
const NUM_FIELDS: Record<string, [number, number, boolean]> = {
  temperature: [0, 2, false],
  top_p: [0, 1, true],
  min_p: [0, 1, false],
  presence_penalty: [-2, 2, false],
  frequency_penalty: [-2, 2, false],
  repetition_penalty: [0, 2, true],
};

const BAD_PROMPTS = lines(String.raw`
null
[]
[[]]
[[1,2],[]]
[1,"a"]
["a",1]
[1.5]
[-1]
[VOCAB]
[2147483648]
[1e309]
[{}]
[null]
[true]
[[1,[2]]]
[[[1]]]
[["a"]]
{}
{"text":"a"}
42
true
false
-1
[1,1,1,1,1,1,1,1,1,1,-5]
[[1],[2],[VOCAB]]
[[1],[2.5]]
[1,null]
[[null]]
`);

const BAD_BIASES = lines(String.raw`
[]
[[1,2]]
"x"
1
true
{"-1":1}
{"a":1}
{"VOCAB":1}
{"1":101}
{"1":-101}
{"1":"5"}
{"1":null}
{"1":[1]}
{"1":{}}
{"1.5":1}
{"1e3":1}
{" 1":1}
{"":1}
{"99999999999999999999":1}
{"1":1e309}
{"1":-1e309}
{"1":true}
{"0x1":1}
{"1":1,"2":1000}
`);

const BAD_STOPS = lines(String.raw`
["a","b","c","d","e"]
[1]
[null]
{}
1
true
[["a"]]
["a",1]
[{"a":1}]
`);

const BAD_STOP_IDS = ['"1"', "[-1]", "[VOCAB]", "[1.5]", '["a"]', "{}", "[2,3,4,5,6,7,8,9,10]"];

/** The valid request every body case starts from: short prompt, 2 tokens. */
export function body(fields: Record<string, string>): string {
  const all: Record<string, string> = { prompt: '"Hello"', max_tokens: "2", ...fields };
  return `{${Object.entries(all).map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`;
}

const enc = new TextEncoder();
function bytes(...parts: (string | number[])[]): Uint8Array<ArrayBuffer> {
  const chunks = parts.map((p) => typeof p === "string" ? enc.encode(p) : new Uint8Array(p));
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let at = 0;
  for (const c of chunks) out.set(c, at), at += c.length;
  return out;
}

const deep = (d: number) => "[".repeat(d) + "]".repeat(d);
const repeat = (item: string, n: number, last = item) => `[${`${item},`.repeat(n - 1)}${last}]`;

export function generateHostileRequests(ctx: GeneratorContext): HostileRequest[] {
  const out: HostileRequest[] = [];
  const add: AddCase = (kind, name, b, extra = {}) =>
    out.push({
      kind,
      name,
      method: "POST",
      path: "/v1/completions",
      headers: [["Content-Type", "application/json"]],
      body: b,
      auth: true,
      ...extra,
    });
  const V = ctx.vocabSize;
  const vocab = (s: string) => s.replaceAll("VOCAB", String(V));

  BROKEN.forEach((b, i) => add("broken-json", `broken #${i} ${JSON.stringify(b.slice(0, 30))}`, b));
  add("broken-json", "no body at all", undefined);
  add("broken-json", "unclosed nesting 1e6", "[".repeat(1_000_000));
  add("broken-json", "unclosed object nesting 1e5", '{"a":'.repeat(100_000));

  // Invalid UTF-8: outside strings it breaks JSON; inside, the request is also wrong elsewhere.
  const badUtf8 = [[0xff], [0xfe, 0xff], [0xc3, 0x28], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0x80]];
  badUtf8.push([0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80]);
  badUtf8.forEach((seq, i) => {
    add("invalid-utf8", `bytes #${i} outside strings`, bytes("{", seq, '"prompt":"a"}'));
    const bad = bytes('{"prompt":"', seq, '","max_tokens":-1}');
    add("invalid-utf8", `bytes #${i} in prompt, bad max_tokens`, bad);
    add("invalid-utf8", `bytes #${i} in a key`, bytes('{"pro', seq, 'mpt":"a"}'));
    const model = bytes('{"prompt":"a","model":"', seq, '"}');
    add("invalid-utf8", `bytes #${i} as a model id`, model, { status: 404 });
  });
  const utf16 = [...enc.encode('{"prompt":"a"}')].flatMap((c) => [c, 0]);
  add("invalid-utf8", "utf-16 body", bytes([0xff, 0xfe], utf16), {
    headers: [["Content-Type", "application/json; charset=utf-16"]],
  });

  // The prompt: missing, empty, of no valid shape, ids outside the vocabulary, too long.
  for (const p of BAD_PROMPTS) add("prompt", `prompt ${vocab(p)}`, body({ prompt: vocab(p) }));
  add("prompt", "prompt missing", '{"max_tokens":2}');
  const L = ctx.maxModelLen;
  add("prompt", `prompt of ${L + 1} ids`, body({ prompt: repeat("7", L + 1) }));
  const full = body({ prompt: repeat("7", L), max_tokens: "1" });
  add("prompt", "prompt fills the context, max_tokens 1", full);
  add("prompt", "1M token ids", body({ prompt: repeat("5", 1_000_000) }));
  add("prompt", "1M ids, the last out of vocab", body({ prompt: repeat("5", 1_000_000, `${V}`) }));

  // Wrong types and out-of-range values for every typed field.
  for (const [f, [lo, hi, ...more]] of Object.entries(INT_FIELDS)) {
    const vals = [...NOT_NUMBER, ...OVERFLOW, "0.5", `${lo}.5`, `${lo - 1}`, `${hi + 1}`, ...more];
    for (const v of new Set(vals)) add("wrong-value", `${f} = ${v}`, body({ [f]: v }));
  }
  for (const [f, [lo, hi, loOpen]] of Object.entries(NUM_FIELDS)) {
    const vals = [...NOT_NUMBER, ...OVERFLOW, `${lo - 0.001}`, `${hi + 0.001}`, "1e38", "-1e38"];
    if (loOpen) vals.push(`${lo}`, "-0");
    for (const v of vals) add("wrong-value", `${f} = ${v}`, body({ [f]: v }));
  }
  for (const f of ["stream", "echo", "ignore_eos"]) {
    for (const v of NOT_BOOL) add("wrong-value", `${f} = ${v}`, body({ [f]: v }));
  }
  for (const f of ["model", "user"]) {
    for (const v of NOT_STRING) add("wrong-value", `${f} = ${v}`, body({ [f]: v }));
  }
  for (const v of ['"gpt-4"', '""', '"demo "', '"DEMO"', '"../demo"', '"demo\\u0000"']) {
    add("wrong-value", `unknown model ${v}`, body({ model: v }), { status: 404 });
  }
  for (const v of ['""', '"x"', "1", "[]"]) {
    add("wrong-value", `suffix = ${v}`, body({ suffix: v }));
  }

  // n / best_of abuse.
  const nAbuse: Record<string, string>[] = [
    { n: "3", best_of: "2" },
    { n: "2", best_of: "1" },
    { n: "1", best_of: "2", stream: "true" },
    { n: "128", best_of: "127" },
    { n: "0", best_of: "0" },
    { n: "-5", best_of: "-5" },
    { best_of: "1e309" },
    { prompt: repeat('"a"', 100), best_of: "128", n: "128" }, // 12800 sequences
    { prompt: repeat("[1]", 4097) }, // 4097 prompts
  ];
  nAbuse.forEach((f) => add("n-best_of", `n/best_of ${JSON.stringify(f).slice(0, 60)}`, body(f)));

  for (const v of BAD_BIASES) {
    add("logit_bias", `logit_bias ${vocab(v)}`, body({ logit_bias: vocab(v) }));
  }
  const manyKeys = Array.from({ length: 200_000 }, (_, i) => `"${i}":1`).join(",");
  add("logit_bias", "logit_bias with 200k keys", body({ logit_bias: `{${manyKeys}}` }));

  for (const v of BAD_STOPS) add("stop", `stop ${v}`, body({ stop: v }));
  add("stop", "stop of 1M strings", body({ stop: repeat('"x"', 1_000_000) }));
  for (const v of BAD_STOP_IDS) {
    add("stop", `stop_token_ids ${vocab(v)}`, body({ stop_token_ids: vocab(v) }));
  }

  // stream_options misuse, and bad fields on streaming requests: a 4xx before any SSE.
  const so: [string, string][] = [['{"include_usage":true}', "false"], ["{}", "false"]];
  so.push(['"x"', "true"], ["[]", "true"], ["1", "true"]);
  so.push(['{"include_usage":"yes"}', "true"], ['{"include_usage":1}', "true"]);
  for (const [v, stream] of so) {
    add(
      "stream_options",
      `stream_options ${v} stream ${stream}`,
      body({ stream_options: v, stream }),
    );
  }
  add("stream_options", "max_tokens 0, min_tokens 1", body({ max_tokens: "0", min_tokens: "1" }));
  for (
    const [f, v] of [["max_tokens", "-1"], ["temperature", "3"], ["logprobs", "21"], [
      "prompt",
      "[]",
    ]]
  ) {
    add("stream_options", `stream with ${f} = ${v}`, body({ stream: "true", [f]: v }));
  }

  // Deep nesting and huge values, within the body limit.
  add("huge", "prompt nested 1e5 deep", body({ prompt: deep(100_000) }));
  add("huge", "max_tokens nested 1e5 deep", body({ max_tokens: deep(100_000) }));
  add("huge", "temperature nested 1e6 deep", body({ temperature: deep(1_000_000) }));
  const objects = '{"a":'.repeat(100_000) + "1" + "}".repeat(100_000);
  add("huge", "objects nested 1e5 deep", body({ n: objects }));
  add("huge", "20 MB string as max_tokens", body({ max_tokens: `"${"x".repeat(20_000_000)}"` }));
  add("huge", "20 MB string as model", body({ model: `"${"m".repeat(20_000_000)}"` }), {
    status: 404,
  });
  const mb1 = JSON.stringify("the cat sat. ".repeat(80_000));
  add("huge", "1 MB text prompt (context overflow)", body({ prompt: mb1 }));
  // Within the limit but far beyond any context: must be refused without a long stall.
  const near = Math.floor(ctx.bodyLimit * 0.75);
  const nearText = `"${"ab ".repeat(near / 3)}"`;
  add("huge", `${(near / 2 ** 20).toFixed(0)} MB text prompt`, body({ prompt: nearText }));
  add("huge", "100k prompts x best_of 2", body({ prompt: repeat('"a"', 100_000), best_of: "2" }));

  // Beyond the body limit.
  const over = ctx.bodyLimit + 1024;
  const overBody = body({ prompt: `"${"a".repeat(over)}"` });
  add("oversized", "body over the limit", overBody, { status: 413 });
  add("oversized", "garbage over the limit", "x".repeat(over), { status: 413 });
  add("oversized", "tokenize body over the limit", overBody, { path: "/tokenize", status: 413 });

  httpCases(ctx, add);
  return out;
}
