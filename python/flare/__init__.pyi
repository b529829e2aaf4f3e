# Type stubs for the flare package (FlashAttention-2 compatible forward functions).
from typing import Any, Dict, Optional, Sequence, Tuple, Union, overload, Literal

# Any DLPack-capable CUDA array: torch.Tensor, cupy.ndarray, jax.Array, ...
Array = Any
# An int cudaStream_t handle, a torch.cuda.Stream or a cupy.cuda.Stream.
Stream = Any

__version__: str
build_config: Dict[str, str]

def cuda_device_count() -> int: ...

class DLPackArray:
    """A CUDA array flare allocated; consume it with any framework's from_dlpack (once)."""
    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any: ...
    def __dlpack_device__(self) -> Tuple[int, int]: ...

@overload
def flash_attn_func(q: Array, k: Array, v: Array, dropout_p: float = 0.0,
                    softmax_scale: Optional[float] = None, causal: bool = False,
                    window_size: Tuple[int, int] = (-1, -1), softcap: float = 0.0,
                    alibi_slopes: Optional[Array] = None, deterministic: bool = False,
                    return_attn_probs: Literal[False] = False, *, out: Optional[Array] = None,
                    stream: Optional[Stream] = None,
                    learnable_sink: Optional[Array] = None,
                    mm_prefix_ranges: Optional[Array] = None,
                    q_descale: Optional[Array] = None, k_descale: Optional[Array] = None,
                    v_descale: Optional[Array] = None) -> Array: ...
@overload
def flash_attn_func(q: Array, k: Array, v: Array, dropout_p: float = 0.0,
                    softmax_scale: Optional[float] = None, causal: bool = False,
                    window_size: Tuple[int, int] = (-1, -1), softcap: float = 0.0,
                    alibi_slopes: Optional[Array] = None, deterministic: bool = False, *,
                    return_attn_probs: Literal[True], out: Optional[Array] = None,
                    stream: Optional[Stream] = None,
                    learnable_sink: Optional[Array] = None,
                    mm_prefix_ranges: Optional[Array] = None,
                    q_descale: Optional[Array] = None, k_descale: Optional[Array] = None,
                    v_descale: Optional[Array] = None) -> Tuple[Array, Array, None]: ...

def flash_attn_qkvpacked_func(qkv: Array, dropout_p: float = 0.0,
                              softmax_scale: Optional[float] = None, causal: bool = False,
                              window_size: Tuple[int, int] = (-1, -1), softcap: float = 0.0,
                              alibi_slopes: Optional[Array] = None, deterministic: bool = False,
                              return_attn_probs: bool = False, *, out: Optional[Array] = None,
                              stream: Optional[Stream] = None,
                              learnable_sink: Optional[Array] = None,
                              mm_prefix_ranges: Optional[Array] = None
                              ) -> Union[Array, Tuple[Array, Array, None]]: ...

def flash_attn_kvpacked_func(q: Array, kv: Array, dropout_p: float = 0.0,
                             softmax_scale: Optional[float] = None, causal: bool = False,
                             window_size: Tuple[int, int] = (-1, -1), softcap: float = 0.0,
                             alibi_slopes: Optional[Array] = None, deterministic: bool = False,
                             return_attn_probs: bool = False, *, out: Optional[Array] = None,
                             stream: Optional[Stream] = None,
                             learnable_sink: Optional[Array] = None,
                             mm_prefix_ranges: Optional[Array] = None
                             ) -> Union[Array, Tuple[Array, Array, None]]: ...

