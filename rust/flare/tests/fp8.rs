//! CPU tests of FP8 K/V through the safe API: how the builders map FP8 tensors and their
//! descale factors onto `flare_mha_fwd_params` (dtypes, pointers, strides), the builders' own
//! checks, the library's FP8 validation reached through them (flare validates before any CUDA
//! call, so these hold without a GPU), and the tests' FP8 encoder against hand-derived codes.
//!
//! The "device" pointers are 16-byte aligned host buffers: nothing on this path reads or
//! writes them.
#[path = "../../testutil/mod.rs"]
mod testutil;

use core::ffi::c_void;

use flare::sys;
use flare::{AttnOptions, DType, Descale, Error, KvCache, Launch, MhaParams, Status, TensorView};
use testutil::fp8;

/// 16-byte aligned host memory standing in for device memory.
struct Fake(Vec<u128>);

impl Fake {
    fn new(bytes: usize) -> Fake {
        Fake(vec![0u128; bytes / 16 + 2])
    }
    fn ptr(&self) -> *const c_void {
        self.0.as_ptr() as *const c_void
    }
    fn at(&self, bytes: usize) -> *const c_void {
        unsafe { (self.ptr() as *const u8).add(bytes) as *const c_void }
    }
    fn t(&self, dtype: DType, shape: &[usize]) -> TensorView {
        unsafe { TensorView::contiguous(self.ptr(), dtype, shape).unwrap() }
    }
    fn strided(&self, dtype: DType, shape: &[usize], strides: &[usize]) -> TensorView {
        unsafe { TensorView::from_raw_parts(self.ptr(), dtype, shape, strides).unwrap() }
    }
    fn offset(&self, bytes: usize, dtype: DType, shape: &[usize]) -> TensorView {
        unsafe { TensorView::contiguous(self.at(bytes), dtype, shape).unwrap() }
    }
}

// A decode call: batch 2, one query row, cache of 32 rows, 4 query heads over 2 K/V heads, d 64.
const B: usize = 2;
const SQ: usize = 1;
const SK: usize = 32;
const H: usize = 4;
const HK: usize = 2;
const D: usize = 64;

/// Memory for q / out (bf16), an FP8 K/V cache, appended rows and the int / fp32 arrays.
struct Mem {
    q: Fake,
    o: Fake,
    k: Fake,
    v: Fake,
    new: Fake,
    aux: Fake,
}

impl Mem {
    fn new() -> Mem {
        Mem {
            q: Fake::new(B * 64 * H * 512 * 2),
            o: Fake::new(B * 64 * H * 512 * 2),
            k: Fake::new(B * SK * HK * 512),
            v: Fake::new(B * SK * HK * 512),
            new: Fake::new(B * 4 * HK * D * 2),
            aux: Fake::new(4096),
        }
    }
    fn q(&self) -> TensorView {
        self.q.t(DType::BF16, &[B, SQ, H, D])
    }
    fn o(&self) -> TensorView {
        self.o.t(DType::BF16, &[B, SQ, H, D])
    }
    fn cache(&self, dtype: DType) -> (TensorView, TensorView) {
        (self.k.t(dtype, &[B, SK, HK, D]), self.v.t(dtype, &[B, SK, HK, D]))
    }
    /// fp32 factors `[B, HK]` with the given strides, at byte `at` of the aux buffer.
    fn descale(&self, at: usize, shape: &[usize], strides: &[usize]) -> TensorView {
        unsafe { TensorView::from_raw_parts(self.aux.at(at), DType::F32, shape, strides).unwrap() }
    }
    fn seqlens(&self) -> TensorView {
        self.aux.offset(2048, DType::I32, &[B])
    }
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, Error>, status: Status, needle: &str) {
    let e = r.expect_err("the call was accepted");
    assert_eq!(e.status(), status, "{e}");
    assert!(e.message().contains(needle), "message {:?} lacks {needle:?}", e.message());
    assert!(e.to_string().starts_with(status.description()), "{e}");
}

/// A valid call: without a GPU the only error left is the device's (never a validation
/// status); with one, a query that launches nothing succeeds.
fn expect_valid<T: std::fmt::Debug>(r: Result<T, Error>) {
    match r {
        Ok(v) => assert!(testutil::cuda::have_gpu(), "accepted without a GPU: {v:?}"),
        Err(e) => {
            assert!(!testutil::cuda::have_gpu(), "{e}");
            assert!(matches!(e.status(), Status::Cuda | Status::NoDevice), "{e}");
        }
    }
}

