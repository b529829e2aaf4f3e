"""Tests that run anywhere (no GPU needed): import, signatures, clear errors for CPU arrays."""
import inspect
import subprocess
import sys

import pytest

import flare

np = pytest.importorskip("numpy")

from fake_dlpack import FakeCuda as _FakeCuda  # noqa: E402

FUNCS = [
    "flash_attn_func",
    "flash_attn_varlen_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_with_kvcache",
    "merge_attention_states",
]


def test_import_and_metadata():
    assert flare.__version__.count(".") == 2
    assert set(flare.build_config) == {"archs", "head_dims", "dtypes"}
    assert isinstance(flare.cuda_device_count(), int)
    for name in FUNCS:
        assert callable(getattr(flare, name)), name
        assert getattr(flare, name).__doc__


def test_import_does_not_import_torch():
    code = "import sys, flare; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_flash_attn_2_signatures():
    params = lambda f: list(inspect.signature(f).parameters)  # noqa: E731
    assert params(flare.flash_attn_func)[:11] == [
        "q", "k", "v", "dropout_p", "softmax_scale", "causal", "window_size", "softcap",
        "alibi_slopes", "deterministic", "return_attn_probs"]
    assert params(flare.flash_attn_varlen_func)[:16] == [
        "q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k",
        "dropout_p", "softmax_scale", "causal", "window_size", "softcap", "alibi_slopes",
        "deterministic", "return_attn_probs", "block_table"]
    assert params(flare.flash_attn_with_kvcache)[:19] == [
        "q", "k_cache", "v_cache", "k", "v", "rotary_cos", "rotary_sin", "cache_seqlens",
        "cache_batch_idx", "cache_leftpad", "block_table", "softmax_scale", "causal",
        "window_size", "softcap", "rotary_interleaved", "alibi_slopes", "num_splits",
        "return_softmax_lse"]
    sig = inspect.signature(flare.flash_attn_func)
    assert sig.parameters["window_size"].default == (-1, -1)
    assert sig.parameters["softmax_scale"].default is None


def test_serving_keywords_on_every_attention_function():
    # learnable_sink (FlashAttention-4's name) and mm_prefix_ranges: keyword-only, default None,
    # on every attention function (merge_attention_states has neither).
    for name in FUNCS:
        params = inspect.signature(getattr(flare, name)).parameters
        if name == "merge_attention_states":
            assert "learnable_sink" not in params and "mm_prefix_ranges" not in params
            continue
        for kw in ("learnable_sink", "mm_prefix_ranges"):
            assert params[kw].kind is inspect.Parameter.KEYWORD_ONLY, (name, kw)
            assert params[kw].default is None, (name, kw)
    for kw in ("learnable_sink", "mm_prefix_ranges"):
        assert kw in flare.flash_attn_func.__doc__
    # block_table: FlashAttention-2 v2.8.3's position on flash_attn_varlen_func.
    params = inspect.signature(flare.flash_attn_varlen_func).parameters
    assert list(params).index("block_table") == 15
    assert params["block_table"].default is None


def _cpu(shape):
    return np.zeros(shape, dtype=np.float16)


@pytest.mark.parametrize("call", [
    lambda: flare.flash_attn_func(_cpu((1, 8, 2, 64)), _cpu((1, 8, 2, 64)), _cpu((1, 8, 2, 64))),
    lambda: flare.flash_attn_qkvpacked_func(_cpu((1, 8, 3, 2, 64))),
    lambda: flare.flash_attn_kvpacked_func(_cpu((1, 8, 2, 64)), _cpu((1, 8, 2, 2, 64))),
    lambda: flare.flash_attn_varlen_func(_cpu((8, 2, 64)), _cpu((8, 2, 64)), _cpu((8, 2, 64)),
                                         np.array([0, 8], np.int32), np.array([0, 8], np.int32),
                                         8, 8),
    lambda: flare.flash_attn_varlen_qkvpacked_func(_cpu((8, 3, 2, 64)),
                                                   np.array([0, 8], np.int32), 8),
    lambda: flare.flash_attn_varlen_kvpacked_func(_cpu((8, 2, 64)), _cpu((8, 2, 2, 64)),
                                                  np.array([0, 8], np.int32),
                                                  np.array([0, 8], np.int32), 8, 8),
    lambda: flare.flash_attn_with_kvcache(_cpu((1, 1, 2, 64)), _cpu((1, 16, 2, 64)),
                                          _cpu((1, 16, 2, 64)), cache_seqlens=4),
])
def test_cpu_arrays_are_rejected_clearly(call):
    with pytest.raises(ValueError, match="must be a CUDA array"):
        call()


