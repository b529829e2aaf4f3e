"""GPU tests of FP8 K/V (float8_e4m3fn / float8_e5m2 caches with float32 descale factors) and
of FP8 q through the Python package.

Accuracy is the project's rule: against the float64 attention on the dequantized inputs
(code x descale), flare's error is at most twice the error of the naive float16 / bfloat16
implementation on the same inputs, + 1e-5 (test_gpu.ref_attn's lowp model; docs/notes/fp8.md
says why the bf16 rule applies unchanged to FP8 K/V). Every output element is written (out=
arrays are poisoned with NaN first). An append into an FP8 cache writes the code nearest to the
(rotated) value / descale, rounded to nearest even and saturated, bit for bit. A decode call
over an FP8 cache is captured in a CUDA graph and replayed (float8 arrays through DLPack or as
the wrapper's uint8 views).

Skipped with a reason without torch, a CUDA device, or a kernel of this build for the chosen
head dim; torch's float8 dtypes need torch >= 2.1.
"""
import pytest

import flare

torch = pytest.importorskip("torch", reason="GPU tests need torch (not installed)")
# test_gpu skips the module without a CUDA device or kernels.
from test_gpu import DEV, DT, HDIMS, make_varlen, ref_attn, rotate, to_pages  # noqa: E402

if not hasattr(torch, "float8_e4m3fn"):
    pytest.skip("FP8 GPU tests need torch's float8 dtypes (torch >= 2.1)", allow_module_level=True)

from flare import _interface  # noqa: E402

FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
# The largest finite value of each type: an append saturates there.
FP8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}
# FP8 tensors need head dims that are multiples of 16.
_FP8_DIMS = [d for d in (64, 128) if d in HDIMS] or [d for d in HDIMS if d % 16 == 0]
if not _FP8_DIMS:
    pytest.skip("FP8 GPU tests: this build has no head dim that is a multiple of 16",
                allow_module_level=True)
D = _FP8_DIMS[0]


# ----------------------------------------------------------------------------- FP8 data


def codes(*shape, fp8):
    """Random FP8 codes (values up to ~200 in magnitude; e4m3 saturates at 448)."""
    x = torch.randn(*shape, device=DEV) * 48
    return x.clamp(-FP8_MAX[fp8], FP8_MAX[fp8]).to(fp8)


def descale(kind, b, hk):
    """float32 factors: 'head' (b, hk) (FlashAttention-3's shape), 'tensor' one element (shape
    ()), 'tensor1' shape (1,). Around 1/48, so code x descale is of order 1."""
    if kind == "head":
        return (torch.rand(b, hk, device=DEV) + 0.5) / 48
    value = (torch.rand((), device=DEV) + 0.5) / 48
    return value if kind == "tensor" else value.reshape(1)


def per_entry(scale, b, hk):
    """The factors as a (b, 1, hk, 1) float64 tensor: one per (batch entry, K/V head)."""
    return scale.double().reshape(-1).expand(b * hk if scale.numel() == 1 else -1) \
        .reshape(b, 1, hk, 1)


def dequant(c, scale):
    """Values of codes c (b, s, hk, d) with factors of (batch entry, K/V head), float64."""
    return c.double() * per_entry(scale, c.shape[0], c.shape[2])


def quantize(x, scale, fp8):
    """The codes an append writes: nearest to x / descale (float32 division), round to nearest
    even, saturated. torch's conversion rounds to nearest even but turns values beyond the
    largest finite one into NaN (e4m3fn) / inf (e5m2), hence the clamp first. x (b, s, hk, d)
    float32; computed on the CPU (IEEE division)."""
    y = x.float().cpu() / per_entry(scale, x.shape[0], x.shape[2]).float().cpu()
    m = FP8_MAX[fp8]
    return y.clamp(-m, m).to(fp8).to(DEV)


def same_codes(a, b):
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def take(x, index):
    """x[index] for FP8 x, indexed through its uint8 view (indexing kernels need not take
    float8)."""
    return x.view(torch.uint8)[index].view(x.dtype)


def rotate32(x, cos, sin, positions, interleaved):
    """x rotated as the library computes it: in float32 (test_gpu.rotate)."""
    return rotate(x, cos, sin, positions, interleaved, dtype=torch.float32)