/// A valid call that launches: made only without a GPU (the tensors are host memory).
fn expect_valid_launch(run: impl FnOnce() -> Result<(), Error>) {
    if !testutil::cuda::have_gpu() {
        expect_valid(run());
    }
}

fn per_bh(t: &TensorView) -> Descale<'_> {
    Descale::per_batch_head(t).unwrap()
}

// ---- the mapping onto the C struct ----

#[test]
fn dtypes_of_an_fp8_cache_reach_the_c_struct() {
    let m = Mem::new();
    let (q, mut o) = (m.q(), m.o());
    let seqlens = m.seqlens();
    for (dtype, raw_dtype) in [(DType::E4M3, sys::FLARE_DTYPE_E4M3), (DType::E5M2, sys::FLARE_DTYPE_E5M2)] {
        assert!(dtype.is_fp8());
        assert_eq!((dtype.size_bytes(), dtype.to_flare()), (1, Some(raw_dtype)));
        let (mut kc, mut vc) = m.cache(dtype);
        let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &KvCache::new(&seqlens)).unwrap();
        let raw = p.as_raw();
        assert_eq!((raw.dtype, raw.kv_dtype, raw.q_dtype), (sys::FLARE_DTYPE_BF16, raw_dtype, 0));
        // Strides in elements (here bytes): [B, SK, HK, D] codes.
        assert_eq!((raw.k_batch_stride, raw.k_row_stride, raw.k_head_stride), ((SK * HK * D) as i64, (HK * D) as i64, D as i64));
        assert_eq!((raw.v_batch_stride, raw.v_row_stride, raw.v_head_stride), ((SK * HK * D) as i64, (HK * D) as i64, D as i64));
        assert_eq!((raw.k, raw.v), (m.k.ptr(), m.v.ptr()));
        assert!(raw.k_descale.is_null() && raw.v_descale.is_null() && raw.q_descale.is_null());
    }
    assert!(!DType::BF16.is_fp8() && !DType::F32.is_fp8());
    assert_eq!((DType::E4M3.name(), DType::E5M2.name()), ("e4m3", "e5m2"));

    // A 16-bit call keeps kv_dtype / q_dtype 0 (= dtype).
    let (mut kc, mut vc) = m.cache(DType::BF16);
    let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &KvCache::new(&seqlens)).unwrap();
    assert_eq!((p.as_raw().kv_dtype, p.as_raw().q_dtype), (0, 0));

    // FP8 q: dtype is out's, q_dtype e4m3.
    let q8 = m.q.t(DType::E4M3, &[B, SQ, H, D]);
    let (mut kc, mut vc) = m.cache(DType::E4M3);
    let mut o16 = m.o.t(DType::F16, &[B, SQ, H, D]);
    let p = MhaParams::kv_cache(&q8, &mut kc, &mut vc, &mut o16, &KvCache::new(&seqlens)).unwrap();
    let raw = p.as_raw();
    assert_eq!((raw.dtype, raw.kv_dtype, raw.q_dtype), (sys::FLARE_DTYPE_FP16, sys::FLARE_DTYPE_E4M3, sys::FLARE_DTYPE_E4M3));
}

