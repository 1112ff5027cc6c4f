// The TCP side of the server. Deno.serve has no connection limit and no timeouts, and when
// accept() fails with "Too many open files" its server dies and the process exits 1: about 290
// idle sockets killed it at a soft limit of 256. So clients connect here, and each connection
// is piped to Deno.serve on a private unix socket, with:
//   - at most maxConnections open (503 and close beyond), accept errors survived (EMFILE:
//     wait, accept again; the connections already open keep being served);
//   - a header-read timeout (408) and an idle keep-alive timeout;
//   - a write timeout: a client that stops reading is dropped, so its request is cancelled
//     instead of piling up output;
//   - request heads checked before the HTTP server sees them (net/request_framer.ts): 431 and
//     400 with OpenAI error bodies.
// Each forwarded head carries CONN_HEADER, so the app can tell which connection has requests
// in flight (heads forwarded less those answered; an idle connection is one with none and no
// bytes moving) and cancel them
// the moment their client goes (onClientGone).

import { type Refusal, RequestFramer } from "./request_framer.ts";

export const CONN_HEADER = "x-nsn-conn";

/** Refusals (503 beyond maxConnections) written at once; main.ts leaves room for them. */
export const MAX_REFUSING = 16;

export interface FrontDoorOptions {
  hostname: string;
  port: number;
  /** The unix socket Deno.serve listens on now. */
  upstreamPath: () => string;
  maxConnections: number;
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  writeTimeoutMs: number;
  maxHeadBytes: number;
  /** Connection `id` opened (before any of its bytes are forwarded) or ended. */
  onOpen: (id: number) => void;
  onClose: (id: number) => void;
  /**
   * Requests of connection `id` the HTTP server has answered in full. With the heads the door
   * forwarded, it says whether a request is still being worked on, including one forwarded
   * but not yet picked up by the server (a busy event loop), which must not count as idle.
   */
  answered: (id: number) => number;
  /**
   * The client of connection `id` closed or was dropped: its requests are to be cancelled.
   * Deno.serve itself notices a hang-up only when it next writes to the connection.
   */
  onClientGone: (id: number) => void;
  log: (msg: string) => void;
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
  503: "Service Unavailable",
};

/** A complete HTTP response with an OpenAI error body, ending the connection. */
export function errorResponse(status: number, message: string, code: string): Uint8Array {
  const type = status >= 500 ? "server_error" : "invalid_request_error";
  const body = JSON.stringify({ error: { message, type, param: null, code } });
  const retry = status === 503 ? "Retry-After: 1\r\n" : "";
  return new TextEncoder().encode(
    `HTTP/1.1 ${status} ${REASONS[status]}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${new TextEncoder().encode(body).length}\r\n${retry}` +
      `Connection: close\r\n\r\n${body}`,
  );
}

