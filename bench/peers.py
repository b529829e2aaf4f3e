"""Peers outside PyTorch's SDPA, for bench/compare.py. Each is optional: it joins the tables only
where its package imports on the GPU machine (shared/peers/README.md says how to carry it).

fa4  FlashAttention-4's CuTe-DSL forward (`flash_attn.cute.flash_attn_func`; runs its Hopper
     kernels on sm90). It takes [b, s, h, d] tensors and GQA natively, returns (out, lse), and
     JIT-compiles each variant on its first call: compare.py's warm-up covers that before timing.
"""

_fa4 = None  # (function or None, why not) once probed


def fa4():
    """FlashAttention-4's flash_attn_func, or None with the import error's first line."""
    global _fa4
    if _fa4 is None:
        try:
            from flash_attn.cute import flash_attn_func  # noqa: PLC0415 - optional peer
            _fa4 = (flash_attn_func, "")
        except Exception as e:  # noqa: BLE001 - any failure means: not available here
            _fa4 = (None, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
    return _fa4


def available():
    """The peer names that import here, in table order."""
    return ["fa4"] if fa4()[0] is not None else []


def time_fa4(measure, views, causal, label):
    """views: per input set (q, k, v) in [b, h, s, d]; measure: compare.py's Runner.measure.
    Times FlashAttention-4 rotating over the sets (each as [b, s, h, d], copied outside the
    timing where the view is not already that layout). Returns (Timing, output of set 0 in
    [b, h, s, dv])."""
    fn, why = fa4()
    if fn is None:
        raise RuntimeError(f"fa4 unavailable ({why})")
    sets = [tuple(x.transpose(1, 2).contiguous() for x in qkv) for qkv in views]
    n = len(sets)
    out0, _ = fn(*sets[0], causal=causal)
    t = measure(lambda i: fn(*sets[i % n], causal=causal), n, label)
    return t, out0.transpose(1, 2)