#[test]
fn descale_factors_and_strides_reach_the_c_struct() {
    let m = Mem::new();
    let q = m.q();
    let seqlens = m.seqlens();

    // FlashAttention-3's layout: [batch, heads_k] contiguous, strides (heads_k, 1).
    let fa3 = m.descale(0, &[B, HK], &[HK, 1]);
    // Padded rows: batch stride 8 floats.
    let padded = m.descale(256, &[B, HK], &[8, 1]);
    // Per head, shared by the batch: batch stride 0.
    let per_head = m.descale(512, &[B, HK], &[0, 1]);
    // Per batch entry, shared by the heads, stored transposed ([HK, B] memory seen as [B, HK]).
    let per_batch_t = m.descale(768, &[B, HK], &[1, B]);
    // One factor for the whole tensor.
    let one = m.descale(1024, &[1], &[1]);
    for (k_d, v_d, want_k, want_v) in [
        (per_bh(&fa3), per_bh(&padded), (0, HK as i64, 1), (256, 8, 1)),
        (per_bh(&per_head), per_bh(&per_batch_t), (512, 0, 1), (768, 1, B as i64)),
        (Descale::per_tensor(&one).unwrap(), Descale::per_tensor(&one).unwrap(), (1024, 0, 0), (1024, 0, 0)),
    ] {
        let (mut kc, mut vc) = m.cache(DType::E4M3);
        let mut o = m.o();
        let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &KvCache::new(&seqlens))
            .unwrap()
            .k_descale(k_d)
            .unwrap()
            .v_descale(v_d)
            .unwrap();
        let raw = p.as_raw();
        let at = |ptr: *const f32| ptr as usize - m.aux.ptr() as usize;
        assert_eq!((at(raw.k_descale), raw.k_descale_batch_stride, raw.k_descale_head_stride), want_k);
        assert_eq!((at(raw.v_descale), raw.v_descale_batch_stride, raw.v_descale_head_stride), want_v);
        assert!(raw.q_descale.is_null());
        expect_valid(p.workspace_size(0));
    }

    // A raw pointer with strides in floats, as flare.h takes them; and a [1, HK] array for a
    // batch of one (a dimension of extent 1 is never stepped over: its stride becomes 0).
    let raw_d = unsafe { Descale::from_raw(m.aux.at(64) as *const f32, 3, 1) };
    assert_eq!(raw_d.strides(), (3, 1));
    let (mut kc, mut vc) = m.cache(DType::E5M2);
    let mut o = m.o();
    let q1 = m.q.t(DType::BF16, &[1, SQ, H, D]);
    let mut o1 = m.o.t(DType::BF16, &[1, SQ, H, D]);
    let seqlens1 = m.aux.offset(2048, DType::I32, &[1]);
    let (mut kc1, mut vc1) = (m.k.t(DType::E5M2, &[1, SK, HK, D]), m.v.t(DType::E5M2, &[1, SK, HK, D]));
    let single_k = m.descale(128, &[1, HK], &[7, 5]);
    let p = MhaParams::kv_cache(&q1, &mut kc1, &mut vc1, &mut o1, &KvCache::new(&seqlens1))
        .unwrap()
        .k_descale(per_bh(&single_k))
        .unwrap()
        .v_descale(per_bh(&single_k))
        .unwrap();
    assert_eq!((p.as_raw().k_descale_batch_stride, p.as_raw().k_descale_head_stride), (0, 5));
    let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &KvCache::new(&seqlens))
        .unwrap()
        .k_descale(raw_d)
        .unwrap()
        .v_descale(raw_d)
        .unwrap();
    let raw = p.as_raw();
    assert_eq!((raw.k_descale as *const c_void, raw.k_descale_batch_stride, raw.k_descale_head_stride), (m.aux.at(64), 3, 1));
    assert_eq!((raw.kv_dtype, raw.v_descale_batch_stride), (sys::FLARE_DTYPE_E5M2, 3));
    expect_valid(p.workspace_size(0));
}

