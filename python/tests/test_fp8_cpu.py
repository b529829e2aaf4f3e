"""FP8 K/V (and FP8 q) through the Python package, without a GPU: signatures, every argument
error (each names the argument, before any CUDA call), and valid calls reaching the library.

The arrays are fake CUDA arrays (fake_dlpack.FakeCuda) exporting DLPack 1.1's float8 codes, as
torch does for its float8 tensors; their addresses are never dereferenced.
"""
import inspect
import sys

import pytest

import flare

np = pytest.importorskip("numpy")

from fake_dlpack import FakeCuda  # noqa: E402

pytestmark = pytest.mark.skipif(sys.implementation.name != "cpython",
                                reason="builds DLPack capsules with ctypes")

E4M3, E5M2 = "float8_e4m3fn", "float8_e5m2"


def _f(shape, dtype="float16", **kw):
    return FakeCuda(shape, dtype, **kw)


def _i32(shape, **kw):
    return FakeCuda(shape, "int32", **kw)


def _scale(shape=(2, 2), **kw):
    return FakeCuda(shape, "float32", **kw)


# batch 2, 4 query heads, 2 K/V heads, head dim 64.
_Q = _f((2, 8, 4, 64))
_K8 = _f((2, 16, 2, 64), E4M3)
_V8 = _f((2, 16, 2, 64), E4M3)
_K5 = _f((2, 16, 2, 64), E5M2)
_KC8 = _f((2, 64, 2, 64), E4M3)
_PAGES8 = _f((8, 16, 2, 64), E4M3)
_S = _scale()


def _fwd(q=_Q, k=_K8, v=_V8, **kw):
    kw.setdefault("k_descale", _S)
    kw.setdefault("v_descale", _S)
    return flare.flash_attn_func(q, k, v, **kw)


def _kvcache(q=None, kc=_KC8, vc=_KC8, **kw):
    kw.setdefault("k_descale", _S)
    kw.setdefault("v_descale", _S)
    kw.setdefault("cache_seqlens", 4)
    return flare.flash_attn_with_kvcache(_f((2, 1, 4, 64)) if q is None else q, kc, vc, **kw)


def _varlen(q=None, k=None, v=None, **kw):
    kw.setdefault("k_descale", _S)
    kw.setdefault("v_descale", _S)
    k = _f((16, 2, 64), E4M3) if k is None else k
    v = _f((16, 2, 64), E4M3) if v is None else v
    return flare.flash_attn_varlen_func(_f((8, 4, 64)) if q is None else q, k, v, _i32((3,)),
                                        _i32((3,)), 4, 8, **kw)


def test_descale_keywords():
    for name, kws in (("flash_attn_func", ("q_descale", "k_descale", "v_descale")),
                      ("flash_attn_varlen_func", ("q_descale", "k_descale", "v_descale")),
                      ("flash_attn_with_kvcache", ("k_descale", "v_descale"))):
        fn = getattr(flare, name)
        params = inspect.signature(fn).parameters
        for kw in kws:
            assert params[kw].kind is inspect.Parameter.KEYWORD_ONLY, (name, kw)
            assert params[kw].default is None, (name, kw)
            assert kw in fn.__doc__, (name, kw)
    assert "q_descale" not in inspect.signature(flare.flash_attn_with_kvcache).parameters


