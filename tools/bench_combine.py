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
    # efficiency against the copy rate bench_attention measured on this card in this run
    copy_bw = ours.get("copy_gbps", ours["peak_bw"] / 1e9) * 1e9
    ref = {}
    for r in sdpa["results"]:
        ref[(r["ctx"], r["batch"])] = dict(r, eff=r["bytes"] / (r["us"] * 1e-6) / copy_bw)
    shapes = sorted({(c, b) for (_, c, b) in att} | set(ref))
    fmt_us = lambda r: f"{r['us']:.1f}" if r else "-"
    fmt_eff = lambda r: f"{100 * r['eff']:.0f}%" if r else "-"
    ratio = lambda s, r: f"{s['us'] / r['us']:.2f}x" if s and r else "-"
    lines = [
        f"Decode attention, {ours['device']}: {ours['n_heads']} q heads / {ours['n_kv_heads']} KV heads, head_dim "
        f"{ours['head_dim']}, one layer. Times are medians (us) per call (plan + attention kernel). SDPA: torch "
        f"{sdpa.get('torch')} fp16, GQA via {sdpa.get('gqa')}. xN = SDPA time / ours. eff = KV bytes that must "
        f"be read / time / {copy_bw / 1e12:.2f} TB/s (this card's device-to-device copy rate, same run).",
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
        us = lambda r: round(r["us"], 2) if r else None
        rows.append({"ctx": ctx, "batch": b, "fp16_us": us(f16), "nsn2_us": us(q2), "nsn1_us": us(q1), "sdpa_us": us(s),
                     "fp16": f16, "nsn2": q2, "nsn1": q1, "sdpa": s})
    other = [r for r in ours["results"] if r["kernel"] != "decode_attention"]
    if other:
        lines += ["", "| kernel | kv_bits | blocks per launch | time us | us per block (64 tokens x 1 head) |",
                  "|---|---:|---:|---:|---:|"]
        for r in other:
            lines.append(f"| {r['kernel']} | {r['kv_bits']} | {r['batch']} | {r['us']:.1f} | {r['us'] / r['batch']:.4f} |")
    md = "\n".join(lines) + "\n"
    open(a.md, "w").write(md)
    json.dump({"device": ours["device"], "copy_gbps": round(copy_bw / 1e9, 1), "sdpa_torch": sdpa.get("torch"),
               "sdpa_gqa": sdpa.get("gqa"), "attention": rows, "other": other}, open(a.json, "w"), indent=1)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
