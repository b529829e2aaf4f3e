//! CPU tests of the safe API: the builders' own errors (tensors that disagree), the library's
//! validation reached through them (flare validates before it touches the device, so these
//! hold without a GPU), status strings, and version / build info.
//!
//! The "device" pointers are host buffers: nothing on this path reads or writes them.
#[path = "../../testutil/mod.rs"]
mod testutil;

use core::ffi::c_void;

use flare::{
    AttnOptions, DType, DeviceTensor, Error, KvCache, Launch, MergeParams, MhaParams, RawBuffer,
    Status, Stream, TensorView,
};

/// 16-byte aligned host memory standing in for device memory.
struct Fake(Vec<u128>);

impl Fake {
    fn new(bytes: usize) -> Fake {
        Fake(vec![0u128; bytes / 16 + 2])
    }
    fn ptr(&self) -> *const c_void {
        self.0.as_ptr() as *const c_void
    }
    fn t(&self, dtype: DType, shape: &[usize]) -> TensorView {
        unsafe { TensorView::contiguous(self.ptr(), dtype, shape).unwrap() }
    }
    fn strided(&self, dtype: DType, shape: &[usize], strides: &[usize]) -> TensorView {
        unsafe { TensorView::from_raw_parts(self.ptr(), dtype, shape, strides).unwrap() }
    }
    fn offset(&self, bytes: usize, dtype: DType, shape: &[usize]) -> TensorView {
        let p = unsafe { (self.ptr() as *const u8).add(bytes) } as *const c_void;
        unsafe { TensorView::contiguous(p, dtype, shape).unwrap() }
    }
}

/// q/k/v/out of a padded batch: b=2, sq=8, sk=16, h=4, hk=2, d=64, fp16.
struct Qkvo {
    q: Fake,
    k: Fake,
    v: Fake,
    o: Fake,
}

const B: usize = 2;
const SQ: usize = 8;
const SK: usize = 16;
const H: usize = 4;
const HK: usize = 2;
const D: usize = 64;

impl Qkvo {
    fn new() -> Qkvo {
        Qkvo {
            q: Fake::new(B * SQ * H * D * 2),
            k: Fake::new(B * SK * HK * D * 2),
            v: Fake::new(B * SK * HK * D * 2),
            o: Fake::new(B * SQ * H * D * 2),
        }
    }
    fn tensors(&self) -> (TensorView, TensorView, TensorView, TensorView) {
        (
            self.q.t(DType::F16, &[B, SQ, H, D]),
            self.k.t(DType::F16, &[B, SK, HK, D]),
            self.v.t(DType::F16, &[B, SK, HK, D]),
            self.o.t(DType::F16, &[B, SQ, H, D]),
        )
    }
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, Error>, status: Status, needle: &str) {
    let e = r.expect_err("the call was accepted");
    assert_eq!(e.status(), status, "{e}");
    assert!(e.message().contains(needle), "message {:?} lacks {needle:?}", e.message());
    assert!(e.to_string().starts_with(status.description()), "{e}");
}

/// On a machine without a GPU a valid call ends at the device: Cuda before the library
/// validates ahead of its first CUDA call, NoDevice after; never a validation status.
fn expect_device_error(r: Result<(), Error>) {
    let e = r.expect_err("accepted without a GPU");
    assert!(matches!(e.status(), Status::Cuda | Status::NoDevice), "{e}");
}

/// A valid call using serving features (paged varlen, page sizes, sinks, prefix ranges,
/// head_dim_v): while the library's GPU kernels do not run one of them, its NotSupported
/// naming it (one of `needles`, "|"-separated), from validation, without touching the device;
/// once they run them all, what every valid call gets: the device's error without a GPU,
/// success with one (only queries that launch nothing are passed here on a GPU machine: the
/// tensors are host memory).
fn expect_feature_answered<T: std::fmt::Debug>(r: Result<T, Error>, needles: &str) {
    match r {
        Err(e) if e.status() == Status::NotSupported => assert!(
            needles.split('|').any(|n| e.message().contains(n)),
            "message {:?} names none of {needles:?}",
            e.message()
        ),
        Err(e) => {
            assert!(!testutil::cuda::have_gpu(), "{e}");
            assert!(matches!(e.status(), Status::Cuda | Status::NoDevice), "{e}");
        }
        Ok(v) => assert!(testutil::cuda::have_gpu(), "accepted without a GPU: {v:?}"),
    }
}

/// [`expect_feature_answered`] for a call that launches: made only without a GPU.
fn expect_launch_answered(run: impl FnOnce() -> Result<(), Error>, needle: &str) {
    if !testutil::cuda::have_gpu() {
        expect_feature_answered(run(), needle);
    }
}

// ---- the builders' own checks ----

#[test]
fn prefill_builder_checks_ranks_dtypes_and_shapes() {
    let m = Qkvo::new();
    let (q, k, v, mut o) = m.tensors();
    assert!(MhaParams::prefill(&q, &k, &v, &mut o).is_ok());

    let q3 = m.q.t(DType::F16, &[B * SQ, H, D]);
    expect_err(MhaParams::prefill(&q3, &k, &v, &mut o), Status::InvalidArgument, "q must have 4 dimensions, got 3");

    let q_strided = m.q.strided(DType::F16, &[B, SQ, H, D], &[SQ * H * D * 2, H * D * 2, D * 2, 2]);
    expect_err(
        MhaParams::prefill(&q_strided, &k, &v, &mut o),
        Status::InvalidArgument,
        "q.strides[3] (2) must be 1: the last dimension is contiguous",
    );

    let k_bf16 = m.k.t(DType::BF16, &[B, SK, HK, D]);
    expect_err(MhaParams::prefill(&q, &k_bf16, &v, &mut o), Status::InvalidArgument, "k is bf16 but q is fp16");

    let mut o_short = m.o.t(DType::F16, &[B, SQ - 1, H, D]);
    expect_err(
        MhaParams::prefill(&q, &k, &v, &mut o_short),
        Status::InvalidArgument,
        "out.shape[1] (7) must equal q.shape[1] (8)",
    );

    let k_batch = m.k.t(DType::F16, &[1, SK, HK, D]);
    let v_batch = m.v.t(DType::F16, &[1, SK, HK, D]);
    expect_err(
        MhaParams::prefill(&q, &k_batch, &v_batch, &mut o),
        Status::InvalidArgument,
        "k.shape[0] (1) must equal q.shape[0] (2)",
    );

    let k3 = m.k.t(DType::F16, &[B, SK / 2, 3, D]);
    let v3 = m.v.t(DType::F16, &[B, SK / 2, 3, D]);
    expect_err(
        MhaParams::prefill(&q, &k3, &v3, &mut o),
        Status::InvalidArgument,
        "q has 4 heads, not a multiple of the 3 heads of k/v",
    );

    let v_other = m.v.t(DType::F16, &[B, SK - 1, HK, D]);
    expect_err(MhaParams::prefill(&q, &k, &v_other, &mut o), Status::InvalidArgument, "v.shape[1] (15) must equal k.shape[1] (16)");

    let qf = m.q.t(DType::F32, &[B, SQ, H, D]);
    expect_err(MhaParams::prefill(&qf, &k, &v, &mut o), Status::UnsupportedDtype, "q is fp32");
}

