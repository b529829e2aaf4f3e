//! [`MhaParams`]: `flare_mha_fwd_params` built from tensors, with the library's queries
//! (workspace size, split count, can-implement) and the run.
//!
//! The constructors check only how the tensors relate to each other (ranks, matching shapes and
//! dtypes, a contiguous head dimension) and fail with [`crate::Status::InvalidArgument`] naming the
//! tensor and dimension; every other rule (head dimensions, alignment, strides, windows,
//! feature combinations, the FP8 rules) is the library's, which checks it again, before any
//! device work, in [`MhaParams::workspace_size`], [`MhaParams::can_implement`] and
//! [`MhaParams::run`].
//!
//! Dtypes: out is fp16 or bf16, the call's `dtype`. q has it too, or holds e4m3 codes (FP8 q,
//! `q_dtype`); k and v have it too, or hold the same FP8 type, e4m3 or e5m2 (`kv_dtype`). An
//! FP8 tensor needs its [`Descale`] ([`MhaParams::q_descale`], [`MhaParams::k_descale`],
//! [`MhaParams::v_descale`]); appended rows (k_new, v_new) and rotary tables have `dtype`.

use core::marker::PhantomData;

use flare_sys as sys;

use crate::descale::Descale;
use crate::error::{check, Error, Result};
use crate::tensor::{
    attention_dtype, expect_dense, expect_dim, expect_dtype, expect_rank, expect_same_shape,
    stride_i64, to_i32, DType, DeviceTensor, Launch,
};

/// Windows at least this wide see every key of any sequence flare accepts (2^30 rows), so they
/// are passed as unbounded (-1), which also keeps `row + window` inside 32-bit arithmetic.
const UNBOUNDED_WINDOW: usize = 1 << 30;

/// A window size for the C ABI: `None` (or anything covering every key) is -1, unbounded.
pub(crate) fn window_value(window: Option<usize>) -> i32 {
    match window {
        Some(w) if w < UNBOUNDED_WINDOW => w as i32,
        _ => -1,
    }
}

/// Options shared by every attention call. `Default` is plain attention: scale 1/sqrt(d), no
/// mask, no softcap, no ALiBi, split count by heuristic.
#[derive(Clone, Copy, Default)]
pub struct AttnOptions<'a> {
    /// Score scale; `None`: 1/sqrt(head_dim).
    pub softmax_scale: Option<f32>,
    /// Causal mask, aligned to the bottom-right (key j visible to query i when
    /// j <= i + seqlen_k - seqlen_q); the same as `window_right = Some(0)`.
    pub causal: bool,
    /// Keys visible to the left of the diagonal; `None`: unbounded.
    pub window_left: Option<usize>,
    /// Keys visible to the right of the diagonal; `None`: unbounded.
    pub window_right: Option<usize>,
    /// Softcap: scores become `softcap * tanh(score / softcap)`; `None` or 0: off.
    pub softcap: Option<f32>,
    /// ALiBi slopes, fp32 `[heads]` or `[batch, heads]`.
    pub alibi_slopes: Option<&'a dyn DeviceTensor>,
    /// Split-KV count: `None` (or 0) heuristic, 1 no split, n forced.
    pub num_splits: Option<u32>,
    /// Descale factors of FP8 (e4m3 / e5m2) k: required when k and v are FP8, refused
    /// otherwise (the library's rule). See [`MhaParams::k_descale`].
    pub k_descale: Option<Descale<'a>>,
    /// Descale factors of FP8 v, like `k_descale`.
    pub v_descale: Option<Descale<'a>>,
    /// Descale factors of FP8 (e4m3) q. See [`MhaParams::q_descale`].
    pub q_descale: Option<Descale<'a>>,
}

impl core::fmt::Debug for AttnOptions<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AttnOptions")
            .field("softmax_scale", &self.softmax_scale)
            .field("causal", &self.causal)
            .field("window_left", &self.window_left)
            .field("window_right", &self.window_right)
            .field("softcap", &self.softcap)
            .field("alibi_slopes", &self.alibi_slopes.map(|t| (t.device_ptr(), t.shape().to_vec())))
            .field("num_splits", &self.num_splits)
            .field("k_descale", &self.k_descale)
            .field("v_descale", &self.v_descale)
            .field("q_descale", &self.q_descale)
            .finish()
    }
}

