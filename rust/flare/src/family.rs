//! candle-flash-attn's function family, by name, over caller-provided tensors.
//!
//! Each function takes the same attention arguments as the candle-flash-attn function of that
//! name, plus the output tensor (flare never allocates) and a [`Launch`] (stream and optional
//! workspace). Windows: `None` is unbounded; `window_size_left = None, window_size_right =
//! Some(0)` is the causal mask. Softcap: scores become `softcap * tanh(softmax_scale * q.k /
//! softcap)`. Variable-length functions take int32 `seqlens_q` / `seqlens_k` of `batch + 1`
//! cumulative row counts and the longest sequences.

use crate::error::{Error, Result};
use crate::params::{AttnOptions, KvCache, MhaParams};
use crate::tensor::{DeviceTensor, Launch};

/// The options of the `*_alibi_windowed_softcap` functions (padded and variable-length alike).
fn alibi_windowed_softcap<'a>(
    alibi_slopes: Option<&'a dyn DeviceTensor>,
    softmax_scale: f32,
    window_size_left: Option<usize>,
    window_size_right: Option<usize>,
    softcap: f32,
) -> AttnOptions<'a> {
    AttnOptions {
        softmax_scale: Some(softmax_scale),
        window_left: window_size_left,
        window_right: window_size_right,
        softcap: Some(softcap),
        alibi_slopes,
        ..AttnOptions::default()
    }
}

/// Attention over a padded batch: q, out `[batch, seqlen_q, heads, d]`; k, v `[batch,
/// seqlen_k, heads_k, d]`; causal aligned to the bottom-right.
pub fn flash_attn(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    softmax_scale: f32,
    causal: bool,
    launch: &Launch<'_>,
) -> Result<()> {
    MhaParams::prefill(q, k, v, out)?.softmax_scale(softmax_scale).causal(causal).run(launch)
}

/// [`flash_attn`] with a sliding window.
#[allow(clippy::too_many_arguments)]
pub fn flash_attn_windowed(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    softmax_scale: f32,
    window_size_left: Option<usize>,
    window_size_right: Option<usize>,
    launch: &Launch<'_>,
) -> Result<()> {
    MhaParams::prefill(q, k, v, out)?
        .softmax_scale(softmax_scale)
        .window(window_size_left, window_size_right)
        .run(launch)
}

/// [`flash_attn`] with ALiBi slopes (fp32 `[heads]` or `[batch, heads]`).
#[allow(clippy::too_many_arguments)]
pub fn flash_attn_alibi(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    alibi_slopes: &dyn DeviceTensor,
    softmax_scale: f32,
    causal: bool,
    launch: &Launch<'_>,
) -> Result<()> {
    MhaParams::prefill(q, k, v, out)?
        .softmax_scale(softmax_scale)
        .causal(causal)
        .alibi_slopes(alibi_slopes)?
        .run(launch)
}

/// [`flash_attn`] with ALiBi slopes and a sliding window.
#[allow(clippy::too_many_arguments)]
pub fn flash_attn_alibi_windowed(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    alibi_slopes: &dyn DeviceTensor,
    softmax_scale: f32,
    window_size_left: Option<usize>,
    window_size_right: Option<usize>,
    launch: &Launch<'_>,
) -> Result<()> {
    MhaParams::prefill(q, k, v, out)?
        .softmax_scale(softmax_scale)
        .window(window_size_left, window_size_right)
        .alibi_slopes(alibi_slopes)?
        .run(launch)
}

/// [`flash_attn`] with optional ALiBi slopes, a sliding window and a softcap.
#[allow(clippy::too_many_arguments)]
pub fn flash_attn_alibi_windowed_softcap(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    alibi_slopes: Option<&dyn DeviceTensor>,
    softmax_scale: f32,
    window_size_left: Option<usize>,
    window_size_right: Option<usize>,
    softcap: f32,
    launch: &Launch<'_>,
) -> Result<()> {
    let options = alibi_windowed_softcap(
        alibi_slopes,
        softmax_scale,
        window_size_left,
        window_size_right,
        softcap,
    );
    MhaParams::prefill(q, k, v, out)?.options(&options)?.run(launch)
}

