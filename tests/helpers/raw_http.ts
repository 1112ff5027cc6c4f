// Raw HTTP/1.1 over TCP, for requests fetch() will not send (truncated bodies, malformed heads).

/** Writes `request`, half-closes when asked, and returns all the server sent until it closed. */
export async function rawExchange(port: number, request: string, halfClose = false) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(request)).catch(() => {});
    if (halfClose) await conn.closeWrite();
    let text = "";
    const buf = new Uint8Array(8192);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) return text;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
  } finally {
    conn.close();
  }
}