def test_cpu_error_names_the_argument():
    q = _cpu((1, 8, 2, 64))
    with pytest.raises(ValueError, match=r"^q must be a CUDA array"):
        flare.flash_attn_func(q, q, q)
    with pytest.raises(ValueError, match=r"^qkv must be a CUDA array"):
        flare.flash_attn_qkvpacked_func(_cpu((1, 8, 3, 2, 64)))


def test_non_arrays_are_rejected():
    with pytest.raises(ValueError, match="q must be a CUDA array supporting DLPack"):
        flare.flash_attn_func([[1.0]], None, None)


def test_dropout_is_not_implemented():
    q = _cpu((1, 8, 2, 64))
    with pytest.raises(NotImplementedError, match="dropout"):
        flare.flash_attn_func(q, q, q, dropout_p=0.1)
    with pytest.raises(NotImplementedError, match="dropout"):
        flare.flash_attn_varlen_qkvpacked_func(_cpu((8, 3, 2, 64)), None, 8, dropout_p=0.5)


def test_bad_window_and_stream_arguments():
    q = _cpu((1, 8, 2, 64))
    with pytest.raises(ValueError, match="window_size"):
        flare.flash_attn_func(q, q, q, window_size=3)
    with pytest.raises(ValueError, match="stream"):
        flare.flash_attn_func(q, q, q, stream="default")


# ----------------------------------------------------------------------------- merge_attention_states


def _lse(shape):
    return np.zeros(shape, dtype=np.float32)


def test_merge_attention_states_signature():
    sig = inspect.signature(flare.merge_attention_states)
    assert list(sig.parameters) == ["outs", "lses", "out", "out_lse", "stream"]
    assert sig.parameters["out"].default is None
    assert sig.parameters["out_lse"].default is None
    assert sig.parameters["stream"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "log-sum-exp" in flare.merge_attention_states.__doc__
    assert "merge_attention_states" in flare.__all__


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_merge_rejects_cpu_arrays(dtype):
    o, l = np.zeros((1, 8, 2, 64), dtype=dtype), _lse((1, 2, 8))
    with pytest.raises(ValueError, match=r"^outs\[0\] must be a CUDA array"):
        flare.merge_attention_states([o, o], [l, l])
    with pytest.raises(ValueError, match=r"^outs\[0\] must be a CUDA array"):
        flare.merge_attention_states((o,), (l,), out=o, out_lse=l)


def test_merge_rejects_empty_and_mismatched_lists():
    o, l = _cpu((1, 8, 2, 64)), _lse((1, 2, 8))
    with pytest.raises(ValueError, match="at least one part"):
        flare.merge_attention_states([], [])
    with pytest.raises(ValueError, match="outs has 2 parts but lses has 1"):
        flare.merge_attention_states([o, o], [l])
    with pytest.raises(ValueError, match="outs has 1 part but lses has 3 entries"):
        flare.merge_attention_states([o], [l, l, l])


def test_merge_part_limit():
    limit = flare._flare.MERGE_MAX_PART_PTRS
    assert limit == 64
    o, l = _cpu((1, 8, 2, 64)), _lse((1, 2, 8))
    with pytest.raises(ValueError, match=f"at most {limit} parts.*got {limit + 1}"):
        flare.merge_attention_states([o] * (limit + 1), [l] * (limit + 1))
    # At the limit the count is fine: the next complaint is about the (CPU) arrays.
    with pytest.raises(ValueError, match="must be a CUDA array"):
        flare.merge_attention_states([o] * limit, [l] * limit)


def test_merge_rejects_non_sequences_and_none_entries():
    o, l = _cpu((1, 8, 2, 64)), _lse((1, 2, 8))
    with pytest.raises(TypeError, match="outs must be a sequence of arrays"):
        flare.merge_attention_states(None, [l])
    with pytest.raises(TypeError, match="lses must be a sequence of arrays"):
        flare.merge_attention_states([o], 3.0)
    with pytest.raises(ValueError, match=r"outs\[0\] is None"):
        flare.merge_attention_states([None], [l])
    with pytest.raises(ValueError, match=r"outs\[0\] must be a CUDA array supporting DLPack"):
        flare.merge_attention_states([[1.0]], [l])
    with pytest.raises(ValueError, match="stream"):
        flare.merge_attention_states([o], [l], stream="default")


_O = _FakeCuda((1, 8, 2, 64))
_L = _FakeCuda((1, 2, 8), "float32")


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="builds DLPack capsules with ctypes")
@pytest.mark.parametrize("outs, lses, kw, message", [
    ([_O, _FakeCuda((1, 8, 2, 64), "bfloat16")], [_L, _L], {},
     r"outs\[1\] is bf16 but outs\[0\] is fp16"),
    ([_FakeCuda((1, 8, 2, 64), "float64")], [_L], {}, "must be float16, bfloat16 or float32"),
    ([_O, _FakeCuda((1, 8, 3, 64))], [_L, _L], {}, r"outs\[1\].shape\[2\] \(3\) must equal out.shape\[2\] \(2\)"),
    ([_FakeCuda((8, 2, 64))], [_L], {}, r"outs\[0\] must have 4 dimensions"),
    ([_FakeCuda((1, 8, 2, 64), strides=[2048, 256, 128, 2])], [_L], {},
     r"outs\[0\].stride\[3\] \(2\) must be 1"),
    ([_O, _FakeCuda((1, 8, 2, 64), strides=[0, 256, 64, 1])], [_L, _L], {},
     r"outs\[1\] has other strides than outs\[0\]"),
    ([_O, _FakeCuda((1, 8, 2, 64), device=1)], [_L, _L], {}, r"outs\[1\] is on CUDA device 1"),
    ([_O], [None], {}, r"lses\[0\] is None"),
    ([_O], [_FakeCuda((1, 2, 8))], {}, r"lses\[0\] must be float32, got float16"),
    ([_O], [_FakeCuda((1, 8, 2), "float32")], {}, r"lses\[0\].shape\[1\] \(8\) must equal"),
    ([_O, _O], [_L, _FakeCuda((1, 2, 8), "float32", strides=[16, 1, 2])], {},
     r"lses\[1\] has other strides than lses\[0\]"),
    ([_O], [_L], {"out": _FakeCuda((1, 8, 2, 68))}, r"must equal out.shape\[3\] \(68\)"),
    ([_O], [_L], {"out": _FakeCuda((1, 8, 2, 64), "int32")}, "out must be float16, bfloat16 or float32"),
    ([_O], [_L], {"out_lse": _FakeCuda((1, 2, 8), "float64")}, "out_lse must be float32"),
])
def test_merge_argument_checks(outs, lses, kw, message):
    with pytest.raises(ValueError, match=message):
        flare.merge_attention_states(outs, lses, **kw)