#[test]
fn options_and_every_builder_carry_fp8() {
    let m = Mem::new();
    let fa3 = m.descale(0, &[B, HK], &[HK, 1]);
    let one = m.descale(64, &[1], &[1]);
    let opts = AttnOptions {
        causal: true,
        k_descale: Some(per_bh(&fa3)),
        v_descale: Some(Descale::per_tensor(&one).unwrap()),
        ..AttnOptions::default()
    };
    let check = |raw: &sys::flare_mha_fwd_params| {
        assert_eq!((raw.kv_dtype, raw.causal), (sys::FLARE_DTYPE_E4M3, 1));
        assert_eq!((raw.k_descale as *const c_void, raw.k_descale_batch_stride, raw.k_descale_head_stride), (m.aux.ptr(), HK as i64, 1));
        assert_eq!((raw.v_descale as *const c_void, raw.v_descale_batch_stride, raw.v_descale_head_stride), (m.aux.at(64), 0, 0));
    };

    // KV cache with an append (k_new / v_new in the call's dtype) and paging.
    let (q, mut o) = (m.q(), m.o());
    let seqlens = m.seqlens();
    let k_new = m.new.t(DType::BF16, &[B, 2, HK, D]);
    let (mut kc, mut vc) = m.cache(DType::E4M3);
    let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &KvCache::new(&seqlens).append(&k_new, &k_new))
        .unwrap()
        .options(&opts)
        .unwrap();
    check(p.as_raw());
    assert_eq!((p.as_raw().seqlen_new, p.as_raw().k_new_row_stride), (2, (HK * D) as i64));
    expect_valid(p.workspace_size(0));
    let table = m.aux.offset(2560, DType::I32, &[B, 2]);
    let (mut kp, mut vp) = (m.k.t(DType::E4M3, &[4, 16, HK, D]), m.v.t(DType::E4M3, &[4, 16, HK, D]));
    let p = MhaParams::kv_cache(&q, &mut kp, &mut vp, &mut o, &KvCache::new(&seqlens).paged(&table))
        .unwrap()
        .options(&opts)
        .unwrap();
    check(p.as_raw());
    assert_eq!((p.as_raw().k_batch_stride, p.as_raw().page_block_size), ((16 * HK * D) as i64, 16));
    expect_valid(p.workspace_size(0));

    // Varlen: the descale's batch is the number of sequences.
    let qv = m.q.t(DType::BF16, &[5, H, D]);
    let mut ov = m.o.t(DType::BF16, &[5, H, D]);
    let (kv8, vv8) = (m.k.t(DType::E4M3, &[40, HK, D]), m.v.t(DType::E4M3, &[40, HK, D]));
    let cu = m.aux.offset(3072, DType::I32, &[B + 1]);
    let p = MhaParams::varlen(&qv, &kv8, &vv8, &mut ov, &cu, &cu, 3, 30).unwrap().options(&opts).unwrap();
    check(p.as_raw());
    assert_eq!((p.as_raw().k_batch_stride, p.as_raw().k_row_stride, p.as_raw().k_head_stride), (0, (HK * D) as i64, D as i64));
    expect_valid(p.workspace_size(0));
    // Paged varlen.
    let (kp8, vp8) = (m.k.t(DType::E4M3, &[4, 16, HK, D]), m.v.t(DType::E4M3, &[4, 16, HK, D]));
    let p = MhaParams::varlen_paged(&qv, &kp8, &vp8, &mut ov, &table, &cu, &cu, 3, 30).unwrap().options(&opts).unwrap();
    check(p.as_raw());
    expect_valid(p.workspace_size(0));
    // Padded batch (prefill over FP8 K/V).
    let qp = m.q.t(DType::BF16, &[B, 8, H, D]);
    let mut op = m.o.t(DType::BF16, &[B, 8, H, D]);
    let (kp, vp) = m.cache(DType::E4M3);
    let p = MhaParams::prefill(&qp, &kp, &vp, &mut op).unwrap().options(&opts).unwrap();
    check(p.as_raw());
    expect_valid(p.workspace_size(0));

    // The family functions, through the library (valid: only the device is left to refuse).
    let (mut kc, mut vc) = m.cache(DType::E4M3);
    expect_valid_launch(|| flare::flash_attn_with_kvcache(&q, &mut kc, &mut vc, &mut o, &KvCache::new(&seqlens), &opts, &Launch::default()));
    expect_valid_launch(|| flare::flash_attn_varlen_with_options(&qv, &kv8, &vv8, &mut ov, &cu, &cu, 3, 30, &opts, &Launch::default()));
}

// ---- the builders' own checks ----

