// Deno.serve on a private unix socket, behind net/front_door.ts. It tracks the requests each
// front-door connection has in flight (from CONN_HEADER): the door's idle timeout never closes a
// connection whose response is still being worked on, and when the door sees a client go
// (clientGone) those requests' signals abort at once. Deno.serve alone aborts request.signal
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
  #inFlight = new Map<number, Set<AbortController>>(); // connection id -> its requests
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

  /** Requests of front-door connection `id` not yet answered in full. */
  inFlight(id: number): number {
    return this.#inFlight.get(id)?.size ?? 0;
  }

  /** The client of connection `id` is gone: abort the signals of its requests. */
  clientGone(id: number): void {
    for (const ac of this.#inFlight.get(id) ?? []) ac.abort();
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
      const mine = this.#inFlight.get(id) ?? new Set();
      this.#inFlight.set(id, mine.add(ac));
      info.completed.finally(() => {
        mine.delete(ac);
        if (mine.size === 0) this.#inFlight.delete(id);
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
