// A model's chat template: where HF keeps it (chat_template.jinja, else tokenizer_config.json's
// `chat_template`, a string or a list of named templates) and how it renders a conversation
// into the prompt text (@huggingface/jinja, the same Jinja subset transformers.js uses).

import { Template } from "@huggingface/jinja";
import { ModelError, readJson } from "./config.ts";

/** One message as the template sees it: role, content (text or null), other fields as given. */
export type ChatMessage = { role: string; content: string | null; [key: string]: unknown };

export class ChatTemplate {
  readonly source: string;
  readonly bosToken: string;
  readonly eosToken: string;
  #template: Template;

  /** Compiles once at load: a broken template is a model error, not a per-request one. */
  constructor(source: string, bosToken = "", eosToken = "", where = "chat template") {
    this.source = source;
    this.bosToken = bosToken;
    this.eosToken = eosToken;
    try {
      this.#template = new Template(source);
    } catch (e) {
      throw new ModelError(`${where}: cannot parse the chat template (${(e as Error).message})`);
    }
  }

  /**
   * The prompt text. `extra` (vLLM's chat_template_kwargs) comes first, so it cannot replace
   * the conversation itself. Throws what the template raises (raise_exception, bad input).
   */
  render(
    messages: ChatMessage[],
    addGenerationPrompt = true,
    extra: Record<string, unknown> = {},
  ): string {
    return this.#template.render({
      ...extra,
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: this.bosToken,
      eos_token: this.eosToken,
    });
  }
}

type Json = Record<string, unknown>;

// tokenizer_config writes special tokens as a string or an AddedToken object {content}.
function tokenString(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "object" && v !== null && typeof (v as Json).content === "string") {
    return (v as Json).content as string;
  }
  return undefined;
}

/** The template text in tokenizer_config's `chat_template`: a string, or the "default" entry. */
function configTemplate(v: unknown, where: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    const entry = v.find((x) =>
      typeof x === "object" && x !== null && (x as Json).name === "default"
    );
    if (entry === undefined) return null; // only named tool/rag templates: no chat template
    if (typeof (entry as Json).template === "string") return (entry as Json).template as string;
  }
  throw new ModelError(`${where}: chat_template must be a string or a list of {name, template}`);
}

/**
 * The template of a model directory, or null when it has none. `fallback` names the BOS/EOS
 * text when tokenizer_config.json does not (the template's bos_token / eos_token variables).
 */
export async function loadChatTemplate(
  dir: string,
  fallback: { bos?: string; eos?: string } = {},
): Promise<ChatTemplate | null> {
  const config = (await readJson(`${dir}/tokenizer_config.json`, false) ?? {}) as Json;
  let source: string | null = null;
  let where = `${dir}/chat_template.jinja`;
  try {
    source = await Deno.readTextFile(where); // newer transformers saves it here, and it wins
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new ModelError(`${where}: cannot read (${(e as Error).message})`);
    }
    where = `${dir}/tokenizer_config.json`;
    source = configTemplate(config.chat_template, where);
  }
  if (source === null) return null;
  const bos = tokenString(config.bos_token) ?? fallback.bos ?? "";
  const eos = tokenString(config.eos_token) ?? fallback.eos ?? "";
  return new ChatTemplate(source, bos, eos, where);
}

/** --chat-template FILE: the template of a file, with the model's BOS/EOS text. */
export async function readChatTemplateFile(
  path: string,
  model: {
    chatTemplate?: ChatTemplate | null;
    tokenizer: { tokenText(id: number): string };
    bosId: number | null;
    eosIds: number[];
  },
): Promise<ChatTemplate> {
  let source: string;
  try {
    source = await Deno.readTextFile(path);
  } catch (e) {
    throw new ModelError(`--chat-template ${path}: cannot read (${(e as Error).message})`);
  }
  const own = model.chatTemplate;
  const text = (id: number | null | undefined) =>
    id === null || id === undefined ? "" : model.tokenizer.tokenText(id);
  return new ChatTemplate(
    source,
    own?.bosToken ?? text(model.bosId),
    own?.eosToken ?? text(model.eosIds[0]),
    `--chat-template ${path}`,
  );
}
