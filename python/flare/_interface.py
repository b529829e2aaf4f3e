"""FlashAttention-2 compatible forward functions over DLPack arrays.

The functions here mirror ``flash_attn``'s Python interface (names, argument order, defaults
and return conventions), forward only. Arrays may come from any DLPack producer on a CUDA
device (torch, cupy, jax, ...); they are used in place, never copied.

Frameworks are detected lazily: ``torch`` and ``cupy`` are looked up in ``sys.modules`` and
never imported by this package.
"""

from __future__ import annotations

import operator
import sys
from typing import Any, Optional, Tuple

from . import _flare

__all__ = [
    "flash_attn_func",
    "flash_attn_varlen_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_with_kvcache",
    "merge_attention_states",
]

_SEPARATE, _QKV_PACKED, _KV_PACKED = 0, 1, 2


# ----------------------------------------------------------------------------- helpers

# window_size's default: a call that passes it (or nothing) skips the pair's checks.
_NO_WINDOW = (-1, -1)


class _Torch:
    """The pieces of torch a call uses, looked up once (after the caller imported torch)."""

    def __init__(self, torch: Any):
        self.module = torch
        self.Tensor = torch.Tensor
        # torch's C exporter: a capsule without the frame of Tensor.__dlpack__ (a Python method).
        self.to_dlpack = getattr(torch._C, "_to_dlpack", None) or torch.utils.dlpack.to_dlpack
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        # The current stream of a device index as a cudaStream_t int.
        self.current_stream = raw if raw is not None else (
            lambda index: torch.cuda.current_stream(index).cuda_stream)
        self.uint8, self.float32, self.bfloat16 = torch.uint8, torch.float32, torch.bfloat16
        self.fp8_codes = {}
        for name, code in (("float8_e4m3fn", _flare.DLPACK_FLOAT8_E4M3FN),
                           ("float8_e5m2", _flare.DLPACK_FLOAT8_E5M2)):
            dtype = getattr(torch, name, None)
            if dtype is not None:
                self.fp8_codes[dtype] = code


_torch_pieces: Optional[_Torch] = None


def _torch() -> Optional[_Torch]:
    """torch's pieces once torch is imported (flare never imports it), else None."""
    global _torch_pieces
    if _torch_pieces is None:
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        try:
            _torch_pieces = _Torch(torch)
        except AttributeError:  # torch is still being imported
            return None
    return _torch_pieces


def _torch_tensor_type():
    T = _torch()
    return T.Tensor if T is not None else None


def _cupy_array_type():
    cupy = sys.modules.get("cupy")
    return getattr(cupy, "ndarray", None) if cupy is not None else None


def _is_torch(x: Any) -> bool:
    t = _torch_tensor_type()
    return t is not None and isinstance(x, t)


def _is_cupy(x: Any) -> bool:
    t = _cupy_array_type()
    return t is not None and isinstance(x, t)


def _prepare(x: Any) -> Any:
    """Makes a torch tensor exportable: DLPack refuses tensors that require grad."""
    if _is_torch(x) and x.requires_grad:
        return x.detach()
    return x


def _export(x: Any, T: Optional[_Torch]) -> Any:
    """An array argument as the core takes it: a torch tensor as the DLPack capsule of torch's
    C exporter (which also takes tensors that require grad); any other value as it is (the core
    calls its __dlpack__, or reports what it is). A tensor torch's exporter refuses is passed on
    as it is, so that the core names the argument in its message."""
    if T is not None and isinstance(x, T.Tensor):
        try:
            return T.to_dlpack(x)
        except Exception:  # noqa: BLE001 - reported by the core, naming the argument
            return _prepare(x)
    return x


