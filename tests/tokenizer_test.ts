// models/tokenizer.ts: the demo tokenizer against ids from the Python `tokenizers` library
// (tests/fixtures/tokenizer.json), round trips, and the streaming detokenizer, which must never
// emit half a character.

import assert from "node:assert/strict";
import {
  ByteTokenizer,
  HfTextTokenizer,
  IncrementalDetokenizer,
  loadTokenizer,
  type TextTokenizer,
} from "../models/tokenizer.ts";
import { DEMO_DIR } from "../models/loader.ts";
import { byteLevelTokenizerJson } from "./tiny_hf_model.ts";

const FIXTURE = new URL("./fixtures/tokenizer.json", import.meta.url).pathname;
const haveFixture = await exists(FIXTURE) && await exists(`${DEMO_DIR}/tokenizer.json`);

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Streams ids one by one; checks no chunk has U+FFFD unless the text has; returns the chunks. */
function stream(tok: TextTokenizer, ids: number[], context: number[] = []): string[] {
  const detok = new IncrementalDetokenizer(tok, context);
  const chunks = ids.map((id) => detok.push(id));
  chunks.push(detok.flush());
  return chunks;
}

// A minimal byte-level BPE (tests/tiny_hf_model.ts): enough to split multi-byte characters
// across tokens the way GPT-2-style tokenizers do.
function byteLevelBpe(): HfTextTokenizer {
  return new HfTextTokenizer(byteLevelTokenizerJson());
}

Deno.test("byte-level BPE: round trip, vocab size, special tokens, tokenText of partial bytes", () => {
  const tok = byteLevelBpe();
  assert.equal(tok.vocabSize, 259);
  const text = "he said héllo 😀 — ok";
  const ids = tok.encode(text);
  assert.ok(ids.includes(256) && ids.includes(257), `merges used: ${ids}`);
  assert.equal(tok.decode(ids), text);
  assert.equal(tok.decode([...ids, 258]), text, "special tokens skipped by default");
  assert.equal(tok.decode([...ids, 258], false), text + "<|eos|>");
  assert.equal(tok.tokenToId("<|eos|>"), 258);
  assert.equal(tok.tokenText(256), "he");
  assert.equal(tok.tokenText(0xf0), "bytes:\\xf0", "first byte of the emoji");
  assert.deepEqual(tok.encode(""), []);
  assert.equal(tok.decode([]), "");
});

Deno.test("incremental detokenizer: never emits a partial character, reproduces the text", () => {
  for (const tok of [byteLevelBpe(), new ByteTokenizer(512)]) {
    const text = "he said héllo 😀😀 — 日本語 ok";
    const ids = tok.encode(text);
    const chunks = stream(tok, ids);
    assert.equal(chunks.join(""), text);
    for (const c of chunks) {
      assert.ok(!c.includes("\uFFFD"), `chunk ${JSON.stringify(c)} has U+FFFD`);
    }
    // The 4 bytes of an emoji come out at once, on its last byte.
    const emoji = tok.encode("😀");
    assert.deepEqual(stream(tok, emoji), ["", "", "", "😀", ""]);
  }
});

Deno.test("incremental detokenizer: context keeps the leading space; flush emits invalid tails", () => {
  const tok = byteLevelBpe();
  const prompt = tok.encode("say");
  const out = tok.encode(" hello");
  assert.equal(stream(tok, out, prompt).join(""), " hello");
  // A stream ending inside a character: the tail comes out only at flush, as the decoder has it.
  const cut = tok.encode("a😀").slice(0, 3);
  const chunks = stream(tok, cut);
  assert.equal(chunks.slice(0, -1).join(""), "a");
  assert.equal(chunks.join(""), tok.decode(cut));
});

Deno.test("byte tokenizer (synthetic models): bytes and <id> tokens", () => {
  const tok = new ByteTokenizer(1000);
  assert.deepEqual(tok.encode("aé"), [97, 0xc3, 0xa9]);
  assert.equal(tok.decode([97, 300, 0xc3, 0xa9]), "a<300>é");
  assert.equal(tok.tokenText(97), "a");
  assert.equal(tok.tokenText(0xc3), "bytes:\\xc3");
  assert.equal(tok.tokenText(999), "<999>");
  assert.equal(tok.tokenToId("<999>"), 999);
  assert.throws(() => new ByteTokenizer(100), /vocabulary of >= 256/);
});

Deno.test({
  name: "demo tokenizer matches the Python tokenizers fixture exactly",
  ignore: !haveFixture,
  async fn() {
    const tok = await loadTokenizer(DEMO_DIR);
    const { cases } = JSON.parse(await Deno.readTextFile(FIXTURE)) as {
      cases: { text: string; ids: number[]; decoded: string }[];
    };
    assert.ok(cases.length > 0);
    assert.equal(tok.vocabSize, 4096);
    for (const c of cases) {
      const ids = tok.encode(c.text);
      assert.deepEqual(ids, c.ids, `encode(${JSON.stringify(c.text)})`);
      assert.equal(tok.decode(ids, false), c.decoded, `decode of ${JSON.stringify(c.text)}`);
      assert.equal(tok.decode(ids, false), c.text, "byte-level BPE round-trips any text");
      assert.equal(
        stream(tok, ids).join(""),
        tok.decode(ids),
        `streamed ${JSON.stringify(c.text)}`,
      );
      for (const chunk of stream(tok, ids)) {
        assert.ok(!chunk.includes("\uFFFD") || c.decoded.includes("\uFFFD"));
      }
    }
  },
});