# (label, call, exception, message regex): each message names the argument at fault.
_BAD = [
    # ---- descale presence
    ("k without k_descale", lambda: _fwd(k_descale=None),
     ValueError, r"^k_descale is required: k is float8_e4m3fn"),
    ("v without v_descale", lambda: _fwd(v_descale=None),
     ValueError, r"^v_descale is required: v is float8_e4m3fn"),
    ("k_descale without FP8 k", lambda: flare.flash_attn_func(_Q, _f((2, 16, 2, 64)),
                                                              _f((2, 16, 2, 64)), k_descale=_S),
     ValueError, r"^k_descale is given but k is float16"),
    ("v_descale without FP8 v", lambda: flare.flash_attn_func(_Q, _f((2, 16, 2, 64)),
                                                              _f((2, 16, 2, 64)), v_descale=_S),
     ValueError, r"^v_descale is given but v is float16"),
    ("q_descale without FP8 q", lambda: _fwd(q_descale=_S),
     ValueError, r"^q_descale is given but q is float16"),
    ("FP8 q without q_descale", lambda: _fwd(q=_f((2, 8, 4, 64), E4M3)),
     ValueError, r"^q_descale is required: q is float8_e4m3fn"),
    # ---- descale arrays
    ("descale dtype", lambda: _fwd(k_descale=_f((2, 2))),
     ValueError, r"^k_descale must be float32, got float16"),
    ("descale batch", lambda: _fwd(v_descale=_scale((3, 2))),
     ValueError, r"^v_descale must have shape \(batch_size, nheads_k\) = \(2, 2\) or hold one "
                 r"element \(shape \(\) or \(1,\)\), got shape \(3, 2\)"),
    ("descale heads", lambda: _fwd(k_descale=_scale((2, 4))),
     ValueError, r"^k_descale must have shape .* got shape \(2, 4\)"),
    ("descale 1-d of 2", lambda: _fwd(k_descale=_scale((2,))),
     ValueError, r"^k_descale must have shape .* got shape \(2,\)"),
    ("descale 3-d", lambda: _fwd(k_descale=_scale((2, 2, 1))),
     ValueError, r"^k_descale must have shape .* got shape \(2, 2, 1\)"),
    ("descale device", lambda: _fwd(k_descale=_scale(device=1)),
     ValueError, r"^k_descale is on CUDA device 1 but q is on device 0"),
    ("descale on the CPU", lambda: _fwd(v_descale=np.ones((2, 2), np.float32)),
     ValueError, r"^v_descale must be a CUDA array"),
    ("descale not an array", lambda: _fwd(k_descale=1.0),
     ValueError, r"^k_descale must be a CUDA array supporting DLPack"),
    ("descale negative stride", lambda: _fwd(k_descale=_scale(strides=[-2, 1])),
     ValueError, r"k_descale strides \(-2, 1\) must be >= 0"),
    ("descale misaligned", lambda: _fwd(v_descale=_scale(data=0x10002)),
     ValueError, r"v_descale.*aligned"),
    # ---- FP8 types
    ("k and v of different FP8 types", lambda: _fwd(v=_f((2, 16, 2, 64), E5M2)),
     ValueError, r"v is e5m2 but k is e4m3"),
    ("FP8 k with fp16 v", lambda: _fwd(v=_f((2, 16, 2, 64)), v_descale=None),
     ValueError, r"v is fp16 but k is e4m3"),
    ("FP8 q e5m2", lambda: _fwd(q=_f((2, 8, 4, 64), E5M2), k=_K5, v=_K5, q_descale=_S),
     ValueError, r"^q is float8_e5m2: an FP8 q must be float8_e4m3fn"),
    ("FP8 q with e5m2 k", lambda: _fwd(q=_f((2, 8, 4, 64), E4M3), k=_K5, v=_K5, q_descale=_S),
     ValueError, r"^q is float8_e4m3fn but k is float8_e5m2"),
    ("FP8 q with fp16 k", lambda: flare.flash_attn_func(
        _f((2, 8, 4, 64), E4M3), _f((2, 16, 2, 64)), _f((2, 16, 2, 64)), q_descale=_S),
     ValueError, r"^q is float8_e4m3fn but k is float16"),
    ("FP8 q with an FP8 out", lambda: _fwd(q=_f((2, 8, 4, 64), E4M3), q_descale=_S,
                                           out=_f((2, 8, 4, 64), E4M3)),
     ValueError, r"^out must be float16 or bfloat16, got float8_e4m3fn"),
    ("FP8 out", lambda: _fwd(out=_f((2, 8, 4, 64), E4M3)),
     ValueError, r"^out must be float16 or bfloat16, got float8_e4m3fn"),
    ("other float8 type", lambda: _fwd(k=_f((2, 16, 2, 64), "float8_e4m3fnuz")),
     ValueError, r"^k must be float16, bfloat16, float8_e4m3fn or float8_e5m2, got a float8 "
                 r"type of DLPack code 11"),
    ("uint8 k", lambda: _fwd(k=_f((2, 16, 2, 64), "uint8")),
     ValueError, r"^k must be float16, bfloat16, float8_e4m3fn or float8_e5m2, got uint8"),
    ("packed FP8 kv", lambda: flare.flash_attn_kvpacked_func(_Q, _f((2, 16, 2, 2, 64), E4M3)),
     ValueError, r"^kv is float8_e4m3fn: the packed functions take float16 / bfloat16"),
    ("packed FP8 qkv", lambda: flare.flash_attn_varlen_qkvpacked_func(
        _f((8, 3, 4, 64), E4M3), _i32((3,)), 4),
     ValueError, r"^qkv is float8_e4m3fn: the packed functions"),
    # ---- the library's FP8 layout rules, with its messages
    ("FP8 head dim 40", lambda: _fwd(q=_f((2, 8, 4, 40), strides=[8 * 4 * 48, 4 * 48, 48, 1]),
                                     k=_f((2, 16, 2, 40), E4M3, strides=[16 * 2 * 48, 2 * 48, 48, 1]),
                                     v=_f((2, 16, 2, 40), E4M3, strides=[16 * 2 * 48, 2 * 48, 48, 1]),
                                     out=_f((2, 8, 4, 40), strides=[8 * 4 * 48, 4 * 48, 48, 1])),
     ValueError, r"FP8 inputs need head dims that are multiples of 16"),
    ("FP8 k misaligned", lambda: _fwd(k=_f((2, 16, 2, 64), E4M3, data=0x10008)),
     ValueError, r"\bk\b.*aligned"),
    ("FP8 v head stride", lambda: _fwd(v=_f((2, 16, 2, 64), E4M3,
                                            strides=[16 * 2 * 72, 2 * 72, 72, 1])),
     ValueError, r"v_head_stride \(72\) is not a multiple of 16 elements"),
    # ---- varlen
    ("varlen descale batch", lambda: _varlen(k_descale=_scale((3, 2))),
     ValueError, r"^k_descale must have shape \(batch_size, nheads_k\) = \(2, 2\)"),
    ("varlen without v_descale", lambda: _varlen(v_descale=None),
     ValueError, r"^v_descale is required: v is float8_e4m3fn"),
    ("varlen paged pools of different FP8 types", lambda: _varlen(
        k=_PAGES8, v=_f((8, 16, 2, 64), E5M2), block_table=_i32((2, 4))),
     ValueError, r"v is e5m2 but k is e4m3"),
    ("varlen FP8 q without q_descale", lambda: _varlen(q=_f((8, 4, 64), E4M3)),
     ValueError, r"^q_descale is required: q is float8_e4m3fn"),
    # ---- KV cache
    ("kvcache without k_descale", lambda: _kvcache(k_descale=None),
     ValueError, r"^k_descale is required: k_cache is float8_e4m3fn"),
    ("kvcache without v_descale", lambda: _kvcache(vc=_f((2, 64, 2, 64), E4M3), v_descale=None),
     ValueError, r"^v_descale is required: v_cache is float8_e4m3fn"),
    ("kvcache k_descale for a float16 cache", lambda: _kvcache(
        kc=_f((2, 64, 2, 64)), vc=_f((2, 64, 2, 64)), v_descale=None),
     ValueError, r"^k_descale is given but k_cache is float16"),
    ("kvcache caches of different FP8 types", lambda: _kvcache(vc=_f((2, 64, 2, 64), E5M2)),
     ValueError, r"v_cache is e5m2 but k_cache is e4m3"),
    ("kvcache FP8 q", lambda: _kvcache(q=_f((2, 1, 4, 64), E4M3)),
     ValueError, r"^q must be float16 or bfloat16, got float8_e4m3fn"),
    ("kvcache FP8 k_new", lambda: _kvcache(k=_f((2, 1, 2, 64), E4M3), v=_f((2, 1, 2, 64), E4M3),
                                           cache_seqlens=_i32((2,))),
     ValueError, r"^k must be float16 or bfloat16, got float8_e4m3fn"),
    # Factors are per sequence (q's batch), not per cache entry.
    ("kvcache descale of the cache's batch", lambda: _kvcache(
        kc=_f((4, 64, 2, 64), E4M3), vc=_f((4, 64, 2, 64), E4M3), k_descale=_scale((4, 2)),
        cache_batch_idx=_i32((2,))),
     ValueError, r"^k_descale must have shape \(batch_size, nheads_k\) = \(2, 2\)"),
    ("kvcache descale dtype", lambda: _kvcache(v_descale=_i32((1,))),
     ValueError, r"^v_descale must be float32, got int32"),
    ("kvcache FP8 page stride", lambda: _kvcache(
        kc=_f((8, 16, 2, 64), E4M3, strides=[16 * 2 * 64 + 8, 128, 64, 1]), vc=_PAGES8,
        block_table=_i32((2, 4))),
     ValueError, r"k_batch_stride \(2056\) is not a multiple of 16 elements"),
]


