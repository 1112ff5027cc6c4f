// Checks that @huggingface/tokenizers (JS) reproduces the Python `tokenizers` golden fixture.
//
//   deno run -A tools/check_tokenizer_fixture.ts [model_dir] [fixture.json]
//
// Defaults: models/demo and tests/fixtures/tokenizer.json. Exits 1 on any mismatch.

import { Tokenizer } from "@huggingface/tokenizers";

interface Case {
  text: string;
  ids: number[];
  decoded: string;
}

const modelDir = Deno.args[0] ?? "models/demo";
const fixturePath = Deno.args[1] ?? "tests/fixtures/tokenizer.json";
const tokJson = JSON.parse(Deno.readTextFileSync(`${modelDir}/tokenizer.json`));
const tokCfg = JSON.parse(Deno.readTextFileSync(`${modelDir}/tokenizer_config.json`));
const tok = new Tokenizer(tokJson, tokCfg);
const cases: Case[] = JSON.parse(Deno.readTextFileSync(fixturePath)).cases;

let bad = 0;
for (const c of cases) {
  const ids = tok.encode(c.text, { add_special_tokens: false }).ids.map(Number);
  const idsOk = ids.length === c.ids.length && ids.every((v, i) => v === c.ids[i]);
  // decode() throws on an empty list.
  const decoded = c.ids.length ? tok.decode(c.ids, { skip_special_tokens: false }) : "";
  const decOk = decoded === c.decoded;
  if (!idsOk || !decOk) {
    bad++;
    console.log(`MISMATCH ${JSON.stringify(c.text)}`);
    if (!idsOk) {
      console.log(`  ids   py ${JSON.stringify(c.ids)}\n        js ${JSON.stringify(ids)}`);
    }
    if (!decOk) {
      console.log(
        `  decode py ${JSON.stringify(c.decoded)}\n         js ${JSON.stringify(decoded)}`,
      );
    }
  }
}
console.log(`${cases.length - bad}/${cases.length} tokenizer cases match`);
if (bad) Deno.exit(1);
