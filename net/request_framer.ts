// The client-to-server half of one HTTP/1.1 connection, as the front door (net/front_door.ts)
// forwards it: where each request's head starts and ends, and how long its body is
// (Content-Length or chunked), so that every head can be checked before the HTTP server sees
// it: oversized (431), malformed (400), and tagged with the connection's id. Bodies pass
// through as they come.

/** A request the front door answers itself, then closes the connection. */
export interface Refusal {
  status: 400 | 431;
  message: string;
}

export interface FramerLimits {
  maxHeadBytes: number; // request line + headers
  maxHeaders: number;
}

type State =
  | { kind: "head" }
  | { kind: "body"; left: number } // Content-Length bytes still to come
  | { kind: "chunk-size"; line: number } // bytes of the size line so far
  | { kind: "chunk-data"; left: number } // data + its CRLF
  | { kind: "trailer"; line: number; empty: boolean };

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.[01]$/;
const CRLF2 = [13, 10, 13, 10];
const MAX_LINE = 4096; // a chunk-size or trailer line; longer ones are an attack, not a body

function indexOfCrlf2(buf: Uint8Array, from: number): number {
  outer: for (let i = Math.max(0, from); i + 4 <= buf.length; i++) {
    for (let k = 0; k < 4; k++) if (buf[i + k] !== CRLF2[k]) continue outer;
    return i;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

export class RequestFramer {
  #state: State = { kind: "head" };
  #head: Uint8Array = new Uint8Array(0); // the head read so far
  #tag: string;
  #limits: FramerLimits;
  /** Heads forwarded so far. */
  requests = 0;

  #tagName: string;

  /** `tag` is a header line (without CRLF) put in every head, e.g. "x-nsn-conn: 7". */
  constructor(tag: string, limits: FramerLimits) {
    this.#tag = tag;
    this.#tagName = tag.slice(0, tag.indexOf(":")).toLowerCase();
    this.#limits = limits;
  }

  /** Between requests with nothing of the next one read yet. */
  get idle(): boolean {
    return this.#state.kind === "head" && this.#head.length === 0;
  }

  /** Part of a head has come, not all of it: the header-read timeout runs. */
  get readingHead(): boolean {
    return this.#state.kind === "head" && this.#head.length > 0;
  }

  /** Bytes from the client -> bytes to forward, or a refusal (nothing more is forwarded). */
  feed(chunk: Uint8Array): Uint8Array[] | Refusal {
    const out: Uint8Array[] = [];
    let at = 0;
    while (at < chunk.length) {
      const s = this.#state;
      if (s.kind === "head") {
        const scanFrom = this.#head.length - 3;
        this.#head = concat(this.#head, chunk.subarray(at));
        at = chunk.length;
        // Blank lines before a request are allowed (RFC 9112 2.2).
        let skip = 0;
        while (this.#head[skip] === 13 || this.#head[skip] === 10) skip++;
        if (skip > 0) this.#head = this.#head.subarray(skip);
        const end = indexOfCrlf2(this.#head, skip > 0 ? 0 : scanFrom);
        if (end < 0) {
          if (this.#head.length > this.#limits.maxHeadBytes) return this.#tooLarge();
          continue;
        }
        if (end + 4 > this.#limits.maxHeadBytes) return this.#tooLarge();
        const rest = this.#head.subarray(end + 4);
        const head = new TextDecoder().decode(this.#head.subarray(0, end));
        this.#head = new Uint8Array(0);
        const parsed = this.#parseHead(head);
        if ("status" in parsed) return parsed;
        out.push(parsed.bytes);
        this.requests++;
        this.#state = parsed.next;
        chunk = rest;
        at = 0;
      } else if (s.kind === "body" || s.kind === "chunk-data") {
        const n = Math.min(s.left, chunk.length - at);
        out.push(chunk.subarray(at, at + n));
        at += n;
        s.left -= n;
        if (s.left === 0) this.#state = s.kind === "body" ? { kind: "head" } : this.#sizeLine();
      } else {
        // Chunk size lines and trailers: forwarded a byte at a time, read only for their ends.
        const start = at;
        while (at < chunk.length && this.#state === s) this.#lineByte(s, chunk, at++);
        if (s.line > MAX_LINE) return { status: 400, message: "Malformed chunked request body." };
        out.push(chunk.subarray(start, at));
      }
    }
    return out;
  }

  #sizeLine(): State {
    this.#sizeText = "";
    return { kind: "chunk-size", line: 0 };
  }

  #sizeText = "";

  #lineByte(s: State & { line: number }, chunk: Uint8Array, i: number): void {
    const b = chunk[i];
    s.line++;
    if (s.kind === "chunk-size") {
      if (b !== 10) {
        this.#sizeText += String.fromCharCode(b);
        return;
      }
      const size = parseInt(this.#sizeText.split(";")[0].trim(), 16);
      // A size the server will reject anyway: stop framing, let it answer.
      if (!Number.isFinite(size)) this.#state = { kind: "body", left: Infinity };
      else if (size === 0) this.#state = { kind: "trailer", line: 0, empty: true };
      else this.#state = { kind: "chunk-data", left: size + 2 };
    } else if (s.kind === "trailer") {
      if (b === 10) {
        if (s.empty) this.#state = { kind: "head" };
        else Object.assign(s, { line: 0, empty: true });
      } else if (b !== 13) s.empty = false;
    }
  }

  #tooLarge(): Refusal {
    return {
      status: 431,
      message: `The request head (request line and headers) exceeds ` +
        `${this.#limits.maxHeadBytes} bytes.`,
    };
  }

  #parseHead(head: string): { bytes: Uint8Array; next: State } | Refusal {
    const lines = head.split("\r\n");
    const m = REQUEST_LINE.exec(lines[0]);
    if (!m) return { status: 400, message: "Malformed HTTP request line." };
    if (lines.length - 1 > this.#limits.maxHeaders) {
      return { status: 431, message: `More than ${this.#limits.maxHeaders} header fields.` };
    }
    let length: number | null = null;
    let chunked = false;
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon);
      if (colon <= 0 || !TOKEN.test(name)) {
        return { status: 400, message: "Malformed HTTP header field." };
      }
      const value = line.slice(colon + 1).trim();
      const lower = name.toLowerCase();
      if (lower === "content-length") {
        if (!/^\d{1,15}$/.test(value) || (length !== null && length !== +value)) {
          return { status: 400, message: "Invalid Content-Length header." };
        }
        length = +value;
      } else if (lower === "transfer-encoding") {
        if (value.toLowerCase() !== "chunked") {
          return { status: 400, message: "Only the chunked Transfer-Encoding is supported." };
        }
        chunked = true;
      }
    }
    if (chunked && length !== null) {
      return { status: 400, message: "Both Content-Length and Transfer-Encoding were sent." };
    }
    // The client's own copy of the tag header, if any, is dropped: only ours counts.
    const fields = lines.slice(1).filter((l) => !l.toLowerCase().startsWith(this.#tagName + ":"));
    const bytes = new TextEncoder().encode(
      `${lines[0]}\r\n${this.#tag}\r\n${fields.map((l) => l + "\r\n").join("")}\r\n`,
    );
    let next: State = { kind: "head" };
    if (chunked) next = this.#sizeLine();
    else if (length) next = { kind: "body", left: length };
    return { bytes, next };
  }
}
