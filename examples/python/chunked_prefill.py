"""flare from Python as a serving engine uses it: a chunk of new tokens per sequence attends to
that sequence's cached keys in a paged KV cache (chunked prefill), with a per-head attention
sink and a bidirectional image span, checked against a float64 reference.

    pip install .            # the flare package (distribution name flare-attn), from the repo root
    python examples/python/chunked_prefill.py

The call is FlashAttention-2's flash_attn_varlen_func with block_table= (k and v are page pools
of any page size), plus learnable_sink= and mm_prefix_ranges=. Without torch, a CUDA build of
torch, or a GPU, the script prints why it skips and exits 0.
"""
import sys


def main() -> int:
    try:
        import flare
    except ImportError as e:
        print(f"SKIP: the flare package is not installed ({e}); run `pip install .`")
        return 0
    try:
        import torch
    except ImportError:
        print("SKIP: torch is not installed; the example uses torch tensors")
        return 0
    if flare.cuda_device_count() == 0 or not torch.cuda.is_available():
        print("SKIP: no CUDA driver/GPU found; the example needs one")
        return 0

    heads, heads_k, dim, page = 8, 2, 64, 16
    new_tokens = [100, 1, 40]  # this step's tokens per sequence (the last ones of each sequence)
    cached = [200, 90, 0]      # keys already in the cache before them
    # Image spans [start, end) of key positions: sequence 0's straddles the cached and new
    # tokens, sequence 1 has none (an empty pair), sequence 2's is inside its first prompt.
    image = [(150, 260), (0, 0), (5, 25)]
    gen = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=gen)

    # Every sequence's keys (cached + new) live in pages; the block table lists them in order.
    lens_k = [c + n for c, n in zip(cached, new_tokens)]
    pages_per_seq = max(-(-n // page) for n in lens_k)
    num_pages = len(lens_k) * pages_per_seq
    k_pool, v_pool = randn(num_pages, page, heads_k, dim), randn(num_pages, page, heads_k, dim)
    block_table = torch.randperm(num_pages, device="cuda", generator=gen).to(torch.int32)
    block_table = block_table.view(len(lens_k), pages_per_seq)

    q = randn(sum(new_tokens), heads, dim)
    cu_q = torch.tensor([0] + [sum(new_tokens[:i + 1]) for i in range(len(new_tokens))],
                        device="cuda", dtype=torch.int32)
    cu_k = torch.tensor([0] + [sum(lens_k[:i + 1]) for i in range(len(lens_k))],
                        device="cuda", dtype=torch.int32)
    sink = torch.linspace(-1.0, 2.0, heads, device="cuda")
    ranges = torch.tensor(image, device="cuda", dtype=torch.int32).view(len(lens_k), 1, 2)

    out = flare.flash_attn_varlen_func(q, k_pool, v_pool, cu_q, cu_k, max(new_tokens),
                                       max(lens_k), causal=True, block_table=block_table,
                                       learnable_sink=sink, mm_prefix_ranges=ranges)

    # float64 reference, one sequence at a time: its keys gathered from its pages.
    worst = 0.0
    for b, (n_q, n_k) in enumerate(zip(new_tokens, lens_k)):
        rows = block_table[b].long()
        kd = k_pool[rows].reshape(-1, heads_k, dim)[:n_k].double()
        vd = v_pool[rows].reshape(-1, heads_k, dim)[:n_k].double()
        kd = kd.repeat_interleave(heads // heads_k, dim=1).transpose(0, 1)  # (heads, n_k, dim)
        vd = vd.repeat_interleave(heads // heads_k, dim=1).transpose(0, 1)
        qd = q[int(cu_q[b]):int(cu_q[b]) + n_q].double().transpose(0, 1)  # (heads, n_q, dim)
        scores = qd @ kd.transpose(-1, -2) / dim**0.5
        pos = torch.arange(n_q, device="cuda")[:, None] + n_k - n_q  # each query's key position
        key = torch.arange(n_k, device="cuda")[None, :]
        start, end = image[b]
        visible = (key <= pos) | ((key >= start) & (key < end) & (pos >= start) & (pos < end))
        scores = scores.masked_fill(~visible, float("-inf"))
        lse = torch.logaddexp(scores.logsumexp(-1), sink.double()[:, None])  # the sink's share
        ref = (torch.exp(scores - lse[..., None]) @ vd).transpose(0, 1)
        got = out[int(cu_q[b]):int(cu_q[b]) + n_q].double()
        worst = max(worst, (got - ref).abs().max().item())
    ok = worst <= 2e-2  # NaN compares false: fails
    print(f"chunked prefill over {num_pages} pages of {page}: max |error| {worst:.2e} "
          f"({'ok' if ok else 'FAILED'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
