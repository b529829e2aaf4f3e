"""Tests that run anywhere (no GPU needed): import, signatures, clear errors for CPU arrays."""
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
