// The worker side of routes/json_body.ts: parses one request body at a time and counts its
// values, so that a huge or deeply nested body costs this thread, never the server's event loop.
// A body over the limits is refused here, before it is copied back.

/// <reference lib="deno.worker" />

/**
 * Whether `v` keeps within the limits: at most `maxValues` JSON values in all (numbers, strings,
 * booleans, nulls, arrays, objects), `maxMembers` members per object and `maxDepth` levels of
 * nesting. A million-key object took the event loop 0.4 s to receive, as many values as 2M
 * token ids 0.08 s; a million levels overflow the stack of the copy back (structured clone
 * recurses).
 */
function withinLimits(v: unknown, limits: Limits): boolean {
  const stack: unknown[] = [v];
  const depths: number[] = [0];
  let n = 0;
  while (stack.length > 0) {
    const x = stack.pop();
    const depth = depths.pop()!;
    if (++n > limits.maxValues || depth > limits.maxDepth) return false;
    const members = Array.isArray(x)
      ? x
      : typeof x === "object" && x !== null
      ? Object.values(x)
      : null;
    if (members === null) continue;
    if (members.length > limits.maxMembers) return false;
    for (const y of members) stack.push(y), depths.push(depth + 1);
  }
  return true;
}

interface Limits {
  maxValues: number;
  maxMembers: number;
  maxDepth: number;
}

self.onmessage = (e: MessageEvent) => {
  const { id, body, limits } = e.data as { id: number; body: ArrayBuffer; limits: Limits };
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(body));
  } catch {
    return self.postMessage({ id, error: "invalid" });
  }
  if (!withinLimits(value, limits)) return self.postMessage({ id, error: "too_many" });
  try {
    self.postMessage({ id, value });
  } catch {
    self.postMessage({ id, error: "too_many" }); // cannot be copied back: too large or too deep
  }
};
