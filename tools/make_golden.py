#!/usr/bin/env python3
"""Writes the HuggingFace golden fixtures for the demo model, the references CI compares against.

    python3 tools/make_golden.py --model models/demo --out tests/fixtures

Everything is computed on the CPU in float32 from the bf16 weights (from_pretrained with
dtype=float32), so no TF32 or reduced-precision GEMMs are involved.

  demo_logits.json  per-position logits (argmax, logsumexp, 32 selected logits) for a few prompts
  demo_greedy.json  greedy continuations (HF generate, 32 new tokens, never stopping at <|eos|>)
  tokenizer.json    tokenizer cases: ids (no BOS) and decode, from the `tokenizers` library
"""

import argparse
import json
import os

import torch

FIXED_IDS = [2, 100, 300, 555, 800, 1024, 1300, 1600, 1900, 2200, 2500, 2800, 3100, 3400, 3700, 4095]
TOPK = 16

GREEDY_PROMPTS = ["The jury said", "In the morning", "He was", "It is"]

TOKENIZER_CASES = [
    "",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced \"no evidence\" that any irregularities took place.",
    "hello",
    " hello",
    "  hello",
    "hello ",
    "hello  ",
    "   ",
    " ",
    "a  b   c    d",
    "tab\tseparated\tvalues",
    "\t\tleading tabs",
    "line one\nline two",
    "paragraph one.\n\nParagraph two.",
    "\n",
    "\n\n\n",
    "trailing newline\n",
    " \n \t \r\n mixed whitespace runs \t\t\n",
    "Windows\r\nline endings\r\n",
    "I'm sure you're right, but they'll say we've done what he'd've wanted.",
    "DON'T SHOUT. It's John's book, isn't it?",
    "café résumé naïve façade Übermäßig señor",
    "Ελληνικά και Русский язык",
    "Привет, мир! Как дела?",
    "日本語のテキストと中文文本",
    "東京都 北京市",
    "한국어 텍스트",
    "مرحبا بالعالم",
    "שלום עולם",
    "हिन्दी पाठ",
    "emoji 😀 and 🎉!",
    "👨‍👩‍👧‍👦 family ZWJ sequence",
    "🏳️‍🌈 flag and 🇺🇸🇯🇵🇩🇪 country flags",
    "👍🏽 skin tone",
    "0123456789",
    "3.14159265358979323846",
    "The year 1961 and $4,200,000.00 in 12% bonds",
    "12345678901234567890123456789",
    "1,000,000 and 1_000_000 and 1e-9",
    "def add(a, b):\n    return a + b\n",
    "for (let i = 0; i < n; i++) {\n  console.log(`i=${i}`);\n}",
    "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "if x == 1 and not y:\n\tprint('tabbed')",
    "<div class=\"x\">&amp; &lt;tag&gt;</div>",
    "SELECT * FROM users WHERE id = 42;",
    "!!!???...,,,;;;:::",
    "--- *** ___ ~~~ ===",
    "\"quoted\" 'single' `backtick` (parens) [brackets] {braces}",
    "a/b\\c|d@e#f$g%h^i&j*k",
    "https://example.com/path?query=1&x=y#frag",
    "user@example.com",
    "<|eos|>",
    "<|bos|>",
    "Hello<|eos|>world",
    "end of text.<|eos|>",
    " <|eos|> spaced ",
    "<|eos|><|eos|>",
    "<|eos|",
    "<|endoftext|>",
    "MiXeD CaSe WoRdS and ALLCAPS",
    "Mr. and Mrs. J. M. Cheshire of Griffin, Ala., were married Aug. 2, 1913.",
    "naïve café 日本 😀 123 <|eos|> end",
    "\u00a0non-breaking\u00a0space and\u2009thin space",
    "zero\u200bwidth\u200bspace",
    "combining e\u0301 vs é",
    "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "\U0001F600\U0001F601\U0001F602",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters",
    "The jury said",
    "In the morning",
]


def r5(x: float) -> float:
    return round(float(x), 5)


