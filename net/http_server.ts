// Deno.serve on a private unix socket, behind net/front_door.ts. It tracks the requests each
// front-door connection has in flight and answered (from CONN_HEADER): the door's idle timeout
// never closes a connection whose response is still being worked on (or not yet picked up), and
// when the door sees a client go (clientGone) those requests' signals abort at once. Deno.serve alone aborts request.signal
// only when it writes to the connection, so a non-streaming request whose client hung up ran on
// to max_tokens. If Deno.serve ever fails (its accept() out of file descriptors ends it), it is
// started again on a fresh socket rather than leaving the process unable to serve.

import { CONN_HEADER } from "./front_door.ts";

type Fetch = (req: Request) => Response | Promise<Response>;

export class HttpServer {
  #dir = Deno.makeTempDirSync({ prefix: "nsn-http-" });
  #fetch: Fetch;
  #log: (msg: string) => void;
  #server!: Deno.HttpServer<Deno.UnixAddr>;
  #generation = 0;
  // Open front-door connections: the requests being answered and how many were answered.
  #conns = new Map<number, { requests: Set<AbortController>; answered: number }>();
  #closing = false;

  constructor(fetch: Fetch, log: (msg: string) => void) {
    this.#fetch = fetch;
    this.#log = log;
    this.#start();
  }

  /** Where the front door connects. */
  get path(): string {
    return `${this.#dir}/http-${this.#generation}.sock`;
  }

  /** Front-door connection `id` opened: its requests are tracked until close(id). */
  open(id: number): void {
    this.#conns.set(id, { requests: new Set(), answered: 0 });
  }

  close(id: number): void {
    this.#conns.delete(id);
  }

  /** Requests of front-door connection `id` answered in full. */
  answered(id: number): number {
    return this.#conns.get(id)?.answered ?? 0;
  }

  /** The client of connection `id` is gone: abort the signals of its requests. */
  clientGone(id: number): void {
    for (const ac of this.#conns.get(id)?.requests ?? []) ac.abort();
  }

  /** No new connections; waits for the requests in flight. */
  async shutdown(): Promise<void> {
    this.#closing = true;
    await this.#server.shutdown();
    Deno.removeSync(this.#dir, { recursive: true });
  }

  #start(): void {
    this.#generation++;
    this.#server = Deno.serve({ path: this.path, onListen: () => {} }, (req, info) => {
      const id = Number(req.headers.get(CONN_HEADER));
      const ac = new AbortController();
      const conn = this.#conns.get(id); // none once the door has closed the connection
      conn?.requests.add(ac);
      info.completed.finally(() => {
        if (!conn) return;
        conn.requests.delete(ac);
        conn.answered++;
      });
      return this.#fetch(new Request(req, { signal: AbortSignal.any([req.signal, ac.signal]) }));
    });
    this.#server.finished.catch((e) => {
      if (this.#closing) return;
      this.#log(`the HTTP server failed (${e}); starting it again`);
      setTimeout(() => this.#start(), 100);
    });
  }
}