#[test]
fn builders_check_fp8_dtypes_and_descale_shapes() {
    let m = Mem::new();
    let (q, mut o) = (m.q(), m.o());
    let seqlens = m.seqlens();
    let kv = KvCache::new(&seqlens);

    let mut k8 = m.k.t(DType::E4M3, &[B, SK, HK, D]);
    let mut v5 = m.v.t(DType::E5M2, &[B, SK, HK, D]);
    expect_err(MhaParams::kv_cache(&q, &mut k8, &mut v5, &mut o, &kv), Status::InvalidArgument, "v is e5m2 but k is e4m3");
    let mut v16 = m.v.t(DType::BF16, &[B, SK, HK, D]);
    expect_err(MhaParams::kv_cache(&q, &mut k8, &mut v16, &mut o, &kv), Status::InvalidArgument, "v is bf16 but k is e4m3");
    let mut k16 = m.k.t(DType::BF16, &[B, SK, HK, D]);
    let mut v8 = m.v.t(DType::E4M3, &[B, SK, HK, D]);
    expect_err(MhaParams::kv_cache(&q, &mut k16, &mut v8, &mut o, &kv), Status::InvalidArgument, "v is e4m3 but q is bf16");
    // out is never FP8.
    let mut o8 = m.o.t(DType::E4M3, &[B, SQ, H, D]);
    expect_err(MhaParams::kv_cache(&q, &mut k8, &mut v8, &mut o8, &kv), Status::InvalidArgument, "out is e4m3 but q is bf16");
    let q8 = m.q.t(DType::E4M3, &[B, SQ, H, D]);
    expect_err(MhaParams::kv_cache(&q8, &mut k8, &mut v8, &mut o8, &kv), Status::UnsupportedDtype, "out is e4m3: attention takes fp16 or bf16");
    // Appended rows have the call's dtype, not the cache's.
    let new8 = m.new.t(DType::E4M3, &[B, 2, HK, D]);
    expect_err(
        MhaParams::kv_cache(&q, &mut k8, &mut v8, &mut o, &KvCache::new(&seqlens).append(&new8, &new8)),
        Status::InvalidArgument,
        "k_new is e4m3 but q is bf16",
    );
    // With FP8 q the call's dtype is out's.
    let new16 = m.new.t(DType::BF16, &[B, 2, HK, D]);
    let mut o16 = m.o.t(DType::F16, &[B, SQ, H, D]);
    expect_err(
        MhaParams::kv_cache(&q8, &mut k8, &mut v8, &mut o16, &KvCache::new(&seqlens).append(&new16, &new16)),
        Status::InvalidArgument,
        "k_new is bf16 but out is fp16",
    );
    let (kp, vp16) = (m.k.t(DType::E4M3, &[4, 16, HK, D]), m.v.t(DType::F16, &[4, 16, HK, D]));
    let (qv, mut ov) = (m.q.t(DType::BF16, &[5, H, D]), m.o.t(DType::BF16, &[5, H, D]));
    let cu = m.aux.offset(3072, DType::I32, &[B + 1]);
    let table = m.aux.offset(2560, DType::I32, &[B, 2]);
    expect_err(
        MhaParams::varlen_paged(&qv, &kp, &vp16, &mut ov, &table, &cu, &cu, 3, 30),
        Status::InvalidArgument,
        "v_pool is fp16 but k_pool is e4m3",
    );

    // Descale arrays: fp32, one factor or [batch, heads_k] of the call.
    let f16 = m.aux.t(DType::F16, &[B, HK]);
    expect_err(Descale::per_batch_head(&f16), Status::InvalidArgument, "descale factors are fp32, got fp16");
    expect_err(Descale::per_tensor(&f16), Status::InvalidArgument, "descale factors are fp32, got fp16");
    let two = m.aux.t(DType::F32, &[2]);
    expect_err(Descale::per_tensor(&two), Status::InvalidArgument, "a per-tensor descale holds one fp32 factor, got shape [2]");
    let flat = m.aux.t(DType::F32, &[B * HK]);
    expect_err(Descale::per_batch_head(&flat), Status::InvalidArgument, "fp32 [batch, heads_k], got 1 dimensions");
    let (mut kc, mut vc) = m.cache(DType::E4M3);
    for (shape, field, needle) in [
        ([B + 1, HK], "k", "k_descale.shape[0] (3) must equal the batch (2)"),
        ([B, 1], "v", "v_descale.shape[1] (1) must equal the heads of k/v (2)"),
        ([B, H], "q", "q_descale.shape[1] (4) must equal the heads of k/v (2)"),
    ] {
        let t = m.aux.t(DType::F32, &shape);
        let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &kv).unwrap();
        let d = per_bh(&t);
        let r = match field {
            "k" => p.k_descale(d),
            "v" => p.v_descale(d),
            _ => p.q_descale(d),
        };
        expect_err(r, Status::InvalidArgument, needle);
    }
    // Through AttnOptions the same check, from the family function, before the library.
    let wrong = m.aux.t(DType::F32, &[B + 1, HK]);
    let opts = AttnOptions { k_descale: Some(per_bh(&wrong)), ..AttnOptions::default() };
    expect_err(
        flare::flash_attn_with_kvcache(&q, &mut kc, &mut vc, &mut o, &kv, &opts, &Launch::default()),
        Status::InvalidArgument,
        "k_descale.shape[0] (3) must equal the batch (2)",
    );
}

// ---- the library's FP8 validation, through the builders ----