def prompt_from_heldout(tok, path: str, min_tokens: int, skip_paras: int = 0) -> str:
    """A prefix of the held-out text, cut at a word boundary, of at least min_tokens tokens + BOS."""
    text = open(path, encoding="utf-8").read()
    paras = text.split("\n\n")[skip_paras:]
    body = "\n\n".join(paras)
    words = body.split(" ")
    out = ""
    for w in words:
        out = w if not out else out + " " + w
        if 1 + len(tok.encode(out, add_special_tokens=False).ids) >= min_tokens:
            break
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--heldout", default="tests/fixtures/brown_heldout.txt")
    ap.add_argument("--model-name", default="models/demo", help="model path recorded in the fixtures")
    args = ap.parse_args()

    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, GenerationConfig

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    torch.set_grad_enabled(False)

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    bos = tok.token_to_id("<|bos|>")
    eos = tok.token_to_id("<|eos|>")
    assert bos == 0 and eos == 1
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model = model.to("cpu").eval()
    vocab = model.config.vocab_size
    assert all(0 <= i < vocab for i in FIXED_IDS)
    os.makedirs(args.out, exist_ok=True)

    def enc(s: str):
        return tok.encode(s, add_special_tokens=False).ids

    # ---- logits
    prompts = [
        "The jury said",
        "In 1961 the company reported sales of $4,200,000, up 12% from the year before; "
        "officials said (privately) that \"the outlook is good\".\n\nNext year: more of the same?",
        prompt_from_heldout(tok, args.heldout, 90, skip_paras=40),
        prompt_from_heldout(tok, args.heldout, 150, skip_paras=0),
    ]
    cases = []
    total = 0
    for p in prompts:
        ids = [bos] + enc(p)
        x = torch.tensor([ids])
        logits = model(input_ids=x).logits[0].float()  # [T, V]
        lse = torch.logsumexp(logits, dim=-1)
        top = torch.topk(logits, TOPK, dim=-1).indices
        positions = []
        for t in range(len(ids)):
            sel = top[t].tolist() + FIXED_IDS
            positions.append({
                "argmax": int(torch.argmax(logits[t])),
                "lse": r5(lse[t]),
                "ids": sel,
                "logits": [r5(logits[t, i]) for i in sel],
            })
        cases.append({"prompt": p, "ids": ids, "positions": positions})
        total += len(ids)
        print(f"logits: prompt of {len(ids)} tokens (incl. BOS)", flush=True)
    print(f"logits: {total} positions in {len(cases)} prompts", flush=True)
    with open(os.path.join(args.out, "demo_logits.json"), "w") as f:
        json.dump({
            "model": args.model_name,
            "tolerance_note": (
                "HF transformers LlamaForCausalLM on CPU in float32 with the bf16 weights upcast "
                "(no TF32). One forward pass over BOS + prompt ids; positions[t] is the logits row "
                "after ids[0..t]. ids = the top-16 logits at that position (descending) followed by "
                "16 fixed ids (may repeat a top id); lse = logsumexp of the full row. Values are "
                "rounded to 5 decimals. Compare logits/lse with an absolute tolerance of about 1e-2 "
                "for an fp32 engine (more for bf16 compute, e.g. 0.1-0.3); argmax must match except "
                "where the top two logits differ by less than the tolerance."
            ),
            "fixed_ids": FIXED_IDS,
            "cases": cases,
        }, f, ensure_ascii=False)

    # ---- greedy
    gcfg = GenerationConfig(
        do_sample=False, max_new_tokens=32, min_new_tokens=0, eos_token_id=None, pad_token_id=eos,
        bos_token_id=bos, num_beams=1, repetition_penalty=1.0, temperature=None, top_k=None, top_p=None,
    )
    gcases = []
    for p in GREEDY_PROMPTS:
        ids = [bos] + enc(p)
        x = torch.tensor([ids])
        out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gcfg)
        cont = out[0, len(ids):].tolist()
        # Cross-check with a plain argmax loop (full recompute each step, no cache).
        seq = list(ids)
        manual = []
        for _ in range(32):
            nxt = int(torch.argmax(model(input_ids=torch.tensor([seq])).logits[0, -1]))
            manual.append(nxt)
            seq.append(nxt)
        if len(cont) != 32:
            print(f"WARNING: generate returned {len(cont)} tokens for {p!r}; using the argmax loop", flush=True)
            cont = manual
        agree = cont == manual
        if not agree:
            print(f"WARNING: generate and the argmax loop differ for {p!r}: {cont} vs {manual}", flush=True)
        gcases.append({"prompt": p, "ids": ids, "continuation": cont,
                       "text": tok.decode(cont, skip_special_tokens=False)})
        print(f"greedy {p!r} -> {tok.decode(cont, skip_special_tokens=False)!r} (argmax loop agrees: {agree})",
              flush=True)
    with open(os.path.join(args.out, "demo_greedy.json"), "w") as f:
        json.dump({
            "model": args.model_name,
            "note": (
                "HF generate(do_sample=False, max_new_tokens=32) from BOS + prompt ids, CPU float32 "
                "from the bf16 weights, with eos_token_id=None so generation never stops early: "
                "<|eos|> (id 1) may appear inside a continuation and generation continues after it. "
                "Checked against a plain argmax loop. text = decode(continuation) for reading only."
            ),
            "cases": gcases,
        }, f, ensure_ascii=False, indent=1)

    # ---- tokenizer
    tcases = []
    seen = set()
    for s in TOKENIZER_CASES:
        if s in seen:
            continue
        seen.add(s)
        ids = tok.encode(s, add_special_tokens=False).ids
        tcases.append({"text": s, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    rt = sum(1 for c in tcases if c["decoded"] == c["text"])
    print(f"tokenizer: {len(tcases)} cases, {rt} decode back to the same text", flush=True)
    for c in tcases:
        if c["decoded"] != c["text"]:
            print(f"  not round-tripping: {c['text']!r} -> {c['decoded']!r}", flush=True)
    with open(os.path.join(args.out, "tokenizer.json"), "w") as f:
        json.dump({
            "tokenizer": args.model_name + "/tokenizer.json",
            "note": (
                "ids from the `tokenizers` library: Tokenizer.from_file(tokenizer.json)"
                ".encode(text, add_special_tokens=False).ids (no BOS); decoded = "
                "decode(ids, skip_special_tokens=False). The special token text \"<|eos|>\" in the "
                "input is matched as an added token before pre-tokenization and becomes id 1; "
                "\"<|bos|>\" likewise becomes id 0."
            ),
            "cases": tcases,
        }, f, ensure_ascii=False, indent=1)
    print("golden fixtures written to", args.out, sorted(os.listdir(args.out)), flush=True)


if __name__ == "__main__":
    main()
