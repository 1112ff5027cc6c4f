// KV cache events for routers (--kv-events-endpoint), in vLLM's wire format, so that llm-d's
// precise prefix-cache scorer or AIBrix can send a request to the replica that holds its prefix.
// A ZeroMQ PUB socket bound to the endpoint sends, per batch, three frames: the topic
// `kv@<host>@<model>`, an 8-byte big-endian sequence number, and a msgpack
// `[timestamp, events, dp_rank]` whose events are msgspec tagged arrays:
//   ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
//    lora_name, extra_keys]  (extra_keys: per block ["kv_bits=N"]: 16-, 2- and 1-bit pages of
//                             the same tokens are different blocks)
//   ["BlockRemoved", block_hashes, medium]
//   ["AllBlocksCleared"]
// Events gather while a step's bookkeeping runs and go out together, one batch per turn of the
// event loop.

import { encode } from "@msgpack/msgpack";
import { Publisher } from "zeromq";
import { type KvEventSink, WINDOW } from "./prefix_cache.ts";
import type { KvBits } from "./types.ts";

export class KvEventPublisher implements KvEventSink {
  readonly endpoint: string; // as bound (a port of 0 or * resolved)
  #sock: Publisher;
  #topic: Uint8Array;
  #medium: string;
  #seq = 0n;
  #events: unknown[] = [];
  #sending: Promise<void> = Promise.resolve();
  #scheduled = false;

  private constructor(sock: Publisher, topic: string, medium: string) {
    this.#sock = sock;
    this.#topic = new TextEncoder().encode(topic);
    this.#medium = medium;
    this.endpoint = sock.lastEndpoint ?? "";
  }

  /** Binds a PUB socket; `medium` is vLLM's storage tier name ("GPU", "CPU"). */
  static async open(
    endpoint: string,
    host: string,
    model: string,
    medium: string,
  ): Promise<KvEventPublisher> {
    const sock = new Publisher();
    try {
      await sock.bind(endpoint);
    } catch (e) {
      sock.close();
      throw new Error(`--kv-events-endpoint ${endpoint}: ${(e as Error).message}`);
    }
    return new KvEventPublisher(sock, `kv@${host}@${model}`, medium);
  }

  stored(kvBits: KvBits, hashes: number[], parent: number | null, tokens: number[]): void {
    const extra = hashes.map(() => [`kv_bits=${kvBits}`]);
    this.#push(["BlockStored", hashes, parent, tokens, WINDOW, null, this.#medium, null, extra]);
  }

  removed(_kvBits: KvBits, hashes: number[]): void {
    this.#push(["BlockRemoved", hashes, this.#medium]);
  }

  /** Every block of this replica is gone (sent at startup: routers drop what they knew). */
  cleared(): void {
    this.#push(["AllBlocksCleared"]);
  }

  /** Sends what is gathered now; resolves when every batch so far is on the socket. */
  flush(): Promise<void> {
    if (this.#events.length > 0) {
      const events = this.#events;
      this.#events = [];
      const seq = new Uint8Array(8);
      new DataView(seq.buffer).setBigUint64(0, this.#seq++);
      const payload = encode([Date.now() / 1000, events, 0]);
      // One send at a time on a zeromq.js socket: chain them.
      this.#sending = this.#sending.then(() => this.#sock.send([this.#topic, seq, payload]))
        .catch(() => {}); // no subscriber is not an error; a closed socket ends the stream
    }
    return this.#sending;
  }

  async close(): Promise<void> {
    await this.flush();
    this.#sock.close();
  }

  #push(event: unknown[]): void {
    this.#events.push(event);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setTimeout(() => {
      this.#scheduled = false;
      this.flush();
    }, 0);
  }
}