#[test]
fn library_refusals_of_fp8_calls_come_back_with_status_and_message() {
    let m = Mem::new();
    let (q, mut o) = (m.q(), m.o());
    let seqlens = m.seqlens();
    let kv = KvCache::new(&seqlens);
    let fa3 = m.descale(0, &[B, HK], &[HK, 1]);
    let d = || per_bh(&fa3);

    // Missing factors: the library names the field.
    let (mut kc, mut vc) = m.cache(DType::E4M3);
    let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &kv).unwrap();
    expect_err(p.workspace_size(0), Status::InvalidArgument, "k_descale is null");
    let p = p.k_descale(d()).unwrap();
    expect_err(p.can_implement(0, &Launch::default()), Status::InvalidArgument, "v_descale is null");
    expect_err(p.run(&Launch::default()), Status::InvalidArgument, "v_descale is null");
    // ... also through the family functions.
    expect_err(
        flare::flash_attn_with_kvcache(&q, &mut kc, &mut vc, &mut o, &kv, &AttnOptions::default(), &Launch::default()),
        Status::InvalidArgument,
        "k_descale is null",
    );
    let (qv, mut ov) = (m.q.t(DType::BF16, &[5, H, D]), m.o.t(DType::BF16, &[5, H, D]));
    let (kv8, vv8) = (m.k.t(DType::E4M3, &[40, HK, D]), m.v.t(DType::E4M3, &[40, HK, D]));
    let cu = m.aux.offset(3072, DType::I32, &[B + 1]);
    expect_err(
        flare::flash_attn_varlen(&qv, &kv8, &vv8, &mut ov, &cu, &cu, 3, 30, 0.125, false, &Launch::default()),
        Status::InvalidArgument,
        "k_descale is null",
    );
    // Factors for a tensor that is not FP8.
    let (mut k16, mut v16) = m.cache(DType::BF16);
    let p = MhaParams::kv_cache(&q, &mut k16, &mut v16, &mut o, &kv).unwrap().k_descale(d()).unwrap();
    expect_err(p.workspace_size(0), Status::InvalidArgument, "k_descale is set but its tensor is not FP8");

    // Head dim 72: FP8 head dims are multiples of 16 (rows padded to 80 so nothing else is wrong).
    let q72 = m.q.strided(DType::BF16, &[B, SQ, H, 72], &[SQ * H * 80, H * 80, 80, 1]);
    let mut o72 = m.o.strided(DType::BF16, &[B, SQ, H, 72], &[SQ * H * 80, H * 80, 80, 1]);
    let mut k72 = m.k.strided(DType::E4M3, &[B, SK, HK, 72], &[SK * HK * 80, HK * 80, 80, 1]);
    let mut v72 = m.v.strided(DType::E4M3, &[B, SK, HK, 72], &[SK * HK * 80, HK * 80, 80, 1]);
    let p = MhaParams::kv_cache(&q72, &mut k72, &mut v72, &mut o72, &kv).unwrap().k_descale(d()).unwrap().v_descale(d()).unwrap();
    expect_err(p.workspace_size(0), Status::UnsupportedHeadDim, "FP8 inputs need head dims that are multiples of 16");
    // Head dim 320 (a multiple of 16, served for 16-bit K/V): FP8 K/V run up to 256.
    let q320 = m.q.t(DType::BF16, &[B, SQ, H, 320]);
    let mut o320 = m.o.t(DType::BF16, &[B, SQ, H, 320]);
    let mut k320 = m.k.t(DType::E4M3, &[B, 16, HK, 320]);
    let mut v320 = m.v.t(DType::E4M3, &[B, 16, HK, 320]);
    let p = MhaParams::kv_cache(&q320, &mut k320, &mut v320, &mut o320, &kv).unwrap().k_descale(d()).unwrap().v_descale(d()).unwrap();
    expect_err(p.workspace_size(0), Status::UnsupportedHeadDim, "head dims up to 256");

    // FP8 layouts: 16-byte aligned bases, strides multiples of 16 elements.
    let mut k_h72 = m.k.strided(DType::E4M3, &[B, 16, HK, D], &[16 * HK * 80, HK * 80, 72, 1]);
    let mut v_ok = m.v.t(DType::E4M3, &[B, 16, HK, D]);
    let p = MhaParams::kv_cache(&q, &mut k_h72, &mut v_ok, &mut o, &kv).unwrap().k_descale(d()).unwrap().v_descale(d()).unwrap();
    expect_err(p.workspace_size(0), Status::Misaligned, "k_head_stride (72) is not a multiple of 16 elements");
    let mut k_off = m.k.offset(8, DType::E4M3, &[B, SK, HK, D]);
    let (_, mut vc) = m.cache(DType::E4M3);
    let p = MhaParams::kv_cache(&q, &mut k_off, &mut vc, &mut o, &kv).unwrap().k_descale(d()).unwrap().v_descale(d()).unwrap();
    expect_err(p.workspace_size(0), Status::Misaligned, "is not 16-byte aligned");
    assert!(p.workspace_size(0).unwrap_err().message().starts_with("k ("));
    // A factor array off its 4-byte alignment, and one whose extent overflows.
    let (mut kc, mut vc) = m.cache(DType::E4M3);
    let off = m.descale(2, &[B, HK], &[HK, 1]);
    let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &kv).unwrap().k_descale(d()).unwrap().v_descale(per_bh(&off)).unwrap();
    expect_err(p.workspace_size(0), Status::Misaligned, "is not 4-byte aligned");
    assert!(p.workspace_size(0).unwrap_err().message().starts_with("v_descale ("));
    let huge = unsafe { Descale::from_raw(m.aux.ptr() as *const f32, 1 << 62, 1) };
    let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &kv).unwrap().k_descale(huge).unwrap().v_descale(d()).unwrap();
    expect_err(p.workspace_size(0), Status::InvalidArgument, "k_descale spans more than 2^61 elements");
    // q, out and k_new of an FP8 K/V call address whole 16-byte chunks.
    let q_narrow = m.q.strided(DType::BF16, &[B, SQ, H, D], &[SQ * H * 68, H * 68, 68, 1]);
    let p = MhaParams::kv_cache(&q_narrow, &mut kc, &mut vc, &mut o, &kv).unwrap().k_descale(d()).unwrap().v_descale(d()).unwrap();
    expect_err(p.workspace_size(0), Status::NotSupported, "strides that are multiples of 8 elements");

    // FP8 q: e4m3 only, with e4m3 K/V, and refused by the kernels this release.
    let q8 = m.q.t(DType::E4M3, &[B, SQ, H, D]);
    let q5 = m.q.t(DType::E5M2, &[B, SQ, H, D]);
    let qd = m.descale(512, &[B, HK], &[HK, 1]);
    let p = MhaParams::kv_cache(&q5, &mut kc, &mut vc, &mut o, &kv).unwrap();
    expect_err(p.workspace_size(0), Status::UnsupportedDtype, "q_dtype (4) is not supported");
    let (mut k5, mut v5) = m.cache(DType::E5M2);
    let p = MhaParams::kv_cache(&q8, &mut k5, &mut v5, &mut o, &kv).unwrap().q_descale(per_bh(&qd)).unwrap();
    expect_err(p.workspace_size(0), Status::UnsupportedDtype, "q_dtype e4m3 needs kv_dtype e4m3");
    let p = MhaParams::kv_cache(&q8, &mut kc, &mut vc, &mut o, &kv).unwrap().k_descale(d()).unwrap().v_descale(d()).unwrap();
    expect_err(p.workspace_size(0), Status::InvalidArgument, "q_descale is null");
    let p = p.q_descale(per_bh(&qd)).unwrap();
    assert_eq!((p.as_raw().q_descale as *const c_void, p.as_raw().q_descale_batch_stride), (m.aux.at(512), HK as i64));
    expect_err(p.workspace_size(0), Status::NotSupported, "FP8 prefill is not implemented");

    // Nothing wrong: only the device is left (valid e4m3 and e5m2 calls).
    let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &kv).unwrap().k_descale(d()).unwrap().v_descale(d()).unwrap();
    expect_valid(p.workspace_size(0));
    expect_valid(p.can_implement(0, &Launch::default()));
    expect_valid_launch(|| p.run(&Launch::default()));
    let p = MhaParams::kv_cache(&q, &mut k5, &mut v5, &mut o, &kv).unwrap().k_descale(d()).unwrap().v_descale(d()).unwrap();
    expect_valid(p.workspace_size(0));
}