/// The KV-cache part of [`MhaParams::kv_cache`]: which rows of the cache are in use, and
/// optionally rows to append, rotary embedding, cache indirection, left padding and paging.
#[derive(Clone, Copy)]
pub struct KvCache<'a> {
    /// int32 `[batch]`: rows in use in each sequence's cache (required).
    pub cache_seqlens: &'a dyn DeviceTensor,
    /// `[batch, seqlen_new, heads_k, head_dim]`, the call's dtype (out's): keys appended at row
    /// `cache_seqlens[b]` before attention (with `v_new`). Into an FP8 cache each value x is
    /// written as the code nearest to x / descale of its (batch entry, head), rounded to
    /// nearest even and saturated to the format's largest finite value.
    pub k_new: Option<&'a dyn DeviceTensor>,
    /// Values appended with `k_new`, same shape.
    pub v_new: Option<&'a dyn DeviceTensor>,
    /// Rotary cos table `[positions, rotary_dim / 2]`, the call's dtype, dense rows (needs
    /// `k_new`).
    pub rotary_cos: Option<&'a dyn DeviceTensor>,
    /// Rotary sin table, like `rotary_cos`.
    pub rotary_sin: Option<&'a dyn DeviceTensor>,
    /// true: rotate pairs (0,1),(2,3)...; false: pairs (i, i + rotary_dim/2).
    pub rotary_interleaved: bool,
    /// int32 `[batch]`: the cache entry of sequence b (unpaged only).
    pub cache_batch_idx: Option<&'a dyn DeviceTensor>,
    /// int32 `[batch]`: keys of sequence b start at row `leftpad_k[b]`.
    pub leftpad_k: Option<&'a dyn DeviceTensor>,
    /// int32 `[batch, max_pages]`: with it the caches are page pools
    /// `[num_pages, page_block_size, heads_k, head_dim]`.
    pub block_table: Option<&'a dyn DeviceTensor>,
}

impl<'a> KvCache<'a> {
    /// A cache with `cache_seqlens` rows in use and nothing else.
    pub fn new(cache_seqlens: &'a dyn DeviceTensor) -> KvCache<'a> {
        KvCache {
            cache_seqlens,
            k_new: None,
            v_new: None,
            rotary_cos: None,
            rotary_sin: None,
            rotary_interleaved: false,
            cache_batch_idx: None,
            leftpad_k: None,
            block_table: None,
        }
    }

    /// Appends `k_new` / `v_new` before attention.
    pub fn append(self, k_new: &'a dyn DeviceTensor, v_new: &'a dyn DeviceTensor) -> Self {
        KvCache { k_new: Some(k_new), v_new: Some(v_new), ..self }
    }

    /// Rotary embedding of q and the appended keys, from position `cache_seqlens[b]`.
    pub fn rotary(self, cos: &'a dyn DeviceTensor, sin: &'a dyn DeviceTensor, interleaved: bool) -> Self {
        KvCache { rotary_cos: Some(cos), rotary_sin: Some(sin), rotary_interleaved: interleaved, ..self }
    }

    /// Paged caches through `block_table`.
    pub fn paged(self, block_table: &'a dyn DeviceTensor) -> Self {
        KvCache { block_table: Some(block_table), ..self }
    }

    /// Sequence b uses cache entry `cache_batch_idx[b]`.
    pub fn cache_batch_idx(self, idx: &'a dyn DeviceTensor) -> Self {
        KvCache { cache_batch_idx: Some(idx), ..self }
    }

    /// Keys of sequence b start at row `leftpad_k[b]`.
    pub fn leftpad_k(self, leftpad: &'a dyn DeviceTensor) -> Self {
        KvCache { leftpad_k: Some(leftpad), ..self }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// q/out [batch, seqlen_q, heads, d]: lse [batch, heads, seqlen_q].
    Padded,
    /// q/out [total_q, heads, d]: lse [heads, total_q].
    Varlen { total_q: usize },
}

/// Parameters of one attention call, borrowing its tensors for `'a`.
#[derive(Clone)]
pub struct MhaParams<'a> {
    raw: sys::flare_mha_fwd_params,
    layout: Layout,
    dtypes: Dtypes,
    _tensors: PhantomData<&'a ()>,
}

impl core::fmt::Debug for MhaParams<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MhaParams").field("raw", &self.raw).finish()
    }
}

struct Heads {
    heads: i32,
    heads_k: i32,
    head_dim: i32,
    head_dim_v: i32,
}

/// The element types of one call (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dtypes {
    /// The call's dtype: out's, and q's unless q is FP8 (fp16 / bf16).
    dtype: DType,
    /// q's FP8 type, if q holds codes.
    q_fp8: Option<DType>,
    /// k's and v's FP8 type, if they hold codes.
    kv_fp8: Option<DType>,
}

impl Dtypes {
    /// The tensor whose dtype the others' messages refer to: q, or out when q is FP8.
    fn reference_name(&self) -> &'static str {
        if self.q_fp8.is_some() {
            "out"
        } else {
            "q"
        }
    }
}

/// The dtypes of q, k, v and out (k and v named `k_name` / `v_name` in the messages): out and
/// q share an fp16 / bf16 dtype, or q is FP8; k and v have that dtype or share an FP8 one.
/// Which FP8 combinations run is the library's rule.
fn call_dtypes(
    q: &dyn DeviceTensor,
    k_name: &str,
    k: &dyn DeviceTensor,
    v_name: &str,
    v: &dyn DeviceTensor,
    out: &dyn DeviceTensor,
) -> Result<Dtypes> {
    let q_fp8 = q.dtype().is_fp8().then_some(q.dtype());
    let dtype = if q_fp8.is_some() {
        attention_dtype("out", out)?;
        out.dtype()
    } else {
        attention_dtype("q", q)?;
        expect_dtype("out", out, q.dtype(), "q")?;
        q.dtype()
    };
    let dtypes = Dtypes { dtype, q_fp8, kv_fp8: k.dtype().is_fp8().then_some(k.dtype()) };
    if dtypes.kv_fp8.is_some() {
        expect_dtype(v_name, v, k.dtype(), k_name)?;
    } else {
        expect_dtype(k_name, k, dtype, dtypes.reference_name())?;
        expect_dtype(v_name, v, dtype, dtypes.reference_name())?;
    }
    Ok(dtypes)
}