@pytest.mark.parametrize("label, call, error, message", _BAD, ids=[b[0] for b in _BAD])
def test_fp8_argument_errors(label, call, error, message):
    with pytest.raises(error, match=message) as info:
        call()
    text = str(info.value)
    for device_error in ("no CUDA driver", "CUDA error", "cudaError", "cudaGetDevice"):
        assert device_error not in text, text


def test_uint8_views_with_an_fp8_code():
    # The wrapper's stand-in for a float8 tensor its framework cannot export through DLPack: a
    # uint8 view of the codes, the type named by its DLPack code. It is then an FP8 array.
    e4m3, e5m2 = flare._flare.DLPACK_FLOAT8_E4M3FN, flare._flare.DLPACK_FLOAT8_E5M2
    assert (e4m3, e5m2) == (10, 12)
    u8 = _f((2, 16, 2, 64), "uint8")
    args = dict(out=None, lse=None, want_lse=False, softmax_scale=0.0, causal=False,
                window_left=-1, window_right=-1, softcap=0.0, alibi_slopes=None,
                learnable_sink=None, mm_prefix_ranges=None, q_descale=None,
                workspace_alloc=None, stream=0)
    with pytest.raises(ValueError, match=r"^k_descale is required: k is float8_e4m3fn"):
        flare._flare._fwd(_Q, u8, u8, 0, k_descale=None, v_descale=_S, fp8_codes=(0, e4m3, e4m3),
                          **args)
    with pytest.raises(ValueError, match=r"v is e5m2 but k is e4m3"):
        flare._flare._fwd(_Q, u8, u8, 0, k_descale=_S, v_descale=_S, fp8_codes=(0, e4m3, e5m2),
                          **args)
    with pytest.raises(ValueError, match=r"^k must be a uint8 view of FP8 codes, got float16"):
        flare._flare._fwd(_Q, _f((2, 16, 2, 64)), u8, 0, k_descale=_S, v_descale=_S,
                          fp8_codes=(0, e4m3, e4m3), **args)
    with pytest.raises(ValueError, match=r"^v: unknown FP8 type code 11"):
        flare._flare._fwd(_Q, u8, u8, 0, k_descale=_S, v_descale=_S, fp8_codes=(0, e4m3, 11),
                          **args)