// ---- the tests' FP8 encoder (used by the GPU tests to check appended codes) ----

#[test]
fn fp8_decoding_matches_the_formats() {
    use fp8::decode;
    for (code, want) in [(0x38u8, 1.0), (0x7e, 448.0), (0x01, 2f64.powi(-9)), (0x08, 2f64.powi(-6)), (0xb8, -1.0), (0x80, -0.0)] {
        assert_eq!(decode(DType::E4M3, code), want, "e4m3 {code:#x}");
    }
    for (code, want) in [(0x3cu8, 1.0), (0x7b, 57344.0), (0x01, 2f64.powi(-16)), (0x04, 2f64.powi(-14)), (0xbc, -1.0)] {
        assert_eq!(decode(DType::E5M2, code), want, "e5m2 {code:#x}");
    }
    assert!(decode(DType::E4M3, 0x7f).is_nan() && decode(DType::E4M3, 0xff).is_nan());
    assert_eq!(decode(DType::E5M2, 0x7c), f64::INFINITY);
    assert!(decode(DType::E5M2, 0x7d).is_nan());
    // Codes 0..=max increase strictly (the encoder's search relies on it).
    for dtype in [DType::E4M3, DType::E5M2] {
        for c in 0..fp8::max_code(dtype) {
            assert!(decode(dtype, c) < decode(dtype, c + 1), "{dtype:?} {c:#x}");
        }
    }
}

