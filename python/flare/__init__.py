"""flare: exact attention forward for NVIDIA GPUs.

FlashAttention-2 compatible forward functions (``flash_attn_func``, ``flash_attn_varlen_func``,
``flash_attn_with_kvcache``, and the packed variants) over any DLPack-capable CUDA array
(torch, cupy, jax, ...), backed by the statically linked flare library, and
``merge_attention_states``, which merges attention results over disjoint key sets by their
log-sum-exp (context parallelism, attention over a key set computed in parts). K/V (KV
caches included) may be float8_e4m3fn / float8_e5m2 arrays with float32 ``k_descale`` /
``v_descale`` factors (per tensor, or per batch entry and K/V head).

Forward only: no dropout (``dropout_p > 0`` raises NotImplementedError), no backward pass, and
attention probabilities are never materialised (``return_attn_probs=True`` gives
``(out, softmax_lse, None)``). Importing this package does not import torch.

Every argument is checked before any CUDA call: bad arguments raise ValueError naming the
argument on any machine; a valid call without a CUDA driver or GPU raises
RuntimeError("flare: no CUDA driver/GPU found ..."). Rows that see no key get lse -inf where
FlashAttention-2 writes +inf (a deliberate difference; docs/api.md explains).
"""

from . import _flare
from ._flare import __version__, build_config, cuda_device_count
from ._interface import (
    DLPackArray,
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
    flash_attn_with_kvcache,
    merge_attention_states,
)

__all__ = [
    "DLPackArray",
    "__version__",
    "build_config",
    "cuda_device_count",
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_with_kvcache",
    "merge_attention_states",
]
