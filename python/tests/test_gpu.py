"""GPU tests: every function and feature against float64 references and torch SDPA (float32).

Skipped with a visible reason when torch or a CUDA device is missing, and per case when this
build of flare lacks the kernel (flare.build_config: archs, dtypes, head dims).
"""
import itertools
import math

import pytest

import flare

torch = pytest.importorskip("torch", reason="GPU tests need torch (not installed)")
if not torch.cuda.is_available():
    pytest.skip("GPU tests need a CUDA device (torch.cuda.is_available() is False)",
                allow_module_level=True)
if flare.cuda_device_count() == 0:
    pytest.skip("GPU tests: flare's CUDA runtime sees no device", allow_module_level=True)

import torch.nn.functional as F  # noqa: E402

DEV = "cuda"
BUILT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
DTYPES = [BUILT_DTYPES[d] for d in flare.build_config["dtypes"].split(",") if d in BUILT_DTYPES]
HDIMS = [int(d) for d in flare.build_config["head_dims"].split(",") if d]
if not DTYPES or not HDIMS:
    pytest.skip("GPU tests: this build has no kernels", allow_module_level=True)
DT = torch.bfloat16 if torch.bfloat16 in DTYPES else DTYPES[0]
D = 64 if 64 in HDIMS else HDIMS[0]
TEST_HDIMS = [d for d in HDIMS if d in (64, 128)] or HDIMS[:1]


def tol(dtype):
    return dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=5e-3, rtol=5e-3)


LSE_TOL = dict(atol=2e-3, rtol=1e-3)


def rand(*shape, dtype=DT):
    return torch.randn(*shape, device=DEV, dtype=dtype)


# ----------------------------------------------------------------------------- references