def rotary_tables(positions, rd, dtype=DT):
    pos = torch.arange(positions, device=DEV, dtype=torch.float64)[:, None]
    freqs = 1.0 / (10000 ** (torch.arange(rd // 2, device=DEV, dtype=torch.float64) / (rd // 2)))
    return torch.cos(pos * freqs).to(dtype), torch.sin(pos * freqs).to(dtype)


# ----------------------------------------------------------------------------- the rule


def check_out(got, want, naive, what=""):
    """max|got - f64| <= 2 max|naive - f64| + 1e-5, every element finite."""
    assert got.shape == want.shape, (got.shape, want.shape)
    assert torch.isfinite(got).all(), f"{what}: unwritten or non-finite elements"
    err = (got.double() - want).abs().max().item()
    naive_err = (naive.to(got.dtype).double() - want).abs().max().item()
    bound = 2 * naive_err + 1e-5
    assert err <= bound, f"{what}: error {err:.3g} > bound {bound:.3g} (naive {naive_err:.3g})"


def check_lse(got, want, naive):
    """|got - f64| <= max(1e-3, 2 x the naive lse error) + 1e-4 |f64|; -inf where no key."""
    assert got.dtype == torch.float32 and got.shape == want.shape
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite)
    naive_err = (naive - want)[finite].abs().max().item() if finite.any() else 0.0
    bound = max(1e-3, 2 * naive_err) + 1e-4 * want[finite].abs()
    err = (got[finite].double() - want[finite]).abs()
    assert (err <= bound).all(), f"lse error {err.max().item():.3g} (naive {naive_err:.3g})"


def refs(q, k, v, **kw):
    """(float64, naive) references of one batch of attention."""
    return ref_attn(q, k, v, **kw), ref_attn(q, k, v, lowp=q.dtype, **kw)


def poisoned(shape, dtype=DT):
    return torch.full(shape, float("nan"), device=DEV, dtype=dtype)


# ----------------------------------------------------------------------------- flash_attn_func


@pytest.mark.parametrize("fp8", ["e4m3", "e5m2"])
@pytest.mark.parametrize("kind", ["head", "tensor", "tensor1"])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attn_func_fp8_kv(fp8, kind, causal):
    torch.manual_seed(100)
    t = FP8[fp8]
    b, sq, sk, h, hk = 2, 70, 203, 8, 2  # GQA: 4 query heads per K/V head
    q = torch.randn(b, sq, h, D, device=DEV, dtype=DT)
    k, v = codes(b, sk, hk, D, fp8=t), codes(b, sk, hk, D, fp8=t)
    ks, vs = descale(kind, b, hk), descale(kind, b, hk)
    out = poisoned((b, sq, h, D))
    got, lse, _ = flare.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True,
                                        out=out, k_descale=ks, v_descale=vs)
    assert got is out
    (want, want_lse), (naive, naive_lse) = refs(q, dequant(k, ks), dequant(v, vs), causal=causal)
    check_out(got, want, naive, f"{fp8} {kind}")
    check_lse(lse, want_lse, naive_lse)


def test_fp8_kv_window_softcap_and_fresh_out():
    torch.manual_seed(101)
    t = torch.float8_e4m3fn
    q = torch.randn(2, 64, 4, D, device=DEV, dtype=DT)
    k, v = codes(2, 150, 4, D, fp8=t), codes(2, 150, 4, D, fp8=t)
    ks, vs = descale("head", 2, 4), descale("tensor", 2, 4)
    got = flare.flash_attn_func(q, k, v, window_size=(32, 8), softcap=15.0, k_descale=ks,
                                v_descale=vs)
    assert got.dtype == DT and got.shape == q.shape
    kw = dict(window=(32, 8), softcap=15.0)
    (want, _), (naive, _) = refs(q, dequant(k, ks), dequant(v, vs), **kw)
    check_out(got, want, naive)


def test_fp8_descale_strides():
    # A (batch, nheads_k) view of a transposed array: its strides go to the library as they are.
    torch.manual_seed(102)
    t = torch.float8_e4m3fn
    q = torch.randn(3, 16, 4, D, device=DEV, dtype=DT)
    k, v = codes(3, 64, 2, D, fp8=t), codes(3, 64, 2, D, fp8=t)
    ks = descale("head", 3, 2)
    ks_t = ks.t().contiguous().t()  # strides (1, 3)
    assert ks_t.stride() == (1, 3)
    vs = descale("head", 3, 2)[:, :1].expand(3, 2)  # head stride 0: one factor per sequence
    a = flare.flash_attn_func(q, k, v, k_descale=ks, v_descale=vs.contiguous())
    b = flare.flash_attn_func(q, k, v, k_descale=ks_t, v_descale=vs)
    assert torch.equal(a, b)
    (want, _), (naive, _) = refs(q, dequant(k, ks), dequant(v, vs), causal=False)
    check_out(a, want, naive)


def test_fp8_uint8_view_path_matches_dlpack():
    # The wrapper's fallback for a torch that cannot export float8 through DLPack (a uint8 view
    # and the type's code) computes exactly what the DLPack path does.
    torch.manual_seed(103)
    t = torch.float8_e5m2
    q = torch.randn(2, 1, 8, D, device=DEV, dtype=DT)
    kc, vc = codes(2, 96, 2, D, fp8=t), codes(2, 96, 2, D, fp8=t)
    ks, vs = descale("head", 2, 2), descale("head", 2, 2)
    cs = torch.tensor([40, 96], dtype=torch.int32, device=DEV)
    saved = _interface._torch_fp8_dlpack
    try:
        _interface._torch_fp8_dlpack = True
        a = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs, k_descale=ks, v_descale=vs)
        _interface._torch_fp8_dlpack = False
        views, fp8_codes = _interface._fp8_views(q, kc, vc)
        assert fp8_codes == (0, flare._flare.DLPACK_FLOAT8_E5M2, flare._flare.DLPACK_FLOAT8_E5M2)
        assert views[1].dtype == torch.uint8 and views[1].data_ptr() == kc.data_ptr()
        b = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs, k_descale=ks, v_descale=vs)
    finally:
        _interface._torch_fp8_dlpack = saved
    assert torch.equal(a, b)