#[test]
fn options_reach_the_c_struct() {
    let m = Qkvo::new();
    let (q, k, v, mut o) = m.tensors();
    let slopes = Fake::new(64);
    let sl = slopes.t(DType::F32, &[H]);
    let p = MhaParams::prefill(&q, &k, &v, &mut o)
        .unwrap()
        .softmax_scale(0.5)
        .causal(true)
        .window(Some(16), None)
        .softcap(30.0)
        .num_splits(3)
        .alibi_slopes(&sl)
        .unwrap();
    let raw = p.as_raw();
    assert_eq!((raw.batch, raw.seqlen_q, raw.seqlen_k), (2, 8, 16));
    assert_eq!((raw.num_heads, raw.num_heads_k, raw.head_dim), (4, 2, 64));
    assert_eq!((raw.q_batch_stride, raw.q_row_stride, raw.q_head_stride), (2048, 256, 64));
    assert_eq!((raw.k_batch_stride, raw.k_row_stride, raw.k_head_stride), (2048, 128, 64));
    assert_eq!((raw.softmax_scale, raw.causal, raw.window_left, raw.window_right), (0.5, 1, 16, -1));
    assert_eq!((raw.softcap, raw.num_splits, raw.alibi_batch_stride), (30.0, 3, 0));
    assert_eq!(raw.alibi_slopes as *const c_void, slopes.ptr());
    assert_eq!(raw.struct_size as usize, core::mem::size_of::<flare::sys::flare_mha_fwd_params>());
    // Windows as wide as any sequence are unbounded.
    let p = MhaParams::prefill(&q, &k, &v, &mut o).unwrap().window(Some(usize::MAX), Some(1 << 30));
    assert_eq!((p.as_raw().window_left, p.as_raw().window_right), (-1, -1));
}

#[test]
fn optional_tensors_are_checked() {
    let m = Qkvo::new();
    let (q, k, v, mut o) = m.tensors();
    let small = Fake::new(1024);
    let wrong = small.t(DType::F32, &[H + 1]);
    expect_err(
        MhaParams::prefill(&q, &k, &v, &mut o).unwrap().alibi_slopes(&wrong),
        Status::InvalidArgument,
        "alibi_slopes must have shape [4], got [5]",
    );
    let per_batch = small.t(DType::F32, &[B, H]);
    let p = MhaParams::prefill(&q, &k, &v, &mut o).unwrap().alibi_slopes(&per_batch).unwrap();
    assert_eq!(p.as_raw().alibi_batch_stride, H as i64);

    let mut lse_bad = small.t(DType::F32, &[B, SQ, H]);
    expect_err(
        MhaParams::prefill(&q, &k, &v, &mut o).unwrap().lse(&mut lse_bad),
        Status::InvalidArgument,
        "lse must have shape [2, 4, 8], got [2, 8, 4]",
    );
    let mut lse_f16 = small.t(DType::F16, &[B, H, SQ]);
    expect_err(
        MhaParams::prefill(&q, &k, &v, &mut o).unwrap().lse(&mut lse_f16),
        Status::InvalidArgument,
        "lse must be fp32, got fp16",
    );
    let seqused = small.t(DType::I32, &[B]);
    expect_err(
        MhaParams::prefill(&q, &k, &v, &mut o).unwrap().seqused_k(&seqused),
        Status::InvalidArgument,
        "seqused_k applies to variable-length batches only",
    );
}

#[test]
fn varlen_builder_checks_cu_seqlens() {
    let m = Qkvo::new();
    let q = m.q.t(DType::F16, &[20, H, D]);
    let k = m.k.t(DType::F16, &[30, HK, D]);
    let v = m.v.t(DType::F16, &[30, HK, D]);
    let mut o = m.o.t(DType::F16, &[20, H, D]);
    let cu = Fake::new(64);
    let cu_q = cu.t(DType::I32, &[3]);
    let cu_k4 = cu.t(DType::I32, &[4]);
    expect_err(
        MhaParams::varlen(&q, &k, &v, &mut o, &cu_q, &cu_k4, 12, 20),
        Status::InvalidArgument,
        "cu_seqlens_k must have shape [3], got [4]",
    );
    let cu_one = cu.t(DType::I32, &[1]);
    expect_err(
        MhaParams::varlen(&q, &k, &v, &mut o, &cu_one, &cu_one, 12, 20),
        Status::InvalidArgument,
        "cu_seqlens_q must be int32 [batch + 1] with batch >= 1",
    );
    let cu_f = cu.t(DType::F32, &[3]);
    expect_err(
        MhaParams::varlen(&q, &k, &v, &mut o, &cu_q, &cu_f, 12, 20),
        Status::InvalidArgument,
        "cu_seqlens_k must be int32, got fp32",
    );
    let small = Fake::new(1024);
    let mut lse = small.t(DType::F32, &[H, 20]);
    let p = MhaParams::varlen(&q, &k, &v, &mut o, &cu_q, &cu_q, 12, 20).unwrap().lse(&mut lse).unwrap();
    let raw = p.as_raw();
    assert_eq!((raw.batch, raw.max_seqlen_q, raw.max_seqlen_k), (2, 12, 20));
    assert_eq!((raw.q_batch_stride, raw.q_row_stride, raw.q_head_stride), (0, 256, 64));
}