def _stream_handle(stream: Any, ref: Any, T: Optional[_Torch] = None) -> int:
    """The cudaStream_t (as an int) a call runs on.

    Explicit ``stream``: an int handle, or an object with ``cuda_stream`` (torch.cuda.Stream)
    or ``ptr`` (cupy.cuda.Stream). Otherwise the current stream of the framework ``ref``
    comes from (torch, cupy), else the legacy default stream 0. A bad ``stream`` raises
    ValueError naming it (before anything else is looked at).
    """
    if stream is not None:
        handle = None
        if not isinstance(stream, bool):
            try:
                handle = operator.index(stream)
            except TypeError:
                for attr in ("cuda_stream", "ptr"):
                    value = getattr(stream, attr, None)
                    if isinstance(value, int) and not isinstance(value, bool):
                        handle = value
                        break
        if handle is None:
            raise ValueError(
                "stream must be an int cudaStream_t handle, a torch.cuda.Stream or a "
                f"cupy.cuda.Stream; got {type(stream).__name__}"
            )
        if not 0 <= handle < 2**64:
            raise ValueError(
                f"stream must be a cudaStream_t handle in [0, 2**64) (0: the legacy default "
                f"stream); got {handle}"
            )
        return handle
    if T is None:
        T = _torch()
    if T is not None and isinstance(ref, T.Tensor):
        return T.current_stream(ref.get_device()) if ref.is_cuda else 0
    if _is_cupy(ref):
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(ref.device.id):
            return int(cupy.cuda.get_current_stream().ptr)
    return 0


def _check_dropout(dropout_p: float) -> None:
    if dropout_p != 0.0:
        raise NotImplementedError(
            f"dropout_p={dropout_p}: flare is an inference (forward-only) library and does not "
            "implement dropout; pass dropout_p=0.0"
        )


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _int32(value: Any, name: str) -> int:
    """An int argument the C API takes as int32; ValueError naming it otherwise."""
    try:
        if isinstance(value, bool):
            raise TypeError
        result = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {type(value).__name__}") from None
    if not _INT32_MIN <= result <= _INT32_MAX:
        raise ValueError(f"{name} ({result}) is out of the int32 range")
    return result