/** Writes all of `bytes`; false when the peer is gone or took longer than timeoutMs. */
async function writeAll(conn: Deno.Conn, bytes: Uint8Array, timeoutMs: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((r) => timer = setTimeout(() => r(null), timeoutMs));
  try {
    for (let off = 0; off < bytes.length;) {
      const n = await Promise.race([conn.write(bytes.subarray(off)), late]);
      if (n === null) return false;
      off += n;
    }
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

function closeQuietly(c: Deno.Conn): void {
  try {
    c.close();
  } catch { /* already closed */ }
}

export class FrontDoor {
  readonly addr: Deno.NetAddr;
  #opts: FrontDoorOptions;
  #listener: Deno.TcpListener;
  #open = new Map<number, () => void>(); // id -> close both ends
  #nextId = 0;
  #closing = false;
  #lastWarn = 0;
  #refusing = 0; // 503s being written to connections beyond maxConnections
  readonly #accepting: Promise<void>;

  constructor(opts: FrontDoorOptions) {
    this.#opts = opts;
    this.#listener = Deno.listen({ hostname: opts.hostname, port: opts.port });
    this.addr = this.#listener.addr;
    this.#accepting = this.#acceptLoop();
  }

  get connections(): number {
    return this.#open.size;
  }

  /** Stops accepting; open connections end when their upstream side does. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    await this.#accepting;
  }

  /**
   * After the HTTP server has shut down: lets the connections forward what they still hold,
   * for at most ms, then closes the rest.
   */
  async drain(ms: number): Promise<void> {
    const end = performance.now() + ms;
    while (this.#open.size > 0 && performance.now() < end) {
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const close of [...this.#open.values()]) close();
  }

  #warn(msg: string): void {
    const now = performance.now();
    if (now - this.#lastWarn < 10_000) return; // a flood would log a line per connection
    this.#lastWarn = now;
    this.#opts.log(msg);
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (e) {
        if (this.#closing || e instanceof Deno.errors.BadResource) return;
        // EMFILE / ENFILE / ECONNABORTED: transient. Keep serving what is open, try again.
        this.#warn(`accept failed (${(e as Error).message}); retrying`);
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (this.#open.size >= this.#opts.maxConnections) {
        this.#warn(`${this.#open.size} connections open (--max-connections): refusing more`);
        const msg = "The server has too many open connections; retry shortly.";
        const refusal = writeAll(conn, errorResponse(503, msg, "too_many_connections"), 1000)
          .finally(() => {
            closeQuietly(conn);
            this.#refusing--;
          });
        // Each refusal holds a descriptor until written. A flood accepted in one burst would
        // otherwise hold hundreds at once, past the room left for Deno.serve's own accept().
        if (++this.#refusing >= MAX_REFUSING) await refusal;
        continue;
      }
      const id = ++this.#nextId;
      this.#serve(conn, id).catch((e) => this.#warn(`connection failed: ${e}`))
        .finally(() => this.#open.delete(id));
    }
  }

  async #serve(client: Deno.TcpConn, id: number): Promise<void> {
    const o = this.#opts;
    this.#open.set(id, () => closeQuietly(client));
    o.onOpen(id);
    try {
      await this.#pipe(client, id);
    } finally {
      o.onClose(id);
    }
  }

  async #pipe(client: Deno.TcpConn, id: number): Promise<void> {
    const o = this.#opts;
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({ transport: "unix", path: o.upstreamPath() });
    } catch (e) {
      this.#warn(`cannot reach the HTTP server (${(e as Error).message})`);
      const msg = "The server cannot take a connection now; retry shortly.";
      await writeAll(client, errorResponse(503, msg, "too_many_connections"), 1000);
      closeQuietly(client);
      return;
    }
    let closed = false;
    const closeBoth = () => {
      if (!closed) o.onClientGone(id);
      closed = true;
      closeQuietly(client);
      closeQuietly(upstream);
    };
    this.#open.set(id, closeBoth);
    const framer = new RequestFramer(`${CONN_HEADER}: ${id}`, {
      maxHeadBytes: o.maxHeadBytes,
      maxHeaders: 100,
    });
    const busy = () => framer.requests > o.answered(id); // forwarded, not yet answered
    let lastActivity = performance.now();
    let headStart = lastActivity; // the first request's head is timed from the accept
    const refuse = async (status: number, message: string, code: string) => {
      // Only when no response is under way: the refusal must not land inside one.
      if (!busy()) await writeAll(client, errorResponse(status, message, code), 1000);
      closeBoth();
    };
    const tick = Math.max(50, Math.min(o.headerTimeoutMs, o.idleTimeoutMs) / 4);
    let lastTick = performance.now();
    const watchdog = setInterval(() => {
      if (closed) return;
      const now = performance.now();
      // A late tick means this process's event loop was blocked: bytes that arrived meanwhile
      // are still unread, so the blocked time does not count against the client.
      const stall = now - lastTick - tick;
      lastTick = now;
      if (stall > tick) {
        headStart += stall;
        lastActivity += stall;
        return;
      }
      const waitingHead = framer.readingHead || (framer.requests === 0 && framer.idle);
      if (waitingHead && now - headStart > o.headerTimeoutMs) {
        refuse(408, "The request head did not arrive in time.", "request_timeout");
      } else if (busy()) {
        // The keep-alive clock starts when the last response is out. The server may finish a
        // response whose bytes still sit in the unix socket, not yet read by `down`: a request
        // that took longer than the idle timeout must not be cut off in that gap.
        lastActivity = now;
      } else if (framer.idle && now - lastActivity > o.idleTimeoutMs) {
        closeBoth();
      }
    }, tick);

    const up = (async () => {
      const buf = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await client.read(buf).catch(() => null);
        if (n === null) {
          // EOF: the client is gone (a half-close counts, as for nginx). The server sees the
          // EOF too (a body cut short is a 400) and its requests are cancelled.
          o.onClientGone(id);
          return await upstream.closeWrite().catch(() => {});
        }
        lastActivity = performance.now();
        const wasIdle = framer.idle;
        const out = framer.feed(buf.slice(0, n));
        if (wasIdle && !framer.idle) headStart = lastActivity;
        if (!Array.isArray(out)) {
          const r = out as Refusal;
          const code = r.status === 431 ? "request_header_fields_too_large" : "bad_request";
          return await refuse(r.status, r.message, code);
        }
        for (const bytes of out) {
          if (!await writeAll(upstream, bytes, o.writeTimeoutMs)) return closeBoth();
        }
      }
    })();
    const down = (async () => {
      const buf = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await upstream.read(buf).catch(() => null);
        if (n === null) return;
        lastActivity = performance.now();
        // A client that stops reading fills its socket buffer; past the timeout it is dropped,
        // which cancels its request upstream instead of letting the output pile up.
        if (!await writeAll(client, buf.subarray(0, n), o.writeTimeoutMs)) return;
        lastActivity = performance.now();
      }
    })();
    await down;
    if (!closed) closeBoth();
    clearInterval(watchdog);
    await up;
  }
}
