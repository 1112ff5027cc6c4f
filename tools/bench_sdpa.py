#!/usr/bin/env python3
"""Times torch.nn.functional.scaled_dot_product_attention for single-token decode on the shapes
of cuda/tests/gpu/bench_attention.cu: fp16 K/V [batch, 8, ctx, 128], q [batch, 32, 1, 128].
Efficiency here uses a nominal 4.3 TB/s; bench_combine.py recomputes it with the copy rate
bench_attention.cu measured in the same run.

GQA goes through enable_gqa=True (torch >= 2.5) when the installed torch accepts it, otherwise
K/V heads are repeated 4x beforehand (outside the timed region); the JSON says which ("gqa").
Timing: CUDA events around 10 back-to-back calls, median over repetitions, after warm-up; K/V
rotate over enough copies that each call reads HBM rather than L2.

  python3 tools/bench_sdpa.py --json OUT.json [--quick]
"""
import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F

H, HKV, D = 32, 8, 128
PEAK_BW = 4.3e12


def flash_eligible(q, k, v, gqa):
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return "unknown"
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("cudnn", getattr(SDPBackend, "CUDNN_ATTENTION", None)), ("math", SDPBackend.MATH)):
        if backend is None:
            continue
        try:
            with sdpa_kernel([backend]):
                call(q, k, v, gqa)
            torch.cuda.synchronize()
            return name
        except Exception:  # noqa: BLE001 - any refusal means "not this backend"
            continue
    return "none"


def call(q, k, v, gqa):
    if gqa == "enable_gqa":
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    return F.scaled_dot_product_attention(q, k, v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    ctxs = [4096, 32768] if args.quick else [1024, 4096, 16384, 32768, 131072]
    batches = [1, 16] if args.quick else [1, 4, 16, 64]
    shapes = [(c, b) for c in ctxs for b in batches]
    # large batches, as bench_attention.cu
    shapes += [(c, b) for c in ([1024] if args.quick else [1024, 4096]) for b in ([512] if args.quick else [256, 512])]
    dev = torch.cuda.get_device_name(0)
    gqa = "enable_gqa"
    try:
        qt = torch.zeros(1, H, 1, D, dtype=torch.float16, device="cuda")
        kt = torch.zeros(1, HKV, 64, D, dtype=torch.float16, device="cuda")
        F.scaled_dot_product_attention(qt, kt, kt, enable_gqa=True)
    except (TypeError, RuntimeError):
        gqa = "repeat_kv"
    print(f"torch {torch.__version__}, {dev}, GQA via {gqa}", flush=True)
    results = []
    for ctx, batch in shapes:
        if True:
            kv_bytes = batch * HKV * ctx * D * 2 * 2
            free, _ = torch.cuda.mem_get_info()
            rep = 1 if gqa == "enable_gqa" else H // HKV
            if kv_bytes * rep * 1.15 > free:
                print(f"ctx {ctx} batch {batch}: skipped ({kv_bytes * rep / 1e9:.1f} GB does not fit)", flush=True)
                continue
            copies = max(1, min(8, math.ceil((512 << 20) / kv_bytes)))
            if kv_bytes * rep * copies * 1.15 > free:
                copies = 1
            g = torch.Generator(device="cuda").manual_seed(ctx * 131 + batch)
            q = torch.randn(batch, H, 1, D, dtype=torch.float16, device="cuda", generator=g)
            ks, vs = [], []
            for _ in range(copies):
                k = torch.randn(batch, HKV, ctx, D, dtype=torch.float16, device="cuda", generator=g)
                v = torch.randn(batch, HKV, ctx, D, dtype=torch.float16, device="cuda", generator=g)
                if gqa == "repeat_kv":
                    k = k.repeat_interleave(H // HKV, dim=1)
                    v = v.repeat_interleave(H // HKV, dim=1)
                ks.append(k)
                vs.append(v)
            backend = flash_eligible(q, ks[0], vs[0], gqa)
            per, reps = 10, (5 if kv_bytes > 4e9 or args.quick else 11)
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times, cnt = [], 0
            for r in range(-1, reps):
                e0.record()
                for _ in range(per):
                    call(q, ks[cnt % copies], vs[cnt % copies], gqa)
                    cnt += 1
                e1.record()
                torch.cuda.synchronize()
                if r >= 0:
                    times.append(e0.elapsed_time(e1) * 1000.0 / per)
            times.sort()
            us = times[len(times) // 2]
            eff = kv_bytes / (us * 1e-6) / PEAK_BW
            print(f"ctx {ctx:6d} batch {batch:3d}: {us:10.2f} us  {kv_bytes / us / 1e3:8.1f} GB/s  eff {100 * eff:5.1f}%  "
                  f"(backend {backend}, {copies} copies)", flush=True)
            results.append({"ctx": ctx, "batch": batch, "us": us, "bytes": kv_bytes, "eff": eff, "backend": backend})
            del ks, vs, q
            torch.cuda.empty_cache()
    with open(args.json, "w") as f:
        json.dump({"device": dev, "torch": torch.__version__, "gqa": gqa, "peak_bw": PEAK_BW, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