def _float(value: Any, name: str) -> float:
    """A float argument; ValueError naming it when it is not a real number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a float, got {type(value).__name__}") from None


def _scale(softmax_scale: Optional[float]) -> float:
    # 0 selects 1/sqrt(headdim) in the library.
    return 0.0 if softmax_scale is None else _float(softmax_scale, "softmax_scale")


def _window(window_size: Tuple[int, int]) -> Tuple[int, int]:
    if window_size is _NO_WINDOW:
        return -1, -1
    try:
        left, right = window_size
    except (TypeError, ValueError):
        raise ValueError(f"window_size must be a pair (left, right), got {window_size!r}") from None
    return _int32(left, "window_size[0]"), _int32(right, "window_size[1]")


class DLPackArray:
    """A CUDA array flare allocated, handed to any framework through the DLPack protocol.

    ``torch.from_dlpack(a)``, ``cupy.from_dlpack(a)`` or ``jax.dlpack.from_dlpack(a)`` take it
    over zero-copy (once: DLPack capsules are consumed); the memory is freed with the last
    consumer.
    """

    _KDL_CUDA = 2

    def __init__(self, capsule: Any, device_id: int):
        self._capsule = capsule
        self._device_id = device_id

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        # flare's results are complete once the call's stream reaches them; a consumer on another
        # stream synchronises as the DLPack protocol asks of it.
        if self._capsule is None:
            raise BufferError("this flare array was already exported through DLPack")
        capsule, self._capsule = self._capsule, None
        return capsule

    def __dlpack_device__(self) -> Tuple[int, int]:
        return (self._KDL_CUDA, self._device_id)


def _device_id(x: Any) -> int:
    try:
        return int(x.__dlpack_device__()[1])
    except Exception:  # noqa: BLE001 - a producer without the method: device 0
        return 0


class _Outputs:
    """Pre-allocates out / lse with torch for torch inputs (stream-ordered caching allocator),
    and gives the core torch's allocator for the call's workspace (``alloc``).

    Other frameworks get arrays the extension allocates with cudaMalloc, which are converted
    back with the framework's from_dlpack (cupy) or returned as DLPack-capable arrays, and a
    workspace the extension allocates stream-ordered (cudaMallocAsync).
    """

    __slots__ = ("ref", "out", "lse", "alloc", "torch")

    def __init__(self, ref: Any, out: Any, out_shape, lse_shape, want_lse: bool, stream: int,
                 out_dtype: Any = None, T: Optional[_Torch] = None, stream_given: bool = True):
        self.ref = ref
        self.out = out
        self.lse = None
        self.alloc = None
        if T is None:
            T = _torch()
        self.torch = T if T is not None and isinstance(ref, T.Tensor) else None
        if self.torch is None or not ref.is_cuda:
            return
        fresh_out = None
        if out_shape is not None:
            if out is None:
                fresh_out = self.out = (ref.new_empty(out_shape) if out_dtype is None
                                        else ref.new_empty(out_shape, dtype=out_dtype))
            if want_lse:
                self.lse = ref.new_empty(lse_shape, dtype=T.float32)
        side = None
        if stream_given and stream != T.current_stream(ref.get_device()):
            # Memory from torch's allocator used on another stream must be recorded there.
            side = T.module.cuda.ExternalStream(stream, device=ref.device)
            for t in (fresh_out, self.lse):
                if t is not None:
                    t.record_stream(side)
        self.alloc = _torch_workspace(ref, T.uint8, side)

    def wrap(self, result) -> Tuple[Any, Any]:
        fresh_out, fresh_lse = result
        out = self.out if fresh_out is None else self._convert(fresh_out)
        lse = self.lse if fresh_lse is None else self._convert(fresh_lse)
        return out, lse

    def _convert(self, array: Any) -> Any:
        if self.torch is not None:
            return self.torch.module.from_dlpack(array)
        if _is_cupy(self.ref):
            return sys.modules["cupy"].from_dlpack(array)
        # A capsule owning the cudaMalloc'd memory, behind the __dlpack__ protocol.
        return DLPackArray(array, _device_id(self.ref))


def _torch_workspace(ref: Any, uint8: Any, side: Any):
    """The core's workspace allocator for a call on torch tensors: ``alloc(nbytes)`` gives
    (owner, address) of a fresh uint8 tensor on ref's device from torch's caching allocator
    (recorded on the call's stream ``side`` when that is not the current one). The core keeps
    the owner until the call is enqueued; torch then reuses the memory only in stream order, and
    under CUDA-graph capture it comes from the graph's memory pool."""

    def alloc(nbytes: int):
        w = ref.new_empty((nbytes,), dtype=uint8)
        if side is not None:
            w.record_stream(side)
        return w, w.data_ptr()

    return alloc


def _shape(x: Any):
    return tuple(x.shape) if hasattr(x, "shape") else None


def _with_head_dim(shape, v: Any):
    """``shape`` with its last extent replaced by v's head dim (head_dim_v): out's shape."""
    vs = _shape(v)
    if shape is None or not vs:
        return shape
    return tuple(shape[:-1]) + (vs[-1],)


# ----------------------------------------------------------------------------- FP8 inputs

# Whether torch exports float8 tensors through DLPack (probed once, on the first FP8 tensor).
_torch_fp8_dlpack: Optional[bool] = None


def _torch_fp8_code(x: Any) -> int:
    """The DLPack code of a torch float8_e4m3fn / float8_e5m2 tensor's type, else 0."""
    T = _torch()
    if T is None or not isinstance(x, T.Tensor):
        return 0
    return T.fp8_codes.get(x.dtype, 0)


def _fp8_views(*arrays):
    """The arrays as the core takes them, and the FP8 type code of each (0: as exported).

    torch exports float8 tensors through DLPack (DLPack 1.1's codes; torch 2.11 does) and they
    pass as they are. A torch that cannot export them gets a uint8 view of the same memory
    instead, with the tensor's FP8 type named by its code: no copy, no device work, so the call
    stays capturable in a CUDA graph.
    """
    global _torch_fp8_dlpack
    T = _torch()
    if T is None:
        return arrays, (0,) * len(arrays)
    Tensor, fp8 = T.Tensor, T.fp8_codes
    for x in arrays:
        if isinstance(x, Tensor) and x.dtype in fp8:
            break
    else:  # no torch FP8 tensor: nothing to look at
        return arrays, (0,) * len(arrays)
    views, codes = [], []
    for x in arrays:
        code = _torch_fp8_code(x)
        if code and _torch_fp8_dlpack is None:
            torch = T.module
            try:
                T.to_dlpack(torch.empty(0, dtype=torch.float8_e4m3fn))  # the exporter calls use
                _torch_fp8_dlpack = True
            except Exception:  # noqa: BLE001 - this torch refuses float8 in DLPack
                _torch_fp8_dlpack = False
        if code and not _torch_fp8_dlpack:
            views.append(x.view(T.uint8))
            codes.append(code)
        else:
            views.append(x)
            codes.append(0)
    return views, tuple(codes)


def _out_dtype(q: Any) -> Any:
    """The dtype of a fresh out for torch's q: None (q's), or bfloat16 for an FP8 q."""
    if _torch_fp8_code(q):
        return _torch().bfloat16
    return None


# ----------------------------------------------------------------------------- fixed length


def _fwd(q, k, v, packing, dropout_p, softmax_scale, causal, window_size, softcap,
         alibi_slopes, return_attn_probs, out, stream, learnable_sink, mm_prefix_ranges,
         q_descale=None, k_descale=None, v_descale=None):
    _check_dropout(dropout_p)
    T = _torch_pieces or _torch()
    left, right = _window(window_size)
    handle = _stream_handle(stream, q, T)
    qs = getattr(q, "shape", None)
    out_shape = lse_shape = None
    if qs is not None:
        if packing == _QKV_PACKED and len(qs) == 5:
            out_shape = (qs[0], qs[1], qs[3], qs[4])
        elif packing == _SEPARATE and len(qs) == 4:
            out_shape = _with_head_dim(qs, v)
        elif packing == _KV_PACKED and len(qs) == 4:
            out_shape = tuple(qs)
        if out_shape is not None:
            lse_shape = (out_shape[0], out_shape[2], out_shape[1])
    outs = _Outputs(q, out, out_shape, lse_shape, return_attn_probs, handle, _out_dtype(q), T,
                    stream is not None)
    (cq, ck, cv), codes = _fp8_views(q, k, v)
    e = _export
    result = _flare._fwd(e(cq, T), e(ck, T), e(cv, T), packing, e(outs.out, T), e(outs.lse, T),
                         bool(return_attn_probs), _scale(softmax_scale), bool(causal), left,
                         right, _float(softcap, "softcap"), e(alibi_slopes, T),
                         e(learnable_sink, T), e(mm_prefix_ranges, T), e(q_descale, T),
                         e(k_descale, T), e(v_descale, T), codes, outs.alloc, handle)
    o, lse = outs.wrap(result)
    return (o, lse, None) if return_attn_probs else o


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                    window_size=_NO_WINDOW, softcap=0.0, alibi_slopes=None, deterministic=False,
                    return_attn_probs=False, *, out=None, stream=None, learnable_sink=None,
                    mm_prefix_ranges=None, q_descale=None, k_descale=None, v_descale=None):
    """Exact attention forward, FlashAttention-2 layout.

    Arguments:
        q: (batch_size, seqlen_q, nheads, headdim), float16 or bfloat16, CUDA.
        k, v: (batch_size, seqlen_k, nheads_k, headdim); nheads divisible by nheads_k
            (MQA / GQA). v may have its own head dim headdim_v (v.shape[-1]); out then has
            it. Any head dim flare accepts (1 to 512; headdim_v: equal dims or (192, 128)) is
            used as it is, without padding or copies.
        dropout_p: must be 0.0 (NotImplementedError otherwise).
        softmax_scale: default 1 / sqrt(headdim).
        causal: causal mask aligned to the bottom-right corner when seqlen_q != seqlen_k.
        window_size: (left, right) sliding window; -1 is unbounded.
        softcap: > 0 applies softcap * tanh(scores / softcap).
        alibi_slopes: float32 (nheads,) or (batch_size, nheads); adds
            -slope * |i + seqlen_k - seqlen_q - j| to the score.
        deterministic: accepted and ignored (the forward pass is deterministic).
        return_attn_probs: also return the log-sum-exp. Probabilities are never
            materialised: the third element is always None.
        out: optional (batch_size, seqlen_q, nheads, headdim_v) array to write the result into.
        learnable_sink: optional float32 (nheads,): a per-head sink logit (in the units of the
            scaled scores) that joins the softmax denominator and nothing else (gpt-oss;
            FlashAttention-4's name). lse includes it; a row that sees no key gets lse = sink.
        mm_prefix_ranges: optional int32 (batch_size, max_ranges, 2) of [start, end) key
            positions per sequence (candle-flash-attn's semantics): a query whose position
            i + seqlen_k - seqlen_q lies in a range also sees every key of that range, on top of
            the causal / window mask (bidirectional image spans). Pairs with start >= end are
            empty; the contents are not validated.
        stream: optional stream (int cudaStream_t, torch.cuda.Stream, cupy.cuda.Stream).
            Default: torch's / cupy's current stream for their arrays, else stream 0.
        k_descale, v_descale: FP8 K/V. k and v may hold float8_e4m3fn or float8_e5m2 codes
            (both the same type; q and out stay float16 / bfloat16); an element's value is
            code x its factor. Each is then required: a float32 CUDA array of one factor per
            (batch entry, K/V head), shape (batch_size, nheads_k) (FlashAttention-3's), or one
            element (shape () or (1,)) for the whole tensor; any strides. FP8 tensors need
            head dims that are multiples of 16 and 16-byte aligned rows (strides multiples of
            16 elements).
        q_descale: FP8 prefill: q in float8_e4m3fn with e4m3 k and v, factors shaped like
            k_descale; out is then bfloat16 unless out= gives a float16 array. The GPU kernels
            refuse FP8 q for now (NotImplementedError from the library).

    Returns:
        out (batch_size, seqlen_q, nheads, headdim_v), or (out, softmax_lse, None) with
        return_attn_probs; softmax_lse is float32
        (batch_size, nheads, seqlen_q). A row that sees no key gets out 0 and lse -inf
        (FlashAttention-2 writes +inf there: a deliberate difference, -inf being the
        log-sum-exp of no key, which merge_attention_states relies on).

    Raises:
        ValueError naming the argument for bad arguments (before any CUDA call, so also on a
        machine without a GPU); NotImplementedError for dropout; RuntimeError("flare: no CUDA
        driver/GPU found ...") for a valid call without a driver or GPU, and for library or
        CUDA failures.

    No backward pass: gradients do not flow through this function.
    """
    return _fwd(q, k, v, _SEPARATE, dropout_p, softmax_scale, causal, window_size, softcap,
                alibi_slopes, return_attn_probs, out, stream, learnable_sink, mm_prefix_ranges,
                q_descale, k_descale, v_descale)


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False,
                              window_size=_NO_WINDOW, softcap=0.0, alibi_slopes=None,
                              deterministic=False, return_attn_probs=False, *, out=None,
                              stream=None, learnable_sink=None, mm_prefix_ranges=None):
    """flash_attn_func with q, k, v packed: qkv is (batch_size, seqlen, 3, nheads, headdim).

    Returns out (batch_size, seqlen, nheads, headdim), or (out, softmax_lse, None) with
    return_attn_probs. See flash_attn_func for the other arguments.
    """
    return _fwd(qkv, None, None, _QKV_PACKED, dropout_p, softmax_scale, causal, window_size,
                softcap, alibi_slopes, return_attn_probs, out, stream, learnable_sink,
                mm_prefix_ranges)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False,
                             window_size=_NO_WINDOW, softcap=0.0, alibi_slopes=None,
                             deterministic=False, return_attn_probs=False, *, out=None,
                             stream=None, learnable_sink=None, mm_prefix_ranges=None):
    """flash_attn_func with k, v packed: kv is (batch_size, seqlen_k, 2, nheads_k, headdim).

    See flash_attn_func for the other arguments and the return value.
    """
    return _fwd(q, kv, None, _KV_PACKED, dropout_p, softmax_scale, causal, window_size,
                softcap, alibi_slopes, return_attn_probs, out, stream, learnable_sink,
                mm_prefix_ranges)


