// The HTTP-level half of tests/hostile_requests.ts: bad X-KV-Bits and Content-Type headers,
// bad Authorization against a server started with --api-key, /tokenize and /detokenize
// abuse, and odd methods and paths on every route.

import { type AddCase, body, type GeneratorContext } from "../hostile_requests.ts";

const JSON_CT: [string, string] = ["Content-Type", "application/json"];

// Only "16", "2" and "1" (decimal, nothing else) name a KV precision.
const KV_BAD = "3 0 4 8 32 -1 16,16 2,1 abc 1.5 16.5 0x10 0b10 0o2 1e0 Infinity NaN true 16bits"
  .split(" ");

// Bodies a client might send with a Content-Type that is not JSON: none of them is valid JSON
// (or it is JSON with a bad field), so each is a 400 whatever the server thinks of the type.
const CT_BAD: [string, string][] = [
  ["text/plain", "prompt=a"],
  ["application/x-www-form-urlencoded", "prompt=a&max_tokens=2"],
  ["multipart/form-data; boundary=x", '--x\r\nContent-Disposition: form-data; name="p"\r\n\r\na'],
  ["application/xml", "<prompt>a</prompt>"],
  ["application/json", "prompt: a"],
  ["", "prompt=a"],
];

export function httpCases(ctx: GeneratorContext, add: AddCase): void {
  const V = ctx.vocabSize;
  const ok = body({});

  // X-KV-Bits: empty, malformed, out of the set, repeated.
  for (const v of ["", ...KV_BAD]) {
    add("header", `X-KV-Bits ${JSON.stringify(v)}`, ok, { headers: [JSON_CT, ["X-KV-Bits", v]] });
  }
  for (const [x, y] of [["16", "2"], ["2", "2"], ["1", "abc"]]) {
    const headers: [string, string][] = [JSON_CT, ["X-KV-Bits", x], ["X-KV-Bits", y]];
    add("header", `X-KV-Bits repeated ${x} / ${y}`, ok, { headers });
  }
  const badBody = body({ max_tokens: "-1" });
  add("header", "X-KV-Bits 1 with a bad body", badBody, { headers: [JSON_CT, ["X-KV-Bits", "1"]] });
  const ctBad = [...CT_BAD, ["text/plain", body({ max_tokens: "-3" })]];
  ctBad.push(["application/octet-stream", body({ temperature: "9" })]);
  for (const [ct, b] of ctBad) {
    const name = `Content-Type ${JSON.stringify(ct)} body ${JSON.stringify(b.slice(0, 24))}`;
    add("header", name, b, { headers: [["Content-Type", ct]] });
  }

  // Authorization (the server runs with --api-key): 401 on every route but /health.
  const k = ctx.apiKey;
  const authBad: [string, string][][] = [
    [],
    [["Authorization", "Bearer wrong"]],
    [["Authorization", "Bearer"]],
    [["Authorization", "Bearer "]],
    [["Authorization", k]],
    [["Authorization", `Basic ${btoa(`user:${k}`)}`]],
    [["Authorization", `Bearer ${k}x`]],
    [["Authorization", `Bearer ${k.slice(0, -1)}`]],
    [["Authorization", `Bearer  ${k}`]],
    [["Authorization", `Token ${k}`]],
    [["Authorization", `Bearer ${k}`], ["Authorization", "Bearer wrong"]],
    [["Authorization", "Bearer wrong"], ["Authorization", `Bearer ${k}`]],
    [["X-Api-Key", k]],
  ];
  const authRoutes = [["POST", "/v1/completions"], ["GET", "/v1/models"], ["POST", "/tokenize"]];
  // /metrics, /health, /ping and /version stay open for scrapers and probes (protocol_test.ts).
  authRoutes.push(["GET", "/tokenizer_info"]);
  for (const [i, h] of authBad.entries()) {
    for (const [method, path] of authRoutes) {
      add("auth", `auth #${i} ${method} ${path}`, method === "GET" ? undefined : ok, {
        method,
        path,
        headers: [JSON_CT, ...h],
        auth: false,
        status: 401,
      });
    }
  }

  // /tokenize and /detokenize.
  const tok = (name: string, b: string) => add("tokenize", name, b, { path: "/tokenize" });
  for (const p of ["1", "null", "[]", '["a"]', "{}", "true", "[1,2]"]) {
    tok(`tokenize prompt ${p}`, `{"prompt":${p}}`);
  }
  for (const s of ['"yes"', "1", "[]", "{}"]) {
    tok(`tokenize add_special_tokens ${s}`, `{"prompt":"a","add_special_tokens":${s}}`);
  }
  const nested = "[".repeat(100_000) + "]".repeat(100_000);
  ["", "{", "[]", "42", '"a"', "{}", nested].forEach((b, i) => tok(`tokenize body #${i}`, b));
  const detok = ['"abc"', "[-1]", `[${V}]`, "[1.5]", '["1"]', "[[1]]", "{}", "[null]", "[1e309]"];
  detok.push("null", "1", `[${"1,".repeat(999_999)}${V}]`);
  for (const t of detok) {
    add("tokenize", `detokenize ${t.slice(0, 30)}`, `{"tokens":${t}}`, { path: "/detokenize" });
  }
  add("tokenize", "detokenize without tokens", "{}", { path: "/detokenize" });

  // Odd methods and paths.
  const routes = ["/v1/models", "/v1/completions", "/tokenize", "/detokenize", "/health"];
  routes.push("/metrics", "/tokenizer_info");
  for (const path of routes) {
    for (const method of ["PUT", "DELETE", "PATCH", "OPTIONS", "FOO"]) {
      add("method", `${method} ${path}`, undefined, { method, path, headers: [] });
    }
  }
  for (const path of ["/v1/completions", "/tokenize", "/detokenize"]) {
    add("method", `GET ${path}`, undefined, { method: "GET", path, headers: [] });
  }
  for (const path of ["/v1/models", "/health", "/metrics", "/tokenizer_info"]) {
    add("method", `POST ${path}`, ok, { path });
  }
  const models = ["/v1/models/nope", "/v1/models/%00", "/v1/models/..%2F..%2Fetc%2Fpasswd"];
  for (const path of models) add("method", `GET ${path}`, undefined, { method: "GET", path });
  const paths = ["/v1/chat/completions", "/v1/completions/x", "/V1/COMPLETIONS", "/v2/completions"];
  paths.push("/v1/completions%00", "/v1/embeddings", "/v1/engines/demo/completions");
  for (const path of paths) add("method", `POST ${path}`, ok, { path });
}
