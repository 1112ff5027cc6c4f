#!/usr/bin/env python3
"""Joins the kernel benchmark (bench_attention.cu --json) and the SDPA timings
(tools/bench_sdpa.py --json) of one GPU run into one markdown table and one JSON file.

  python3 tools/bench_combine.py OURS.json SDPA.json --md OUT.md --json OUT.json
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("sdpa")
    ap.add_argument("--md", required=True)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    ours = json.load(open(a.ours))
    try:
        sdpa = json.load(open(a.sdpa))
    except (OSError, ValueError):
        sdpa = {"results": [], "gqa": "n/a", "torch": "n/a"}
    att = {(r["kv_bits"], r["ctx"], r["batch"]): r for r in ours["results"] if r["kernel"] == "decode_attention"}
    ref = {(r["ctx"], r["batch"]): r for r in sdpa["results"]}
    shapes = sorted({(c, b) for (_, c, b) in att} | set(ref))
    fmt_us = lambda r: f"{r['us']:.1f}" if r else "-"
    fmt_eff = lambda r: f"{100 * r['eff']:.0f}%" if r else "-"
    ratio = lambda s, r: f"{s['us'] / r['us']:.2f}x" if s and r else "-"
    lines = [
        f"Decode attention, {ours['device']}: {ours['n_heads']} q heads / {ours['n_kv_heads']} KV heads, head_dim "
        f"{ours['head_dim']}, one layer. Times are medians (us) per call incl. the split-KV reduce. SDPA: torch "
        f"{sdpa.get('torch')} fp16, GQA via {sdpa.get('gqa')}. xN = SDPA time / ours. eff = KV bytes that must "
        f"be read / time / 4.3 TB/s.",
        "",
        "| ctx | batch | fp16 us | NSN-2 us | NSN-1 us | SDPA us | SDPA/fp16 | SDPA/NSN-2 | SDPA/NSN-1 "
        "| eff fp16 | eff NSN-2 | eff NSN-1 | eff SDPA | SDPA backend |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows = []
    for ctx, b in shapes:
        f16, q2, q1, s = att.get((16, ctx, b)), att.get((2, ctx, b)), att.get((1, ctx, b)), ref.get((ctx, b))
        lines.append(
            f"| {ctx // 1024}K | {b} | {fmt_us(f16)} | {fmt_us(q2)} | {fmt_us(q1)} | {fmt_us(s)} | {ratio(s, f16)} | "
            f"{ratio(s, q2)} | {ratio(s, q1)} | {fmt_eff(f16)} | {fmt_eff(q2)} | {fmt_eff(q1)} | {fmt_eff(s)} | "
            f"{s['backend'] if s else '-'} |")
        rows.append({"ctx": ctx, "batch": b, "fp16": f16, "nsn2": q2, "nsn1": q1, "sdpa": s})
    # kernel variants (bench_attention times each at 32K x 16): variant x kv_bits, with SDPA
    var = [r for r in ours["results"] if r["kernel"] == "decode_attention_variant"]
    var_rows = []
    if var:
        vshapes = sorted({(r["ctx"], r["batch"]) for r in var})
        for vctx, vb in vshapes:
            s = ref.get((vctx, vb))
            lines += ["", f"Kernel variants at ctx {vctx // 1024}K x batch {vb} (us; xN = SDPA / ours"
                      f"{', SDPA ' + format(s['us'], '.1f') + ' us' if s else ''}; default = the full table above):",
                      "", "| variant | fp16 us | NSN-2 us | NSN-1 us | SDPA/fp16 | SDPA/NSN-2 | SDPA/NSN-1 |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            by = {(r["variant"], r["kv_bits"]): r for r in var if (r["ctx"], r["batch"]) == (vctx, vb)}
            for v in sorted({k[0] for k in by}):
                f16, q2, q1 = by.get((v, 16)), by.get((v, 2)), by.get((v, 1))
                lines.append(f"| v{v} | {fmt_us(f16)} | {fmt_us(q2)} | {fmt_us(q1)} | {ratio(s, f16)} | {ratio(s, q2)} "
                             f"| {ratio(s, q1)} |")
                var_rows.append({"variant": v, "ctx": vctx, "batch": vb, "fp16": f16, "nsn2": q2, "nsn1": q1})
    other = [r for r in ours["results"] if r["kernel"] not in ("decode_attention", "decode_attention_variant")]
    if other:
        lines += ["", "| kernel | kv_bits | blocks per launch | time us | us per block (64 tokens x 1 head) |",
                  "|---|---:|---:|---:|---:|"]
        for r in other:
            lines.append(f"| {r['kernel']} | {r['kv_bits']} | {r['batch']} | {r['us']:.1f} | {r['us'] / r['batch']:.4f} |")
    md = "\n".join(lines) + "\n"
    open(a.md, "w").write(md)
    json.dump({"device": ours["device"], "sdpa_torch": sdpa.get("torch"), "sdpa_gqa": sdpa.get("gqa"),
               "attention": rows, "variants": var_rows, "other": other}, open(a.json, "w"), indent=1)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
