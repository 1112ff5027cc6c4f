// Option values of `deno task bench` and `deno task eval` (and the server's integer flags, in
// main.ts), checked where they are parsed: a value that is not what the flag means is an error
// naming the flag (`--concurrency 0` used to hang, `--concurrency abc` silently meant unlimited,
// `--num-prompts 0` printed zeros).

/**
 * A decimal integer >= min (and <= max); undefined when the flag is absent. "0x10", "1e3", "8.0"
 * and " 8" are refused, not reinterpreted.
 */
export function intArg(
  flag: string,
  v: string | undefined,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  if (v === undefined) return undefined;
  const n = /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new Error(`--${flag} must be an integer ${range}, got ${JSON.stringify(v)}`);
  }
  return n;
}

/** A comma-separated list of integers >= min, at least one. */
export function intListArg(flag: string, v: string | undefined, min: number): number[] | undefined {
  if (v === undefined) return undefined;
  const parts = v.split(",").map((x) => x.trim());
  if (parts.length === 0 || parts.some((x) => x === "")) {
    throw new Error(
      `--${flag} must be a comma-separated list of integers, got ${JSON.stringify(v)}`,
    );
  }
  return parts.map((x) => intArg(flag, x, min)!);
}

/** A number > 0, or "inf". */
export function rateArg(flag: string, v: string): number {
  if (v === "inf") return Infinity;
  const n = /^\d+(\.\d+)?$/.test(v) ? Number(v) : NaN;
  if (!(n > 0)) {
    throw new Error(`--${flag} must be a number > 0 or "inf", got ${JSON.stringify(v)}`);
  }
  return n;
}

/** One of `choices`. */
export function choiceArg<T extends string>(flag: string, v: string, choices: readonly T[]): T {
  if (!choices.includes(v as T)) {
    throw new Error(`--${flag} must be one of ${choices.join(", ")}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}