# ----------------------------------------------------------------------------- variable length


def _varlen(q, k, v, packing, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
            dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
            return_attn_probs, block_table, out, stream, learnable_sink, mm_prefix_ranges,
            q_descale=None, k_descale=None, v_descale=None):
    _check_dropout(dropout_p)
    T = _torch_pieces or _torch()
    left, right = _window(window_size)
    handle = _stream_handle(stream, q, T)
    qs = getattr(q, "shape", None)
    out_shape = lse_shape = None
    if qs is not None:
        if packing == _QKV_PACKED and len(qs) == 4:
            out_shape = (qs[0], qs[2], qs[3])
        elif packing == _SEPARATE and len(qs) == 3:
            out_shape = _with_head_dim(qs, v)
        elif packing == _KV_PACKED and len(qs) == 3:
            out_shape = tuple(qs)
        if out_shape is not None:
            lse_shape = (out_shape[1], out_shape[0])
    outs = _Outputs(q, out, out_shape, lse_shape, return_attn_probs, handle, _out_dtype(q), T,
                    stream is not None)
    (cq, ck, cv), codes = _fp8_views(q, k, v)
    e = _export
    result = _flare._varlen_fwd(e(cq, T), e(ck, T), e(cv, T), packing, e(cu_seqlens_q, T),
                                e(cu_seqlens_k, T), _int32(max_seqlen_q, "max_seqlen_q"),
                                _int32(max_seqlen_k, "max_seqlen_k"), e(outs.out, T),
                                e(outs.lse, T), bool(return_attn_probs), _scale(softmax_scale),
                                bool(causal), left, right, _float(softcap, "softcap"),
                                e(alibi_slopes, T), e(block_table, T), e(learnable_sink, T),
                                e(mm_prefix_ranges, T), e(q_descale, T), e(k_descale, T),
                                e(v_descale, T), codes, outs.alloc, handle)
    o, lse = outs.wrap(result)
    return (o, lse, None) if return_attn_probs else o


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False,
                           window_size=_NO_WINDOW, softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, block_table=None,
                           *, out=None, stream=None, learnable_sink=None, mm_prefix_ranges=None,
                           q_descale=None, k_descale=None, v_descale=None):
    """Attention over a batch of sequences of different lengths, packed without padding.

    Arguments:
        q: (total_q, nheads, headdim); k: (total_k, nheads_k, headdim); v: (total_k,
            nheads_k, headdim_v).
        cu_seqlens_q, cu_seqlens_k: int32 (batch_size + 1,), CUDA: sequence b has rows
            [cu_seqlens[b], cu_seqlens[b + 1]).
        max_seqlen_q, max_seqlen_k: the longest sequence lengths (ints).
        block_table: optional int32 (batch_size, max_num_blocks_per_seq): paged KV (chunked
            prefill over a paged cache). k and v are then the page pools (num_blocks,
            page_block_size, nheads_k, headdim / headdim_v), the page size is k.shape[1] (any
            size >= 1), and the keys of sequence b are rows [0, cu_seqlens_k[b + 1] -
            cu_seqlens_k[b]) of its pages block_table[b].
        mm_prefix_ranges: optional int32 (batch_size, max_ranges, 2), see flash_attn_func.
        q_descale, k_descale, v_descale: FP8 q / k / v (paged pools included), as in
            flash_attn_func; batch_size is the number of sequences.
        Other arguments as in flash_attn_func.

    Returns:
        out (total_q, nheads, headdim_v), or (out, softmax_lse, None) with return_attn_probs;
        softmax_lse is float32 (nheads, total_q), -inf for rows that see no key (see
        flash_attn_func).
    """
    return _varlen(q, k, v, _SEPARATE, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                   dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                   return_attn_probs, block_table, out, stream, learnable_sink, mm_prefix_ranges,
                   q_descale, k_descale, v_descale)


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0,
                                     softmax_scale=None, causal=False, window_size=_NO_WINDOW,
                                     softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False, *, out=None, stream=None,
                                     learnable_sink=None, mm_prefix_ranges=None):
    """flash_attn_varlen_func with qkv packed as (total, 3, nheads, headdim)."""
    return _varlen(qkv, None, None, _QKV_PACKED, cu_seqlens, cu_seqlens, max_seqlen,
                   max_seqlen, dropout_p, softmax_scale, causal, window_size, softcap,
                   alibi_slopes, return_attn_probs, None, out, stream, learnable_sink,
                   mm_prefix_ranges)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                    max_seqlen_k, dropout_p=0.0, softmax_scale=None,
                                    causal=False, window_size=_NO_WINDOW, softcap=0.0,
                                    alibi_slopes=None, deterministic=False,
                                    return_attn_probs=False, *, out=None, stream=None,
                                    learnable_sink=None, mm_prefix_ranges=None):
    """flash_attn_varlen_func with kv packed as (total_k, 2, nheads_k, headdim)."""
    return _varlen(q, kv, None, _KV_PACKED, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                   max_seqlen_k, dropout_p, softmax_scale, causal, window_size, softcap,
                   alibi_slopes, return_attn_probs, None, out, stream, learnable_sink,
                   mm_prefix_ranges)