/// q, k, v, out of one rank (4: padded batch, 3: varlen): dtypes, shapes and heads agree. q
/// and k share the head dim `head_dim`; v and out share `head_dim_v`, which may differ (flare
/// decides which pairs it accepts).
fn check_qkvo(
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &dyn DeviceTensor,
    rank: usize,
) -> Result<(Heads, Dtypes)> {
    expect_rank("q", q, rank)?;
    expect_rank("k", k, rank)?;
    expect_rank("v", v, rank)?;
    expect_rank("out", out, rank)?;
    let dtypes = call_dtypes(q, "k", k, "v", v, out)?;
    let (hd, hh) = (rank - 1, rank - 2);
    expect_same_leading_dims("out", out, "q", q)?;
    expect_same_leading_dims("v", v, "k", k)?;
    expect_dim("k", k, hd, q.shape()[hd], &format!("q.shape[{hd}]"))?;
    expect_dim("out", out, hd, v.shape()[hd], &format!("v.shape[{hd}]"))?;
    let heads = Heads {
        heads: to_i32("q", hh, q.shape()[hh])?,
        heads_k: to_i32("k", hh, k.shape()[hh])?,
        head_dim: to_i32("q", hd, q.shape()[hd])?,
        head_dim_v: to_i32("v", hd, v.shape()[hd])?,
    };
    if heads.heads_k > 0 && heads.heads % heads.heads_k != 0 {
        return Err(Error::invalid(format!(
            "q has {} heads, not a multiple of the {} heads of k/v",
            heads.heads, heads.heads_k
        )));
    }
    Ok((heads, dtypes))
}

/// Every dimension but the last (the head dim) of `t` equals `r`'s.
fn expect_same_leading_dims(name: &str, t: &dyn DeviceTensor, ref_name: &str, r: &dyn DeviceTensor) -> Result<()> {
    for d in 0..r.shape().len() - 1 {
        expect_dim(name, t, d, r.shape()[d], &format!("{ref_name}.shape[{d}]"))?;
    }
    Ok(())
}

/// (batch, row, head) strides of a rank-4 view, or (0, row, head) of a rank-3 (varlen) view.
fn strides3(name: &str, t: &dyn DeviceTensor) -> Result<(i64, i64, i64)> {
    let s = t.strides();
    if s.len() == 4 {
        Ok((stride_i64(name, 0, s[0])?, stride_i64(name, 1, s[1])?, stride_i64(name, 2, s[2])?))
    } else {
        Ok((0, stride_i64(name, 0, s[0])?, stride_i64(name, 1, s[1])?))
    }
}

fn int_array(name: &str, t: &dyn DeviceTensor, len: usize) -> Result<*const i32> {
    expect_dense(name, t, DType::I32, &[len])?;
    Ok(t.device_ptr() as *const i32)
}

/// The `flare_dtype` of a type this module has already checked (fp16 / bf16 / FP8).
fn flare_dtype(dtype: DType) -> sys::flare_dtype {
    dtype.to_flare().expect("a floating-point dtype")
}

/// Initialised C params (`flare_mha_fwd_params_init`) holding the dtypes and the four tensors'
/// device addresses; the shapes and strides are the caller's to fill.
fn init_raw(
    dtypes: Dtypes,
    q: &dyn DeviceTensor,
    k: &dyn DeviceTensor,
    v: &dyn DeviceTensor,
    out: &dyn DeviceTensor,
) -> sys::flare_mha_fwd_params {
    let mut raw = core::mem::MaybeUninit::<sys::flare_mha_fwd_params>::uninit();
    // SAFETY: the init function writes the whole struct.
    let mut raw = unsafe {
        sys::flare_mha_fwd_params_init(raw.as_mut_ptr());
        raw.assume_init()
    };
    raw.dtype = flare_dtype(dtypes.dtype);
    raw.q_dtype = dtypes.q_fp8.map_or(0, flare_dtype);
    raw.kv_dtype = dtypes.kv_fp8.map_or(0, flare_dtype);
    raw.q = q.device_ptr();
    raw.k = k.device_ptr();
    raw.v = v.device_ptr();
    raw.out = out.device_ptr() as *mut _;
    raw
}