def ref_attn(q, k, v, *, scale=None, causal=False, window=(-1, -1), softcap=0.0, alibi=None,
             sink=None, ranges=None, dtype=torch.float64, lowp=None):
    """One batch of attention. q (b, sq, h, d); k (b, sk, hk, d); v (b, sk, hk, dv);
    alibi (h,) or (b, h); sink (h,) logits joining the denominator; ranges (b, r, 2) of
    [start, end) key positions: a query whose position lies in a range sees the whole range.

    Bottom-right aligned masks; rows that see no key give out 0, lse -inf (the sink with one).
    Returns out (b, sq, h, dv) and lse (b, h, sq) in `dtype`.

    lowp (float16 / bfloat16): the naive low-precision model instead (the C++ reference's
    NaiveLowPrecision): the scores (after scale, softcap and alibi), the probabilities and out
    rounded to lowp, everything else in `dtype`. The project's accuracy rule bounds an
    implementation's error by twice this model's.
    """
    rnd = (lambda x: x.to(lowp).to(dtype)) if lowp is not None else (lambda x: x)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    k = k.repeat_interleave(h // hk, dim=2)
    v = v.repeat_interleave(h // hk, dim=2)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq, device=q.device)[:, None]
    j = torch.arange(sk, device=q.device)[None, :]
    diag = i + sk - sq
    if alibi is not None:
        slopes = alibi.to(dtype)
        slopes = slopes.expand(b, h) if slopes.dim() == 1 else slopes
        s = s - slopes[:, :, None, None] * (diag - j).abs().to(dtype)
    mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
    wl, wr = window
    if causal:
        wr = 0
    if wl >= 0:
        mask &= j >= diag - wl
    if wr >= 0:
        mask &= j <= diag + wr
    mask = mask.expand(b, sq, sk).clone()
    if ranges is not None:
        for bi in range(b):
            for start, end in ranges[bi].tolist():
                inside = (j >= start) & (j < end) & (diag >= start) & (diag < end)
                mask[bi] |= inside
    s = rnd(s.masked_fill(~mask[:, None], float("-inf")))
    lse = torch.logsumexp(s, dim=-1)
    if sink is not None:
        lse = torch.logaddexp(lse, sink.to(dtype)[None, :, None].expand_as(lse))
    p = rnd(torch.exp(s - lse[..., None]).nan_to_num(0.0))
    out = rnd(torch.einsum("bhqk,bkhd->bqhd", p, v))
    return out, lse


def sdpa_ref(q, k, v, *, scale=None, causal=False, window=(-1, -1), alibi=None):
    """The same semantics through torch's scaled_dot_product_attention in float32."""
    q, k, v = (x.float().transpose(1, 2) for x in (q, k, v))
    b, h, sq, d = q.shape
    hk, sk = k.shape[1], k.shape[2]
    k = k.repeat_interleave(h // hk, dim=1)
    v = v.repeat_interleave(h // hk, dim=1)
    i = torch.arange(sq, device=q.device)[:, None]
    j = torch.arange(sk, device=q.device)[None, :]
    diag = i + sk - sq
    keep = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
    wl, wr = window
    if causal:
        wr = 0
    if wl >= 0:
        keep &= j >= diag - wl
    if wr >= 0:
        keep &= j <= diag + wr
    bias = torch.zeros(b, h, sq, sk, device=q.device)
    if alibi is not None:
        slopes = alibi.float().expand(b, h) if alibi.dim() == 1 else alibi.float()
        bias = bias - slopes[:, :, None, None] * (diag - j).abs().float()
    bias = bias.masked_fill(~keep, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    return out.transpose(1, 2), keep.any(dim=1)


def check_out(got, want, dtype):
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want.double(), **tol(dtype))


def check_lse(got, want):
    assert got.dtype == torch.float32
    assert got.shape == want.shape
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite)
    torch.testing.assert_close(got[finite].double(), want[finite].double(), **LSE_TOL)


# ----------------------------------------------------------------------------- flash_attn_func

CASES = [
    # (batch, sq, sk, h, hk, causal, window, softcap, alibi)
    (2, 128, 128, 4, 4, False, (-1, -1), 0.0, None),
    (2, 128, 128, 4, 4, True, (-1, -1), 0.0, None),
    (1, 64, 200, 4, 2, True, (-1, -1), 0.0, None),    # bottom-right causal, sq < sk
    (1, 150, 97, 4, 1, True, (-1, -1), 0.0, None),    # sq > sk: top rows see no key
    (2, 113, 203, 6, 2, False, (32, 8), 0.0, None),   # sliding window, GQA
    (2, 96, 96, 4, 4, True, (16, -1), 0.0, None),     # causal + window
    (2, 77, 130, 4, 4, False, (-1, -1), 30.0, None),  # softcap
    (2, 128, 128, 4, 2, True, (-1, -1), 0.0, "1d"),   # alibi (nheads,)
    (2, 60, 90, 4, 4, False, (-1, -1), 5.0, "2d"),    # alibi (batch, nheads) + softcap
    (3, 1, 257, 8, 1, False, (-1, -1), 0.0, None),    # decode-like, MQA
]


def alibi_for(kind, b, h):
    if kind is None:
        return None
    slopes = torch.rand(h, device=DEV, dtype=torch.float32) * 0.3
    return slopes if kind == "1d" else torch.rand(b, h, device=DEV) * 0.3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", TEST_HDIMS)
@pytest.mark.parametrize("case", CASES)
def test_flash_attn_func(case, d, dtype):
    b, sq, sk, h, hk, causal, window, softcap, alibi_kind = case
    torch.manual_seed(0)
    q, k, v = rand(b, sq, h, d, dtype=dtype), rand(b, sk, hk, d, dtype=dtype), rand(b, sk, hk, d, dtype=dtype)
    alibi = alibi_for(alibi_kind, b, h)
    out, lse, probs = flare.flash_attn_func(q, k, v, causal=causal, window_size=window,
                                            softcap=softcap, alibi_slopes=alibi,
                                            return_attn_probs=True)
    assert probs is None
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == q.shape
    want, want_lse = ref_attn(q, k, v, causal=causal, window=window, softcap=softcap, alibi=alibi)
    check_out(out, want, dtype)
    check_lse(lse, want_lse)
    if softcap == 0.0:
        s_out, row_ok = sdpa_ref(q, k, v, causal=causal, window=window, alibi=alibi)
        check_out(out[:, row_ok], s_out[:, row_ok], dtype)
        assert torch.all(out[:, ~row_ok] == 0)


def test_softmax_scale_and_plain_return():
    torch.manual_seed(1)
    q, k, v = rand(2, 64, 4, D), rand(2, 80, 4, D), rand(2, 80, 4, D)
    out = flare.flash_attn_func(q, k, v, softmax_scale=0.3)
    assert isinstance(out, torch.Tensor)
    check_out(out, ref_attn(q, k, v, scale=0.3)[0], DT)
    check_out(out, sdpa_ref(q, k, v, scale=0.3)[0], DT)


def test_packed_functions_match_separate():
    torch.manual_seed(2)
    qkv = rand(2, 100, 3, 4, D)
    q, k, v = qkv.unbind(dim=2)
    want = flare.flash_attn_func(q, k, v, causal=True)
    got = flare.flash_attn_qkvpacked_func(qkv, causal=True)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    check_out(got, ref_attn(q, k, v, causal=True)[0], DT)
    kv = rand(2, 130, 2, 2, D)
    q2 = rand(2, 70, 4, D)
    got, lse, _ = flare.flash_attn_kvpacked_func(q2, kv, window_size=(20, 20),
                                                 return_attn_probs=True)
    want, want_lse = ref_attn(q2, kv[:, :, 0], kv[:, :, 1], window=(20, 20))
    check_out(got, want, DT)
    check_lse(lse, want_lse)


def test_strided_inputs_and_out_argument():
    torch.manual_seed(3)
    big = rand(2, 128, 8, D)
    q = big[:, :, :4]  # non-contiguous heads
    k = rand(2, 96, 4, D).transpose(0, 1).contiguous().transpose(0, 1)  # batch-minor layout
    v = rand(2, 96, 4, D)
    out = torch.empty(2, 128, 4, D, device=DEV, dtype=DT)
    got = flare.flash_attn_func(q, k, v, causal=True, out=out)
    assert got is out
    check_out(out, ref_attn(q, k, v, causal=True)[0], DT)


def test_requires_grad_inputs_run_forward():
    torch.manual_seed(4)
    q = rand(1, 32, 2, D).requires_grad_()
    k, v = rand(1, 32, 2, D), rand(1, 32, 2, D)
    out = flare.flash_attn_func(q, k, v)
    assert not out.requires_grad  # no backward: gradients do not flow
    check_out(out, ref_attn(q.detach(), k, v)[0], DT)


def test_streams():
    torch.manual_seed(5)
    q, k, v = rand(2, 256, 4, D), rand(2, 256, 4, D), rand(2, 256, 4, D)
    want = flare.flash_attn_func(q, k, v, causal=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # default: torch's current stream
        got = flare.flash_attn_func(q, k, v, causal=True)
    side.synchronize()
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    got2 = flare.flash_attn_func(q, k, v, causal=True, stream=side)  # explicit stream object
    got3 = flare.flash_attn_func(q, k, v, causal=True, stream=side.cuda_stream)  # int handle
    side.synchronize()
    torch.testing.assert_close(got2, want, atol=0, rtol=0)
    torch.testing.assert_close(got3, want, atol=0, rtol=0)


class DLPackOnly:
    """A bare DLPack producer (not torch): exercises the framework-neutral path."""

    def __init__(self, t):
        self._t = t

    def __dlpack__(self, **kwargs):
        return self._t.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._t.__dlpack_device__()


def test_generic_dlpack_arrays_and_cudamalloc_outputs():
    torch.manual_seed(6)
    q, k, v = rand(2, 64, 4, D), rand(2, 80, 2, D), rand(2, 80, 2, D)
    torch.cuda.synchronize()
    out, lse, _ = flare.flash_attn_func(DLPackOnly(q), DLPackOnly(k), DLPackOnly(v), causal=True,
                                        return_attn_probs=True)
    assert not isinstance(out, torch.Tensor)
    assert hasattr(out, "__dlpack__")
    torch.cuda.synchronize()  # legacy default stream 0 was used
    out_t, lse_t = torch.from_dlpack(out), torch.from_dlpack(lse)
    assert out_t.shape == q.shape and lse_t.shape == (2, 4, 64)
    want, want_lse = ref_attn(q, k, v, causal=True)
    check_out(out_t, want, DT)
    check_lse(lse_t, want_lse)
    del out, lse, out_t, lse_t  # the capsule frees the cudaMalloc'd memory


def test_errors_name_the_argument():
    q, k, v = rand(1, 16, 2, D), rand(1, 16, 2, D), rand(1, 16, 2, D)
    with pytest.raises(ValueError, match="q must be float16 or bfloat16"):
        flare.flash_attn_func(q.float(), k.float(), v.float())
    with pytest.raises(ValueError, match=r"k is (fp16|bf16) but q is (fp16|bf16)"):
        flare.flash_attn_func(q, k.half() if DT == torch.bfloat16 else k.bfloat16(), v)
    with pytest.raises(ValueError, match=r"k.shape\[3\]"):
        flare.flash_attn_func(q, rand(1, 16, 2, D + 8), v)
    with pytest.raises(ValueError, match="k must have 4 dimensions"):
        flare.flash_attn_func(q, k[0], v)
    with pytest.raises(ValueError, match=r"k.stride\[3\] \(2\) must be 1"):
        flare.flash_attn_func(q, rand(1, 16, 2, 2 * D)[..., ::2], v)
    with pytest.raises(ValueError, match="q has 3 heads, not a multiple of the 2 heads of k"):
        flare.flash_attn_func(rand(1, 16, 3, D), k, v)
    with pytest.raises(ValueError, match="alibi_slopes must be float32"):
        flare.flash_attn_func(q, k, v, alibi_slopes=torch.ones(2, device=DEV, dtype=DT))
    with pytest.raises(ValueError, match="must be a CUDA array"):
        flare.flash_attn_func(q, k.cpu(), v)
    with pytest.raises(ValueError, match="out"):
        flare.flash_attn_func(q, k, v, out=torch.empty(1, 16, 2, D + 8, device=DEV, dtype=DT))
    with pytest.raises(NotImplementedError, match="dropout"):
        flare.flash_attn_func(q, k, v, dropout_p=0.1)
    big = rand(1, 16, 2, 520)
    with pytest.raises(ValueError, match=r"head_dim \(520\)"):  # flare's own status text surfaces
        flare.flash_attn_func(big, big, big)
    # A head dim above every built kernel's (a smaller one may run on a wider kernel).
    missing = next((d for d in (64, 128, 256, 512) if d > max(HDIMS)), None)
    if missing is not None:
        x = rand(1, 16, 2, missing)
        with pytest.raises(RuntimeError, match="FLARE_HEAD_DIMS"):
            flare.flash_attn_func(x, x, x)


# ----------------------------------------------------------------------------- varlen


def make_varlen(seqlens_q, seqlens_k, h, hk, d, dtype=DT):
    cu_q = torch.tensor([0, *itertools.accumulate(seqlens_q)], dtype=torch.int32, device=DEV)
    cu_k = torch.tensor([0, *itertools.accumulate(seqlens_k)], dtype=torch.int32, device=DEV)
    q = rand(int(cu_q[-1]), h, d, dtype=dtype)
    k = rand(int(cu_k[-1]), hk, d, dtype=dtype)
    v = rand(int(cu_k[-1]), hk, d, dtype=dtype)
    return q, k, v, cu_q, cu_k


def varlen_ref(q, k, v, cu_q, cu_k, **kw):
    outs, lses = [], []
    for b in range(len(cu_q) - 1):
        qs, qe, ks, ke = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        o, l = ref_attn(q[None, qs:qe], k[None, ks:ke], v[None, ks:ke], **kw)
        outs.append(o[0])
        lses.append(l[0])
    return torch.cat(outs), torch.cat(lses, dim=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [
    dict(),
    dict(causal=True),
    dict(window=(16, 4)),
    dict(softcap=20.0),
    dict(causal=True, alibi="1d"),
])
def test_flash_attn_varlen_func(kw, dtype):
    torch.manual_seed(7)
    seqlens_q, seqlens_k = [37, 1, 128, 64], [50, 20, 128, 33]
    q, k, v, cu_q, cu_k = make_varlen(seqlens_q, seqlens_k, 4, 2, D, dtype)
    alibi = alibi_for(kw.pop("alibi", None), 4, 4)
    window = kw.pop("window", (-1, -1))
    out, lse, probs = flare.flash_attn_varlen_func(
        q, k, v, cu_q, cu_k, max(seqlens_q), max(seqlens_k), window_size=window,
        alibi_slopes=alibi, return_attn_probs=True, softcap=kw.get("softcap", 0.0),
        causal=kw.get("causal", False))
    assert probs is None and out.shape == q.shape and lse.shape == (4, q.shape[0])
    want, want_lse = varlen_ref(q, k, v, cu_q, cu_k, window=window, alibi=alibi, **kw)
    check_out(out, want, dtype)
    check_lse(lse, want_lse)


def test_varlen_packed_functions():
    torch.manual_seed(8)
    seqlens = [40, 7, 90]
    cu = torch.tensor([0, 40, 47, 137], dtype=torch.int32, device=DEV)
    qkv = rand(137, 3, 4, D)
    out = flare.flash_attn_varlen_qkvpacked_func(qkv, cu, max(seqlens), causal=True)
    want, _ = varlen_ref(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu, cu, causal=True)
    check_out(out, want, DT)
    q = rand(137, 4, D)
    kv = rand(137, 2, 2, D)
    out = flare.flash_attn_varlen_kvpacked_func(q, kv, cu, cu, 90, 90)
    want, _ = varlen_ref(q, kv[:, 0], kv[:, 1], cu, cu)
    check_out(out, want, DT)


def test_varlen_cu_seqlens_dtype():
    q, k, v, cu_q, cu_k = make_varlen([16], [16], 2, 2, D)
    with pytest.raises(ValueError, match="cu_seqlens_q must be int32"):
        flare.flash_attn_varlen_func(q, k, v, cu_q.long(), cu_k, 16, 16)


def to_pages(tensors, cu, page, extra_pages=3):
    """Packed rows (total, hk, d) of the sequences cu, for each tensor, into shuffled page pools.

    Returns the pools (num_pages, page, hk, d), one per tensor, sharing one block table
    (batch, max_pages) of distinct pool pages; unused rows and pages hold random values.
    """
    lens = [int(cu[i + 1] - cu[i]) for i in range(len(cu) - 1)]
    max_pages = max(1, max(-(-n // page) for n in lens))
    num_pages = len(lens) * max_pages + extra_pages
    table = torch.randperm(num_pages, device=DEV)[: len(lens) * max_pages].to(torch.int32)
    table = table.view(len(lens), max_pages)
    pools = []
    for x in tensors:
        pool = torch.randn(num_pages, page, *x.shape[1:], device=DEV).to(x.dtype)
        for b, n in enumerate(lens):
            rows = x[int(cu[b]):int(cu[b]) + n]
            for pg in range(-(-n // page)):
                chunk = rows[pg * page:(pg + 1) * page]
                pool[int(table[b, pg]), : chunk.shape[0]] = chunk
        pools.append(pool)
    return pools, table


@pytest.mark.parametrize("page", [1, 3, 16, 48, 256])
@pytest.mark.parametrize("kw", [dict(causal=True), dict(window=(24, 0), softcap=15.0)])
def test_flash_attn_varlen_func_paged(page, kw):
    # Chunked prefill over a paged cache: new queries at the end of each sequence's keys.
    torch.manual_seed(20 + page)
    seqlens_q, seqlens_k = [37, 1, 64, 5], [300, 20, 64, 130]
    q, k, v, cu_q, cu_k = make_varlen(seqlens_q, seqlens_k, 8, 2, D)
    (kp, vp), table = to_pages([k, v], cu_k, page)
    causal, window, softcap = kw.get("causal", False), kw.get("window", (-1, -1)), kw.get("softcap", 0.0)
    out, lse, _ = flare.flash_attn_varlen_func(
        q, kp, vp, cu_q, cu_k, max(seqlens_q), max(seqlens_k), causal=causal,
        window_size=window, softcap=softcap, return_attn_probs=True, block_table=table)
    assert out.shape == q.shape and lse.shape == (8, q.shape[0])
    want, want_lse = varlen_ref(q, k, v, cu_q, cu_k, causal=causal, window=window,
                                softcap=softcap)
    check_out(out, want, DT)
    check_lse(lse, want_lse)
    # The contiguous call over the same keys gives the same result.
    plain = flare.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(seqlens_q), max(seqlens_k),
                                         causal=causal, window_size=window, softcap=softcap)
    check_out(out, plain, DT)


def test_paged_varlen_errors_name_the_argument():
    q, k, v, cu_q, cu_k = make_varlen([16, 8], [16, 40], 4, 2, D)
    (kp,), table = to_pages([k], cu_k, 16)
    with pytest.raises(ValueError, match="k must have 4 dimensions"):
        flare.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 16, 40, block_table=table)
    with pytest.raises(ValueError, match="block_table must be int32"):
        flare.flash_attn_varlen_func(q, kp, kp, cu_q, cu_k, 16, 40, block_table=table.long())
    with pytest.raises(ValueError, match=r"block_table.shape\[0\] is 1"):
        flare.flash_attn_varlen_func(q, kp, kp, cu_q, cu_k, 16, 40, block_table=table[:1])


# ----------------------------------------------------------------------------- KV cache


def rotate(x, cos, sin, positions, interleaved, dtype=torch.float64):
    """x (n, h, d) rotated at positions (n,) with tables (P, rd/2), computed in `dtype`: float64
    for the reference; float32 gives the library's own values (src/common/rotary.h: each product
    rounded, first of a pair x c - partner s, second partner s + x c)."""
    rd = 2 * cos.shape[1]
    c = cos.to(dtype)[positions][:, None, :]
    s = sin.to(dtype)[positions][:, None, :]
    x = x.to(dtype).clone()
    r = x[..., :rd]
    if interleaved:
        a, b = r[..., 0::2].clone(), r[..., 1::2].clone()
        r[..., 0::2] = a * c - b * s
        r[..., 1::2] = a * s + b * c
    else:
        a, b = r[..., : rd // 2].clone(), r[..., rd // 2:].clone()
        r[..., : rd // 2] = a * c - b * s
        r[..., rd // 2:] = a * s + b * c
    x[..., :rd] = r
    return x


def kvcache_ref(q, k_cache, v_cache, k_new, v_new, cache_seqlens, *, leftpad=None, batch_idx=None,
                cos=None, sin=None, interleaved=True, causal=False, window=(-1, -1),
                alibi=None, softcap=0.0):
    """Per-sequence reference from the ORIGINAL caches (logical, unpaged: (B, cap, hk, d))."""
    b = q.shape[0]
    outs, lses, new_rows = [], [], []
    for i in range(b):
        cs = int(cache_seqlens[i])
        lp = int(leftpad[i]) if leftpad is not None else 0
        src = int(batch_idx[i]) if batch_idx is not None else i
        keys, vals = k_cache[src, lp:cs].double(), v_cache[src, lp:cs].double()
        qi = q[i].double()
        if k_new is not None:
            sn = k_new.shape[1]
            kn = k_new[i].double()
            if cos is not None:
                kn = rotate(kn, cos, sin, torch.arange(cs, cs + sn, device=DEV), interleaved)
                per_row = causal or window != (-1, -1)
                pos = (torch.arange(q.shape[1], device=DEV) + cs) if per_row else \
                    torch.full((q.shape[1],), cs, device=DEV)
                qi = rotate(qi, cos, sin, pos, interleaved)
            new_rows.append(kn)
            keys = torch.cat([keys, kn])
            vals = torch.cat([vals, v_new[i].double()])
        a = alibi[i:i + 1] if (alibi is not None and alibi.dim() == 2) else alibi
        o, l = ref_attn(qi[None], keys[None], vals[None], causal=causal, window=window,
                        alibi=a, softcap=softcap)
        outs.append(o[0])
        lses.append(l[0])
    return torch.stack(outs), torch.stack(lses), new_rows


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [
    dict(),
    dict(causal=True),
    dict(window=(40, 0), softcap=10.0),
    dict(alibi="1d", causal=True),
])
def test_kvcache_no_append(kw, dtype):
    torch.manual_seed(9)
    b, cap, h, hk = 3, 300, 8, 2
    kc, vc = rand(b, cap, hk, D, dtype=dtype), rand(b, cap, hk, D, dtype=dtype)
    q = rand(b, 4, h, D, dtype=dtype)
    cs = torch.tensor([5, 300, 123], dtype=torch.int32, device=DEV)
    alibi = alibi_for(kw.pop("alibi", None), b, h)
    window = kw.pop("window", (-1, -1))
    out, lse = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs, window_size=window,
                                             alibi_slopes=alibi, return_softmax_lse=True, **kw)
    want, want_lse, _ = kvcache_ref(q, kc, vc, None, None, cs, window=window, alibi=alibi, **kw)
    check_out(out, want, dtype)
    check_lse(lse, want_lse)


def test_kvcache_int_seqlens_none_and_splits():
    torch.manual_seed(10)
    kc, vc = rand(2, 512, 2, D), rand(2, 512, 2, D)
    q = rand(2, 1, 4, D)
    out = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=200)
    cs = torch.full((2,), 200, dtype=torch.int32, device=DEV)
    check_out(out, kvcache_ref(q, kc, vc, None, None, cs)[0], DT)
    full = flare.flash_attn_with_kvcache(q, kc, vc)  # None: the whole cache
    check_out(full, ref_attn(q, kc, vc)[0], DT)
    for splits in (1, 4):
        got, lse = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs, num_splits=splits,
                                                 return_softmax_lse=True)
        check_out(got, out, DT)


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_kvcache_append_rotary(causal, interleaved):
    torch.manual_seed(11)
    b, cap, h, hk, sn = 2, 256, 4, 2, 3
    kc, vc = rand(b, cap, hk, D), rand(b, cap, hk, D)
    kc0, vc0 = kc.clone(), vc.clone()
    q, kn, vn = rand(b, sn, h, D), rand(b, sn, hk, D), rand(b, sn, hk, D)
    rd = D // 2
    pos = torch.arange(cap, device=DEV, dtype=torch.float64)[:, None]
    freqs = 1.0 / (10000 ** (torch.arange(rd // 2, device=DEV, dtype=torch.float64) / (rd // 2)))
    cos, sin = torch.cos(pos * freqs).to(DT), torch.sin(pos * freqs).to(DT)
    cs = torch.tensor([10, 100], dtype=torch.int32, device=DEV)
    out = flare.flash_attn_with_kvcache(q, kc, vc, kn, vn, rotary_cos=cos, rotary_sin=sin,
                                        cache_seqlens=cs, causal=causal,
                                        rotary_interleaved=interleaved)
    want, _, new_rows = kvcache_ref(q, kc0, vc0, kn, vn, cs, cos=cos, sin=sin,
                                    interleaved=interleaved, causal=causal)
    check_out(out, want, DT)
    for i in range(b):  # the cache was written in place (rotated keys, plain values)
        c = int(cs[i])
        check_out(kc[i, c:c + sn], new_rows[i], DT)
        assert torch.equal(vc[i, c:c + sn], vn[i])
        assert torch.equal(kc[i, :c], kc0[i, :c])


def test_kvcache_append_batch_idx_leftpad():
    torch.manual_seed(12)
    b, cap, h, hk, sn = 2, 128, 4, 4, 2
    kc, vc = rand(4, cap, hk, D), rand(4, cap, hk, D)
    kc0, vc0 = kc.clone(), vc.clone()
    q, kn, vn = rand(b, sn, h, D), rand(b, sn, hk, D), rand(b, sn, hk, D)
    cs = torch.tensor([50, 70], dtype=torch.int32, device=DEV)
    idx = torch.tensor([3, 1], dtype=torch.int32, device=DEV)
    lp = torch.tensor([5, 0], dtype=torch.int32, device=DEV)
    out, lse = flare.flash_attn_with_kvcache(q, kc, vc, kn, vn, cache_seqlens=cs,
                                             cache_batch_idx=idx, cache_leftpad=lp, causal=True,
                                             return_softmax_lse=True)
    want, want_lse, _ = kvcache_ref(q, kc0, vc0, kn, vn, cs, leftpad=lp, batch_idx=idx,
                                    causal=True)
    check_out(out, want, DT)
    check_lse(lse, want_lse)
    assert torch.equal(kc[3, 50:52], kn[0]) and torch.equal(vc[1, 70:72], vn[1])


@pytest.mark.parametrize("page", [1, 3, 16, 64])
def test_kvcache_paged_append_rotary(page):
    torch.manual_seed(13)
    b, pages_per_seq, h, hk, sn = 3, 6, 8, 2, 1
    num_pages = b * pages_per_seq + 2
    kp, vp = rand(num_pages, page, hk, D), rand(num_pages, page, hk, D)
    block_table = torch.randperm(num_pages, device=DEV)[: b * pages_per_seq].to(torch.int32)
    block_table = block_table.view(b, pages_per_seq)
    cap = pages_per_seq * page
    # The logical (unpaged) view of the caches before the call.
    logical = lambda pool: pool[block_table.long()].reshape(b, cap, hk, D)  # noqa: E731
    kc0, vc0 = logical(kp).clone(), logical(vp).clone()
    q, kn, vn = rand(b, sn, h, D), rand(b, sn, hk, D), rand(b, sn, hk, D)
    rd = D
    pos = torch.arange(cap, device=DEV, dtype=torch.float64)[:, None]
    freqs = 1.0 / (10000 ** (torch.arange(rd // 2, device=DEV, dtype=torch.float64) / (rd // 2)))
    cos, sin = torch.cos(pos * freqs).to(DT), torch.sin(pos * freqs).to(DT)
    cs = torch.tensor([0, page + 3, cap - 1], dtype=torch.int32, device=DEV)
    out, lse = flare.flash_attn_with_kvcache(q, kp, vp, kn, vn, rotary_cos=cos, rotary_sin=sin,
                                             cache_seqlens=cs, block_table=block_table,
                                             causal=True, rotary_interleaved=False,
                                             return_softmax_lse=True)
    want, want_lse, new_rows = kvcache_ref(q, kc0, vc0, kn, vn, cs, cos=cos, sin=sin,
                                           interleaved=False, causal=True)
    check_out(out, want, DT)
    check_lse(lse, want_lse)
    kc1 = logical(kp)
    for i in range(b):
        c = int(cs[i])
        check_out(kc1[i, c:c + sn], new_rows[i], DT)


def test_kvcache_out_argument_and_errors():
    torch.manual_seed(14)
    kc, vc = rand(2, 64, 2, D), rand(2, 64, 2, D)
    q = rand(2, 1, 2, D)
    out = torch.empty_like(q)
    got = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=32, out=out)
    assert got is out
    cs = torch.full((2,), 32, dtype=torch.int32, device=DEV)
    check_out(out, kvcache_ref(q, kc, vc, None, None, cs)[0], DT)
    kn = rand(2, 1, 2, D)
    with pytest.raises(ValueError, match="cache_seqlens is required"):
        flare.flash_attn_with_kvcache(q, kc, vc, kn, kn)
    with pytest.raises(ValueError, match="cache_seqlens must be int32"):
        flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs.long())
    with pytest.raises(ValueError, match="rotary_cos"):
        cos = torch.ones(64, D // 4, device=DEV, dtype=DT)
        flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs, rotary_cos=cos, rotary_sin=cos)
    with pytest.raises(ValueError, match="v is missing while k is given"):
        flare.flash_attn_with_kvcache(q, kc, vc, kn, None, cache_seqlens=cs)


# ----------------------------------------------------------------------------- merge_attention_states

MERGE_DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def merge_tol(dtype):
    # The merge runs in float32: the error is the output's rounding (plus float32 exp / log).
    eps = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 1e-5}[dtype]
    return dict(atol=eps, rtol=eps)


def merge_ref(outs, lses):
    """float64 reference: lse = logsumexp_s lse_s, out = sum_s exp(lse_s - lse) * o_s.

    outs: n arrays (b, s, h, d); lses: n arrays (b, h, s). A part with lse_s = -inf is never
    read (its values may be NaN); rows whose parts are all empty give out 0, lse -inf.
    """
    L = torch.stack([x.double() for x in lses])  # (n, b, h, s)
    lse = torch.logsumexp(L, dim=0)  # -inf where every part is empty
    keep = torch.isfinite(L).permute(0, 1, 3, 2)[..., None]  # (n, b, s, h, 1)
    w = torch.exp(L - lse).nan_to_num(0.0).permute(0, 1, 3, 2)[..., None]
    O = torch.stack([x.double() for x in outs])
    O = torch.where(keep, O, torch.zeros_like(O))
    return (w * O).sum(dim=0), lse


def check_merged_lse(got, want):
    assert got.dtype == torch.float32 and got.shape == want.shape
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite)
    assert torch.all(got[~finite] == float("-inf"))
    torch.testing.assert_close(got[finite].double(), want[finite], atol=1e-5, rtol=2e-6)


def make_parts(n, b, s, h, d, dtype, *, pad=0, empty_frac=0.25, seed=0):
    """n parts (b, s, h, d) sharing padded strides, their lses (b, h, s) as transposed views
    of (b, s, h) arrays, with -inf entries (NaN garbage in those parts' rows) and some rows
    empty in every part."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    store = torch.rand(n, b, s, h, d + pad, device=DEV, generator=g) * 4 - 2
    lse = torch.rand(n, b, s, h, device=DEV, generator=g) * 16 - 8
    empty = torch.rand(n, b, s, h, device=DEV, generator=g) < (empty_frac if n > 1 else 0.0)
    rows = torch.arange(b * s * h, device=DEV).reshape(b, s, h)
    empty |= (rows % 7 == 3)[None]  # every part empty: out 0, lse -inf
    lse = lse.masked_fill(empty, float("-inf"))
    store[..., :d] = store[..., :d].masked_fill(empty[..., None], float("nan"))
    store = store.to(dtype)
    outs = [store[i, ..., :d] for i in range(n)]
    lses = [lse[i].transpose(1, 2) for i in range(n)]  # (b, h, s), strides (s*h, 1, h)
    return outs, lses


@pytest.mark.parametrize("part_dtype", MERGE_DTYPES)
@pytest.mark.parametrize("out_dtype", [None] + MERGE_DTYPES)
def test_merge_attention_states_matches_reference(part_dtype, out_dtype):
    b, s, h, d, n = 2, 37, 3, 64, 3
    outs, lses = make_parts(n, b, s, h, d, part_dtype, pad=4, seed=20)
    out = None if out_dtype is None else torch.full((b, s, h, d), float("nan"), device=DEV,
                                                     dtype=out_dtype)
    got, got_lse = flare.merge_attention_states(outs, lses, out=out)
    if out is not None:
        assert got is out
    want_dtype = part_dtype if out_dtype is None else out_dtype
    assert isinstance(got, torch.Tensor) and got.dtype == want_dtype and got.shape == (b, s, h, d)
    assert isinstance(got_lse, torch.Tensor) and got_lse.shape == (b, h, s)
    want, want_lse = merge_ref(outs, lses)
    assert not torch.isnan(got).any()  # NaN garbage of empty parts is never read
    torch.testing.assert_close(got.double(), want, **merge_tol(want_dtype))
    check_merged_lse(got_lse, want_lse)
    all_empty = torch.isinf(want_lse).transpose(1, 2)  # (b, s, h)
    assert all_empty.any() and torch.all(got[all_empty] == 0)


@pytest.mark.parametrize("n", [1, 2, 5, 64])
@pytest.mark.parametrize("d", [4, 64, 128, 256, 512])
def test_merge_part_counts_and_head_dims(n, d):
    b, s, h = 1, 9, 2
    outs, lses = make_parts(n, b, s, h, d, torch.bfloat16, seed=21 + n + d)
    out_lse = torch.full((b, h, s), float("nan"), device=DEV)
    got, got_lse = flare.merge_attention_states(outs, lses, out_lse=out_lse)
    assert got_lse is out_lse
    want, want_lse = merge_ref(outs, lses)
    torch.testing.assert_close(got.double(), want, **merge_tol(torch.bfloat16))
    check_merged_lse(got_lse, want_lse)


def test_merge_in_place():
    b, s, h, d, n = 2, 33, 4, 64, 4
    for dtype in MERGE_DTYPES:
        outs, lses = make_parts(n, b, s, h, d, dtype, pad=4, seed=22)
        want, want_lse = merge_ref(outs, lses)
        got, got_lse = flare.merge_attention_states(outs, lses, out=outs[0], out_lse=lses[0])
        assert got is outs[0] and got_lse is lses[0]
        torch.testing.assert_close(outs[0].double(), want, **merge_tol(dtype))
        check_merged_lse(lses[0], want_lse)
        # out in place, out_lse None: a new merged lse is allocated and returned.
        outs, lses = make_parts(n, b, s, h, d, dtype, seed=23)
        want, want_lse = merge_ref(outs, lses)
        got, got_lse = flare.merge_attention_states(outs, lses, out=outs[-1])
        assert got is outs[-1] and all(got_lse is not x for x in lses)
        torch.testing.assert_close(got.double(), want, **merge_tol(dtype))
        check_merged_lse(got_lse, want_lse)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("cuts", [(70,), (33, 100, 101)])
def test_split_keys_merged_equals_full_attention(causal, cuts):
    """Attention over keys cut into parts, merged by lse == attention over all keys."""
    torch.manual_seed(24)
    b, S, h, hk = 2, 160, 4, 2
    q, k, v = rand(b, S, h, D), rand(b, S, hk, D), rand(b, S, hk, D)
    full, full_lse, _ = flare.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
    bounds = [0, *cuts, S]
    outs, lses = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        # Causal over all keys is j <= i. With the part's keys [lo, hi) and the bottom-right
        # alignment (offset hi - lo - S), that is window_right = S - hi; rows i < lo see no
        # key of the part (lse -inf, an empty part).
        window = (-1, S - hi) if causal else (-1, -1)
        o, lse, _ = flare.flash_attn_func(q, k[:, lo:hi], v[:, lo:hi], window_size=window,
                                          return_attn_probs=True)
        outs.append(o)
        lses.append(lse)
    if causal:
        assert torch.isinf(lses[-1]).any()
    merged, merged_lse = flare.merge_attention_states(outs, lses)
    assert merged.dtype == DT
    want, want_lse = ref_attn(q, k, v, causal=causal)
    check_out(merged, want, DT)
    check_lse(merged_lse, want_lse)
    check_lse(merged_lse, full_lse)
    torch.testing.assert_close(merged.float(), full.float(), **tol(DT))
    # An out of another dtype than the parts (float32 here).
    merged32, _ = flare.merge_attention_states(outs, lses,
                                               out=torch.empty(b, S, h, D, device=DEV))
    check_out(merged32, want, DT)


def test_merge_streams_and_generic_dlpack():
    outs, lses = make_parts(3, 2, 16, 2, 64, torch.float16, seed=25)
    want, want_lse = merge_ref(outs, lses)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got, got_lse = flare.merge_attention_states(outs, lses)
    side.synchronize()
    torch.testing.assert_close(got.double(), want, **merge_tol(torch.float16))
    got2, _ = flare.merge_attention_states(outs, lses, stream=side)
    side.synchronize()
    torch.testing.assert_close(got2, got, atol=0, rtol=0)
    torch.cuda.synchronize()
    res, res_lse = flare.merge_attention_states([DLPackOnly(x) for x in outs],
                                                [DLPackOnly(x) for x in lses])
    assert not isinstance(res, torch.Tensor) and hasattr(res, "__dlpack__")
    torch.cuda.synchronize()  # legacy default stream 0 was used
    res_t, res_lse_t = torch.from_dlpack(res), torch.from_dlpack(res_lse)
    torch.testing.assert_close(res_t, got, atol=0, rtol=0)
    check_merged_lse(res_lse_t, want_lse)


def test_merge_empty_extents():
    outs = [torch.empty(0, 5, 2, 64, device=DEV, dtype=torch.bfloat16)] * 2
    lses = [torch.empty(0, 2, 5, device=DEV)] * 2
    got, got_lse = flare.merge_attention_states(outs, lses)
    assert got.shape == (0, 5, 2, 64) and got_lse.shape == (0, 2, 5)


def test_merge_errors():
    b, s, h, d = 1, 8, 2, 64
    o = rand(b, s, h, d, dtype=torch.float16)
    lse = torch.zeros(b, h, s, device=DEV)
    m = flare.merge_attention_states
    with pytest.raises(ValueError, match=r"outs\[1\] is bf16 but outs\[0\] is fp16"):
        m([o, o.bfloat16()], [lse, lse])
    with pytest.raises(ValueError, match="must be float16, bfloat16 or float32"):
        m([o.double()], [lse])
    with pytest.raises(ValueError, match=r"outs\[1\].shape\[2\]"):
        m([o, rand(b, s, h + 1, d, dtype=torch.float16)], [lse, lse])
    with pytest.raises(ValueError, match=r"outs\[0\] must have 4 dimensions"):
        m([o[0]], [lse])
    with pytest.raises(ValueError, match=r"outs\[0\].stride\[3\] \(2\) must be 1"):
        m([rand(b, s, h, 2 * d, dtype=torch.float16)[..., ::2]], [lse])
    with pytest.raises(ValueError, match=r"outs\[1\] has other strides than outs\[0\]"):
        m([o, rand(b, s, 2 * h, d, dtype=torch.float16)[:, :, :h]], [lse, lse])
    with pytest.raises(ValueError, match=r"lses\[0\] must be float32"):
        m([o], [lse.half()])
    with pytest.raises(ValueError, match=r"lses\[0\].shape\[1\]"):
        m([o], [lse.transpose(1, 2)])
    with pytest.raises(ValueError, match=r"lses\[1\] has other strides than lses\[0\]"):
        m([o, o], [lse, torch.zeros(b, s, h, device=DEV).transpose(1, 2)])
    with pytest.raises(ValueError, match=r"lses\[1\] must be a CUDA array"):
        m([o, o], [lse, lse.cpu()])
    with pytest.raises(ValueError, match=r"out.shape\[3\]"):
        m([o], [lse], out=rand(b, s, h, d + 4))
    with pytest.raises(ValueError, match="out must be float16, bfloat16 or float32"):
        m([o], [lse], out=torch.empty(b, s, h, d, device=DEV, dtype=torch.int32))
    with pytest.raises(ValueError, match="out_lse must be float32"):
        m([o], [lse], out_lse=lse.double())
    with pytest.raises(ValueError, match=r"at most 64 parts"):
        m([o] * 65, [lse] * 65)
    # flare's own validation speaks for the alignment rules and the head dim.
    with pytest.raises(ValueError, match="head_dim"):
        m([rand(b, s, h, 6, dtype=torch.float16)], [lse])
    with pytest.raises(ValueError, match="part_head_stride"):
        m([rand(b, s, h, d + 2, dtype=torch.float16)[..., :d]], [lse])
    with pytest.raises(ValueError, match="aligned"):
        m([rand(b, s, h, d + 4, dtype=torch.float16)[..., 2:d + 2]], [lse])


# ----------------------------------------------------------------------------- serving features


def kernel_head_dim(d):
    """The smallest built head dim that serves d, or None (this build cannot run it)."""
    fits = [x for x in HDIMS if x >= d]
    return min(fits) if fits else None


def needs_head_dim(d):
    if kernel_head_dim(d) is None:
        pytest.skip(f"this build's head dims {HDIMS} have no kernel for head dim {d}")


SINKS = [8.0, 0.5, -1.0, float("-inf")]  # above every score, small, negative, none


@pytest.mark.parametrize("causal", [False, True])
def test_learnable_sink_flash_attn_func(causal):
    torch.manual_seed(30)
    b, sq, sk, h, hk = 2, 70, 150, 4, 2
    q, k, v = rand(b, sq, h, D), rand(b, sk, hk, D), rand(b, sk, hk, D)
    sink = torch.tensor(SINKS, device=DEV, dtype=torch.float32)
    out, lse, _ = flare.flash_attn_func(q, k, v, causal=causal, learnable_sink=sink,
                                        return_attn_probs=True)
    want, want_lse = ref_attn(q, k, v, causal=causal, sink=sink)
    check_out(out, want, DT)
    check_lse(lse, want_lse)
    # sq > sk with causal: the top rows see no key and get lse = sink, out 0.
    q2 = rand(1, 40, h, D)
    k2, v2 = rand(1, 10, hk, D), rand(1, 10, hk, D)
    out2, lse2, _ = flare.flash_attn_func(q2, k2, v2, causal=True, learnable_sink=sink,
                                          return_attn_probs=True)
    want2, want_lse2 = ref_attn(q2, k2, v2, causal=True, sink=sink)
    check_out(out2, want2, DT)
    check_lse(lse2, want_lse2)
    assert torch.all(out2[:, :30] == 0)


@pytest.mark.parametrize("num_splits", [1, 3])
def test_learnable_sink_kvcache_split_kv(num_splits):
    # Split-KV must count the sink once.
    torch.manual_seed(31)
    b, cap, h, hk = 3, 700, 8, 2
    kc, vc = rand(b, cap, hk, D), rand(b, cap, hk, D)
    q = rand(b, 1, h, D)
    cs = torch.tensor([5, 700, 333], dtype=torch.int32, device=DEV)
    sink = torch.tensor(SINKS * 2, device=DEV, dtype=torch.float32)
    out, lse = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs, learnable_sink=sink,
                                             num_splits=num_splits, return_softmax_lse=True)
    outs, lses = [], []
    for i in range(b):
        o, l = ref_attn(q[i:i + 1], kc[i:i + 1, :int(cs[i])], vc[i:i + 1, :int(cs[i])], sink=sink)
        outs.append(o)
        lses.append(l)
    check_out(out, torch.cat(outs), DT)
    check_lse(lse, torch.cat(lses))


def test_learnable_sink_varlen_and_packed():
    torch.manual_seed(32)
    seqlens_q, seqlens_k = [37, 1, 90], [50, 20, 90]
    q, k, v, cu_q, cu_k = make_varlen(seqlens_q, seqlens_k, 4, 2, D)
    sink = torch.tensor(SINKS, device=DEV, dtype=torch.float32)
    out = flare.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 90, 90, causal=True,
                                       learnable_sink=sink)
    want, _ = varlen_ref(q, k, v, cu_q, cu_k, causal=True, sink=sink)
    check_out(out, want, DT)
    qkv = rand(2, 64, 3, 4, D)
    out = flare.flash_attn_qkvpacked_func(qkv, learnable_sink=sink)
    want, _ = ref_attn(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], sink=sink)
    check_out(out, want, DT)


RANGES = [[(5, 20), (30, 34)], [(0, 12), (12, 12)]]  # sequence 1's second slot is empty


@pytest.mark.parametrize("kw", [dict(causal=True), dict(causal=True, window=(8, 0)),
                                dict(window=(4, 4))])
def test_mm_prefix_ranges_flash_attn_func(kw):
    torch.manual_seed(33)
    b, sq, sk, h, hk = 2, 50, 50, 4, 2
    q, k, v = rand(b, sq, h, D), rand(b, sk, hk, D), rand(b, sk, hk, D)
    ranges = torch.tensor(RANGES, dtype=torch.int32, device=DEV)
    window = kw.get("window", (-1, -1))
    out, lse, _ = flare.flash_attn_func(q, k, v, causal=kw.get("causal", False),
                                        window_size=window, mm_prefix_ranges=ranges,
                                        return_attn_probs=True)
    want, want_lse = ref_attn(q, k, v, causal=kw.get("causal", False), window=window,
                              ranges=ranges)
    check_out(out, want, DT)
    check_lse(lse, want_lse)
    # A table without ranges, or with only empty ones, is the plain call.
    empty = torch.zeros(b, 0, 2, dtype=torch.int32, device=DEV)
    plain = flare.flash_attn_func(q, k, v, causal=kw.get("causal", False), window_size=window)
    check_out(flare.flash_attn_func(q, k, v, causal=kw.get("causal", False), window_size=window,
                                    mm_prefix_ranges=empty), plain, DT)


def test_mm_prefix_ranges_varlen_and_kvcache():
    torch.manual_seed(34)
    # An image span that crosses tiles: 20 text tokens, a 300-token image, 60 text tokens.
    seqlens = [380, 64]
    q, k, v, cu_q, cu_k = make_varlen(seqlens, seqlens, 4, 2, D)
    ranges = torch.tensor([[(20, 320)], [(10, 11)]], dtype=torch.int32, device=DEV)
    out = flare.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 380, 380, causal=True,
                                       mm_prefix_ranges=ranges)
    outs = []
    for bi in range(2):
        s, e = int(cu_q[bi]), int(cu_q[bi + 1])
        o, _ = ref_attn(q[None, s:e], k[None, s:e], v[None, s:e], causal=True,
                        ranges=ranges[bi:bi + 1])
        outs.append(o[0])
    check_out(out, torch.cat(outs), DT)
    # KV cache: the query rows sit at the end of the cache; a range around them.
    b, cap, h, hk = 2, 256, 4, 2
    kc, vc = rand(b, cap, hk, D), rand(b, cap, hk, D)
    q = rand(b, 8, h, D)
    cs = torch.tensor([100, 256], dtype=torch.int32, device=DEV)
    ranges = torch.tensor([[(90, 110)], [(0, 4)]], dtype=torch.int32, device=DEV)
    out = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs, causal=True,
                                        mm_prefix_ranges=ranges)
    outs = []
    for i in range(b):
        o, _ = ref_attn(q[i:i + 1], kc[i:i + 1, :int(cs[i])], vc[i:i + 1, :int(cs[i])],
                        causal=True, ranges=ranges[i:i + 1])
        outs.append(o)
    check_out(out, torch.cat(outs), DT)


def test_head_dim_v_192_128():
    needs_head_dim(192)
    torch.manual_seed(35)
    b, sq, sk, h, hk, d, dv = 2, 70, 130, 4, 2, 192, 128
    q, k, v = rand(b, sq, h, d), rand(b, sk, hk, d), rand(b, sk, hk, dv)
    for causal in (False, True):
        out, lse, _ = flare.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
        assert out.shape == (b, sq, h, dv)
        want, want_lse = ref_attn(q, k, v, causal=causal)
        check_out(out, want, DT)
        check_lse(lse, want_lse)
    # varlen
    cu = torch.tensor([0, 50, 130], dtype=torch.int32, device=DEV)
    qv, kv_, vv = rand(130, h, d), rand(130, hk, d), rand(130, hk, dv)
    out = flare.flash_attn_varlen_func(qv, kv_, vv, cu, cu, 80, 80, causal=True)
    assert out.shape == (130, h, dv)
    want, _ = varlen_ref(qv, kv_, vv, cu, cu, causal=True)
    check_out(out, want, DT)
    # KV cache with an append: k 192 wide, v 128 wide.
    kc, vc = rand(b, 64, hk, d), rand(b, 64, hk, dv)
    kc0, vc0 = kc.clone(), vc.clone()
    qc, kn, vn = rand(b, 1, h, d), rand(b, 1, hk, d), rand(b, 1, hk, dv)
    cs = torch.tensor([10, 40], dtype=torch.int32, device=DEV)
    out = flare.flash_attn_with_kvcache(qc, kc, vc, kn, vn, cache_seqlens=cs)
    assert out.shape == (b, 1, h, dv)
    want, _, _ = kvcache_ref(qc, kc0, vc0, kn, vn, cs)
    check_out(out, want, DT)
    assert torch.equal(vc[1, 40:41], vn[1])


@pytest.mark.parametrize("d", [1, 7, 59, 111, 200, 264, 511, 512])
def test_any_head_dim(d):
    # Head dims that are not multiples of 8, and up to 512: no padding by the caller, output
    # with the caller's head dim.
    needs_head_dim(d)
    torch.manual_seed(36)
    b, sq, sk, h, hk = 2, 40, 90, 4, 2
    q, k, v = rand(b, sq, h, d), rand(b, sk, hk, d), rand(b, sk, hk, d)
    for causal in (False, True):
        out, lse, _ = flare.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
        assert out.shape == q.shape
        want, want_lse = ref_attn(q, k, v, causal=causal)
        check_out(out, want, DT)
        check_lse(lse, want_lse)
    # Views into a wider buffer (FlashAttention-2's test-suite slices odd dims this way).
    wide = rand(b, sq, h, d + 5)
    out = flare.flash_attn_func(wide[..., :d], k, v)
    check_out(out, ref_attn(wide[..., :d], k, v)[0], DT)