# ----------------------------------------------------------------------------- validation first
#
# Every argument check runs before any CUDA call: a bad argument raises ValueError (or
# NotImplementedError) naming it whether or not a driver or GPU exists, and only a valid call
# reaches the device, where a machine without one gets "no CUDA driver/GPU found". The fake
# arrays are never dereferenced: every bad-argument case fails before anything touches a device.

_CPYTHON = pytest.mark.skipif(sys.implementation.name != "cpython",
                              reason="builds DLPack capsules with ctypes")


def _f(shape, dtype="float16", **kw):
    return _FakeCuda(shape, dtype, **kw)


def _i32(shape, **kw):
    return _FakeCuda(shape, "int32", **kw)


_Q = _f((2, 8, 4, 64))
_K = _f((2, 16, 2, 64))
_KC = _f((2, 64, 2, 64))
_PAGES = _f((8, 16, 2, 64))

# (label, call, exception, message regex). Each message names the argument at fault.
_BAD = [
    # A new out allocated by the binding: the library's merge rules still come first.
    ("merge head_dim", lambda: flare.merge_attention_states(
        [_f((1, 8, 2, 6))] * 2, [_f((1, 2, 8), "float32")] * 2),
     ValueError, "head_dim"),
    # Tensors need element (2-byte) alignment whatever else the kernels take.
    ("misaligned q", lambda: flare.flash_attn_func(_f((2, 8, 4, 64), data=0x10001), _K, _K),
     ValueError, r"\bq\b.*aligned|aligned.*\bq\b"),
    ("heads not a multiple", lambda: flare.flash_attn_func(_f((2, 8, 3, 64)), _K, _K),
     ValueError, r"q has 3 heads, not a multiple of the 2 heads of k"),
    ("k dtype", lambda: flare.flash_attn_func(_Q, _f((2, 16, 2, 64), "bfloat16"), _K),
     ValueError, "k is bf16 but q is fp16"),
    ("q float32", lambda: flare.flash_attn_func(_f((2, 8, 4, 64), "float32"), _K, _K),
     ValueError, "q must be float16 or bfloat16, got float32"),
    ("k batch", lambda: flare.flash_attn_func(_Q, _f((3, 16, 2, 64)), _f((3, 16, 2, 64))),
     ValueError, r"k.shape\[0\] \(3\) must equal q.shape\[0\]"),
    ("v shape", lambda: flare.flash_attn_func(_Q, _K, _f((2, 15, 2, 64))),
     ValueError, r"v.shape\[1\] \(15\) must equal k.shape\[1\]"),
    ("k rank", lambda: flare.flash_attn_func(_Q, _f((16, 2, 64)), _K),
     ValueError, "k must have 4 dimensions"),
    ("k last stride", lambda: flare.flash_attn_func(
        _Q, _f((2, 16, 2, 64), strides=[4096, 256, 128, 2]), _K),
     ValueError, r"k.stride\[3\] \(2\) must be 1"),
    ("k on another device", lambda: flare.flash_attn_func(_Q, _f((2, 16, 2, 64), device=1), _K),
     ValueError, "k is on CUDA device 1 but q is on device 0"),
    ("out shape", lambda: flare.flash_attn_func(_Q, _K, _K, out=_f((2, 8, 4, 32))),
     ValueError, r"out.shape\[3\] \(32\) must equal v.shape\[3\]"),
    ("window_left", lambda: flare.flash_attn_func(_Q, _K, _K, window_size=(-5, 0)),
     ValueError, "window_left"),
    ("softcap", lambda: flare.flash_attn_func(_Q, _K, _K, softcap=-1.0),
     ValueError, "softcap"),
    ("alibi dtype", lambda: flare.flash_attn_func(_Q, _K, _K, alibi_slopes=_f((4,))),
     ValueError, "alibi_slopes must be float32"),
    ("alibi shape", lambda: flare.flash_attn_func(_Q, _K, _K, alibi_slopes=_f((5,), "float32")),
     ValueError, r"alibi_slopes.shape\[0\] is 5"),
    ("qkv packing", lambda: flare.flash_attn_qkvpacked_func(_f((2, 8, 2, 4, 64))),
     ValueError, r"qkv.shape\[2\] is 2 but must equal 3"),
    ("stream -1", lambda: flare.flash_attn_func(_Q, _K, _K, stream=-1),
     ValueError, r"^stream must be a cudaStream_t handle in \[0, 2\*\*64\)"),
    ("stream 2**64", lambda: flare.flash_attn_func(_Q, _K, _K, stream=2**64),
     ValueError, "^stream must be"),
    ("stream str", lambda: flare.flash_attn_func(_Q, _K, _K, stream="default"),
     ValueError, "^stream must be an int cudaStream_t handle"),
    ("stream bool", lambda: flare.flash_attn_func(_Q, _K, _K, stream=True),
     ValueError, "^stream must be"),
    ("window too large", lambda: flare.flash_attn_func(_Q, _K, _K, window_size=(2**40, 0)),
     ValueError, r"window_size\[0\] \(1099511627776\) is out of the int32 range"),
    ("window not an int", lambda: flare.flash_attn_func(_Q, _K, _K, window_size=(1.5, 0)),
     ValueError, r"window_size\[0\] must be an int"),
    ("softcap not a number", lambda: flare.flash_attn_func(_Q, _K, _K, softcap="x"),
     ValueError, "softcap must be a float"),
    ("softmax_scale not a number", lambda: flare.flash_attn_func(_Q, _K, _K, softmax_scale=[1]),
     ValueError, "softmax_scale must be a float"),
    ("varlen max_seqlen_k too large", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _f((8, 2, 64)), _f((8, 2, 64)), _i32((3,)), _i32((3,)), 4, 2**31),
     ValueError, r"max_seqlen_k \(2147483648\) is out of the int32 range"),
    ("kvcache num_splits not an int", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _KC, cache_seqlens=4, num_splits=None),
     ValueError, "num_splits must be an int"),
    ("varlen cu_seqlens dtype", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _f((8, 2, 64)), _f((8, 2, 64)), _f((3,)), _i32((3,)), 4, 4),
     ValueError, "cu_seqlens_q must be int32"),
    ("varlen cu_seqlens_k length", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _f((8, 2, 64)), _f((8, 2, 64)), _i32((3,)), _i32((4,)), 4, 4),
     ValueError, r"cu_seqlens_k.shape\[0\] is 4"),
    ("varlen max_seqlen_q", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _f((8, 2, 64)), _f((8, 2, 64)), _i32((3,)), _i32((3,)), 0, 4),
     ValueError, "max_seqlen_q"),
    # ---- paged varlen (block_table): k / v are page pools
    ("varlen block_table with flat k", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _f((8, 2, 64)), _f((8, 2, 64)), _i32((3,)), _i32((3,)), 4, 4,
        block_table=_i32((2, 4))),
     ValueError, "k must have 4 dimensions, got 3"),
    ("varlen block_table batch", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _PAGES, _PAGES, _i32((3,)), _i32((3,)), 4, 4, block_table=_i32((3, 4))),
     ValueError, r"block_table.shape\[0\] is 3 but must equal cu_seqlens_q.shape\[0\] - 1"),
    ("varlen block_table dtype", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _PAGES, _PAGES, _i32((3,)), _i32((3,)), 4, 4,
        block_table=_f((2, 4), "float32")),
     ValueError, "block_table must be int32, got float32"),
    ("varlen block_table rank", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _PAGES, _PAGES, _i32((3,)), _i32((3,)), 4, 4, block_table=_i32((8,))),
     ValueError, "block_table must have 2 dimensions"),
    ("varlen block_table device", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _PAGES, _PAGES, _i32((3,)), _i32((3,)), 4, 4,
        block_table=_i32((2, 4), device=1)),
     ValueError, "block_table is on CUDA device 1 but q is on device 0"),
    ("varlen block_table no pages", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _PAGES, _PAGES, _i32((3,)), _i32((3,)), 4, 4, block_table=_i32((2, 0))),
     ValueError, r"max_pages_per_seq \(0\) must be >= 1"),
    ("varlen block_table v pool", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _PAGES, _f((8, 8, 2, 64)), _i32((3,)), _i32((3,)), 4, 4,
        block_table=_i32((2, 4))),
     ValueError, r"v.shape\[1\] \(8\) must equal k.shape\[1\]"),
    ("varlen block_table page size 0", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _f((8, 0, 2, 64)), _f((8, 0, 2, 64)), _i32((3,)), _i32((3,)), 4, 4,
        block_table=_i32((2, 4))),
     ValueError, r"page_block_size \(0\)"),
    # ---- learnable_sink
    ("sink dtype", lambda: flare.flash_attn_func(_Q, _K, _K, learnable_sink=_f((4,))),
     ValueError, "learnable_sink must be float32, got float16"),
    ("sink shape", lambda: flare.flash_attn_func(_Q, _K, _K, learnable_sink=_f((2,), "float32")),
     ValueError, r"learnable_sink.shape\[0\] is 2 but must equal the number of query heads \(4\)"),
    ("sink rank", lambda: flare.flash_attn_func(_Q, _K, _K,
                                                learnable_sink=_f((2, 4), "float32")),
     ValueError, "learnable_sink must have 1 dimensions"),
    ("sink device", lambda: flare.flash_attn_func(
        _Q, _K, _K, learnable_sink=_f((4,), "float32", device=1)),
     ValueError, "learnable_sink is on CUDA device 1 but q is on device 0"),
    ("sink strided", lambda: flare.flash_attn_func(
        _Q, _K, _K, learnable_sink=_f((4,), "float32", strides=[2])),
     ValueError, "learnable_sink must be contiguous"),
    ("sink misaligned", lambda: flare.flash_attn_func(
        _Q, _K, _K, learnable_sink=_f((4,), "float32", data=0x10002)),
     ValueError, r"\bsink\b.*aligned"),
    ("sink cpu", lambda: flare.flash_attn_func(
        _Q, _K, _K, learnable_sink=np.zeros(4, np.float32)),
     ValueError, "learnable_sink must be a CUDA array"),
    ("sink varlen heads", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _f((8, 2, 64)), _f((8, 2, 64)), _i32((3,)), _i32((3,)), 4, 4,
        learnable_sink=_f((2,), "float32")),
     ValueError, r"learnable_sink.shape\[0\] is 2"),
    ("sink kvcache dtype", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _KC, cache_seqlens=4, learnable_sink=_i32((4,))),
     ValueError, "learnable_sink must be float32, got int32"),
    ("sink qkvpacked", lambda: flare.flash_attn_qkvpacked_func(
        _f((2, 8, 3, 4, 64)), learnable_sink=_f((3,), "float32")),
     ValueError, r"learnable_sink.shape\[0\] is 3"),
    # ---- mm_prefix_ranges
    ("ranges dtype", lambda: flare.flash_attn_func(_Q, _K, _K,
                                                   mm_prefix_ranges=_f((2, 1, 2), "float32")),
     ValueError, "mm_prefix_ranges must be int32, got float32"),
    ("ranges rank", lambda: flare.flash_attn_func(_Q, _K, _K, mm_prefix_ranges=_i32((2, 2))),
     ValueError, "mm_prefix_ranges must have 3 dimensions"),
    ("ranges batch", lambda: flare.flash_attn_func(_Q, _K, _K, mm_prefix_ranges=_i32((3, 1, 2))),
     ValueError, r"mm_prefix_ranges.shape\[0\] is 3 but must equal the batch size \(2\)"),
    ("ranges pairs", lambda: flare.flash_attn_func(_Q, _K, _K, mm_prefix_ranges=_i32((2, 1, 3))),
     ValueError, r"mm_prefix_ranges.shape\[2\] is 3 but must equal 2"),
    ("ranges strided pairs", lambda: flare.flash_attn_func(
        _Q, _K, _K, mm_prefix_ranges=_i32((2, 3, 2), strides=[12, 4, 1])),
     ValueError, "mm_prefix_ranges must hold each sequence's"),
    ("ranges device", lambda: flare.flash_attn_func(
        _Q, _K, _K, mm_prefix_ranges=_i32((2, 1, 2), device=1)),
     ValueError, "mm_prefix_ranges is on CUDA device 1"),
    ("ranges misaligned", lambda: flare.flash_attn_func(
        _Q, _K, _K, mm_prefix_ranges=_i32((2, 1, 2), data=0x10002)),
     ValueError, r"mm_prefix_ranges.*aligned"),
    ("ranges varlen batch", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _f((8, 2, 64)), _f((8, 2, 64)), _i32((3,)), _i32((3,)), 4, 4,
        mm_prefix_ranges=_i32((1, 1, 2))),
     ValueError, r"mm_prefix_ranges.shape\[0\] is 1 but must equal the batch size \(2\)"),
    ("ranges kvcache batch", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _KC, cache_seqlens=4, mm_prefix_ranges=_i32((4, 1, 2))),
     ValueError, r"mm_prefix_ranges.shape\[0\] is 4"),
    # ---- a separate V head dim
    ("head_dim_v pair", lambda: flare.flash_attn_func(
        _f((2, 8, 4, 192)), _f((2, 16, 2, 192)), _f((2, 16, 2, 64))),
     ValueError, r"head_dim_v \(64\) with head_dim \(192\)"),
    ("head_dim_v out", lambda: flare.flash_attn_func(
        _f((2, 8, 4, 192)), _f((2, 16, 2, 192)), _f((2, 16, 2, 128)),
        out=_f((2, 8, 4, 192))),
     ValueError, r"out.shape\[3\] \(192\) must equal v.shape\[3\]"),
    ("head_dim_v v rows", lambda: flare.flash_attn_func(
        _f((2, 8, 4, 192)), _f((2, 16, 2, 192)), _f((2, 15, 2, 128))),
     ValueError, r"v.shape\[1\] \(15\) must equal k.shape\[1\]"),
    ("head_dim_v kvcache v", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 192)), _f((2, 64, 2, 192)), _f((2, 64, 2, 128)), _f((2, 1, 2, 192)),
        _f((2, 1, 2, 192)), cache_seqlens=4),
     ValueError, r"^v.shape\[3\] \(192\) must equal v_cache.shape\[3\]"),
    # Rows padded to 520 elements, so only the head dim itself is wrong.
    ("head_dim 513", lambda: flare.flash_attn_func(
        _f((2, 8, 4, 513), strides=[8 * 4 * 520, 4 * 520, 520, 1]),
        _f((2, 16, 2, 513), strides=[16 * 2 * 520, 2 * 520, 520, 1]),
        _f((2, 16, 2, 513), strides=[16 * 2 * 520, 2 * 520, 520, 1]),
        out=_f((2, 8, 4, 513), strides=[8 * 4 * 520, 4 * 520, 520, 1])),
     ValueError, r"head_dim \(513\)"),
    ("kvcache seqlens range", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _KC, cache_seqlens=65),
     ValueError, r"cache_seqlens \(65\) must be in \[0, 64\]"),
    ("kvcache seqlens dtype", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _KC, cache_seqlens=_f((2,))),
     ValueError, "cache_seqlens must be int32"),
    ("kvcache append without seqlens", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _KC, _f((2, 1, 2, 64)), _f((2, 1, 2, 64))),
     ValueError, "cache_seqlens is required"),
    ("kvcache k without v", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _KC, _f((2, 1, 2, 64)), cache_seqlens=4),
     ValueError, "v is missing while k is given"),
    ("kvcache k heads", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _KC, _f((2, 1, 4, 64)), _f((2, 1, 4, 64)), cache_seqlens=4),
     ValueError, r"k.shape\[2\] \(4\) must equal the heads of k_cache"),
    ("kvcache v_cache shape", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _f((2, 32, 2, 64)), cache_seqlens=4),
     ValueError, r"v_cache.shape\[1\] \(32\) must equal k_cache.shape\[1\]"),
    ("kvcache rotary without k", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _KC, rotary_cos=_f((64, 16)), rotary_sin=_f((64, 16)),
        cache_seqlens=4),
     ValueError, "rotary_cos / rotary_sin need the new keys"),
    ("kvcache block_table batch", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _PAGES, _PAGES, cache_seqlens=4, block_table=_i32((3, 4))),
     ValueError, r"block_table.shape\[0\] is 3"),
    ("kvcache num_splits", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _KC, cache_seqlens=4, num_splits=-1),
     ValueError, "num_splits"),
    ("dropout", lambda: flare.flash_attn_func(_Q, _K, _K, dropout_p=0.1),
     NotImplementedError, "dropout"),
    ("merge out dtype", lambda: flare.merge_attention_states(
        [_f((1, 8, 2, 64))], [_f((1, 2, 8), "float32")], out=_f((1, 8, 2, 64), "int32")),
     ValueError, "out must be float16, bfloat16 or float32"),
]


