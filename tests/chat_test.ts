// /v1/chat/completions: where templates are found, the rendered prompt (BOS exactly once),
// and the real server on a tiny HF checkpoint with a chat template, driven by the official
// `openai` client (shapes, streaming, n, logprobs, usage, errors); the demo model has no
// template and gets a 400.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { startServer } from "../main.ts";
import { ChatTemplate, loadChatTemplate } from "../models/chat_template.ts";
import { DEMO_DIR } from "../models/loader.ts";
import { loadTokenizer } from "../models/tokenizer.ts";
import { makeTestApp } from "./fake_engine.ts";
import { writeTinyModel } from "./tiny_hf_model.ts";

const TEMPLATE = "{{ bos_token }}{% if messages[0].role == 'assistant' %}" +
  "{{ raise_exception('Conversations start with the user') }}{% endif %}" +
  "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}" +
  "{% if add_generation_prompt %}assistant:{% endif %}";

async function tempDir(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "chat_tpl_" });
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(`${dir}/${name}`, text);
  }
  return dir;
}

Deno.test("loadChatTemplate: string, default of a list, .jinja file first, none", async () => {
  const cfg = (v: unknown) => JSON.stringify({ chat_template: v, bos_token: { content: "<s>" } });
  const msgs = [{ role: "user", content: "x" }];
  let t = await loadChatTemplate(await tempDir({ "tokenizer_config.json": cfg("A{{bos_token}}") }));
  assert.equal(t?.render(msgs), "A<s>");
  const list = [{ name: "tool_use", template: "T" }, { name: "default", template: "D" }];
  t = await loadChatTemplate(await tempDir({ "tokenizer_config.json": cfg(list) }));
  assert.equal(t?.render(msgs), "D");
  t = await loadChatTemplate(
    await tempDir({ "tokenizer_config.json": cfg("C"), "chat_template.jinja": "J{{eos_token}}" }),
    { eos: "</s>" },
  );
  assert.equal(t?.render(msgs), "J</s>");
  assert.equal(await loadChatTemplate(await tempDir({ "tokenizer_config.json": "{}" })), null);
  assert.equal(await loadChatTemplate(await tempDir({})), null);
  assert.equal(await loadChatTemplate(DEMO_DIR), null, "the demo model has no template");
});