# Valid calls: every check passes. On a machine without a driver or GPU the device is what
# fails ("no CUDA driver/GPU found"), unless the library refuses the FP8 inputs first with
# NotImplementedError naming their type (GPU kernels without FP8 K/V; FP8 q), which comes
# before any CUDA call.
_VALID = [
    ("per-head descale", lambda: _fwd(), "e4m3"),
    ("e5m2", lambda: _fwd(k=_K5, v=_f((2, 16, 2, 64), E5M2)), "e5m2"),
    ("per-tensor descale ()", lambda: _fwd(k_descale=_scale(()), v_descale=_scale(())),
     "e4m3"),
    ("per-tensor descale (1,)", lambda: _fwd(k_descale=_scale((1,)), v_descale=_scale((1,))),
     "e4m3"),
    # (nheads_k, batch) transposed: strides (1, 2) are passed as they are.
    ("transposed descale", lambda: _fwd(k_descale=_scale(strides=[1, 2])), "e4m3"),
    ("mixed descale kinds", lambda: _fwd(k_descale=_scale(()), v_descale=_S), "e4m3"),
    ("bf16 q, GQA, lse", lambda: _fwd(q=_f((2, 8, 4, 64), "bfloat16"), return_attn_probs=True),
     "e4m3"),
    ("causal window softcap", lambda: _fwd(causal=True, window_size=(8, 0), softcap=20.0),
     "e4m3"),
    ("varlen", lambda: _varlen(), "e4m3"),
    ("varlen paged", lambda: _varlen(k=_PAGES8, v=_PAGES8, block_table=_i32((2, 4))),
     "e4m3"),
    ("varlen paged page 1", lambda: _varlen(k=_f((64, 1, 2, 64), E5M2),
                                            v=_f((64, 1, 2, 64), E5M2),
                                            block_table=_i32((2, 32))), "e5m2"),
    ("kvcache", lambda: _kvcache(), "e4m3"),
    ("kvcache split", lambda: _kvcache(num_splits=4, return_softmax_lse=True), "e4m3"),
    ("kvcache append rotary paged", lambda: _kvcache(
        kc=_PAGES8, vc=_PAGES8, k=_f((2, 1, 2, 64)), v=_f((2, 1, 2, 64)),
        rotary_cos=_f((64, 16)), rotary_sin=_f((64, 16)), cache_seqlens=_i32((2,)),
        block_table=_i32((2, 4))), "e4m3"),
    ("kvcache page 1 e5m2", lambda: _kvcache(
        kc=_f((64, 1, 2, 64), E5M2), vc=_f((64, 1, 2, 64), E5M2), k_descale=_scale(()),
        v_descale=_scale((1,)), block_table=_i32((2, 32))), "e5m2"),
    ("kvcache batch_idx leftpad", lambda: _kvcache(
        kc=_f((4, 64, 2, 64), E4M3), vc=_f((4, 64, 2, 64), E4M3), cache_batch_idx=_i32((2,)),
        cache_leftpad=_i32((2,))), "e4m3"),
    # FP8 prefill: the library refuses FP8 q (NOT_SUPPORTED) on its GPU kernels.
    ("FP8 q", lambda: _fwd(q=_f((2, 8, 4, 64), E4M3), q_descale=_S), "e4m3"),
    ("FP8 q varlen, float16 out", lambda: _varlen(q=_f((8, 4, 64), E4M3), q_descale=_scale(()),
                                                  out=_f((8, 4, 64))), "e4m3"),
]