@_CPYTHON
@pytest.mark.parametrize("label, call, error, message", _BAD, ids=[b[0] for b in _BAD])
def test_bad_arguments_fail_before_any_cuda_call(label, call, error, message):
    with pytest.raises(error, match=message) as info:
        call()
    text = str(info.value)
    for device_error in ("no CUDA driver", "CUDA error", "cudaError", "cudaGetDevice"):
        assert device_error not in text, text


# Valid calls: they pass every check, so on a machine without a driver or GPU the device is
# what fails, with one clear message. (With a GPU the fake addresses must not reach it.)
_VALID = [
    ("flash_attn_func", lambda: flare.flash_attn_func(_Q, _K, _K, causal=True)),
    ("flash_attn_func lse", lambda: flare.flash_attn_func(_Q, _K, _K, return_attn_probs=True)),
    ("qkvpacked", lambda: flare.flash_attn_qkvpacked_func(_f((2, 8, 3, 4, 64)))),
    ("kvpacked", lambda: flare.flash_attn_kvpacked_func(_Q, _f((2, 16, 2, 2, 64)))),
    ("varlen", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _f((8, 2, 64)), _f((8, 2, 64)), _i32((3,)), _i32((3,)), 4, 4)),
    ("kvcache", lambda: flare.flash_attn_with_kvcache(_f((2, 1, 4, 64)), _KC, _KC,
                                                       cache_seqlens=4)),
    ("kvcache append + paged", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _PAGES, _PAGES, _f((2, 1, 2, 64)), _f((2, 1, 2, 64)),
        cache_seqlens=_i32((2,)), block_table=_i32((2, 4)))),
    ("merge", lambda: flare.merge_attention_states([_f((1, 8, 2, 64))] * 2,
                                                   [_f((1, 2, 8), "float32")] * 2)),
]