#[test]
fn kv_cache_builder_checks_its_parts() {
    let m = Qkvo::new();
    let q = m.q.t(DType::F16, &[B, 1, H, D]);
    let mut kc = m.k.t(DType::F16, &[B, SK, HK, D]);
    let mut vc = m.v.t(DType::F16, &[B, SK, HK, D]);
    let mut o = m.o.t(DType::F16, &[B, 1, H, D]);
    let aux = Fake::new(4096);
    let seqlens = aux.t(DType::I32, &[B]);
    let new = Fake::new(B * 2 * HK * D * 2);
    let k_new = new.t(DType::F16, &[B, 2, HK, D]);

    let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &KvCache::new(&seqlens).append(&k_new, &k_new)).unwrap();
    assert_eq!((p.as_raw().seqlen_k, p.as_raw().seqlen_new), (SK as i32, 2));

    let mut kv = KvCache::new(&seqlens);
    kv.k_new = Some(&k_new);
    expect_err(
        MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &kv),
        Status::InvalidArgument,
        "v_new is missing while k_new is given",
    );

    let k_new_heads = new.t(DType::F16, &[B, 2, 1, D]);
    expect_err(
        MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &KvCache::new(&seqlens).append(&k_new_heads, &k_new_heads)),
        Status::InvalidArgument,
        "k_new.shape[2] (1) must equal the heads of k_cache (2)",
    );

    let cos = aux.strided(DType::F16, &[32, 16], &[32, 1]);
    expect_err(
        MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &KvCache::new(&seqlens).append(&k_new, &k_new).rotary(&cos, &cos, false)),
        Status::InvalidArgument,
        "rotary_cos.strides[0] (32) must equal its shape[1] (16): the tables are dense",
    );

    let mut kc3 = m.k.t(DType::F16, &[3, SK / 2, HK, D]);
    let mut vc3 = m.v.t(DType::F16, &[3, SK / 2, HK, D]);
    expect_err(
        MhaParams::kv_cache(&q, &mut kc3, &mut vc3, &mut o, &KvCache::new(&seqlens)),
        Status::InvalidArgument,
        "k_cache.shape[0] (3) must equal q.shape[0] (2)",
    );
    // With cache_batch_idx the cache may hold any number of entries.
    let idx = aux.t(DType::I32, &[B]);
    assert!(MhaParams::kv_cache(&q, &mut kc3, &mut vc3, &mut o, &KvCache::new(&seqlens).cache_batch_idx(&idx)).is_ok());

    // Paged: the caches are pools; capacity = pages per sequence x page size.
    let mut kpool = m.k.t(DType::F16, &[4, 16, HK, D]);
    let mut vpool = m.v.t(DType::F16, &[4, 16, HK, D]);
    let table = aux.t(DType::I32, &[B, 2]);
    let p = MhaParams::kv_cache(&q, &mut kpool, &mut vpool, &mut o, &KvCache::new(&seqlens).paged(&table)).unwrap();
    let raw = p.as_raw();
    assert_eq!((raw.seqlen_k, raw.page_block_size, raw.num_pages, raw.block_table_batch_stride), (32, 16, 4, 2));
    let table3 = aux.t(DType::I32, &[3, 2]);
    expect_err(
        MhaParams::kv_cache(&q, &mut kpool, &mut vpool, &mut o, &KvCache::new(&seqlens).paged(&table3)),
        Status::InvalidArgument,
        "block_table.shape[0] (3) must equal the batch (2)",
    );
}

#[test]
fn merge_builder_checks_parts() {
    let parts = Fake::new(2 * B * SQ * H * D * 4);
    let lses = Fake::new(2 * B * H * SQ * 4);
    let outm = Fake::new(B * SQ * H * D * 2);
    let p0 = parts.t(DType::F32, &[B, SQ, H, D]);
    let p1 = parts.offset(B * SQ * H * D * 4, DType::F32, &[B, SQ, H, D]);
    let l0 = lses.t(DType::F32, &[B, H, SQ]);
    let l1 = lses.offset(B * H * SQ * 4, DType::F32, &[B, H, SQ]);
    let mut out = outm.t(DType::BF16, &[B, SQ, H, D]);
    let m = MergeParams::new(&[&p0, &p1], &[&l0, &l1], &mut out).unwrap();
    let raw = m.as_raw();
    assert_eq!((raw.num_parts, raw.part_dtype, raw.out_dtype), (2, flare::sys::FLARE_DTYPE_FP32, flare::sys::FLARE_DTYPE_BF16));
    assert_eq!((raw.lse_batch_stride, raw.lse_head_stride, raw.lse_row_stride), ((H * SQ) as i64, SQ as i64, 1));

    expect_err(MergeParams::new(&[], &[], &mut out), Status::InvalidArgument, "merge needs at least one part");
    expect_err(MergeParams::new(&[&p0, &p1], &[&l0], &mut out), Status::InvalidArgument, "2 parts but 1 lse tensors");
    let p1_other = parts.strided(DType::F32, &[B, SQ, H, D], &[SQ * H * D, H * D, D, 1]);
    let p1_bf = parts.t(DType::BF16, &[B, SQ, H, D]);
    expect_err(MergeParams::new(&[&p0, &p1_bf], &[&l0, &l1], &mut out), Status::InvalidArgument, "parts[1] is bf16 but parts[0] is fp32");
    let p1_str = parts.strided(DType::F32, &[B, SQ, H, D], &[SQ * H * D * 2, H * D, D, 1]);
    expect_err(MergeParams::new(&[&p1_other, &p1_str], &[&l0, &l1], &mut out), Status::InvalidArgument, "parts[1] has other strides than parts[0]");
    let l_bad = lses.t(DType::F32, &[B, SQ, H]);
    expect_err(MergeParams::new(&[&p0], &[&l_bad], &mut out), Status::InvalidArgument, "lses[0].shape[1] (8) must equal out.shape[2] (4)");
    let many: Vec<&dyn DeviceTensor> = (0..65).map(|_| &p0 as &dyn DeviceTensor).collect();
    let many_l: Vec<&dyn DeviceTensor> = (0..65).map(|_| &l0 as &dyn DeviceTensor).collect();
    expect_err(MergeParams::new(&many, &many_l, &mut out), Status::InvalidArgument, "merge takes at most 64 parts, got 65");
}

