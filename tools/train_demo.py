#!/usr/bin/env python3
"""Trains the shipped demo model (models/demo): a byte-level BPE tokenizer and a small Llama.

Runs on the GPU machine (falls back to CPU for a smoke test), after
`deno run -A tools/prepare_corpus.ts` wrote .data/brown_train.txt and
tests/fixtures/brown_heldout.txt:

    python3 tools/train_demo.py --out models/demo

Tokenizer: HF `tokenizers` BPE, ByteLevel pre-tokenizer (add_prefix_space=False, use_regex=True),
ByteLevel decoder, no normalizer, no post-processor, vocab 4096, <|bos|> = 0, <|eos|> = 1.
Model: LlamaForCausalLM, hidden 256, 6 layers, 4 query heads / 2 KV heads of dim 128, MLP 768,
tied embeddings. Training text = the training file as is (paragraphs separated by "\\n\\n"),
tokenized as one stream; each sample = <|bos|> + a random 511-token window of it, which is how the
server feeds a prompt (BOS + text). AdamW, warmup + cosine, bf16 autocast, residual dropout 0.1
(training only, via hooks, so the saved model is plain HF Llama), a time budget and an epoch cap.
The last 1.5% of the training stream is a validation slice (never trained on) that picks the best
checkpoint; the held-out file is only measured, at the end, on the saved bf16 weights in fp32.
"""

import argparse
import json
import math
import os
import random
import time

import torch
import torch.nn.functional as F

BOS, EOS = "<|bos|>", "<|eos|>"


def log(*a):
    print(*a, flush=True)


def train_tokenizer(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Chunks of a few paragraphs each, keeping the "\n\n" separators the model will see.
    paras = text.split("\n\n")
    chunks = ["\n\n".join(paras[i:i + 8]) + "\n\n" for i in range(0, len(paras), 8)]
    tok.train_from_iterator(chunks, trainer=trainer)
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1, "special token ids"
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    return tok


def make_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=128,
        intermediate_size=768,
        num_hidden_layers=6,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=None,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        initializer_range=0.02,
    )


def add_residual_dropout(model, p: float):
    """Dropout on each attention / MLP output before the residual add (training mode only)."""
    handles = []

    def hook(mod, inp, out):
        if not mod.training or p <= 0:
            return out
        if isinstance(out, tuple):
            return (F.dropout(out[0], p, True),) + tuple(out[1:])
        return F.dropout(out, p, True)

    for layer in model.model.layers:
        handles.append(layer.self_attn.register_forward_hook(hook))
        handles.append(layer.mlp.register_forward_hook(hook))
    return handles


def windows(ids: torch.Tensor, seq: int):
    """Non-overlapping windows of seq-1 tokens, each with BOS prepended (last one may be short)."""
    n = seq - 1
    out = []
    for s in range(0, ids.numel(), n):
        chunk = ids[s:s + n]
        if chunk.numel() == 0:
            break
        out.append(torch.cat([torch.zeros(1, dtype=ids.dtype, device=ids.device), chunk]))
    return out