@pytest.mark.parametrize("dlpack", [True, False])
def test_fp8_kvcache_call_captures_in_a_cuda_graph(dlpack):
    # A decode step over an FP8 cache, captured and replayed: the FP8 arrays (through DLPack or
    # as uint8 views) cost no copy, host sync or allocation of the package's own.
    torch.manual_seed(104)
    t = torch.float8_e4m3fn
    q = torch.randn(2, 1, 8, D, device=DEV, dtype=DT)
    kc, vc = codes(2, 256, 2, D, fp8=t), codes(2, 256, 2, D, fp8=t)
    ks, vs = descale("head", 2, 2), descale("tensor", 2, 2)
    cs = torch.tensor([100, 256], dtype=torch.int32, device=DEV)
    out = torch.empty_like(q)

    def step():
        flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs, k_descale=ks, v_descale=vs,
                                      out=out)

    saved = _interface._torch_fp8_dlpack
    try:
        _interface._torch_fp8_dlpack = dlpack
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    finally:
        _interface._torch_fp8_dlpack = saved
    q.copy_(torch.randn_like(q))
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    eager = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs, k_descale=ks,
                                          v_descale=vs)
    assert torch.equal(out, eager)


# ----------------------------------------------------------------------------- KV cache


def kvcache_refs(q, kc, vc, ks, vs, cache_seqlens, *, leftpad=None, q_positions=None, cos=None,
                 sin=None, interleaved=True, **kw):
    """(float64, naive) references of a KV-cache call from the caches AFTER any append (logical,
    unpaged: (B, cap, hk, d) codes; seqlens counting the appended rows). q_positions: the rotary
    positions of each sequence's q rows (rotated in float64 for the exact reference, in float32
    and rounded to q's dtype for the naive one, as the C++ reference does)."""
    kd, vd = dequant(kc, ks), dequant(vc, vs)
    outs, lses, nouts, nlses = [], [], [], []
    for i in range(q.shape[0]):
        lp = int(leftpad[i]) if leftpad is not None else 0
        n = int(cache_seqlens[i])
        qi, qn = q[i], q[i]
        if q_positions is not None:
            qi = rotate(q[i], cos, sin, q_positions[i], interleaved)
            qn = rotate32(q[i], cos, sin, q_positions[i], interleaved).to(q.dtype)
        o, l = ref_attn(qi[None], kd[i:i + 1, lp:n], vd[i:i + 1, lp:n], **kw)
        no, nl = ref_attn(qn[None], kd[i:i + 1, lp:n], vd[i:i + 1, lp:n], lowp=q.dtype, **kw)
        outs.append(o[0]), lses.append(l[0]), nouts.append(no[0]), nlses.append(nl[0])
    return (torch.stack(outs), torch.stack(lses)), (torch.stack(nouts), torch.stack(nlses))