#[test]
fn tensor_view_rejects_bad_layouts() {
    let f = Fake::new(64);
    let r = unsafe { TensorView::from_raw_parts(f.ptr(), DType::F16, &[1, 1, 1, 1, 1], &[1, 1, 1, 1, 1]) };
    expect_err(r, Status::InvalidArgument, "a TensorView has 1 to 4 dimensions, got 5");
    let r = unsafe { TensorView::from_raw_parts(f.ptr(), DType::F16, &[2, 2], &[2]) };
    expect_err(r, Status::InvalidArgument, "one stride per dimension: 2 dimensions, 1 strides");
    let t = f.t(DType::F16, &[2, 3, 4]).transpose(0, 2).unwrap();
    assert_eq!((t.shape(), t.strides()), (&[4usize, 3, 2][..], &[1usize, 4, 12][..]));
}

// ---- the library's validation, through the builders (before any device query) ----

#[test]
fn library_validation_comes_back_with_status_and_message() {
    let m = Qkvo::new();
    let (q, k, v, mut o) = m.tensors();
    let launch = Launch::default();

    // head_dim 513: above flare's 512 (rows padded to 520 elements, so nothing else is wrong).
    let q513 = m.q.strided(DType::F16, &[B, SQ, H, 513], &[SQ * H * 520, H * 520, 520, 1]);
    let k513 = m.k.strided(DType::F16, &[B, SK, HK, 513], &[SK * HK * 520, HK * 520, 520, 1]);
    let mut o513 = m.o.strided(DType::F16, &[B, SQ, H, 513], &[SQ * H * 520, H * 520, 520, 1]);
    let p = MhaParams::prefill(&q513, &k513, &k513, &mut o513).unwrap();
    expect_err(p.workspace_size(0), Status::UnsupportedHeadDim, "head_dim (513) is not supported");
    expect_err(p.can_implement(0, &launch), Status::UnsupportedHeadDim, "head_dim (513) is not supported");

    // A q pointer off the alignment of its elements.
    let q_off = m.q.offset(1, DType::F16, &[B, SQ, H, D]);
    let p = MhaParams::prefill(&q_off, &k, &v, &mut o).unwrap();
    expect_err(p.workspace_size(0), Status::Misaligned, "aligned");

    // A batch stride whose element offsets would overflow 64 bits.
    let huge = 1usize << 61;
    let k_huge = m.k.strided(DType::F16, &[B, SK, HK, D], &[huge, HK * D, D, 1]);
    let p = MhaParams::prefill(&q, &k_huge, &k_huge, &mut o).unwrap();
    expect_err(p.workspace_size(0), Status::InvalidArgument, "k spans more than 2^61 elements");

    // Options out of range.
    let p = MhaParams::prefill(&q, &k, &v, &mut o).unwrap().softcap(-1.0);
    expect_err(p.workspace_size(0), Status::InvalidArgument, "softcap (-1) must be finite and >= 0");
    let p = MhaParams::prefill(&q, &k, &v, &mut o).unwrap().softmax_scale(f32::NAN);
    expect_err(p.workspace_size(0), Status::InvalidArgument, "softmax_scale (nan) must be finite and >= 0");
    let p = MhaParams::prefill(&q, &k, &v, &mut o).unwrap().num_splits(200);
    expect_err(p.workspace_size(0), Status::InvalidArgument, "num_splits (200) must be in [0, 128]");

    // A workspace off its 256-byte alignment.
    let p = MhaParams::prefill(&q, &k, &v, &mut o).unwrap();
    let ws = unsafe { RawBuffer::new((m.o.ptr() as *mut u8).add(16) as *mut c_void, 4096) };
    expect_err(p.can_implement(0, &Launch::on(Stream::DEFAULT).with_workspace(&ws)), Status::Misaligned, "workspace");
}

#[test]
fn library_validation_of_kv_cache_features() {
    let m = Qkvo::new();
    let q = m.q.t(DType::F16, &[B, 1, H, D]);
    let mut o = m.o.t(DType::F16, &[B, 1, H, D]);
    let aux = Fake::new(8192);
    let seqlens = aux.t(DType::I32, &[B]);
    let cos = aux.t(DType::F16, &[32, 16]);

    // Rotary needs appended keys.
    let mut kc = m.k.t(DType::F16, &[B, SK, HK, D]);
    let mut vc = m.v.t(DType::F16, &[B, SK, HK, D]);
    let p = MhaParams::kv_cache(&q, &mut kc, &mut vc, &mut o, &KvCache::new(&seqlens).rotary(&cos, &cos, true)).unwrap();
    expect_err(p.workspace_size(0), Status::NotSupported, "rotary_cos without k_new is not supported");

    // Pages of 8 rows (any page size >= 1 is valid input).
    let mut kp = m.k.t(DType::F16, &[4, 8, HK, D]);
    let mut vp = m.v.t(DType::F16, &[4, 8, HK, D]);
    let table = aux.t(DType::I32, &[B, 2]);
    let p = MhaParams::kv_cache(&q, &mut kp, &mut vp, &mut o, &KvCache::new(&seqlens).paged(&table)).unwrap();
    assert_eq!(p.as_raw().page_block_size, 8);
    expect_feature_answered(p.workspace_size(0), "page_block_size (8)");
}