@torch.no_grad()
def eval_nll(model, ids: torch.Tensor, seq: int, device, autocast: bool, batch: int = 32):
    """Sum of NLL and token count over BOS-led non-overlapping windows (teacher forcing)."""
    model.eval()
    ws = windows(ids, seq)
    tot, cnt = 0.0, 0
    full = [w for w in ws if w.numel() == seq]
    rest = [w for w in ws if w.numel() != seq]
    groups = [full[i:i + batch] for i in range(0, len(full), batch)] + [[w] for w in rest]
    for g in groups:
        x = torch.stack(g).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=x).logits
        logits = logits.float()
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum"
        )
        tot += loss.item()
        cnt += x[:, 1:].numel()
    return tot, cnt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default=".data/brown_train.txt")
    ap.add_argument("--heldout", default="tests/fixtures/brown_heldout.txt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--max-epochs", type=float, default=15.0)
    ap.add_argument("--max-seconds", type=float, default=210.0, help="training-loop time budget")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=200)
    ap.add_argument("--limit-chars", type=int, default=0, help="smoke test: use only this much text")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    t_start = time.time()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        log(f"device: {torch.cuda.get_device_name(0)}")
    import tokenizers
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")

    text = open(args.train, encoding="utf-8").read()
    held = open(args.heldout, encoding="utf-8").read()
    if args.limit_chars:
        text, held = text[: args.limit_chars], held[: args.limit_chars // 10]

    # ---- tokenizer
    t0 = time.time()
    tok = train_tokenizer(text, args.vocab)
    train_ids = torch.tensor(tok.encode(text, add_special_tokens=False).ids, dtype=torch.long)
    held_ids = torch.tensor(tok.encode(held, add_special_tokens=False).ids, dtype=torch.long)
    log(
        f"tokenizer: vocab {tok.get_vocab_size()}, train {train_ids.numel()} tokens "
        f"({len(text) / train_ids.numel():.2f} chars/token), heldout {held_ids.numel()} tokens, "
        f"{time.time() - t0:.1f}s"
    )
    assert int(train_ids.max()) < args.vocab
    n_val = max(args.seq * 4, int(train_ids.numel() * 0.015))
    val_ids, fit_ids = train_ids[-n_val:], train_ids[:-n_val]

    # ---- model
    from transformers import AutoModelForCausalLM, GenerationConfig

    config = make_config(args.vocab)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device)
    model.config.use_cache = False
    nparams = sum(p.numel() for p in model.parameters())
    log(f"model: {nparams / 1e6:.2f}M parameters ({config.num_hidden_layers} layers, d={config.hidden_size})")
    hooks = add_residual_dropout(model, args.dropout)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
        fused=device.type == "cuda",
    )
    tok_per_step = args.batch * (args.seq - 1)
    max_steps = max(1, int(args.max_epochs * fit_ids.numel() / tok_per_step))
    log(
        f"train: batch {args.batch}x{args.seq}, {tok_per_step} tokens/step, step cap {max_steps} "
        f"({args.max_epochs} epochs of {fit_ids.numel()} tokens), time budget {args.max_seconds:.0f}s, "
        f"val slice {val_ids.numel()} tokens"
    )

    fit_dev = fit_ids.to(device)
    offs = torch.arange(args.seq - 1, device=device)
    bos_col = torch.zeros(args.batch, 1, dtype=torch.long, device=device)
    use_autocast = True

    def lr_at(step, frac_time):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        prog = min(1.0, max((step - args.warmup) / max(1, max_steps - args.warmup), frac_time))
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * prog)))

    best = (float("inf"), -1, None)
    step = 0
    t_loop = time.time()
    run_loss, run_n = 0.0, 0
    model.train()
    while True:
        elapsed = time.time() - t_loop
        frac_time = elapsed / args.max_seconds
        if step >= max_steps or frac_time >= 1.0:
            break
        lr = lr_at(step, frac_time)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, fit_dev.numel() - (args.seq - 1), (args.batch, 1), device=device)
        x = torch.cat([bos_col, fit_dev[starts + offs]], dim=1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, args.vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        run_loss += loss.item() if step % 10 == 0 or step <= 2 else 0.0
        run_n += 1 if step % 10 == 0 or step <= 2 else 0
        if step % args.log_every == 0:
            ep = step * tok_per_step / fit_ids.numel()
            log(
                f"step {step:5d} ep {ep:5.2f} loss {run_loss / max(1, run_n):.4f} lr {lr:.2e} "
                f"gnorm {float(gn):.2f} t {time.time() - t_loop:.0f}s"
            )
            run_loss, run_n = 0.0, 0
        if step % args.eval_every == 0:
            s, c = eval_nll(model, val_ids, args.seq, device, True)
            vl = s / c
            mark = ""
            if vl < best[0]:
                best = (vl, step, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
                mark = " *"
            log(f"  val loss {vl:.4f} ppl {math.exp(vl):.2f} (step {step}){mark}")
            model.train()
    train_secs = time.time() - t_loop
    s, c = eval_nll(model, val_ids, args.seq, device, True)
    vl = s / c
    log(f"final step {step}: val loss {vl:.4f} ppl {math.exp(vl):.2f}")
    if best[2] is not None and best[0] < vl:
        log(f"restoring best checkpoint from step {best[1]} (val loss {best[0]:.4f})")
        model.load_state_dict(best[2])
    else:
        log("keeping final weights")
    for h in hooks:
        h.remove()
    epochs = step * tok_per_step / fit_ids.numel()
    log(f"trained {step} steps, {epochs:.2f} epochs, {step * tok_per_step / 1e6:.1f}M tokens in {train_secs:.1f}s "
        f"({step * tok_per_step / train_secs / 1e3:.0f}k tok/s)")

    s, c = eval_nll(model, held_ids, args.seq, device, False)
    log(f"heldout (fp32 master weights): loss {s / c:.4f} ppl {math.exp(s / c):.3f} over {c} tokens")

    # ---- save (bf16) in HF format
    out = args.out
    os.makedirs(out, exist_ok=True)
    model.config.use_cache = True
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=1, do_sample=False)
    model.save_pretrained(out, safe_serialization=True)
    cfg_path = os.path.join(out, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["torch_dtype"] = "bfloat16"
    cfg["dtype"] = "bfloat16"
    cfg["rope_theta"] = 10000.0  # transformers 5 writes it only under rope_parameters
    cfg["architectures"] = ["LlamaForCausalLM"]
    cfg["head_dim"] = 128
    json.dump(dict(sorted(cfg.items())), open(cfg_path, "w"), indent=2)
    tok.save(os.path.join(out, "tokenizer.json"))
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            "0": {"content": BOS, "lstrip": False, "normalized": False, "rstrip": False,
                  "single_word": False, "special": True},
            "1": {"content": EOS, "lstrip": False, "normalized": False, "rstrip": False,
                  "single_word": False, "special": True},
        },
    }
    json.dump(tok_cfg, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    log(f"saved to {out}: {sorted(os.listdir(out))}; model.safetensors {size} bytes ({size / 2**20:.2f} MiB)")
    assert size <= 16 * 2**20, "model.safetensors over 16 MB"

    # ---- reload check + held-out perplexity of the saved (bf16) weights, computed in fp32
    from transformers import AutoTokenizer

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    m2 = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).to(device)
    t2 = AutoTokenizer.from_pretrained(out)
    probe = "The jury said it was a good idea."
    ids_hf = t2(probe)["input_ids"]
    ids_raw = tok.encode(probe, add_special_tokens=False).ids
    log(f"reload: {type(m2).__name__} {m2.dtype}, {type(t2).__name__}; AutoTokenizer ids {ids_hf[:6]}... "
        f"raw ids {ids_raw[:5]}...")
    assert ids_hf[-len(ids_raw):] == ids_raw, "AutoTokenizer disagrees with tokenizer.json"
    s, c = eval_nll(m2, held_ids, args.seq, device, False)
    log(f"HELDOUT PERPLEXITY (saved bf16 weights, fp32 compute, BOS+511-token windows): "
        f"{math.exp(s / c):.3f} (loss {s / c:.4f}, {c} tokens, {len(windows(held_ids, args.seq))} windows)")
    x = torch.tensor([[0] + tok.encode("The jury said", add_special_tokens=False).ids], device=device)
    g = m2.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=24,
                    eos_token_id=None, pad_token_id=1)
    log("sample:", repr(tok.decode(g[0].tolist(), skip_special_tokens=False)))
    log(f"total time {time.time() - t_start:.1f}s")


if __name__ == "__main__":
    main()
