"""flare from Python: causal bf16 attention on torch tensors, checked against a float64 reference.

    pip install .            # the flare package (distribution name flare-attn), from the repo root
    python examples/python/attention.py

flare takes any DLPack-capable CUDA array; torch is used here for the tensors and the reference.
Without torch, a CUDA build of torch, or a GPU, the script prints why it skips and exits 0.
"""
import sys


def main() -> int:
    try:
        import flare
    except ImportError as e:
        print(f"SKIP: the flare package is not installed ({e}); run `pip install .`")
        return 0
    print(f"flare {flare.__version__}, built for {flare.build_config}")
    try:
        import torch
    except ImportError:
        print("SKIP: torch is not installed; the example uses torch tensors")
        return 0
    if flare.cuda_device_count() == 0 or not torch.cuda.is_available():
        print("SKIP: no CUDA driver/GPU found; the attention example needs one")
        return 0

    # FlashAttention-2 layout: (batch, seqlen, heads, head_dim); 8 query heads share 2 K/V heads.
    batch, seqlen, heads, heads_k, dim = 2, 256, 8, 2, 64
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(batch, seqlen, heads, dim, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(batch, seqlen, heads_k, dim, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(batch, seqlen, heads_k, dim, device="cuda", dtype=torch.bfloat16, generator=gen)

    # Runs on torch's current stream; return_attn_probs adds the log-sum-exp (batch, heads, seqlen).
    out, lse, _ = flare.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)

    # Reference in float64: expand K/V to every query head, mask the future, softmax.
    qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k, v))  # (batch, heads, seqlen, dim)
    kd = kd.repeat_interleave(heads // heads_k, dim=1)
    vd = vd.repeat_interleave(heads // heads_k, dim=1)
    scores = qd @ kd.transpose(-1, -2) / dim**0.5
    future = torch.ones(seqlen, seqlen, device="cuda", dtype=torch.bool).triu(1)
    scores.masked_fill_(future, float("-inf"))
    ref = (scores.softmax(-1) @ vd).transpose(1, 2)
    ref_lse = scores.logsumexp(-1)

    err = (out.double() - ref).abs().max().item()
    lse_err = (lse.double() - ref_lse).abs().max().item()
    ok = err <= 2e-2 and lse_err <= 1e-3  # NaN compares false: fails
    print(f"causal bf16 attention {tuple(q.shape)}: max |error| out {err:.2e}, lse {lse_err:.2e} "
          f"({'ok' if ok else 'FAILED'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
