"""Tests that run anywhere (no GPU needed): import, signatures, clear errors for CPU arrays."""
import ctypes
import inspect
import subprocess
import sys

import pytest

import flare

np = pytest.importorskip("numpy")

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


class _FakeCuda:
    """A DLPack producer claiming a CUDA array at a made-up address (never dereferenced).

    It lets the binding's own checks (dtypes, shapes, strides, devices) run without a GPU;
    every case below fails before anything touches the device.
    """

    class _Device(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int32), ("id", ctypes.c_int32)]

    class _DType(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]

    class _Tensor(ctypes.Structure):
        pass

    _Tensor._fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32),
                        ("dtype", _DType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                        ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64),
                        ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]
    _CODES = {"float16": (2, 16), "bfloat16": (4, 16), "float32": (2, 32), "float64": (2, 64),
              "int32": (0, 32)}
    _alive = []  # the structs outlive the capsules (there is no deleter)

    def __init__(self, shape, dtype="float16", strides=None, device=0):
        if strides is None:
            strides = [int(np.prod(shape[i + 1:])) for i in range(len(shape))]
        self.shape, self.dtype, self.strides, self.device = tuple(shape), dtype, strides, device

    def __dlpack_device__(self):
        return (2, self.device)  # kDLCUDA

    def __dlpack__(self, **kwargs):
        n = len(self.shape)
        t = self._Tensor(data=0x10000, device=self._Device(2, self.device), ndim=n,
                         dtype=self._DType(*self._CODES[self.dtype], 1),
                         shape=(ctypes.c_int64 * n)(*self.shape),
                         strides=(ctypes.c_int64 * n)(*self.strides))
        self._alive.append(t)
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(ctypes.addressof(t), b"dltensor", None)


_O = _FakeCuda((1, 8, 2, 64))
_L = _FakeCuda((1, 2, 8), "float32")


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="builds DLPack capsules with ctypes")
@pytest.mark.parametrize("outs, lses, kw, message", [
    ([_O, _FakeCuda((1, 8, 2, 64), "bfloat16")], [_L, _L], {},
     r"outs\[1\] must have the dtype of outs\[0\] \(float16\), got bfloat16"),
    ([_FakeCuda((1, 8, 2, 64), "float64")], [_L], {}, "must be float16, bfloat16 or float32"),
    ([_O, _FakeCuda((1, 8, 3, 64))], [_L, _L], {}, r"outs\[1\].shape\[2\] is 3"),
    ([_FakeCuda((8, 2, 64))], [_L], {}, r"outs\[0\] must have 4 dimensions"),
    ([_FakeCuda((1, 8, 2, 64), strides=[2048, 256, 128, 2])], [_L], {},
     "contiguous in its last dimension"),
    ([_O, _FakeCuda((1, 8, 2, 64), strides=[0, 256, 64, 1])], [_L, _L], {},
     "all parts must share their strides"),
    ([_O, _FakeCuda((1, 8, 2, 64), device=1)], [_L, _L], {}, r"outs\[1\] is on CUDA device 1"),
    ([_O], [None], {}, r"lses\[0\] is None"),
    ([_O], [_FakeCuda((1, 2, 8))], {}, r"lses\[0\] must be float32, got float16"),
    ([_O], [_FakeCuda((1, 8, 2), "float32")], {}, r"lses\[0\].shape\[1\] is 8"),
    ([_O, _O], [_L, _FakeCuda((1, 2, 8), "float32", strides=[16, 1, 2])], {},
     "all lses must share their strides"),
    ([_O], [_L], {"out": _FakeCuda((1, 8, 2, 68))}, r"out.shape\[3\] is 68"),
    ([_O], [_L], {"out": _FakeCuda((1, 8, 2, 64), "int32")}, "out must be float16, bfloat16 or float32"),
    ([_O], [_L], {"out_lse": _FakeCuda((1, 2, 8), "float64")}, "out_lse must be float32"),
])
def test_merge_argument_checks(outs, lses, kw, message):
    with pytest.raises(ValueError, match=message):
        flare.merge_attention_states(outs, lses, **kw)