@pytest.mark.skipif(flare.cuda_device_count() > 0,
                    reason="a GPU is visible: this test's arrays are fake and must not reach it")
@pytest.mark.parametrize("label, call, feature", _VALID, ids=[v[0] for v in _VALID])
def test_valid_fp8_calls_reach_the_library(label, call, feature):
    try:
        call()
    except NotImplementedError as e:
        assert str(e).startswith("flare: ") and feature in str(e), str(e)
    except RuntimeError as e:
        assert str(e).startswith("flare: no CUDA driver/GPU found"), str(e)
    else:
        pytest.fail("a call with fake arrays returned")


class _FakeTorch:
    """Just enough of torch for the wrapper's FP8 path: dtypes, a Tensor type whose instances
    export a FakeCuda array (through __dlpack__ and torch._C._to_dlpack alike), and torch.empty
    for the wrapper's one-time probe of whether this torch exports float8 through DLPack
    (`exports`)."""

    def __init__(self, exports):
        import types
        self.module = types.ModuleType("torch")
        m = self.module
        m._C = types.SimpleNamespace(_to_dlpack=lambda t: t.__dlpack__(),
                                     _cuda_getCurrentRawStream=lambda index: 0)
        for name in ("float16", "bfloat16", "float32", "uint8", "float8_e4m3fn", "float8_e5m2"):
            setattr(m, name, name)
        self.probes = 0
        fake = self

        class Tensor:
            requires_grad = False
            is_cuda = False  # the wrapper then allocates nothing with torch

            def __init__(self, shape, dtype, **kw):
                self.dtype, self.shape, self._kw = dtype, tuple(shape), kw

            def _array(self, dtype):
                return FakeCuda(self.shape, dtype, **self._kw)

            def __dlpack__(self, **kwargs):
                if self.dtype.startswith("float8") and not exports:
                    raise BufferError("float8 types are not supported by dlpack")
                return self._array(self.dtype).__dlpack__(**kwargs)

            def __dlpack_device__(self):
                return (2, 0)

            def view(self, dtype):
                assert dtype == "uint8" and self.dtype.startswith("float8")
                return self._array("uint8")

        def empty(*shape, dtype):
            fake.probes += 1
            return Tensor(shape, dtype)

        m.Tensor, m.empty = Tensor, empty