/// Paged variable-length attention goes to the library as it is: flare validates it (before
/// any device query, so this holds with or without a GPU) and answers it.
#[test]
fn varlen_paged_is_answered_by_the_library() {
    let m = Qkvo::new();
    let q = m.q.t(DType::F16, &[20, H, D]);
    let mut o = m.o.t(DType::F16, &[20, H, D]);
    let kp = m.k.t(DType::F16, &[4, 16, HK, D]);
    let aux = Fake::new(1024);
    let table = aux.t(DType::I32, &[B, 2]);
    let cu = aux.t(DType::I32, &[B + 1]);
    let p = MhaParams::varlen_paged(&q, &kp, &kp, &mut o, &table, &cu, &cu, 12, 32).unwrap();
    let raw = p.as_raw();
    assert_eq!((raw.page_block_size, raw.num_pages, raw.block_table_batch_stride), (16, 4, 2));
    assert!(raw.cache_seqlens.is_null() && !raw.cu_seqlens_q.is_null());
    let paged_varlen = "block_table with cu_seqlens_q";
    expect_feature_answered(p.can_implement(0, &Launch::default()), paged_varlen);
    expect_feature_answered(p.workspace_size(0), paged_varlen);
    expect_launch_answered(
        || flare::flash_attn_varlen_paged_windowed(&q, &kp, &kp, &mut o, &cu, &cu, &table, None, 12, 32, 0.1, None, None, 16, None, &Launch::default()),
        paged_varlen,
    );
    // Prefix ranges reach the library too (and any page size, here 1 row per page).
    let ranges = aux.t(DType::I32, &[B, 1, 2]);
    expect_launch_answered(
        || flare::flash_attn_varlen_paged_windowed(&q, &kp, &kp, &mut o, &cu, &cu, &table, Some(&ranges), 12, 32, 0.1, None, None, 16, None, &Launch::default()),
        "mm_prefix_ranges|block_table with cu_seqlens_q",
    );
    let kp1 = m.k.t(DType::F16, &[64, 1, HK, D]);
    let table32 = aux.t(DType::I32, &[B, 32]);
    let p = MhaParams::varlen_paged(&q, &kp1, &kp1, &mut o, &table32, &cu, &cu, 12, 32).unwrap();
    assert_eq!((p.as_raw().page_block_size, p.as_raw().num_pages, p.as_raw().block_table_batch_stride), (1, 64, 32));
    expect_feature_answered(p.workspace_size(0), "block_table");
    // Flare's validation of the paging fields comes back as well (a table with a zero stride).
    let table0 = aux.strided(DType::I32, &[B, 2], &[0, 1]);
    expect_err(
        MhaParams::varlen_paged(&q, &kp, &kp, &mut o, &table0, &cu, &cu, 12, 32).unwrap().workspace_size(0),
        Status::InvalidArgument,
        "block_table_batch_stride (0) must be >= 1",
    );
    expect_err(
        flare::flash_attn_varlen_paged_windowed(&q, &kp, &kp, &mut o, &cu, &cu, &table, None, 12, 32, 0.1, None, None, 32, None, &Launch::default()),
        Status::InvalidArgument,
        "page_block_size (32) does not match k.shape[1] (16)",
    );
}

// ---- serving fields: head_dim_v, sink, mm_prefix_ranges ----

/// A V whose head dim differs from q/k's is flare's head_dim_v; out follows v.
#[test]
fn head_dim_v_comes_from_v() {
    let (dk, dv) = (192usize, 128usize);
    let q_m = Fake::new(B * SQ * H * dk * 2);
    let k_m = Fake::new(B * SK * HK * dk * 2);
    let v_m = Fake::new(B * SK * HK * dv * 2);
    let o_m = Fake::new(B * SQ * H * dk * 2);
    let q = q_m.t(DType::F16, &[B, SQ, H, dk]);
    let k = k_m.t(DType::F16, &[B, SK, HK, dk]);
    let v = v_m.t(DType::F16, &[B, SK, HK, dv]);
    let mut o = o_m.t(DType::F16, &[B, SQ, H, dv]);
    let p = MhaParams::prefill(&q, &k, &v, &mut o).unwrap();
    let raw = p.as_raw();
    assert_eq!((raw.head_dim, raw.head_dim_v), (192, 128));
    assert_eq!((raw.v_batch_stride, raw.v_row_stride, raw.v_head_stride), ((SK * HK * dv) as i64, (HK * dv) as i64, dv as i64));
    assert_eq!((raw.out_batch_stride, raw.out_row_stride, raw.out_head_stride), ((SQ * H * dv) as i64, (H * dv) as i64, dv as i64));
    // A valid pair: the library answers it.
    expect_feature_answered(p.workspace_size(0), "head_dim_v (128) != head_dim (192)");
    expect_feature_answered(p.can_implement(0, &Launch::default()), "head_dim_v (128) != head_dim (192)");

    // out must follow v, not q.
    let mut o_q = o_m.t(DType::F16, &[B, SQ, H, dk]);
    expect_err(MhaParams::prefill(&q, &k, &v, &mut o_q), Status::InvalidArgument, "out.shape[3] (192) must equal v.shape[3] (128)");
    // A pair flare does not accept: its own status and message.
    let q64 = q_m.t(DType::F16, &[B, SQ, H, 64]);
    let k64 = k_m.t(DType::F16, &[B, SK, HK, 64]);
    let v32 = v_m.t(DType::F16, &[B, SK, HK, 32]);
    let mut o32 = o_m.t(DType::F16, &[B, SQ, H, 32]);
    let p = MhaParams::prefill(&q64, &k64, &v32, &mut o32).unwrap();
    assert_eq!(p.as_raw().head_dim_v, 32);
    expect_err(p.workspace_size(0), Status::UnsupportedHeadDim, "head_dim_v (32) with head_dim (64) is not supported");

    // Equal dims: head_dim_v is that dim, which flare treats as head_dim.
    let m = Qkvo::new();
    let (q, k, v, mut o) = m.tensors();
    assert_eq!(MhaParams::prefill(&q, &k, &v, &mut o).unwrap().as_raw().head_dim_v, D as i32);

    // Varlen, paged varlen and the KV cache read d_v from v the same way.
    let qv = q_m.t(DType::F16, &[20, H, dk]);
    let kv3 = k_m.t(DType::F16, &[30, HK, dk]);
    let vv3 = v_m.t(DType::F16, &[30, HK, dv]);
    let mut ov = o_m.t(DType::F16, &[20, H, dv]);
    let aux = Fake::new(4096);
    let cu = aux.t(DType::I32, &[B + 1]);
    let p = MhaParams::varlen(&qv, &kv3, &vv3, &mut ov, &cu, &cu, 12, 20).unwrap();
    assert_eq!((p.as_raw().head_dim, p.as_raw().head_dim_v), (192, 128));
    let kpool = k_m.t(DType::F16, &[4, 16, HK, dk]);
    let vpool = v_m.t(DType::F16, &[4, 16, HK, dv]);
    let table = aux.t(DType::I32, &[B, 2]);
    let p = MhaParams::varlen_paged(&qv, &kpool, &vpool, &mut ov, &table, &cu, &cu, 12, 32).unwrap();
    assert_eq!((p.as_raw().head_dim, p.as_raw().head_dim_v), (192, 128));
    let mut ov_q = o_m.t(DType::F16, &[20, H, dk]);
    expect_err(
        MhaParams::varlen_paged(&qv, &kpool, &vpool, &mut ov_q, &table, &cu, &cu, 12, 32),
        Status::InvalidArgument,
        "out.shape[2] (192) must equal v_pool.shape[3] (128)",
    );
    let qd = q_m.t(DType::F16, &[B, 1, H, dk]);
    let mut od = o_m.t(DType::F16, &[B, 1, H, dv]);
    let mut kc = k_m.t(DType::F16, &[B, SK, HK, dk]);
    let mut vc = v_m.t(DType::F16, &[B, SK, HK, dv]);
    let seqlens = aux.t(DType::I32, &[B]);
    let new_m = Fake::new(B * 2 * HK * dk * 2);
    let k_new = new_m.t(DType::F16, &[B, 2, HK, dk]);
    let v_new = new_m.t(DType::F16, &[B, 2, HK, dv]);
    let p = MhaParams::kv_cache(&qd, &mut kc, &mut vc, &mut od, &KvCache::new(&seqlens).append(&k_new, &v_new)).unwrap();
    assert_eq!((p.as_raw().head_dim, p.as_raw().head_dim_v), (192, 128));
    expect_err(
        MhaParams::kv_cache(&qd, &mut kc, &mut vc, &mut od, &KvCache::new(&seqlens).append(&k_new, &k_new)),
        Status::InvalidArgument,
        "v_new.shape[3] (192) must equal v_cache.shape[3] (128)",
    );
}