/// Variable-length attention: q, out `[total_q, heads, d]`; k, v `[total_k, heads_k, d]`.
#[allow(clippy::too_many_arguments)]
pub fn flash_attn_varlen(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    seqlens_q: &dyn DeviceTensor,
    seqlens_k: &dyn DeviceTensor,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
    softmax_scale: f32,
    causal: bool,
    launch: &Launch<'_>,
) -> Result<()> {
    MhaParams::varlen(q, k, v, out, seqlens_q, seqlens_k, max_seqlen_q, max_seqlen_k)?
        .softmax_scale(softmax_scale)
        .causal(causal)
        .run(launch)
}

/// [`flash_attn_varlen`] with a sliding window.
#[allow(clippy::too_many_arguments)]
pub fn flash_attn_varlen_windowed(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    seqlens_q: &dyn DeviceTensor,
    seqlens_k: &dyn DeviceTensor,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
    softmax_scale: f32,
    window_size_left: Option<usize>,
    window_size_right: Option<usize>,
    launch: &Launch<'_>,
) -> Result<()> {
    MhaParams::varlen(q, k, v, out, seqlens_q, seqlens_k, max_seqlen_q, max_seqlen_k)?
        .softmax_scale(softmax_scale)
        .window(window_size_left, window_size_right)
        .run(launch)
}

/// Variable-length queries over paged K/V pools `[num_pages, page_block_size, heads_k, d]`
/// addressed through `block_table` (int32 `[batch, max_pages]`), with a sliding window, an
/// optional softcap and optional multimodal prefix ranges (int32 `[batch, n, 2]`, all `n`
/// entries of each sequence used; see [`MhaParams::mm_prefix_ranges`]); candle-flash-attn's
/// argument order. `page_block_size` must equal the pools' `shape[1]`.
///
/// The call is handed to flare as it is (any page size >= 1): a combination the library does
/// not run comes back as its own status and message, with nothing launched or written.
#[allow(clippy::too_many_arguments)]
pub fn flash_attn_varlen_paged_windowed(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    seqlens_q: &dyn DeviceTensor,
    seqlens_k: &dyn DeviceTensor,
    block_table: &dyn DeviceTensor,
    mm_prefix_ranges: Option<&dyn DeviceTensor>,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
    softmax_scale: f32,
    window_size_left: Option<usize>,
    window_size_right: Option<usize>,
    page_block_size: usize,
    softcap: Option<f32>,
    launch: &Launch<'_>,
) -> Result<()> {
    if k.shape().len() == 4 && k.shape()[1] != page_block_size {
        return Err(Error::invalid(format!(
            "page_block_size ({page_block_size}) does not match k.shape[1] ({})",
            k.shape()[1]
        )));
    }
    let mut p = MhaParams::varlen_paged(q, k, v, out, block_table, seqlens_q, seqlens_k, max_seqlen_q, max_seqlen_k)?
        .softmax_scale(softmax_scale)
        .window(window_size_left, window_size_right)
        .softcap(softcap.unwrap_or(0.0));
    if let Some(ranges) = mm_prefix_ranges {
        p = p.mm_prefix_ranges(ranges, ranges.shape().get(1).copied().unwrap_or(0))?;
    }
    p.run(launch)
}

/// [`flash_attn_varlen`] with ALiBi slopes.
#[allow(clippy::too_many_arguments)]
pub fn flash_attn_varlen_alibi(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    alibi_slopes: &dyn DeviceTensor,
    seqlens_q: &dyn DeviceTensor,
    seqlens_k: &dyn DeviceTensor,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
    softmax_scale: f32,
    causal: bool,
    launch: &Launch<'_>,
) -> Result<()> {
    MhaParams::varlen(q, k, v, out, seqlens_q, seqlens_k, max_seqlen_q, max_seqlen_k)?
        .softmax_scale(softmax_scale)
        .causal(causal)
        .alibi_slopes(alibi_slopes)?
        .run(launch)
}