impl<'a> MhaParams<'a> {
    fn base(
        q: &'a dyn DeviceTensor,
        k: &'a dyn DeviceTensor,
        v: &'a dyn DeviceTensor,
        out: &'a mut dyn DeviceTensor,
        rank: usize,
    ) -> Result<MhaParams<'a>> {
        let (heads, dtypes) = check_qkvo(q, k, v, &*out, rank)?;
        let mut raw = init_raw(dtypes, q, k, v, &*out);
        raw.num_heads = heads.heads;
        raw.num_heads_k = heads.heads_k;
        raw.head_dim = heads.head_dim;
        raw.head_dim_v = heads.head_dim_v;
        (raw.q_batch_stride, raw.q_row_stride, raw.q_head_stride) = strides3("q", q)?;
        (raw.k_batch_stride, raw.k_row_stride, raw.k_head_stride) = strides3("k", k)?;
        (raw.v_batch_stride, raw.v_row_stride, raw.v_head_stride) = strides3("v", v)?;
        (raw.out_batch_stride, raw.out_row_stride, raw.out_head_stride) = strides3("out", &*out)?;
        let layout = if rank == 4 { Layout::Padded } else { Layout::Varlen { total_q: q.shape()[0] } };
        Ok(MhaParams { raw, layout, dtypes, _tensors: PhantomData })
    }

    /// Attention over a padded batch: q `[batch, seqlen_q, heads, d]`, k `[batch, seqlen_k,
    /// heads_k, d]`, v `[batch, seqlen_k, heads_k, d_v]`, out `[batch, seqlen_q, heads, d_v]`;
    /// any strides with the head dimension contiguous. A `d_v` other than `d` is flare's
    /// `head_dim_v` (every builder reads it from v the same way).
    pub fn prefill(
        q: &'a dyn DeviceTensor,
        k: &'a dyn DeviceTensor,
        v: &'a dyn DeviceTensor,
        out: &'a mut dyn DeviceTensor,
    ) -> Result<MhaParams<'a>> {
        let mut p = MhaParams::base(q, k, v, out, 4)?;
        expect_dim("k", k, 0, q.shape()[0], "q.shape[0]")?;
        p.raw.batch = to_i32("q", 0, q.shape()[0])?;
        p.raw.seqlen_q = to_i32("q", 1, q.shape()[1])?;
        p.raw.seqlen_k = to_i32("k", 1, k.shape()[1])?;
        Ok(p)
    }

    /// Variable-length batch: q `[total_q, heads, d]`, out `[total_q, heads, d_v]`; k
    /// `[total_k, heads_k, d]`, v `[total_k, heads_k, d_v]`;
    /// sequence b has q rows `[cu_seqlens_q[b], cu_seqlens_q[b+1])` and likewise for k.
    /// `cu_seqlens_*` are int32 `[batch + 1]`; `max_seqlen_*` the longest sequences.
    #[allow(clippy::too_many_arguments)]
    pub fn varlen(
        q: &'a dyn DeviceTensor,
        k: &'a dyn DeviceTensor,
        v: &'a dyn DeviceTensor,
        out: &'a mut dyn DeviceTensor,
        cu_seqlens_q: &'a dyn DeviceTensor,
        cu_seqlens_k: &'a dyn DeviceTensor,
        max_seqlen_q: usize,
        max_seqlen_k: usize,
    ) -> Result<MhaParams<'a>> {
        let mut p = MhaParams::base(q, k, v, out, 3)?;
        p.set_varlen(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)?;
        Ok(p)
    }

    fn set_varlen(
        &mut self,
        cu_seqlens_q: &'a dyn DeviceTensor,
        cu_seqlens_k: &'a dyn DeviceTensor,
        max_seqlen_q: usize,
        max_seqlen_k: usize,
    ) -> Result<()> {
        let n = cu_seqlens_q.shape().first().copied().unwrap_or(0);
        if cu_seqlens_q.shape().len() != 1 || n < 2 {
            return Err(Error::invalid(format!(
                "cu_seqlens_q must be int32 [batch + 1] with batch >= 1, got shape {:?}",
                cu_seqlens_q.shape()
            )));
        }
        self.raw.cu_seqlens_q = int_array("cu_seqlens_q", cu_seqlens_q, n)?;
        self.raw.cu_seqlens_k = int_array("cu_seqlens_k", cu_seqlens_k, n)?;
        self.raw.batch = to_i32("cu_seqlens_q", 0, n - 1)?;
        self.raw.max_seqlen_q = i32::try_from(max_seqlen_q)
            .map_err(|_| Error::invalid(format!("max_seqlen_q ({max_seqlen_q}) is out of range")))?;
        self.raw.max_seqlen_k = i32::try_from(max_seqlen_k)
            .map_err(|_| Error::invalid(format!("max_seqlen_k ({max_seqlen_k}) is out of range")))?;
        Ok(())
    }

    /// Variable-length queries over paged K/V pools `[num_pages, page_block_size, heads_k, d]`
    /// (v: `d_v`) through `block_table` (int32 `[batch, max_pages]`), keys of sequence b
    /// counted by `cu_seqlens_k`, any page size >= 1 (the pools' `shape[1]`). The params are
    /// passed to flare as they are; a refusal is flare's own status and message.
    #[allow(clippy::too_many_arguments)]
    pub fn varlen_paged(
        q: &'a dyn DeviceTensor,
        k_pool: &'a dyn DeviceTensor,
        v_pool: &'a dyn DeviceTensor,
        out: &'a mut dyn DeviceTensor,
        block_table: &'a dyn DeviceTensor,
        cu_seqlens_q: &'a dyn DeviceTensor,
        cu_seqlens_k: &'a dyn DeviceTensor,
        max_seqlen_q: usize,
        max_seqlen_k: usize,
    ) -> Result<MhaParams<'a>> {
        expect_rank("q", q, 3)?;
        expect_rank("out", &*out, 3)?;
        expect_rank("k_pool", k_pool, 4)?;
        expect_rank("v_pool", v_pool, 4)?;
        expect_same_leading_dims("v_pool", v_pool, "k_pool", k_pool)?;
        // Check q/out against a [total_q, heads, d] reading of the pools' last two dimensions.
        let heads_k = to_i32("k_pool", 2, k_pool.shape()[2])?;
        expect_dim("k_pool", k_pool, 3, q.shape()[2], "q.shape[2]")?;
        let dtypes = call_dtypes(q, "k_pool", k_pool, "v_pool", v_pool, &*out)?;
        expect_same_leading_dims("out", &*out, "q", q)?;
        expect_dim("out", &*out, 2, v_pool.shape()[3], "v_pool.shape[3]")?;
        let mut raw = init_raw(dtypes, q, k_pool, v_pool, &*out);
        raw.num_heads = to_i32("q", 1, q.shape()[1])?;
        raw.num_heads_k = heads_k;
        raw.head_dim = to_i32("q", 2, q.shape()[2])?;
        raw.head_dim_v = to_i32("v_pool", 3, v_pool.shape()[3])?;
        (raw.q_batch_stride, raw.q_row_stride, raw.q_head_stride) = strides3("q", q)?;
        (raw.out_batch_stride, raw.out_row_stride, raw.out_head_stride) = strides3("out", &*out)?;
        (raw.k_batch_stride, raw.k_row_stride, raw.k_head_stride) = strides3("k_pool", k_pool)?;
        (raw.v_batch_stride, raw.v_row_stride, raw.v_head_stride) = strides3("v_pool", v_pool)?;
        let mut p = MhaParams { raw, layout: Layout::Varlen { total_q: q.shape()[0] }, dtypes, _tensors: PhantomData };
        p.set_varlen(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)?;
        p.set_block_table(block_table, k_pool)?;
        Ok(p)
    }

    fn set_block_table(&mut self, block_table: &'a dyn DeviceTensor, pool: &dyn DeviceTensor) -> Result<()> {
        expect_rank("block_table", block_table, 2)?;
        if block_table.dtype() != DType::I32 {
            return Err(Error::invalid(format!("block_table must be int32, got {}", block_table.dtype().name())));
        }
        expect_dim("block_table", block_table, 0, self.raw.batch as usize, "the batch")?;
        let max_pages = block_table.shape()[1];
        self.raw.block_table = block_table.device_ptr() as *const i32;
        // A table of one row may carry any row stride: its rows are then max_pages apart.
        let row_stride = if block_table.shape()[0] > 1 { block_table.strides()[0] } else { max_pages };
        self.raw.block_table_batch_stride = stride_i64("block_table", 0, row_stride)?;
        self.raw.page_block_size = to_i32("k_cache", 1, pool.shape()[1])?;
        self.raw.num_pages = to_i32("k_cache", 0, pool.shape()[0])?;
        let capacity = max_pages.saturating_mul(pool.shape()[1]);
        self.raw.seqlen_k = i32::try_from(capacity).map_err(|_| {
            Error::invalid(format!(
                "block_table.shape[1] ({max_pages}) x page_block_size ({}) is out of range",
                pool.shape()[1]
            ))
        })?;
        Ok(())
    }

    /// Decoding against a KV cache: q `[batch, seqlen_q, heads, d]`, out `[batch, seqlen_q,
    /// heads, d_v]`; k_cache `[cache_batch, capacity, heads_k, d]` or, paged, `[num_pages,
    /// page_block_size, heads_k, d]`, v_cache the same with `d_v`. The caches are written when
    /// `kv` appends rows (k_new with `d`, v_new with `d_v`). An FP8 cache (both of
    /// [`DType::E4M3`] or [`DType::E5M2`]) needs [`MhaParams::k_descale`] and
    /// [`MhaParams::v_descale`]; appended rows are quantized into it with those factors.
    pub fn kv_cache(
        q: &'a dyn DeviceTensor,
        k_cache: &'a mut dyn DeviceTensor,
        v_cache: &'a mut dyn DeviceTensor,
        out: &'a mut dyn DeviceTensor,
        kv: &KvCache<'a>,
    ) -> Result<MhaParams<'a>> {
        let k_cache: &'a dyn DeviceTensor = k_cache;
        let v_cache: &'a dyn DeviceTensor = v_cache;
        let mut p = MhaParams::base(q, k_cache, v_cache, out, 4)?;
        let batch = q.shape()[0];
        p.raw.batch = to_i32("q", 0, batch)?;
        p.raw.seqlen_q = to_i32("q", 1, q.shape()[1])?;
        p.raw.cache_seqlens = int_array("cache_seqlens", kv.cache_seqlens, batch)?;
        if let Some(idx) = kv.cache_batch_idx {
            p.raw.cache_batch_idx = int_array("cache_batch_idx", idx, batch)?;
        }
        if let Some(leftpad) = kv.leftpad_k {
            p.raw.leftpad_k = int_array("leftpad_k", leftpad, batch)?;
        }
        if let Some(table) = kv.block_table {
            p.set_block_table(table, k_cache)?;
        } else {
            if kv.cache_batch_idx.is_none() {
                expect_dim("k_cache", k_cache, 0, batch, "q.shape[0]")?;
            }
            p.raw.seqlen_k = to_i32("k_cache", 1, k_cache.shape()[1])?;
        }

        match (kv.k_new, kv.v_new) {
            (None, None) => {}
            (Some(k_new), Some(v_new)) => {
                expect_rank("k_new", k_new, 4)?;
                expect_rank("v_new", v_new, 4)?;
                let (dtype, dtype_of) = (p.dtypes.dtype, p.dtypes.reference_name());
                expect_dtype("k_new", k_new, dtype, dtype_of)?;
                expect_dtype("v_new", v_new, dtype, dtype_of)?;
                expect_dim("k_new", k_new, 0, batch, "q.shape[0]")?;
                expect_dim("k_new", k_new, 2, k_cache.shape()[2], "the heads of k_cache")?;
                expect_dim("k_new", k_new, 3, q.shape()[3], "q.shape[3]")?;
                expect_same_leading_dims("v_new", v_new, "k_new", k_new)?;
                expect_dim("v_new", v_new, 3, v_cache.shape()[3], "v_cache.shape[3]")?;
                p.raw.k_new = k_new.device_ptr();
                p.raw.v_new = v_new.device_ptr();
                p.raw.seqlen_new = to_i32("k_new", 1, k_new.shape()[1])?;
                (p.raw.k_new_batch_stride, p.raw.k_new_row_stride, p.raw.k_new_head_stride) =
                    strides3("k_new", k_new)?;
                (p.raw.v_new_batch_stride, p.raw.v_new_row_stride, p.raw.v_new_head_stride) =
                    strides3("v_new", v_new)?;
            }
            (Some(_), None) => return Err(Error::invalid("v_new is missing while k_new is given")),
            (None, Some(_)) => return Err(Error::invalid("k_new is missing while v_new is given")),
        }

        match (kv.rotary_cos, kv.rotary_sin) {
            (None, None) => {}
            (Some(cos), Some(sin)) => {
                for (name, t) in [("rotary_cos", cos), ("rotary_sin", sin)] {
                    expect_rank(name, t, 2)?;
                    expect_dtype(name, t, p.dtypes.dtype, p.dtypes.reference_name())?;
                    if t.shape()[0] > 1 && t.strides()[0] != t.shape()[1] {
                        return Err(Error::invalid(format!(
                            "{name}.strides[0] ({}) must equal its shape[1] ({}): the tables are dense",
                            t.strides()[0],
                            t.shape()[1]
                        )));
                    }
                }
                expect_same_shape("rotary_sin", sin, "rotary_cos", cos)?;
                p.raw.rotary_cos = cos.device_ptr();
                p.raw.rotary_sin = sin.device_ptr();
                p.raw.rotary_max_positions = to_i32("rotary_cos", 0, cos.shape()[0])?;
                p.raw.rotary_dim = 2 * to_i32("rotary_cos", 1, cos.shape()[1])?;
                p.raw.rotary_interleaved = kv.rotary_interleaved as i32;
            }
            (Some(_), None) => return Err(Error::invalid("rotary_sin is missing while rotary_cos is given")),
            (None, Some(_)) => return Err(Error::invalid("rotary_cos is missing while rotary_sin is given")),
        }
        Ok(p)
    }

    // ---- options ----

    /// Score scale (default 1/sqrt(head_dim)).
    pub fn softmax_scale(mut self, scale: f32) -> Self {
        self.raw.softmax_scale = scale;
        self
    }

    /// Causal mask aligned to the bottom-right.
    pub fn causal(mut self, causal: bool) -> Self {
        self.raw.causal = causal as i32;
        self
    }

    /// Sliding window: keys j with `i + d - left <= j <= i + d + right`, d = seqlen_k -
    /// seqlen_q; `None` is unbounded on that side.
    pub fn window(mut self, left: Option<usize>, right: Option<usize>) -> Self {
        self.raw.window_left = window_value(left);
        self.raw.window_right = window_value(right);
        self
    }

    /// Softcap (0: off).
    pub fn softcap(mut self, softcap: f32) -> Self {
        self.raw.softcap = softcap;
        self
    }

    /// Split-KV count: 0 heuristic, 1 no split, n forced (at most 128).
    pub fn num_splits(mut self, n: u32) -> Self {
        self.raw.num_splits = i32::try_from(n).unwrap_or(i32::MAX);
        self
    }

    /// ALiBi slopes, fp32 `[heads]` (shared by the batch) or `[batch, heads]`.
    pub fn alibi_slopes(mut self, slopes: &'a dyn DeviceTensor) -> Result<Self> {
        let heads = self.raw.num_heads as usize;
        if slopes.dtype() != DType::F32 {
            return Err(Error::invalid(format!("alibi_slopes must be fp32, got {}", slopes.dtype().name())));
        }
        match slopes.shape().len() {
            1 => {
                expect_dense("alibi_slopes", slopes, DType::F32, &[heads])?;
                self.raw.alibi_batch_stride = 0;
            }
            2 => {
                expect_rank("alibi_slopes", slopes, 2)?;
                expect_dim("alibi_slopes", slopes, 0, self.raw.batch as usize, "the batch")?;
                expect_dim("alibi_slopes", slopes, 1, heads, "the heads of q")?;
                self.raw.alibi_batch_stride = stride_i64("alibi_slopes", 0, slopes.strides()[0])?;
            }
            r => {
                return Err(Error::invalid(format!(
                    "alibi_slopes must be [heads] or [batch, heads], got {r} dimensions"
                )))
            }
        }
        self.raw.alibi_slopes = slopes.device_ptr() as *const f32;
        Ok(self)
    }

    /// Writes the log-sum-exp of every query row: fp32, dense, `[batch, heads, seqlen_q]`
    /// (varlen: `[heads, total_q]`).
    pub fn lse(mut self, lse: &'a mut dyn DeviceTensor) -> Result<Self> {
        let shape = match self.layout {
            Layout::Padded => {
                vec![self.raw.batch as usize, self.raw.num_heads as usize, self.raw.seqlen_q as usize]
            }
            Layout::Varlen { total_q } => vec![self.raw.num_heads as usize, total_q],
        };
        expect_dense("lse", &*lse, DType::F32, &shape)?;
        self.raw.lse = lse.device_ptr() as *mut f32;
        Ok(self)
    }

    /// Per-head sink logit, fp32 `[heads]` (the query heads), in the units of the scores
    /// (after scale, softcap and ALiBi): it joins every row's softmax denominator and nothing
    /// else, and the lse includes it. Whether the kernels run it is flare's answer.
    pub fn sink(mut self, sink: &'a dyn DeviceTensor) -> Result<Self> {
        expect_dense("sink", sink, DType::F32, &[self.raw.num_heads as usize])?;
        self.raw.sink = sink.device_ptr() as *const f32;
        Ok(self)
    }

    /// Multimodal prefix ranges: int32 `[batch, n, 2]`, entry (b, r) the `[start, end)` key
    /// positions of a span of sequence b; a query row inside a span also sees the whole span.
    /// The first `max_ranges` (<= n) entries of each sequence are used; an entry with start >=
    /// end is empty. Each sequence's pairs are dense; the batch stride is the tensor's. Whether
    /// the kernels run ranges is flare's answer.
    pub fn mm_prefix_ranges(mut self, ranges: &'a dyn DeviceTensor, max_ranges: usize) -> Result<Self> {
        expect_rank("mm_prefix_ranges", ranges, 3)?;
        if ranges.dtype() != DType::I32 {
            return Err(Error::invalid(format!("mm_prefix_ranges must be int32, got {}", ranges.dtype().name())));
        }
        expect_dim("mm_prefix_ranges", ranges, 0, self.raw.batch as usize, "the batch")?;
        expect_dim("mm_prefix_ranges", ranges, 2, 2, "the [start, end) pair size")?;
        let n = ranges.shape()[1];
        if n > 1 && ranges.strides()[1] != 2 {
            return Err(Error::invalid(format!(
                "mm_prefix_ranges.strides[1] ({}) must be 2: the pairs of a sequence are dense",
                ranges.strides()[1]
            )));
        }
        if max_ranges > n {
            return Err(Error::invalid(format!(
                "max_ranges ({max_ranges}) exceeds the {n} ranges per sequence of mm_prefix_ranges.shape[1]"
            )));
        }
        // A tensor of one sequence may carry any batch stride: its rows are then n pairs apart.
        let batch_stride = if ranges.shape()[0] > 1 { ranges.strides()[0] } else { 2 * n };
        self.raw.mm_prefix_ranges = ranges.device_ptr() as *const i32;
        self.raw.mm_prefix_ranges_batch_stride = stride_i64("mm_prefix_ranges", 0, batch_stride)?;
        self.raw.max_mm_prefix_ranges = to_i32("mm_prefix_ranges", 1, max_ranges)?;
        Ok(self)
    }

    /// Varlen: use only the first `seqused_k[b]` keys of sequence b (int32 `[batch]`).
    pub fn seqused_k(mut self, seqused_k: &'a dyn DeviceTensor) -> Result<Self> {
        if !matches!(self.layout, Layout::Varlen { .. }) {
            return Err(Error::invalid("seqused_k applies to variable-length batches only"));
        }
        self.raw.seqused_k = int_array("seqused_k", seqused_k, self.raw.batch as usize)?;
        Ok(self)
    }

    // ---- FP8 ----

    fn descale_fields(&self, name: &str, descale: &Descale<'a>) -> Result<(*const f32, i64, i64)> {
        descale.resolve(name, self.raw.batch as usize, self.raw.num_heads_k as usize)
    }

    /// Descale factors of k when k and v hold FP8 codes ([`DType::E4M3`] / [`DType::E5M2`]):
    /// a code c of K/V head hk in batch entry b stands for `float(c) * k_descale[b, hk]`
    /// (`flare_mha_fwd_params.k_descale` and its strides). Required exactly when k is FP8 and
    /// refused otherwise, by the library, which names the field. A [`Descale::per_batch_head`]
    /// array must be `[batch, heads_k]` of this call (batch: sequences of a varlen call).
    pub fn k_descale(mut self, descale: Descale<'a>) -> Result<Self> {
        (self.raw.k_descale, self.raw.k_descale_batch_stride, self.raw.k_descale_head_stride) =
            self.descale_fields("k_descale", &descale)?;
        Ok(self)
    }

    /// Descale factors of v, like [`MhaParams::k_descale`].
    pub fn v_descale(mut self, descale: Descale<'a>) -> Result<Self> {
        (self.raw.v_descale, self.raw.v_descale_batch_stride, self.raw.v_descale_head_stride) =
            self.descale_fields("v_descale", &descale)?;
        Ok(self)
    }

    /// Descale factors of q when q holds e4m3 codes (indexed by batch entry and the K/V head of
    /// the query head's group), like [`MhaParams::k_descale`]. FP8 q needs e4m3 k and v; whether
    /// the kernels run it is flare's answer.
    pub fn q_descale(mut self, descale: Descale<'a>) -> Result<Self> {
        (self.raw.q_descale, self.raw.q_descale_batch_stride, self.raw.q_descale_head_stride) =
            self.descale_fields("q_descale", &descale)?;
        Ok(self)
    }

    /// Applies every field of `options`.
    pub fn options(self, options: &AttnOptions<'a>) -> Result<Self> {
        let mut p = self
            .softmax_scale(options.softmax_scale.unwrap_or(0.0))
            .causal(options.causal)
            .window(options.window_left, options.window_right)
            .softcap(options.softcap.unwrap_or(0.0))
            .num_splits(options.num_splits.unwrap_or(0));
        if let Some(slopes) = options.alibi_slopes {
            p = p.alibi_slopes(slopes)?;
        }
        if let Some(d) = options.k_descale {
            p = p.k_descale(d)?;
        }
        if let Some(d) = options.v_descale {
            p = p.v_descale(d)?;
        }
        if let Some(d) = options.q_descale {
            p = p.q_descale(d)?;
        }
        Ok(p)
    }

    // ---- the library ----

    /// The C struct as built (for callers of `flare_sys`).
    pub fn as_raw(&self) -> &sys::flare_mha_fwd_params {
        &self.raw
    }

    fn with_launch(&self, launch: &Launch<'_>) -> sys::flare_mha_fwd_params {
        let mut raw = self.raw;
        if let Some(ws) = launch.workspace {
            raw.workspace = ws.device_ptr();
            raw.workspace_size = ws.size_bytes();
        }
        raw
    }

    /// Bytes of workspace the call needs on `device` (0 is possible). Validates the params
    /// first: a refusal comes back before the device is queried.
    pub fn workspace_size(&self, device: i32) -> Result<usize> {
        let mut bytes = 0usize;
        // SAFETY: raw is a complete params struct; flare reads it and writes `bytes`.
        check(unsafe { sys::flare_mha_fwd_workspace_size(&self.raw, device, &mut bytes) })?;
        Ok(bytes)
    }

    /// The split count flare would use on `device` with `launch`'s workspace (none: 1).
    pub fn planned_splits(&self, device: i32, launch: &Launch<'_>) -> Result<u32> {
        let raw = self.with_launch(launch);
        let mut splits = 0;
        // SAFETY: as for workspace_size.
        check(unsafe { sys::flare_mha_fwd_num_splits(&raw, device, &mut splits) })?;
        Ok(splits.max(0) as u32)
    }

    /// Ok when flare would run these params on `device` with `launch`'s workspace; else the
    /// reason. Launches nothing.
    pub fn can_implement(&self, device: i32, launch: &Launch<'_>) -> Result<()> {
        let raw = self.with_launch(launch);
        // SAFETY: as for workspace_size.
        check(unsafe { sys::flare_can_implement(&raw, device) })
    }

    /// Runs the call on `launch.stream` (the current device's). On an error nothing is
    /// launched or written.
    pub fn run(&self, launch: &Launch<'_>) -> Result<()> {
        let raw = self.with_launch(launch);
        // SAFETY: the tensors' DeviceTensor contracts cover every pointer in raw for 'a, and
        // the workspace's DeviceBuffer contract covers the workspace.
        check(unsafe { sys::flare_mha_fwd(&raw, launch.stream.as_raw()) })
    }
}
