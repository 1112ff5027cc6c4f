// The official openai client over a fake-engine test app, without a network: its fetch goes
// straight to the Hono app. The app's model gets a minimal chat template.

import OpenAI from "openai";
import { ChatTemplate } from "../../models/chat_template.ts";
import type { makeTestApp } from "../fake_engine.ts";

/** The openai client over the fake-engine app (whose model gets a chat template). */
export function clientFor(t: ReturnType<typeof makeTestApp>): OpenAI {
  t.state.ready!.model.chatTemplate = new ChatTemplate("{{ messages[0].content }}", "<s>", "</s>");
  return new OpenAI({
    baseURL: "http://test/v1",
    apiKey: "unused",
    maxRetries: 0,
    fetch: async (input: string | URL | Request, init?: RequestInit) =>
      await t.app.request(String(input instanceof Request ? input.url : input), init),
  });
}
