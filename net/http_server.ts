// Deno.serve on a private unix socket, behind net/front_door.ts. It counts the requests each
// front-door connection has in flight (from CONN_HEADER), so that the door's idle timeout never
// closes a connection whose response is still being worked on. If Deno.serve ever fails (its
// accept() out of file descriptors ends it), it is started again on a fresh socket rather than
// leaving the process unable to serve.

import { CONN_HEADER } from "./front_door.ts";

type Fetch = (req: Request) => Response | Promise<Response>;

export class HttpServer {
  #dir = Deno.makeTempDirSync({ prefix: "nsn-http-" });
  #fetch: Fetch;
  #log: (msg: string) => void;
  #server!: Deno.HttpServer<Deno.UnixAddr>;
  #generation = 0;
  #inFlight = new Map<number, number>();
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
    return this.#inFlight.get(id) ?? 0;
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
      this.#inFlight.set(id, this.inFlight(id) + 1);
      info.completed.finally(() => {
        const n = this.inFlight(id) - 1;
        if (n > 0) this.#inFlight.set(id, n);
        else this.#inFlight.delete(id);
      });
      return this.#fetch(req);
    });
    this.#server.finished.catch((e) => {
      if (this.#closing) return;
      this.#log(`the HTTP server failed (${e}); starting it again`);
      setTimeout(() => this.#start(), 100);
    });
  }
}
