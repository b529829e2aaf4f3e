"""Runs one PyTorch SDPA backend on one shape of flare_bench's tables, for a profiler.

    python3 scripts/sdpa_once.py {flash|cudnn} prefill HEAD_DIM CAUSAL SEQLEN [ITERS]
    python3 scripts/sdpa_once.py {flash|cudnn} decode BATCH KV_LEN [ITERS]

Prefill: bf16, 16384 tokens, model dim 2048 (batch = 16384 / seqlen, heads = 2048 / head_dim),
as in flare_bench and bench/compare.py. Decode: bf16, seqlen_q 1, 32 query / 8 KV heads,
head dim 128 (enable_gqa). Runs ITERS calls (default 8) after 3 warm-up calls.
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def main():
    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[sys.argv[1]]
    kind, args = sys.argv[2], [int(a) for a in sys.argv[3:]]
    kw = {}
    if kind == "prefill":
        d, causal, s = args[:3]
        iters = args[3] if len(args) > 3 else 8
        b, hq, hk, sq = 16384 // s, 2048 // d, 2048 // d, s
        kw["is_causal"] = bool(causal)
    else:
        b, s = args[:2]
        iters = args[2] if len(args) > 2 else 8
        d, hq, hk, sq = 128, 32, 8, 1
        kw["enable_gqa"] = True
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(b, hq, sq, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(b, hk, s, d, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(b, hk, s, d, device="cuda", dtype=torch.bfloat16, generator=g)
    with sdpa_kernel([backend]):
        for _ in range(3 + iters):
            F.scaled_dot_product_attention(q, k, v, **kw)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
