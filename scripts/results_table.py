#!/usr/bin/env python3
"""Prints README's performance tables (Markdown) from a results summary.json.

Usage: python3 scripts/results_table.py bench/results/<date>-<device>/summary.json
"""
import json
import sys
from collections import defaultdict


def main(path):
    s = json.load(open(path))
    rows = s["rows"]
    prefill = defaultdict(dict)
    decode = defaultdict(dict)
    for r in rows:
        if r["table"] == "prefill":
            prefill[(r["head_dim"], r["causal"], r["seqlen_q"])][r["system"]] = r.get("tflops")
        elif r["table"] == "decode":
            decode[(r["batch"], r["seqlen_k"], r.get("paged", 0))][r["system"]] = r.get("gbs")
    c = s["ceilings"]
    print(f"Device {s['device']}, {s['date']}, commit {s['commit'][:10]}; ceilings in the same "
          f"run: bf16 GEMM {c['gemm_bf16_tflops']:.0f} TFLOP/s, copy {c['copy_gbs']:.0f} GB/s.\n")
    fmt = lambda x: "—" if x is None else f"{x:.0f}"
    print("| head dim | causal | seqlen | flare | SDPA flash (FA2) | SDPA cuDNN | flare / FA2 | flare / cuDNN |")
    print("|---|---|---|---|---|---|---|---|")
    for (d, causal, sq), v in sorted(prefill.items()):
        f, fa2, cud = v.get("flare"), v.get("sdpa-flash"), v.get("sdpa-cudnn")
        r1 = f"{f / fa2:.2f}" if f and fa2 else "—"
        r2 = f"{f / cud:.2f}" if f and cud else "—"
        print(f"| {d} | {'yes' if causal else 'no'} | {sq} | {fmt(f)} | {fmt(fa2)} | {fmt(cud)} | {r1} | {r2} |")
    print("\nDecode (bf16, d128, 32 q heads / 8 KV heads, seqlen_q 1), GB/s of K+V read:\n")
    print("| batch | kv length | flare | flare paged 64 | flare paged 256 | SDPA flash | SDPA cuDNN | flare / copy |")
    print("|---|---|---|---|---|---|---|---|")
    keys = sorted({(b, k) for (b, k, _) in decode})
    for b, k in keys:
        cont = decode.get((b, k, 0), {})
        p64 = decode.get((b, k, 64), {}).get("flare")
        p256 = decode.get((b, k, 256), {}).get("flare")
        f = cont.get("flare")
        frac = f"{f / c['copy_gbs']:.2f}" if f else "—"
        print(f"| {b} | {k} | {fmt(f)} | {fmt(p64)} | {fmt(p256)} | {fmt(cont.get('sdpa-flash'))} | "
              f"{fmt(cont.get('sdpa-cudnn'))} | {frac} |")


if __name__ == "__main__":
    main(sys.argv[1])