# Serving features: valid input that reaches the device, unless this library's GPU kernels do
# not run the feature yet, which the library refuses (NotImplementedError naming it) before any
# CUDA call.
_SERVING_VALID = [
    ("paged varlen", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _PAGES, _PAGES, _i32((3,)), _i32((3,)), 4, 40,
        block_table=_i32((2, 4))), "block_table"),
    ("paged varlen page 1", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _f((64, 1, 2, 64)), _f((64, 1, 2, 64)), _i32((3,)), _i32((3,)), 4, 30,
        block_table=_i32((2, 32))), "block_table"),
    ("kvcache page 8", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _f((8, 8, 2, 64)), _f((8, 8, 2, 64)), cache_seqlens=4,
        block_table=_i32((2, 4))), "page_block_size"),
    ("kvcache page 3", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _f((8, 3, 2, 64)), _f((8, 3, 2, 64)), cache_seqlens=4,
        block_table=_i32((2, 4))), "page_block_size"),
    ("sink", lambda: flare.flash_attn_func(_Q, _K, _K, learnable_sink=_f((4,), "float32")),
     "sink"),
    ("sink varlen", lambda: flare.flash_attn_varlen_func(
        _f((8, 4, 64)), _f((8, 2, 64)), _f((8, 2, 64)), _i32((3,)), _i32((3,)), 4, 4,
        learnable_sink=_f((4,), "float32")), "sink"),
    ("sink kvcache", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 64)), _KC, _KC, cache_seqlens=4, learnable_sink=_f((4,), "float32")),
     "sink"),
    ("ranges", lambda: flare.flash_attn_func(_Q, _K, _K, causal=True,
                                             mm_prefix_ranges=_i32((2, 2, 2))),
     "mm_prefix_ranges"),
    ("ranges kvpacked", lambda: flare.flash_attn_kvpacked_func(
        _Q, _f((2, 16, 2, 2, 64)), mm_prefix_ranges=_i32((2, 1, 2))), "mm_prefix_ranges"),
    ("head_dim_v 192/128", lambda: flare.flash_attn_func(
        _f((2, 8, 4, 192)), _f((2, 16, 2, 192)), _f((2, 16, 2, 128))), "head_dim_v"),
    ("head_dim_v kvcache", lambda: flare.flash_attn_with_kvcache(
        _f((2, 1, 4, 192)), _f((2, 64, 2, 192)), _f((2, 64, 2, 128)), cache_seqlens=4),
     "head_dim_v"),
    ("head_dim 7", lambda: flare.flash_attn_func(
        _f((2, 8, 4, 7), strides=[2048, 256, 64, 1]), _f((2, 16, 2, 7), strides=[2048, 128, 64, 1]),
        _f((2, 16, 2, 7), strides=[2048, 128, 64, 1]),
        out=_f((2, 8, 4, 7), strides=[2048, 256, 64, 1])), "head_dim"),
    # Head dim 59 in rows padded to 64 elements, and dense (FlashAttention-2's test-suite):
    # dense rows of 59 elements are not 16-byte addressable, which the library refuses as
    # misaligned until its kernels take such tensors.
    ("head_dim 59", lambda: flare.flash_attn_func(
        _f((2, 8, 4, 59), strides=[2048, 256, 64, 1]), _f((2, 16, 2, 59), strides=[2048, 128, 64, 1]),
        _f((2, 16, 2, 59), strides=[2048, 128, 64, 1]),
        out=_f((2, 8, 4, 59), strides=[2048, 256, 64, 1])), "head_dim"),
    ("head_dim 59 dense", lambda: flare.flash_attn_func(
        _f((2, 8, 4, 59)), _f((2, 16, 2, 59)), _f((2, 16, 2, 59))), "narrow"),
    ("head_dim 512", lambda: flare.flash_attn_func(
        _f((2, 8, 4, 512)), _f((2, 16, 2, 512)), _f((2, 16, 2, 512))), "head_dim"),
]

