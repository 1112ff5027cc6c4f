// Reads a /v1/completions SSE stream byte-exactly and checks its framing: events are
// `data: <json>\n\n` (comment lines `:` allowed), chunks are text_completion objects of one id,
// finish_reason is null until each choice's last chunk, the optional usage chunk has
// choices: [], and `data: [DONE]` ends the stream with nothing after it.

export interface SseResult {
  chunks: Record<string, unknown>[];
  text: string; // choice 0's text, concatenated
  finishReason: string | null;
  usage: Record<string, number> | null;
  done: boolean; // saw data: [DONE]
  aborted: boolean; // the reader stopped early (abortAfterChunks)
  problems: string[]; // framing / shape violations
}

export interface SseOptions {
  /** Stop reading (and abort) after this many data events. */
  abortAfterChunks?: number;
  abort?: AbortController;
}

export async function readSse(res: Response, opts: SseOptions = {}): Promise<SseResult> {
  const out: SseResult = {
    chunks: [],
    text: "",
    finishReason: null,
    usage: null,
    done: false,
    aborted: false,
    problems: [],
  };
  const problem = (p: string) => out.problems.length < 10 && out.problems.push(p);
  const ct = res.headers.get("content-type") ?? "";
  if (!ct.startsWith("text/event-stream")) problem(`content-type ${ct}`);
  const reader = res.body!.getReader();
  const dec = new TextDecoder("utf-8", { fatal: true });
  let buf = "";
  let id: unknown = null;
  for (;;) {
    let r: ReadableStreamReadResult<Uint8Array>;
    try {
      r = await reader.read();
    } catch (e) {
      // The client itself aborted (a disconnect test), or the server broke the stream.
      out.aborted = opts.abort?.signal.aborted ?? false;
      if (out.aborted) break;
      problem(`stream broke: ${(e as Error).message}`);
      break;
    }
    if (r.done) break;
    try {
      buf += dec.decode(r.value, { stream: true });
    } catch {
      problem("invalid UTF-8 in the stream");
      break;
    }
    let end: number;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = event.split("\n").filter((l) => !l.startsWith(":"));
      if (data.length === 0) continue;
      if (data.length !== 1 || !data[0].startsWith("data: ")) {
        problem(`bad event ${JSON.stringify(event.slice(0, 80))}`);
        continue;
      }
      if (out.done) problem("data after [DONE]");
      const payload = data[0].slice(6);
      if (payload === "[DONE]") {
        out.done = true;
        continue;
      }
      let chunk: Record<string, unknown>;
      try {
        chunk = JSON.parse(payload);
      } catch {
        problem(`not JSON: ${payload.slice(0, 80)}`);
        continue;
      }
      out.chunks.push(chunk);
      checkChunk(chunk, out, problem, id);
      id ??= chunk.id;
      if (opts.abortAfterChunks !== undefined && out.chunks.length >= opts.abortAfterChunks) {
        out.aborted = true;
        opts.abort?.abort();
        await reader.cancel().catch(() => {});
        return out;
      }
    }
  }
  if (buf.trim() !== "") problem(`unterminated event ${JSON.stringify(buf.slice(0, 80))}`);
  if (!out.done && !out.aborted) problem("no [DONE]");
  if (!out.aborted && out.finishReason === null) problem("no finish_reason");
  return out;
}

function checkChunk(
  c: Record<string, unknown>,
  out: SseResult,
  problem: (p: string) => void,
  id: unknown,
): void {
  if ("error" in c) return problem(`error event: ${JSON.stringify(c.error).slice(0, 200)}`);
  if (c.object !== "text_completion") problem(`object ${c.object}`);
  if (typeof c.id !== "string" || (id !== null && c.id !== id)) problem(`id ${c.id}`);
  if (!Array.isArray(c.choices)) return problem("choices is not an array");
  if (c.choices.length === 0) {
    if (out.usage) problem("two usage chunks");
    out.usage = c.usage as Record<string, number>;
    if (typeof out.usage?.completion_tokens !== "number") problem("usage chunk without usage");
    return;
  }
  if (out.usage) problem("content after the usage chunk");
  for (const ch of c.choices as Record<string, unknown>[]) {
    if (typeof ch.text !== "string" || typeof ch.index !== "number") problem("choice shape");
    if (!("logprobs" in ch) || !("finish_reason" in ch)) problem("choice keys missing");
    if (ch.index !== 0) continue;
    if (out.finishReason !== null) problem("chunk after finish_reason");
    out.text += ch.text as string;
    if (ch.finish_reason !== null) {
      if (ch.finish_reason !== "stop" && ch.finish_reason !== "length") {
        problem(`finish_reason ${ch.finish_reason}`);
      }
      out.finishReason = ch.finish_reason as string;
    }
  }
}