#[test]
fn fp8_encoding_rounds_to_nearest_even_and_saturates() {
    use fp8::{decode, encode, max_code, quantize};
    for dtype in [DType::E4M3, DType::E5M2] {
        let top = max_code(dtype);
        for c in 0..=top {
            // Every finite code is its own value's code, both signs.
            let v = decode(dtype, c) as f32;
            assert_eq!(encode(dtype, v), c, "{dtype:?} {v}");
            assert_eq!(encode(dtype, -v), c | 0x80, "{dtype:?} -{v}");
            if c == top {
                continue;
            }
            // The midpoint to the next code goes to the even code; a hair off it, to the nearer.
            let (a, b) = (decode(dtype, c), decode(dtype, c + 1));
            let mid = ((a + b) / 2.0) as f32;
            assert_eq!(mid as f64, (a + b) / 2.0, "midpoints are exact in f32");
            let even = if c % 2 == 0 { c } else { c + 1 };
            assert_eq!(encode(dtype, mid), even, "{dtype:?} tie {mid}");
            assert_eq!(encode(dtype, f32::from_bits(mid.to_bits() + 1)), c + 1, "{dtype:?} above {mid}");
            assert_eq!(encode(dtype, f32::from_bits(mid.to_bits() - 1)), c, "{dtype:?} below {mid}");
        }
        // Saturation to the largest finite magnitude; NaN to S.1111111.
        let max = decode(dtype, top) as f32;
        for x in [max * 1.01, max * 1e3, f32::INFINITY, f32::MAX] {
            assert_eq!(encode(dtype, x), top, "{dtype:?} {x}");
            assert_eq!(encode(dtype, -x), top | 0x80, "{dtype:?} -{x}");
        }
        assert_eq!(encode(dtype, f32::NAN), 0x7f);
        assert_eq!(encode(dtype, -f32::NAN), 0xff);
        // Below half the smallest subnormal: zero, keeping the sign.
        assert_eq!((encode(dtype, 1e-30), encode(dtype, -1e-30)), (0x00, 0x80));
    }
    // Hand-derived cases: 3 * 2^-10 is the tie between e4m3 codes 1 and 2 (even: 2); 464 is the
    // tie between 448 and the NaN slot 480: saturated to 448; e5m2 1.125 ties 1 and 1.25 (even: 0x3c).
    assert_eq!(encode(DType::E4M3, 3.0 * 2f32.powi(-10)), 0x02);
    assert_eq!(encode(DType::E4M3, 2f32.powi(-10)), 0x00);
    assert_eq!(encode(DType::E4M3, 464.0), 0x7e);
    assert_eq!(encode(DType::E5M2, 1.125), 0x3c);
    assert_eq!(encode(DType::E5M2, 1.375), 0x3e);
    // quantize divides first, in f32: 0.3 / 0.1 is 2.9999998 in f32, whose e4m3 code is 3's.
    assert_eq!(quantize(DType::E4M3, 0.3, 0.1), encode(DType::E4M3, 3.0));
    assert_eq!(quantize(DType::E4M3, 1000.0, 0.5), 0x7e);
}

/// The bound the GPU FP8 test uses is attainable on FP8 inputs: float64 attention over
/// dequantized codes (code x descale, per (batch, head) factors), rounded correctly to bf16,
/// is within 2 x the naive bf16 model's error on the same inputs + 1e-5.
#[test]
fn error_bound_accepts_a_correctly_rounded_result_on_fp8_inputs() {
    use testutil::half::{round, Rng};
    use testutil::reference::{assert_within_bound, attend, attend_lowp, Spec};
    let (sq, sk, h, hk, d) = (2, 40, 8, 2, 128);
    for kv_dtype in [DType::E4M3, DType::E5M2] {
        let mut rng = Rng::new(5);
        let scale = [0.0071f32, 0.0123];
        let (_, q) = rng.tensor(DType::BF16, sq * h * d);
        let mut dequant = || -> Vec<f64> {
            (0..sk * hk * d)
                .map(|i| {
                    let s = scale[(i / d) % hk];
                    fp8::decode(kv_dtype, fp8::quantize(kv_dtype, rng.next_f32(), s)) * s as f64
                })
                .collect()
        };
        let (k, v) = (dequant(), dequant());
        for causal in [false, true] {
            let spec = Spec { causal, ..Spec::new(1.0 / (d as f64).sqrt()) };
            let exact = attend(&q, &k, &v, sq, sk, h, hk, d, &spec);
            let naive = attend_lowp(&q, &k, &v, sq, sk, h, hk, d, &spec, &|x| round(DType::BF16, x));
            let perfect: Vec<f32> = exact.out.iter().map(|&x| round(DType::BF16, x as f32)).collect();
            assert_within_bound(&format!("{kv_dtype:?} causal={causal}"), &perfect, &exact.out, &naive.out);
        }
    }
}