# A range table without ranges is no feature at all: always a plain valid call.
_VALID += [
    ("no ranges", lambda: flare.flash_attn_func(_Q, _K, _K, mm_prefix_ranges=_i32((2, 0, 2)))),
]


@_CPYTHON
@pytest.mark.skipif(flare.cuda_device_count() > 0,
                    reason="a GPU is visible: this test's arrays are fake and must not reach it")
@pytest.mark.parametrize("label, call", _VALID, ids=[v[0] for v in _VALID])
def test_valid_call_without_a_device_says_so(label, call):
    with pytest.raises(RuntimeError, match="^flare: no CUDA driver/GPU found"):
        call()


@_CPYTHON
@pytest.mark.skipif(flare.cuda_device_count() > 0,
                    reason="a GPU is visible: this test's arrays are fake and must not reach it")
@pytest.mark.parametrize("label, call, feature", _SERVING_VALID, ids=[v[0] for v in _SERVING_VALID])
def test_serving_call_without_a_device_says_so(label, call, feature):
    # Every binding check passed; the library then either refuses a feature its GPU kernels do
    # not run yet (naming it, no CUDA call) or sends the call to the device, which is missing.
    try:
        call()
    except NotImplementedError as e:
        assert feature in str(e), str(e)
        assert "not" in str(e) and "GPU kernels" in str(e), str(e)
    except ValueError as e:
        # Head dims the kernels do not run yet keep their status (UNSUPPORTED_HEAD_DIM), and
        # tensors that are not 16-byte addressable theirs (MISALIGNED).
        if feature == "narrow":
            assert "misaligned" in str(e) and "multiple of 8 elements" in str(e), str(e)
        else:
            assert feature == "head_dim" and "GPU kernels" in str(e), str(e)
    except RuntimeError as e:
        assert str(e).startswith("flare: no CUDA driver/GPU found"), str(e)
    else:
        pytest.fail("a call with fake arrays returned")