def flash_attn_varlen_func(q: Array, k: Array, v: Array, cu_seqlens_q: Array,
                           cu_seqlens_k: Array, max_seqlen_q: int, max_seqlen_k: int,
                           dropout_p: float = 0.0, softmax_scale: Optional[float] = None,
                           causal: bool = False, window_size: Tuple[int, int] = (-1, -1),
                           softcap: float = 0.0, alibi_slopes: Optional[Array] = None,
                           deterministic: bool = False, return_attn_probs: bool = False,
                           block_table: Optional[Array] = None, *,
                           out: Optional[Array] = None, stream: Optional[Stream] = None,
                           learnable_sink: Optional[Array] = None,
                           mm_prefix_ranges: Optional[Array] = None,
                           q_descale: Optional[Array] = None,
                           k_descale: Optional[Array] = None,
                           v_descale: Optional[Array] = None
                           ) -> Union[Array, Tuple[Array, Array, None]]: ...

def flash_attn_varlen_qkvpacked_func(qkv: Array, cu_seqlens: Array, max_seqlen: int,
                                     dropout_p: float = 0.0,
                                     softmax_scale: Optional[float] = None,
                                     causal: bool = False,
                                     window_size: Tuple[int, int] = (-1, -1),
                                     softcap: float = 0.0,
                                     alibi_slopes: Optional[Array] = None,
                                     deterministic: bool = False,
                                     return_attn_probs: bool = False, *,
                                     out: Optional[Array] = None,
                                     stream: Optional[Stream] = None,
                                     learnable_sink: Optional[Array] = None,
                                     mm_prefix_ranges: Optional[Array] = None
                                     ) -> Union[Array, Tuple[Array, Array, None]]: ...

def flash_attn_varlen_kvpacked_func(q: Array, kv: Array, cu_seqlens_q: Array,
                                    cu_seqlens_k: Array, max_seqlen_q: int, max_seqlen_k: int,
                                    dropout_p: float = 0.0,
                                    softmax_scale: Optional[float] = None,
                                    causal: bool = False,
                                    window_size: Tuple[int, int] = (-1, -1),
                                    softcap: float = 0.0, alibi_slopes: Optional[Array] = None,
                                    deterministic: bool = False,
                                    return_attn_probs: bool = False, *,
                                    out: Optional[Array] = None,
                                    stream: Optional[Stream] = None,
                                    learnable_sink: Optional[Array] = None,
                                    mm_prefix_ranges: Optional[Array] = None
                                    ) -> Union[Array, Tuple[Array, Array, None]]: ...

def flash_attn_with_kvcache(q: Array, k_cache: Array, v_cache: Array,
                            k: Optional[Array] = None, v: Optional[Array] = None,
                            rotary_cos: Optional[Array] = None,
                            rotary_sin: Optional[Array] = None,
                            cache_seqlens: Union[int, Array, None] = None,
                            cache_batch_idx: Optional[Array] = None,
                            cache_leftpad: Optional[Array] = None,
                            block_table: Optional[Array] = None,
                            softmax_scale: Optional[float] = None, causal: bool = False,
                            window_size: Tuple[int, int] = (-1, -1), softcap: float = 0.0,
                            rotary_interleaved: bool = True,
                            alibi_slopes: Optional[Array] = None, num_splits: int = 0,
                            return_softmax_lse: bool = False, *, out: Optional[Array] = None,
                            stream: Optional[Stream] = None,
                            learnable_sink: Optional[Array] = None,
                            mm_prefix_ranges: Optional[Array] = None,
                            k_descale: Optional[Array] = None,
                            v_descale: Optional[Array] = None
                            ) -> Union[Array, Tuple[Array, Array]]: ...

def merge_attention_states(outs: Sequence[Array], lses: Sequence[Array],
                           out: Optional[Array] = None, out_lse: Optional[Array] = None, *,
                           stream: Optional[Stream] = None) -> Tuple[Array, Array]:
    """Merges partial attention results (o_s, lse_s) over disjoint key sets:
    lse = log(sum_s exp(lse_s)), out = sum_s exp(lse_s - lse) * o_s.

    outs: n <= 64 arrays (batch_size, seqlen, nheads, headdim), float16/bfloat16/float32;
    lses: n float32 (batch_size, nheads, seqlen). out may be one of the parts (in place);
    out_lse None allocates a new merged lse. Returns (out, out_lse).
    """
    ...