#[test]
fn sink_reaches_the_library() {
    let m = Qkvo::new();
    let (q, k, v, mut o) = m.tensors();
    let aux = Fake::new(256);
    let sink = aux.t(DType::F32, &[H]);
    let p = MhaParams::prefill(&q, &k, &v, &mut o).unwrap().sink(&sink).unwrap();
    assert_eq!(p.as_raw().sink as *const c_void, aux.ptr());
    // Nothing left to refuse but the device (the GPU tests run sinks).
    if !testutil::cuda::have_gpu() {
        expect_device_error(p.workspace_size(0).map(|_| ()));
        expect_device_error(p.run(&Launch::default()));
    }

    let sink_kv = aux.t(DType::F32, &[HK]);
    expect_err(
        MhaParams::prefill(&q, &k, &v, &mut o).unwrap().sink(&sink_kv),
        Status::InvalidArgument,
        "sink must have shape [4], got [2]",
    );
    let sink_f16 = aux.t(DType::F16, &[H]);
    expect_err(MhaParams::prefill(&q, &k, &v, &mut o).unwrap().sink(&sink_f16), Status::InvalidArgument, "sink must be fp32, got fp16");
    // A sink off its 4-byte alignment: the library's check.
    let sink_off = aux.offset(2, DType::F32, &[H]);
    expect_err(
        MhaParams::prefill(&q, &k, &v, &mut o).unwrap().sink(&sink_off).unwrap().workspace_size(0),
        Status::Misaligned,
        "sink",
    );
}

#[test]
fn mm_prefix_ranges_reach_the_library() {
    let m = Qkvo::new();
    let (q, k, v, mut o) = m.tensors();
    let aux = Fake::new(1024);
    let ranges = aux.t(DType::I32, &[B, 3, 2]);
    let p = MhaParams::prefill(&q, &k, &v, &mut o).unwrap().mm_prefix_ranges(&ranges, 2).unwrap();
    let raw = p.as_raw();
    assert_eq!(raw.mm_prefix_ranges as *const c_void, aux.ptr());
    assert_eq!((raw.mm_prefix_ranges_batch_stride, raw.max_mm_prefix_ranges), (6, 2));
    // Nothing left to refuse but the device (the GPU tests run ranges).
    if !testutil::cuda::have_gpu() {
        expect_device_error(p.workspace_size(0).map(|_| ()));
        expect_device_error(p.run(&Launch::default()));
    }

    // A batch stride wider than the ranges: the tensor's own.
    let wide = aux.strided(DType::I32, &[B, 1, 2], &[8, 2, 1]);
    let p = MhaParams::prefill(&q, &k, &v, &mut o).unwrap().mm_prefix_ranges(&wide, 1).unwrap();
    assert_eq!((p.as_raw().mm_prefix_ranges_batch_stride, p.as_raw().max_mm_prefix_ranges), (8, 1));

    // The builder's checks of the tensor.
    for (t, needle) in [
        (aux.t(DType::I32, &[B, 2]), "mm_prefix_ranges must have 3 dimensions, got 2"),
        (aux.t(DType::F32, &[B, 1, 2]), "mm_prefix_ranges must be int32, got fp32"),
        (aux.t(DType::I32, &[B + 1, 1, 2]), "mm_prefix_ranges.shape[0] (3) must equal the batch (2)"),
        (aux.t(DType::I32, &[B, 1, 3]), "mm_prefix_ranges.shape[2] (3) must equal the [start, end) pair size (2)"),
        (aux.strided(DType::I32, &[B, 2, 2], &[8, 4, 1]), "mm_prefix_ranges.strides[1] (4) must be 2"),
    ] {
        expect_err(MhaParams::prefill(&q, &k, &v, &mut o).unwrap().mm_prefix_ranges(&t, 1), Status::InvalidArgument, needle);
    }
    expect_err(
        MhaParams::prefill(&q, &k, &v, &mut o).unwrap().mm_prefix_ranges(&ranges, 4),
        Status::InvalidArgument,
        "max_ranges (4) exceeds the 3 ranges per sequence",
    );
    // The library's check of the pointer.
    let off = aux.offset(2, DType::I32, &[B, 1, 2]);
    expect_err(
        MhaParams::prefill(&q, &k, &v, &mut o).unwrap().mm_prefix_ranges(&off, 1).unwrap().workspace_size(0),
        Status::Misaligned,
        "mm_prefix_ranges",
    );
    // No range per sequence is no range at all: nothing left to refuse but the device.
    if !testutil::cuda::have_gpu() {
        expect_device_error(MhaParams::prefill(&q, &k, &v, &mut o).unwrap().mm_prefix_ranges(&ranges, 0).unwrap().run(&Launch::default()));
    }
}

/// Valid params pass validation; without a GPU the only error left is the device's.
#[test]
fn valid_calls_fail_only_for_the_device_without_gpu() {
    if testutil::cuda::have_gpu() {
        eprintln!("skipped: a GPU is present (the GPU tests run these calls)");
        return;
    }
    let m = Qkvo::new();
    let (q, k, v, mut o) = m.tensors();
    expect_device_error(MhaParams::prefill(&q, &k, &v, &mut o).unwrap().can_implement(0, &Launch::default()));
    expect_device_error(flare::flash_attn(&q, &k, &v, &mut o, 0.125, true, &Launch::default()));
    let opts = AttnOptions { causal: true, ..AttnOptions::default() };
    let qd = m.q.t(DType::F16, &[B, 1, H, D]);
    let mut od = m.o.t(DType::F16, &[B, 1, H, D]);
    let (mut kc, mut vc) = (m.k.t(DType::F16, &[B, SK, HK, D]), m.v.t(DType::F16, &[B, SK, HK, D]));
    let aux = Fake::new(64);
    let seqlens = aux.t(DType::I32, &[B]);
    expect_device_error(flare::flash_attn_with_kvcache(&qd, &mut kc, &mut vc, &mut od, &KvCache::new(&seqlens), &opts, &Launch::default()));
}