/// [`flash_attn_varlen`] with ALiBi slopes and a sliding window.
#[allow(clippy::too_many_arguments)]
pub fn flash_attn_varlen_alibi_windowed(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    alibi_slopes: &dyn DeviceTensor,
    seqlens_q: &dyn DeviceTensor,
    seqlens_k: &dyn DeviceTensor,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
    softmax_scale: f32,
    window_size_left: Option<usize>,
    window_size_right: Option<usize>,
    launch: &Launch<'_>,
) -> Result<()> {
    MhaParams::varlen(q, k, v, out, seqlens_q, seqlens_k, max_seqlen_q, max_seqlen_k)?
        .softmax_scale(softmax_scale)
        .window(window_size_left, window_size_right)
        .alibi_slopes(alibi_slopes)?
        .run(launch)
}

/// [`flash_attn_varlen`] with optional ALiBi slopes, a sliding window and a softcap.
#[allow(clippy::too_many_arguments)]
pub fn flash_attn_varlen_alibi_windowed_softcap(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    alibi_slopes: Option<&dyn DeviceTensor>,
    seqlens_q: &dyn DeviceTensor,
    seqlens_k: &dyn DeviceTensor,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
    softmax_scale: f32,
    window_size_left: Option<usize>,
    window_size_right: Option<usize>,
    softcap: f32,
    launch: &Launch<'_>,
) -> Result<()> {
    let options = alibi_windowed_softcap(
        alibi_slopes,
        softmax_scale,
        window_size_left,
        window_size_right,
        softcap,
    );
    MhaParams::varlen(q, k, v, out, seqlens_q, seqlens_k, max_seqlen_q, max_seqlen_k)?
        .options(&options)?
        .run(launch)
}

/// Variable-length attention with every option of [`AttnOptions`]: q, out `[total_q, heads,
/// d]`; k, v `[total_k, heads_k, d]`, in the call's dtype or FP8 codes (e4m3 / e5m2) with
/// `options.k_descale` / `options.v_descale` (one factor per tensor, or per (sequence, K/V
/// head)). The FP8 entry of the varlen family: the candle-flash-attn functions above take no
/// descale factors.
#[allow(clippy::too_many_arguments)]
pub fn flash_attn_varlen_with_options(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    seqlens_q: &dyn DeviceTensor,
    seqlens_k: &dyn DeviceTensor,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
    options: &AttnOptions<'_>,
    launch: &Launch<'_>,
) -> Result<()> {
    MhaParams::varlen(q, k, v, out, seqlens_q, seqlens_k, max_seqlen_q, max_seqlen_k)?
        .options(options)?
        .run(launch)
}

/// Decoding against a KV cache (FlashAttention's `flash_attn_with_kvcache`): optionally
/// appends `kv.k_new` / `kv.v_new` into the caches (rotating them and q when `kv` has rotary
/// tables), then attends q over the cache rows in use. See [`MhaParams::kv_cache`] for the
/// layouts. An FP8 cache (k_cache and v_cache of dtype [`crate::DType::E4M3`] /
/// [`crate::DType::E5M2`]) takes its factors from `options.k_descale` / `options.v_descale`;
/// appended rows are quantized into it with them.
pub fn flash_attn_with_kvcache(
    q: &dyn DeviceTensor,
    k_cache: &mut dyn DeviceTensor,
    v_cache: &mut dyn DeviceTensor,
    out: &mut dyn DeviceTensor,
    kv: &KvCache<'_>,
    options: &AttnOptions<'_>,
    launch: &Launch<'_>,
) -> Result<()> {
    MhaParams::kv_cache(q, k_cache, v_cache, out, kv)?.options(options)?.run(launch)
}