Deno.test("chat over the fake engine: BOS added unless the template wrote it; no template 400", async () => {
  const t = makeTestApp();
  try {
    const post = async (body: unknown) => {
      const r = await t.app.request("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: r.status, json: await r.json() };
    };
    const body = { messages: [{ role: "user", content: "hello" }], max_tokens: 1 };
    const none = await post(body);
    assert.equal(none.status, 400);
    assert.equal(none.json.error.type, "invalid_request_error");
    assert.match(none.json.error.message, /has no chat template/);

    const cases: [string, number][] = [
      ["[{{ messages[0].content }}]", 1], // BOS added in front of the rendering
      ["{{ bos_token }}[{{ messages[0].content }}]", 0], // the template wrote it
    ];
    for (const [source, added] of cases) {
      const tpl = new ChatTemplate(source, "<s>", "</s>");
      t.state.ready!.model.chatTemplate = tpl;
      const r = await post(body);
      assert.equal(r.status, 200, JSON.stringify(r.json));
      const expected = t.tokenizer.encode(tpl.render(body.messages)).length + added;
      assert.equal(r.json.usage.prompt_tokens, expected);
    }
  } finally {
    t.close();
  }
});

// deno-lint-ignore no-explicit-any
type Any = any;

Deno.test("openai client: chat completions on a tiny model with a template", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "tiny_chat_" });
  await writeTinyModel(dir, {
    tokenizerConfig: {
      chat_template: TEMPLATE,
      bos_token: "<|eos|>",
      eos_token: "<|eos|>",
      add_bos_token: true,
    },
  });
  const srv = startServer({ model: dir, port: 0, backend: "cpu", quiet: true, maxNumSeqs: 8 });
  const demo = startServer({ model: "demo", port: 0, backend: "cpu", quiet: true, maxNumSeqs: 2 });
  try {
    await Promise.all([srv.ready, demo.ready]);
    const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const tok = await loadTokenizer(dir);
    const messages = [
      { role: "system" as const, content: "Be brief." },
      {
        role: "user" as const,
        content: [{ type: "text" as const, text: "Hi" }, { type: "text" as const, text: "there" }],
      },
    ];
    // vLLM's extension keeps the random model from stopping early: exact token counts.
    const base = { model: "x", messages, temperature: 0, max_tokens: 8, ignore_eos: true } as Any;
    base.model = (await client.models.list()).data[0].id;

    let greedy = "";
    await t.step("non-streaming: shape, rendered prompt counted with BOS once", async () => {
      const r = await client.chat.completions.create(base);
      assert.equal(r.object, "chat.completion");
      assert.ok(r.id.startsWith("chatcmpl-"));
      assert.equal(r.choices.length, 1);
      const c = r.choices[0];
      assert.equal(c.index, 0);
      assert.equal(c.message.role, "assistant");
      assert.equal(typeof c.message.content, "string");
      assert.equal(c.logprobs, null);
      assert.equal(c.finish_reason, "length");
      greedy = c.message.content!;
      const rendered = "<|eos|>system: Be brief.\nuser: Hi\nthere\nassistant:";
      assert.equal(r.usage?.prompt_tokens, tok.encode(rendered).length);
      assert.equal(tok.encode(rendered)[0], 258);
      assert.deepEqual(r.usage, {
        prompt_tokens: r.usage!.prompt_tokens,
        completion_tokens: 8,
        total_tokens: r.usage!.prompt_tokens + 8,
        prompt_tokens_details: { cached_tokens: 0 },
      });
    });

    await t.step("streaming: role first, same greedy text, include_usage", async () => {
      const s = await client.chat.completions.create({
        ...base,
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks: Any[] = [];
      for await (const chunk of s as unknown as AsyncIterable<Any>) chunks.push(chunk);
      assert.ok(chunks.every((c) => c.object === "chat.completion.chunk"));
      assert.ok(chunks.every((c) => c.id === chunks[0].id && c.id.startsWith("chatcmpl-")));
      assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" });
      const last = chunks.at(-1);
      assert.deepEqual(last.choices, []);
      assert.equal(last.usage.completion_tokens, 8);
      const body = chunks.slice(0, -1);
      assert.ok(body.every((c) => c.usage === null));
      const text = body.map((c) => c.choices[0].delta.content ?? "").join("");
      assert.equal(text, greedy);
      assert.equal(body.at(-1).choices[0].finish_reason, "length");
    });

    await t.step("n > 1 and max_completion_tokens", async () => {
      const r = await client.chat.completions.create({
        ...base,
        n: 3,
        temperature: 0.8,
        seed: 7,
        max_tokens: undefined,
        max_completion_tokens: 5,
      });
      assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
      assert.equal(r.usage?.completion_tokens, 15);
    });

    await t.step("logprobs + top_logprobs: the chat shape", async () => {
      const r = await client.chat.completions.create({ ...base, logprobs: true, top_logprobs: 3 });
      const c = r.choices[0];
      assert.equal(c.message.content, greedy);
      const content = c.logprobs!.content!;
      assert.equal(content.length, 8);
      const bytes: number[] = [];
      for (const e of content) {
        assert.equal(typeof e.token, "string");
        assert.ok(e.logprob <= 0);
        assert.equal(e.top_logprobs.length, 3);
        const lps = e.top_logprobs.map((x) => x.logprob);
        assert.deepEqual(lps, [...lps].sort((a, b) => b - a));
        assert.equal(e.top_logprobs[0].token, e.token, "greedy picks the top token");
        bytes.push(...e.bytes!);
      }
      assert.equal(new TextDecoder().decode(new Uint8Array(bytes)), greedy);
    });

    await t.step("X-KV-Bits echoed as for /v1/completions", async () => {
      const { data, response } = await client.chat.completions
        .create(base, { headers: { "X-KV-Bits": "1" } }).withResponse();
      assert.equal(response.headers.get("X-KV-Bits"), "1");
      assert.equal(data.usage?.completion_tokens, 8);
    });

    await t.step("invalid requests: 400 naming the field", async () => {
      const bad: [Record<string, unknown>, string][] = [
        [{ messages: undefined }, "messages"],
        [{ messages: [] }, "messages"],
        [{ messages: "hi" }, "messages"],
        [{ messages: [{ content: "hi" }] }, "messages[0].role"],
        [{ messages: [{ role: 3, content: "hi" }] }, "messages[0].role"],
        [{ messages: [{ role: "user" }] }, "messages[0].content"],
        [{ messages: [{ role: "user", content: 5 }] }, "messages[0].content"],
        [
          { messages: [{ role: "user", content: [{ type: "image_url" }] }] },
          "messages[0].content[0].type",
        ],
        [{ messages: [{ role: "assistant", content: "x" }] }, "messages"], // the template raises
        [{ top_logprobs: 2 }, "top_logprobs"],
        [{ logprobs: true, top_logprobs: 21 }, "top_logprobs"],
        [{ logprobs: 1 }, "logprobs"],
        [{ max_tokens: undefined, max_completion_tokens: 9999 }, "max_completion_tokens"],
        [{ temperature: 5 }, "temperature"],
      ];
      for (const [patch, param] of bad) {
        await assert.rejects(
          client.chat.completions.create({ ...base, ...patch }),
          (e) => e instanceof OpenAI.BadRequestError && e.param === param,
          `${JSON.stringify(patch)} -> param ${param}`,
        );
      }
    });

    await t.step("the demo model has no chat template: 400", async () => {
      const demoClient = new OpenAI({ baseURL: `${demo.url}/v1`, apiKey: "unused", maxRetries: 0 });
      await assert.rejects(
        demoClient.chat.completions.create({ ...base, model: "demo" }),
        (e: Any) =>
          e instanceof OpenAI.BadRequestError && e.type === "invalid_request_error" &&
          /no chat template/.test(e.message),
      );
    });
  } finally {
    await Promise.all([srv.shutdown(), demo.shutdown()]);
    await Deno.remove(dir, { recursive: true });
  }
});