def paged(b, pages_per_seq, page, hk, fp8):
    """A shuffled page pool of random codes, its block table and the logical view function."""
    num_pages = b * pages_per_seq + 3
    pool = codes(num_pages, page, hk, D, fp8=fp8)
    table = torch.randperm(num_pages, device=DEV)[: b * pages_per_seq].to(torch.int32)
    table = table.view(b, pages_per_seq)
    cap = pages_per_seq * page

    def logical(p):
        return take(p, table.long()).reshape(b, cap, hk, D)
    return pool, table, logical


@pytest.mark.parametrize("fp8", ["e4m3", "e5m2"])
@pytest.mark.parametrize("kind", ["head", "tensor"])
@pytest.mark.parametrize("page", [None, 16, 1])
@pytest.mark.parametrize("num_splits", [1, 4, 0])
def test_kvcache_fp8(fp8, kind, page, num_splits):
    torch.manual_seed(200 + (page or 0))
    t = FP8[fp8]
    b, h, hk = 3, 8, 2
    if page is None:
        cap = 320
        kc, vc = codes(b, cap, hk, D, fp8=t), codes(b, cap, hk, D, fp8=t)
        kc_l, vc_l, extra = kc, vc, {}
    else:
        kc, table, logical = paged(b, 320 // page, page, hk, t)
        vc = codes(*kc.shape, fp8=t)
        kc_l, vc_l, extra = logical(kc), logical(vc), dict(block_table=table)
    ks, vs = descale(kind, b, hk), descale(kind, b, hk)
    q = torch.randn(b, 1, h, D, device=DEV, dtype=DT)
    cs = torch.tensor([1, 320, 157], dtype=torch.int32, device=DEV)
    out = poisoned((b, 1, h, D))
    got, lse = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs, num_splits=num_splits,
                                             return_softmax_lse=True, out=out, k_descale=ks,
                                             v_descale=vs, **extra)
    (want, want_lse), (naive, naive_lse) = kvcache_refs(q, kc_l, vc_l, ks, vs, cs)
    check_out(got, want, naive, f"{fp8} {kind} page {page} splits {num_splits}")
    check_lse(lse, want_lse, naive_lse)


