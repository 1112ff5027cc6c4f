// The typed field readers behind request validation. Each takes the body and a key; absent or
// null gives the fallback, and a wrong type or range is a 400 naming the field in `param`.

import { badRequest } from "./errors.ts";

/** A client's value quoted in an error, cut short: errors never echo megabytes back. */
export function show(v: unknown): string {
  let s: string;
  try {
    // JSON.stringify turns non-finite numbers into "null": show them as they are.
    s = typeof v === "number" ? String(v) : JSON.stringify(v) ?? String(v);
  } catch {
    s = Array.isArray(v) ? "an array" : typeof v;
  }
  return s.length > 80 ? `${s.slice(0, 60)}... (${s.length} characters)` : s;
}

export type Body = Record<string, unknown>;

/** A JSON object (not null, not an array). */
export function isObject(v: unknown): v is Body {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function present(b: Body, key: string): boolean {
  return b[key] !== undefined && b[key] !== null;
}

export function number(
  b: Body,
  key: string,
  fallback: number,
  lo: number,
  hi: number,
  loOpen = false,
) {
  if (!present(b, key)) return fallback;
  const v = b[key];
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw badRequest(key, `'${key}' must be a number, got ${show(v)}.`);
  }
  const range = `${loOpen ? "(" : "["}${lo}, ${hi}]`;
  if (v > hi || v < lo || (loOpen && v === lo)) {
    throw badRequest(key, `'${key}' must be in ${range}, got ${v}.`);
  }
  // The native engine reads sampling fields as float32, where a denormal double such as 5e-324
  // becomes 0: check the value it will see.
  const f = Math.fround(v);
  if (f > hi || f < lo || (loOpen && f === lo)) {
    throw badRequest(key, `'${key}' must be in ${range} as a float32, got ${v} (${f} in float32).`);
  }
  return v;
}

export function integer(b: Body, key: string, fallback: number, lo: number, hi: number): number {
  if (!present(b, key)) return fallback;
  const v = b[key];
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw badRequest(key, `'${key}' must be an integer, got ${show(v)}.`);
  }
  if (v < lo || v > hi) throw badRequest(key, `'${key}' must be in [${lo}, ${hi}], got ${v}.`);
  return v;
}

export function boolean(b: Body, key: string, fallback: boolean): boolean {
  if (!present(b, key)) return fallback;
  const v = b[key];
  if (typeof v !== "boolean") {
    throw badRequest(key, `'${key}' must be a boolean, got ${show(v)}.`);
  }
  return v;
}

export function tokenId(v: unknown, key: string, vocab: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= vocab) {
    throw badRequest(
      key,
      `'${key}' holds an invalid token id ${show(v)} ` +
        `(the vocabulary has ids 0..${vocab - 1}).`,
    );
  }
  return v;
}

export function stops(b: Body): string[] {
  if (!present(b, "stop")) return [];
  const v = b.stop;
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string")) {
    throw badRequest("stop", "'stop' must be a string or an array of strings.");
  }
  if (list.length > 4) throw badRequest("stop", "'stop' takes at most 4 sequences.");
  return (list as string[]).filter((s) => s.length > 0);
}

export function logitBias(b: Body, vocab: number): Map<number, number> {
  const m = new Map<number, number>();
  if (!present(b, "logit_bias")) return m;
  const v = b.logit_bias;
  if (typeof v !== "object" || Array.isArray(v)) {
    throw badRequest("logit_bias", "'logit_bias' must be an object of token id -> bias.");
  }
  for (const [key, bias] of Object.entries(v as Body)) {
    const id = /^\d+$/.test(key) ? Number(key) : NaN;
    if (!Number.isInteger(id) || id >= vocab) {
      throw badRequest("logit_bias", `'logit_bias' key ${show(key)} is not a token id.`);
    }
    if (typeof bias !== "number" || !Number.isFinite(bias) || bias < -100 || bias > 100) {
      throw badRequest("logit_bias", `'logit_bias' values must be in [-100, 100].`);
    }
    m.set(id, bias);
  }
  return m;
}

// A bias no logit survives (finite, as the engine requires): exp() of it is 0 in float32.
const BANNED = -1e9;

/**
 * vLLM's allowed_token_ids: every other token is banned, through the logit bias the sampler
 * already applies (logit_bias entries of allowed tokens keep their value).
 */
export function allowOnly(b: Body, vocab: number, bias: Map<number, number>): Map<number, number> {
  if (!present(b, "allowed_token_ids")) return bias;
  const list = b.allowed_token_ids;
  if (!Array.isArray(list) || list.length === 0) {
    throw badRequest("allowed_token_ids", "'allowed_token_ids' must be a non-empty array of ids.");
  }
  const allowed = new Set(list.map((x) => tokenId(x, "allowed_token_ids", vocab)));
  const out = new Map(bias);
  for (let id = 0; id < vocab; id++) if (!allowed.has(id)) out.set(id, BANNED);
  return out;
}