@pytest.mark.parametrize("exports", [True, False])
def test_torch_float8_through_dlpack_or_a_uint8_view(monkeypatch, exports):
    from flare import _interface
    fake = _FakeTorch(exports)
    monkeypatch.setitem(sys.modules, "torch", fake.module)
    monkeypatch.setattr(_interface, "_torch_fp8_dlpack", None)
    monkeypatch.setattr(_interface, "_torch_pieces", None)  # looked up again: the fake
    T = fake.module.Tensor
    q = T((2, 1, 4, 64), "float16")
    kc, vc = T((2, 64, 2, 64), "float8_e4m3fn"), T((2, 64, 2, 64), "float8_e5m2")
    views, fp8_codes = _interface._fp8_views(q, kc, vc)
    assert _interface._torch_fp8_dlpack is exports and fake.probes == 1
    if exports:
        assert views == [q, kc, vc] and fp8_codes == (0, 0, 0)
    else:
        assert views[0] is q and all(isinstance(x, FakeCuda) and x.dtype == "uint8"
                                     for x in views[1:])
        assert fp8_codes == (0, 10, 12)
    # Either way the library sees the FP8 types: k_cache e4m3 against v_cache e5m2.
    with pytest.raises(ValueError, match=r"v_cache is e5m2 but k_cache is e4m3"):
        flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=4, k_descale=_S, v_descale=_S)
    with pytest.raises(ValueError, match=r"^k_descale is required: k is float8_e4m3fn"):
        flare.flash_attn_func(T((2, 8, 4, 64), "float16"), kc, T((2, 64, 2, 64), "float8_e4m3fn"),
                              v_descale=_S)
    # FP8 q: a fresh out would be bfloat16 (torch's q).
    assert _interface._out_dtype(T((2, 8, 4, 64), "float8_e4m3fn")) == "bfloat16"
    assert _interface._out_dtype(q) is None  # q's own
    assert fake.probes == 1  # probed once


@pytest.mark.skipif(flare.cuda_device_count() > 0,
                    reason="a GPU is visible: this test's arrays are fake and must not reach it")
def test_fp8_cache_of_one_entry_with_a_normalised_stride():
    # A cache (or page pool) of one entry whose producer reports stride 1 for that extent-1
    # dimension (as older torch releases do in DLPack) is a valid FP8 cache.
    s = _scale((1, 2))
    for kc in (_f((1, 64, 2, 64), E4M3, strides=[1, 128, 64, 1]),
               _f((1, 64, 2, 64), E4M3, strides=[8, 128, 64, 1])):
        with pytest.raises((NotImplementedError, RuntimeError)) as info:
            flare.flash_attn_with_kvcache(_f((1, 1, 4, 64)), kc, kc, cache_seqlens=4,
                                          k_descale=s, v_descale=s)
        assert "e4m3" in str(info.value) or "no CUDA driver/GPU found" in str(info.value)
        with pytest.raises((NotImplementedError, RuntimeError)) as info:
            flare.flash_attn_with_kvcache(_f((1, 1, 4, 64)), kc, kc, cache_seqlens=4,
                                          block_table=_i32((1, 1)), k_descale=s, v_descale=s)
        assert "e4m3" in str(info.value) or "no CUDA driver/GPU found" in str(info.value)
    # With more than one entry the stride is the layout: the library's rule applies.
    with pytest.raises(ValueError, match=r"k_batch_stride \(8\) is not a multiple of 16"):
        flare.flash_attn_with_kvcache(_f((2, 1, 4, 64)), _f((2, 64, 2, 64), E4M3,
                                                            strides=[8, 128, 64, 1]),
                                      _KC8, cache_seqlens=4, k_descale=_S, v_descale=_S)