/// The family functions report the builders' errors without calling the library.
#[test]
fn family_functions_report_builder_errors() {
    let m = Qkvo::new();
    let (q, k, v, _) = m.tensors();
    let mut o_bad = m.o.t(DType::F16, &[B, SQ, H, D / 2]);
    expect_err(
        flare::flash_attn_windowed(&q, &k, &v, &mut o_bad, 0.1, Some(4), Some(0), &Launch::default()),
        Status::InvalidArgument,
        "out.shape[3] (32) must equal v.shape[3] (64)",
    );
    let slopes = Fake::new(64);
    let sl = slopes.t(DType::I32, &[H]);
    let mut o = m.o.t(DType::F16, &[B, SQ, H, D]);
    expect_err(
        flare::flash_attn_alibi(&q, &k, &v, &mut o, &sl, 0.1, false, &Launch::default()),
        Status::InvalidArgument,
        "alibi_slopes must be fp32, got int32",
    );
}

// ---- statuses, version ----

#[test]
fn status_strings_come_from_the_library() {
    let all = [
        Status::InvalidArgument,
        Status::Misaligned,
        Status::UnsupportedDtype,
        Status::UnsupportedHeadDim,
        Status::NotSupported,
        Status::ArchNotSupported,
        Status::WorkspaceTooSmall,
        Status::Cuda,
    ];
    let mut seen = std::collections::BTreeSet::new();
    for s in all {
        assert_eq!(Status::from_raw(s.raw()), Some(s));
        let text = unsafe { core::ffi::CStr::from_ptr(flare::sys::flare_status_string(s.raw())) };
        assert_eq!(s.description(), text.to_str().unwrap());
        assert_ne!(s.description(), "unknown status", "{s:?} ({}) has no string", s.raw());
        assert!(seen.insert(s.description()), "{s:?} repeats {:?}", s.description());
    }
    assert_eq!(Status::from_raw(flare::sys::FLARE_OK), None);
    assert_eq!(Status::from_raw(1234), Some(Status::Other(1234)));
    assert_eq!(Status::Other(1234).description(), "unknown status");
    assert_eq!(Status::InvalidArgument.description(), "invalid argument");
    assert_eq!(Status::Cuda.description(), "CUDA error");
    let e = Error::new(Status::Misaligned, "q is off");
    assert_eq!(e.to_string(), "misaligned pointer or stride: q is off");
}

/// FLARE_ERROR_NO_DEVICE (9) came with the library's validate-before-CUDA change; its string
/// is the library's like every other.
#[test]
fn no_device_status_has_a_string() {
    let s = Status::NoDevice;
    assert_eq!(s.raw(), 9);
    assert_eq!(Status::from_raw(9), Some(s));
    assert_ne!(s.description(), "unknown status", "flare_status_string(9) is not defined");
    assert_ne!(s.description(), Status::Cuda.description());
}

#[test]
fn version_and_build_info() {
    let v = flare::version();
    let want = format!(
        "{}.{}.{}",
        flare::sys::FLARE_VERSION_MAJOR,
        flare::sys::FLARE_VERSION_MINOR,
        flare::sys::FLARE_VERSION_PATCH
    );
    assert_eq!(v, want);
    let info = flare::build_info();
    for key in ["version", "cuda_runtime", "archs", "dtypes", "head_dims", "tuning"] {
        assert!(
            info.lines().any(|l| l.starts_with(&format!("{key}="))),
            "build_info lacks {key}=: {info:?}"
        );
    }
    assert!(info.lines().any(|l| l == format!("version={want}")), "{info:?}");
}

#[test]
fn half_conversions_round_to_nearest_even() {
    use testutil::half::*;
    assert_eq!(f32_to_f16(1.0), 0x3c00);
    assert_eq!(f32_to_f16(-2.0), 0xc000);
    assert_eq!(f32_to_f16(65504.0), 0x7bff);
    assert_eq!(f32_to_f16(1e6), 0x7c00);
    assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
    assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00); // tie to even
    assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3f80); // tie to even
    assert_eq!(bf16_to_f32(0x4049), 3.140625);
    for x in [0.1f32, -0.7, 3.5, 1e-3] {
        assert!((f16_to_f32(f32_to_f16(x)) - x).abs() <= x.abs() * 2f32.powi(-11));
        assert!((bf16_to_f32(f32_to_bf16(x)) - x).abs() <= x.abs() * 2f32.powi(-8));
    }
}

#[test]
fn reference_matches_a_hand_computed_case() {
    use testutil::reference::*;
    // One head, d = 1, two keys: softmax([1*1, 1*3] * 0.5) over values [2, 4].
    let spec = Spec::new(0.5);
    let r = attend(&[1.0], &[1.0, 3.0], &[2.0, 4.0], 1, 2, 1, 1, 1, &spec);
    let (p0, p1) = (0.5f64.exp(), 1.5f64.exp());
    assert!((r.out[0] - (2.0 * p0 + 4.0 * p1) / (p0 + p1)).abs() < 1e-12);
    assert!((r.lse[0] - (p0 + p1).ln()).abs() < 1e-12);
    // Causal with sq = sk = 2: row 0 sees key 0 only.
    let spec = Spec { causal: true, ..Spec::new(1.0) };
    let r = attend(&[1.0, 1.0], &[1.0, 3.0], &[2.0, 4.0], 2, 2, 1, 1, 1, &spec);
    assert_eq!(r.out[0], 2.0);
    // A zero-width window sees the diagonal key only (bottom-right: key 2 for sq 1, sk 3).
    let spec = Spec { window_left: 0, window_right: 0, ..Spec::new(1.0) };
    let r = attend(&[1.0], &[1.0, 3.0, 5.0], &[2.0, 4.0, 6.0], 1, 3, 1, 1, 1, &spec);
    assert_eq!(r.out[0], 6.0);
    assert!(!spec.visible(0, 0, 1, 3));
    // Causal with more queries than keys: row 0 sees nothing (out 0, lse -inf).
    let spec = Spec { causal: true, ..Spec::new(1.0) };
    let r = attend(&[1.0, 1.0], &[1.0], &[2.0], 2, 1, 1, 1, 1, &spec);
    assert_eq!((r.out[0], r.lse[0], r.out[1]), (0.0, f64::NEG_INFINITY, 2.0));
}