@pytest.mark.parametrize("fp8", ["e4m3", "e5m2"])
@pytest.mark.parametrize("page", [None, 16, 1])
@pytest.mark.parametrize("interleaved", [True, False])
def test_kvcache_fp8_append_rotary(fp8, page, interleaved):
    torch.manual_seed(300 + (page or 0))
    t = FP8[fp8]
    b, h, hk, sn, cap = 3, 8, 2, 3, 128
    if page is None:
        kc, vc = codes(b, cap, hk, D, fp8=t), codes(b, cap, hk, D, fp8=t)
        logical, extra = (lambda p: p), {}
    else:
        kc, table, logical = paged(b, cap // page, page, hk, t)
        vc = codes(*kc.shape, fp8=t)
        extra = dict(block_table=table)
    kc0, vc0 = kc.clone(), vc.clone()
    ks, vs = descale("head", b, hk), descale("tensor", b, hk)
    # New keys large enough that some saturate (e4m3's 448 x descale is about 4.7 to 14).
    q = torch.randn(b, sn, h, D, device=DEV, dtype=DT)
    kn = (torch.randn(b, sn, hk, D, device=DEV) * 4).to(DT)
    vn = (torch.randn(b, sn, hk, D, device=DEV) * 4).to(DT)
    cos, sin = rotary_tables(cap, D // 2)
    cs = torch.tensor([0, 50, cap - sn], dtype=torch.int32, device=DEV)
    out = poisoned((b, sn, h, D))
    got = flare.flash_attn_with_kvcache(q, kc, vc, kn, vn, rotary_cos=cos, rotary_sin=sin,
                                        cache_seqlens=cs, causal=True,
                                        rotary_interleaved=interleaved, out=out, k_descale=ks,
                                        v_descale=vs, **extra)

    # The caches: the appended rows hold the codes of the rotated keys / the values, every
    # other byte (other rows, other pages) is untouched.
    want_k, want_v = logical(kc0).clone(), logical(vc0).clone()
    pos = [torch.arange(int(c), int(c) + sn, device=DEV) for c in cs]
    for i in range(b):
        c = int(cs[i])
        rk = rotate32(kn[i], cos, sin, pos[i], interleaved)
        want_k[i, c:c + sn] = quantize(rk[None], ks[i:i + 1], t)[0]
        want_v[i, c:c + sn] = quantize(vn[i:i + 1].float(), vs, t)[0]
    assert same_codes(logical(kc), want_k), "appended K codes"
    assert same_codes(logical(vc), want_v), "appended V codes"
    if page is not None:
        unused = torch.ones(kc.shape[0], dtype=torch.bool, device=DEV)
        unused[extra["block_table"].long().flatten()] = False
        assert same_codes(take(kc, unused), take(kc0, unused))
        assert same_codes(take(vc, unused), take(vc0, unused))
    if t == torch.float8_e4m3fn:
        assert ((want_k.view(torch.uint8) & 0x7F) == 0x7E).any(), "no appended key saturated"

    # Attention over the caches after the append; q rotated at its rows' positions (causal).
    (want, _), (naive, _) = kvcache_refs(q, want_k, want_v, ks, vs, cs + sn, q_positions=pos,
                                         cos=cos, sin=sin, interleaved=interleaved, causal=True)
    check_out(got, want, naive, f"{fp8} page {page}")


def test_kvcache_fp8_batch_idx_leftpad():
    # The factors belong to the sequence (q's batch entry), whatever cache entry it reads.
    torch.manual_seed(400)
    t = torch.float8_e4m3fn
    b, h, hk, sn = 2, 4, 2, 2
    kc, vc = codes(4, 96, hk, D, fp8=t), codes(4, 96, hk, D, fp8=t)
    kc0, vc0 = kc.clone(), vc.clone()
    ks, vs = descale("head", b, hk), descale("head", b, hk)
    q = torch.randn(b, sn, h, D, device=DEV, dtype=DT)
    kn = torch.randn(b, sn, hk, D, device=DEV, dtype=DT)
    vn = torch.randn(b, sn, hk, D, device=DEV, dtype=DT)
    cs = torch.tensor([50, 70], dtype=torch.int32, device=DEV)
    idx = torch.tensor([3, 1], dtype=torch.int32, device=DEV)
    lp = torch.tensor([5, 0], dtype=torch.int32, device=DEV)
    got = flare.flash_attn_with_kvcache(q, kc, vc, kn, vn, cache_seqlens=cs, cache_batch_idx=idx,
                                        cache_leftpad=lp, causal=True, k_descale=ks,
                                        v_descale=vs)
    want_k, want_v = take(kc0, idx.long()).clone(), take(vc0, idx.long()).clone()
    for i in range(b):
        c = int(cs[i])
        want_k[i, c:c + sn] = quantize(kn[i:i + 1].float(), ks[i:i + 1], t)[0]
        want_v[i, c:c + sn] = quantize(vn[i:i + 1].float(), vs[i:i + 1], t)[0]
    assert same_codes(take(kc, idx.long()), want_k) and same_codes(take(vc, idx.long()), want_v)
    assert same_codes(kc[0], kc0[0]) and same_codes(kc[2], kc0[2])
    assert same_codes(vc[0], vc0[0]) and same_codes(vc[2], vc0[2])
    (want, _), (naive, _) = kvcache_refs(q, want_k, want_v, ks, vs, cs + sn, leftpad=lp,
                                         causal=True)
    check_out(got, want, naive)


# ----------------------------------------------------------------------------- varlen


@pytest.mark.parametrize("fp8", ["e4m3", "e5m2"])
@pytest.mark.parametrize("page", [None, 16, 1])
@pytest.mark.parametrize("kind", ["head", "tensor1"])
def test_varlen_fp8(fp8, page, kind):
    # Prefill over an FP8 cache (chunked prefill when paged): new queries at the end of each
    # sequence's keys, causal.
    torch.manual_seed(500 + (page or 0))
    t = FP8[fp8]
    seqlens_q, seqlens_k = [37, 1, 64, 5], [300, 20, 64, 130]
    q, _, _, cu_q, cu_k = make_varlen(seqlens_q, seqlens_k, 8, 2, D)
    total_k = int(cu_k[-1])
    k, v = codes(total_k, 2, D, fp8=t), codes(total_k, 2, D, fp8=t)
    nseq = len(seqlens_q)
    ks, vs = descale(kind, nseq, 2), descale(kind, nseq, 2)
    extra = {}
    kk, vv = k, v
    if page is not None:
        (kk, vv), table = to_pages([k, v], cu_k, page)
        extra = dict(block_table=table)
    out = poisoned(q.shape)
    got, lse, _ = flare.flash_attn_varlen_func(q, kk, vv, cu_q, cu_k, max(seqlens_q),
                                               max(seqlens_k), causal=True,
                                               return_attn_probs=True, out=out, k_descale=ks,
                                               v_descale=vs, **extra)
    wants, nv = [], []
    for i in range(nseq):
        qs, qe, k0, k1 = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        sel = ks.reshape(-1)[:1] if ks.numel() == 1 else ks[i:i + 1]
        vsel = vs.reshape(-1)[:1] if vs.numel() == 1 else vs[i:i + 1]
        kd, vd = dequant(k[None, k0:k1], sel), dequant(v[None, k0:k1], vsel)
        wants.append(ref_attn(q[None, qs:qe], kd, vd, causal=True))
        nv.append(ref_attn(q[None, qs:qe], kd, vd, causal=True, lowp=q.dtype))
    want = torch.cat([w[0][0] for w in wants])
    want_lse = torch.cat([w[1][0] for w in wants], dim=1)
    naive = torch.cat([w[0][0] for w in nv])
    naive_lse = torch.cat([w[1][0] for w in nv], dim=1)
    check_out(got, want, naive, f"{fp8} page {page} {kind}")
    check_lse(lse, want_lse, naive_lse)


# ----------------------------------------------------------------------------- FP8 q, errors


def test_fp8_q_is_refused_by_the_library():
    # FP8 prefill (q in e4m3): the library refuses it with NOT_SUPPORTED, which the package
    # raises as NotImplementedError with the library's message; nothing is written.
    torch.manual_seed(600)
    t = torch.float8_e4m3fn
    q, k, v = codes(2, 64, 4, D, fp8=t), codes(2, 64, 4, D, fp8=t), codes(2, 64, 4, D, fp8=t)
    s = descale("head", 2, 4)
    out = poisoned((2, 64, 4, D))
    with pytest.raises(NotImplementedError, match=r"^flare: .*(e4m3|FP8)"):
        flare.flash_attn_func(q, k, v, q_descale=s, k_descale=s, v_descale=s, out=out)
    assert torch.isnan(out).all()
    cu = torch.tensor([0, 64, 128], dtype=torch.int32, device=DEV)
    with pytest.raises(NotImplementedError, match=r"^flare: .*(e4m3|FP8)"):
        flare.flash_attn_varlen_func(q.view(128, 4, D), k.view(128, 4, D), v.view(128, 4, D),
                                     cu, cu, 64, 64, q_descale=s, k_descale=s, v_descale=s)


def test_fp8_errors_name_the_argument():
    t = torch.float8_e4m3fn
    q = torch.randn(2, 1, 4, D, device=DEV, dtype=DT)
    kc = codes(2, 64, 2, D, fp8=t)
    s = descale("head", 2, 2)
    with pytest.raises(ValueError, match=r"^k_descale is required: k_cache is float8_e4m3fn"):
        flare.flash_attn_with_kvcache(q, kc, kc, cache_seqlens=8, v_descale=s)
    with pytest.raises(ValueError, match=r"^v_descale must be float32, got float16"):
        flare.flash_attn_with_kvcache(q, kc, kc, cache_seqlens=8, k_descale=s,
                                      v_descale=s.half())
    with pytest.raises(ValueError, match=r"^k_descale must have shape \(batch_size, nheads_k\)"):
        flare.flash_attn_with_kvcache(q, kc, kc, cache_seqlens=8, k_descale=s[:1], v_descale=s)
    with pytest.raises(ValueError, match=r"^v_descale must be a CUDA array"):
        flare.flash_attn_with_kvcache(q, kc, kc, cache_seqlens=8, k_descale=s, v_descale=s.cpu())
    with pytest.raises(ValueError, match=r"v_cache is e5m2 but k_cache is e4m3"):
        flare.flash_attn_with_kvcache(q, kc, kc.to(torch.float32).to(torch.float8_e5m2),
                                      cache_seqlens=8, k_descale=s, v_descale=s)
    with pytest.raises(ValueError, match=r"^k_descale is given but k is bfloat16|"
                                         r"^k_descale is given but k is float16"):
        x = torch.randn(2, 8, 2, D, device=DEV, dtype=DT)
        flare.flash_attn_func(x, x, x, k_descale=s)