# ----------------------------------------------------------------------------- KV cache


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None,
                            rotary_sin=None, cache_seqlens=None, cache_batch_idx=None,
                            cache_leftpad=None, block_table=None, softmax_scale=None,
                            causal=False, window_size=_NO_WINDOW, softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0,
                            return_softmax_lse=False, *, out=None, stream=None,
                            learnable_sink=None, mm_prefix_ranges=None, k_descale=None,
                            v_descale=None):
    """Attention against a KV cache (decoding), optionally appending new keys/values first.

    Arguments:
        q: (batch_size, seqlen_q, nheads, headdim).
        k_cache, v_cache: (batch_size_cache, seqlen_cache, nheads_k, headdim), or with
            block_table (paged) (num_blocks, page_block_size, nheads_k, headdim), any
            page_block_size >= 1; v_cache (and v) may have their own head dim headdim_v.
        k, v: optional (batch_size, seqlen_new, nheads_k, headdim): written into the cache
            in place at rows [cache_seqlens[b], cache_seqlens[b] + seqlen_new) before
            attention (the caches must then be writable arrays).
        rotary_cos, rotary_sin: optional (seqlen_ro, rotary_dim / 2), dtype of q; need k, v.
            Applied to q and to the new keys at their positions in the cache (for q: one
            position, cache_seqlens[b], unless causal or windowed, then one per row).
        cache_seqlens: int32 (batch_size,) or an int: rows of the cache in use. None: the
            whole cache (not allowed when appending).
        cache_batch_idx: optional int32 (batch_size,): the cache entry of sequence b.
        cache_leftpad: optional int32 (batch_size,): the cache of sequence b starts at this row.
        block_table: optional int32 (batch_size, max_num_blocks_per_seq): paged KV.
        rotary_interleaved: True pairs dimensions (0, 1), (2, 3), ...; False pairs
            (i, i + rotary_dim / 2) (GPT-NeoX style).
        num_splits: 0 chooses split-KV by heuristic, 1 disables it, n forces n splits.
        return_softmax_lse: also return the float32 (batch_size, nheads, seqlen_q)
            log-sum-exp.
        out, stream, learnable_sink, mm_prefix_ranges: as in flash_attn_func (the key
            positions of mm_prefix_ranges count over the cache's keys after cache_leftpad,
            appended rows included). Other arguments as in flash_attn_func.
        k_descale, v_descale: an FP8 KV cache. k_cache and v_cache may hold float8_e4m3fn or
            float8_e5m2 codes (paged or not) with float32 factors of shape (batch_size,
            nheads_k) or one element, as in flash_attn_func (the factors of sequence b, whatever
            cache entry cache_batch_idx gives it). q, k, v and out stay float16 / bfloat16:
            appended k, v are rotated (rotary), then written as the code nearest to
            value / factor (round to nearest even, saturated to the type's largest finite
            value).

    Returns:
        out (batch_size, seqlen_q, nheads, headdim_v), or (out, softmax_lse); softmax_lse is
        -inf for rows that see no key (see flash_attn_func). Errors as in flash_attn_func.
    """
    T = _torch_pieces or _torch()
    left, right = _window(window_size)
    handle = _stream_handle(stream, q, T)
    qs = getattr(q, "shape", None)
    out_shape = lse_shape = None
    if qs is not None and len(qs) == 4:
        out_shape, lse_shape = _with_head_dim(qs, v_cache), (qs[0], qs[2], qs[1])
    outs = _Outputs(q, out, out_shape, lse_shape, return_softmax_lse, handle, None, T,
                    stream is not None)
    (cq, kc, vc), codes = _fp8_views(q, k_cache, v_cache)
    e = _export
    result = _flare._kvcache_fwd(e(cq, T), e(kc, T), e(vc, T), e(k, T), e(v, T),
                                 e(rotary_cos, T), e(rotary_sin, T), e(cache_seqlens, T),
                                 e(cache_batch_idx, T), e(cache_leftpad, T), e(block_table, T),
                                 e(outs.out, T), e(outs.lse, T), bool(return_softmax_lse),
                                 _scale(softmax_scale), bool(causal), left, right,
                                 _float(softcap, "softcap"), bool(rotary_interleaved),
                                 e(alibi_slopes, T), e(learnable_sink, T),
                                 e(mm_prefix_ranges, T), _int32(num_splits, "num_splits"),
                                 e(k_descale, T), e(v_descale, T), codes, outs.alloc, handle)
    o, lse = outs.wrap(result)
    return (o, lse) if return_softmax_lse else o