#[test]
fn reference_serving_rules_match_hand_computed_cases() {
    use testutil::reference::*;
    let (p0, p1) = (0.5f64.exp(), 1.5f64.exp());
    // A sink z = 1 joins the denominator only: softmax over [0.5, 1.5] and z, values [2, 4].
    let spec = Spec { sink: vec![1.0], ..Spec::new(0.5) };
    let r = attend(&[1.0], &[1.0, 3.0], &[2.0, 4.0], 1, 2, 1, 1, 1, &spec);
    let z = 1f64.exp();
    assert!((r.out[0] - (2.0 * p0 + 4.0 * p1) / (z + p0 + p1)).abs() < 1e-12);
    assert!((r.lse[0] - (z + p0 + p1).ln()).abs() < 1e-12);
    // A sink far above every score is the max: the output vanishes, lse is about the sink.
    let spec = Spec { sink: vec![100.0], ..Spec::new(0.5) };
    let r = attend(&[1.0], &[1.0, 3.0], &[2.0, 4.0], 1, 2, 1, 1, 1, &spec);
    assert!(r.out[0].abs() < 1e-40 && (r.lse[0] - 100.0).abs() < 1e-12);
    // A row that sees no key: out 0 and lse = the sink; a -inf sink is no sink.
    let spec = Spec { causal: true, sink: vec![0.25], ..Spec::new(1.0) };
    let r = attend(&[1.0, 1.0], &[1.0], &[2.0], 2, 1, 1, 1, 1, &spec);
    assert_eq!((r.out[0], r.lse[0]), (0.0, 0.25));
    let spec = Spec { sink: vec![f64::NEG_INFINITY], ..Spec::new(0.5) };
    let r = attend(&[1.0], &[1.0, 3.0], &[2.0, 4.0], 1, 2, 1, 1, 1, &spec);
    assert!((r.out[0] - (2.0 * p0 + 4.0 * p1) / (p0 + p1)).abs() < 1e-12);

    // Prefix range [0, 2) with causal, sq = sk = 3, equal scores: row 0 sees keys 0 and 1
    // (the range), row 1 keys 0 and 1, row 2 (outside the range) keys 0..2 by the mask.
    let spec = Spec { causal: true, mm_ranges: vec![(0, 2)], ..Spec::new(1.0) };
    let r = attend(&[1.0; 3], &[1.0; 3], &[2.0, 4.0, 6.0], 3, 3, 1, 1, 1, &spec);
    assert_eq!((r.out[0], r.out[1], r.out[2]), (3.0, 3.0, 4.0));
    assert!(spec.visible(0, 1, 3, 3) && !spec.visible(1, 2, 3, 3));
    // An empty range (start == end) opens nothing; a range past the window opens keys to the
    // left: window_left 0, range [0, 3), row 2 sees all three keys.
    let spec = Spec { causal: true, mm_ranges: vec![(1, 1)], ..Spec::new(1.0) };
    assert!(!spec.visible(0, 1, 3, 3));
    let spec = Spec { window_left: 0, window_right: 0, mm_ranges: vec![(0, 3)], ..Spec::new(1.0) };
    let r = attend(&[1.0; 3], &[1.0; 3], &[2.0, 4.0, 6.0], 3, 3, 1, 1, 1, &spec);
    assert_eq!(r.out[2], 4.0);

    // head_dim_v 2 with head_dim 1: v rows [2, 20] and [4, 40].
    let r = attend_dv(&[1.0], &[1.0, 3.0], &[2.0, 20.0, 4.0, 40.0], 1, 2, 1, 1, 1, 2, &Spec::new(0.5));
    let w = (p0 / (p0 + p1), p1 / (p0 + p1));
    assert!((r.out[0] - (2.0 * w.0 + 4.0 * w.1)).abs() < 1e-12);
    assert!((r.out[1] - (20.0 * w.0 + 40.0 * w.1)).abs() < 1e-12);
    // The low-precision twin rounds at the same points with the same layout.
    let n = attend_lowp_dv(&[1.0], &[1.0, 3.0], &[2.0, 20.0, 4.0, 40.0], 1, 2, 1, 1, 1, 2, &Spec::new(0.5), &|x| x);
    assert_eq!(n.out.len(), 2);
    assert!((n.out[1] - r.out[1]).abs() < 1e-5);
}

/// The GPU tests' bound is attainable: a correctly rounded result (float64 rounded to the
/// dtype) passes it for the shapes and options those tests use, in both dtypes.
#[test]
fn error_bound_accepts_a_correctly_rounded_result() {
    use testutil::half::{round, Rng};
    use testutil::reference::*;
    for (dtype, sq, sk, h, hk, d, causal, softcap) in [
        (DType::F16, 37, 70, 4, 2, 64, true, 0.0),
        (DType::BF16, 37, 70, 4, 2, 64, false, 0.0),
        (DType::F16, 24, 50, 4, 2, 96, false, 1.5),
        (DType::BF16, 4, 100, 4, 2, 256, true, 0.0),
    ] {
        let mut rng = Rng::new(3);
        let (_, q) = rng.tensor(dtype, sq * h * d);
        let (_, k) = rng.tensor(dtype, sk * hk * d);
        let (_, v) = rng.tensor(dtype, sk * hk * d);
        let spec = Spec { causal, softcap, ..Spec::new(if softcap > 0.0 { 2.0 } else { 1.0 / (d as f64).sqrt() }) };
        let exact = attend(&q, &k, &v, sq, sk, h, hk, d, &spec);
        let naive = attend_lowp(&q, &k, &v, sq, sk, h, hk, d, &spec, &|x| round(dtype, x));
        let perfect: Vec<f32> = exact.out.iter().map(|&x| round(dtype, x as f32)).collect();
        assert_within_bound(&format!("{dtype:?} d{d}"), &perfect, &exact.out, &naive.out);
    }
}
