// A minimal ZeroMQ SUB client over TCP (ZMTP 3.0, NULL mechanism) for the KV-events tests. The
// zeromq npm addon's Subscriber segfaults under Deno in its receive loop (about one run in ten
// under load, every run in a flood: tests/kv_events_test.ts's history), which would make CI
// flaky, so the tests read the server's libzmq PUB socket with this instead: the wire format is
// still checked against libzmq's own framing. Spec: rfc.zeromq.org/spec/23 (ZMTP 3.0).

const enc = new TextEncoder();

function frame(flags: number, body: Uint8Array): Uint8Array {
  if (body.length > 255) throw new Error("zmtp_sub: long frames are not sent");
  return new Uint8Array([flags, body.length, ...body]);
}

/** READY with Socket-Type SUB: a command frame (flag 0x04). */
function ready(): Uint8Array {
  const name = enc.encode("Socket-Type"), value = enc.encode("SUB");
  const body = new Uint8Array([
    5,
    ...enc.encode("READY"),
    name.length,
    ...name,
    0,
    0,
    0,
    value.length,
    ...value,
  ]);
  return frame(0x04, body);
}

export class ZmtpSubscriber {
  #conn: Deno.Conn;
  #buf = new Uint8Array(0);
  #chunk = new Uint8Array(64 * 1024);

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Connects to tcp://HOST:PORT, completes the handshake and subscribes to `topic`. */
  static async connect(endpoint: string, topic: string): Promise<ZmtpSubscriber> {
    const m = /^tcp:\/\/([^:]+):(\d+)$/.exec(endpoint);
    if (!m) throw new Error(`zmtp_sub: not a tcp endpoint: ${endpoint}`);
    const conn = await Deno.connect({ hostname: m[1], port: Number(m[2]) });
    const s = new ZmtpSubscriber(conn);
    const greeting = new Uint8Array(64);
    greeting[0] = 0xff;
    greeting[9] = 0x7f;
    greeting[10] = 3; // version 3.0
    greeting[11] = 0;
    greeting.set(enc.encode("NULL"), 12);
    await s.#write(greeting);
    const peer = await s.#take(64);
    if (peer[0] !== 0xff || peer[9] !== 0x7f || peer[10] < 3) {
      throw new Error("zmtp_sub: the peer is not ZMTP 3");
    }
    await s.#write(ready());
    const cmd = await s.#frame();
    if (!cmd.command) throw new Error("zmtp_sub: expected the peer's READY");
    // ZMTP 3.0 subscription: a message whose first byte is 1, then the topic prefix.
    await s.#write(frame(0x00, new Uint8Array([1, ...enc.encode(topic)])));
    return s;
  }

  /** The next multipart message (its frames), or null after timeoutMs without one. */
  async receive(timeoutMs: number): Promise<Uint8Array[] | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<null>((r) => timer = setTimeout(() => r(null), timeoutMs));
    try {
      return await Promise.race([this.#message(), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }

  // One message read at a time: a timed-out receive leaves its read running, and the next
  // receive continues from it, so no bytes are lost between calls.
  #pending: Promise<Uint8Array[]> | null = null;

  #message(): Promise<Uint8Array[]> {
    if (!this.#pending) {
      this.#pending = (async () => {
        const parts: Uint8Array[] = [];
        for (;;) {
          const f = await this.#frame();
          if (f.command) continue; // e.g. PING: not expected on PUB/SUB
          parts.push(f.body);
          if (!f.more) return parts;
        }
      })().finally(() => this.#pending = null);
    }
    return this.#pending;
  }

  async #frame(): Promise<{ more: boolean; command: boolean; body: Uint8Array }> {
    const [flags] = await this.#take(1);
    let size: number;
    if (flags & 0x02) {
      const b = await this.#take(8);
      size = Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0));
    } else {
      size = (await this.#take(1))[0];
    }
    return {
      more: (flags & 0x01) !== 0,
      command: (flags & 0x04) !== 0,
      body: await this.#take(size),
    };
  }

  async #take(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) {
      const got = await this.#conn.read(this.#chunk);
      if (got === null) throw new Error("zmtp_sub: the publisher closed the connection");
      const next = new Uint8Array(this.#buf.length + got);
      next.set(this.#buf);
      next.set(this.#chunk.subarray(0, got), this.#buf.length);
      this.#buf = next;
    }
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  async #write(bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.length;) off += await this.#conn.write(bytes.subarray(off));
  }
}