# ----------------------------------------------------------------------------- merging


def _as_list(x: Any, name: str) -> list:
    if isinstance(x, (str, bytes)) or not hasattr(x, "__iter__"):
        raise TypeError(f"{name} must be a sequence of arrays (one per part), got "
                        f"{type(x).__name__}")
    return list(x)


def merge_attention_states(outs, lses, out=None, out_lse=None, *, stream=None):
    """Merges partial attention results over disjoint key sets by their log-sum-exp.

    Attention over a key set split into n parts, part s giving the normalised output o_s and
    the log-sum-exp lse_s of every query row (``flash_attn_func(..., return_attn_probs=True)``
    over that part's keys), equals

        lse = log(sum_s exp(lse_s)),   out = sum_s exp(lse_s - lse) * o_s.

    A part with lse_s = -inf saw no key: its o_s is never read (it may hold anything, even
    NaN). A row whose parts are all empty gets out = 0 and lse = -inf. The merge computes in
    float32; merged results (with their merged lse) can be merged again, e.g. to merge more
    than 64 parts in groups (each step rounds out to its dtype once).

    Arguments:
        outs: a sequence of n >= 1 partial outputs, each (batch_size, seqlen, nheads,
            headdim), float16, bfloat16 or float32, CUDA; all of the same dtype, shape, device
            and strides (any strides with the last dimension contiguous, subject to flare's
            alignment rules: pointers and strides in whole groups of 4 elements). At most
            64 parts (FLARE_MERGE_MAX_PART_PTRS; ValueError beyond: merge in groups).
        lses: a sequence of n float32 (batch_size, nheads, seqlen) arrays (flare's lse
            layout), all with the same strides (any).
        out: optional (batch_size, seqlen, nheads, headdim) array to write the merged output
            into: float16, bfloat16 or float32 (it may differ from the parts' dtype).
            Default: a new array of the parts' dtype. It may be one of the parts (in place;
            same dtype and strides); any other overlap with an input is undefined.
        out_lse: optional float32 (batch_size, nheads, seqlen) array for the merged lse; it
            may be the lse of the in-place part. Default (None): a new array is allocated
            and returned (the merged lse is always computed).
        stream: as in flash_attn_func (default: the current stream of outs[0]'s framework).

    Returns:
        (out, out_lse): the given arrays, or new ones (torch tensors for torch inputs, cupy
        arrays for cupy inputs, else DLPackArray).

    No backward pass: gradients do not flow through this function.
    """
    outs = _as_list(outs, "outs")
    lses = _as_list(lses, "lses")
    T = _torch_pieces or _torch()
    ref = outs[0] if outs else None
    handle = _stream_handle(stream, ref, T)
    ps = _shape(ref)
    out_shape = lse_shape = None
    if (ps is not None and len(ps) == 4
            and 1 <= len(outs) == len(lses) <= _flare.MERGE_MAX_PART_PTRS):
        out_shape, lse_shape = ps, (ps[0], ps[2], ps[1])
    alloc = _Outputs(ref, out, out_shape, lse_shape, out_lse is None, handle, None, T,
                     stream is not None)
    e = _export
    result = _flare._merge([e(x, T) for x in outs], [e(x, T) for x in lses], e(alloc.out, T),
                           e(out_lse if out_lse is not None else alloc.lse, T), handle)
    merged, merged_lse = alloc.wrap(result)
    return merged, (out_lse if out_lse is not None else merged_lse)
