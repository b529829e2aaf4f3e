//! candle-flash-attn's test cases replayed through `run_mha` as candle declares it
//! (`flare_sys::candle::run_mha`, linked from flare_candle), with candle's argument
//! conventions: strides of transposed views, padded LSE [b, h, seqlen_q] (over-allocated by
//! candle, exact here), varlen with unpadded LSE [h, total_q], `d_rounded` / `*_rounded` as
//! candle computes them (ignored by flare), window -1 unbounded.
//!
//! Each output is poisoned with NaN first; every element must be written and within 5e-3 of
//! the host reference (float64 arithmetic on the same fp16/bf16 inputs: at least as exact as
//! candle's fp32 reference), the lse within 1e-3, and `flare_candle_last_error()` null.
//! That includes the serving cases of candle-flash-attn: paged K/V with a shuffled block table
//! (padded and varlen, d256 and d512, any page size) and multimodal prefix ranges with a window.
//! Without a GPU each test prints one "skipped" line and passes.
#[path = "../../testutil/mod.rs"]
mod testutil;

use core::ffi::{c_void, CStr};
use core::ptr::{null, null_mut};

use flare::sys::candle::{flare_candle_last_error, run_mha};
use flare::DType;
use testutil::cuda::DeviceVec;
use testutil::half::{self, Rng};
use testutil::reference::{attend, max_abs_diff, Spec};

const TOL: f64 = 5e-3;

/// Every argument of run_mha, with candle's defaults for the optional ones.
#[derive(Clone)]
struct Call {
    q: *const c_void,
    k: *const c_void,
    v: *const c_void,
    o: *const c_void,
    lse: *const c_void,
    alibi: *const c_void,
    cu_q: *const i32,
    cu_k: *const i32,
    batch_strides: [u32; 4], // q, k, v, o
    row_strides: [u32; 4],
    head_strides: [u32; 4],
    b: u32,
    h: u32,
    h_k: u32,
    d: u32,
    scale: f32,
    seqlen_q: u32,
    seqlen_k: u32,
    total_q: u32,
    is_bf16: i32,
    is_causal: i32,
    unpadded_lse: i32,
    window_left: i32,
    window_right: i32,
    softcap: f32,
    block_table: *const i32,
    block_table_batch_stride: u32,
    page_block_size: i32,
    mm_prefix_ranges: *const i32,
    mm_prefix_range_batch_stride: u32,
    max_mm_prefix_ranges: i32,
}

fn round_up(x: u32, m: u32) -> u32 {
    x.div_ceil(m) * m
}

impl Call {
    fn new(b: u32, h: u32, h_k: u32, d: u32, seqlen_q: u32, seqlen_k: u32) -> Call {
        Call {
            q: null(),
            k: null(),
            v: null(),
            o: null(),
            lse: null(),
            alibi: null(),
            cu_q: null(),
            cu_k: null(),
            batch_strides: [0; 4],
            row_strides: [0; 4],
            head_strides: [0; 4],
            b,
            h,
            h_k,
            d,
            scale: 1.0 / (d as f32).sqrt(),
            seqlen_q,
            seqlen_k,
            total_q: b * seqlen_q,
            is_bf16: 0,
            is_causal: 0,
            unpadded_lse: 0,
            window_left: -1,
            window_right: -1,
            softcap: 0.0,
            block_table: null(),
            block_table_batch_stride: 0,
            page_block_size: -1,
            mm_prefix_ranges: null(),
            mm_prefix_range_batch_stride: 0,
            max_mm_prefix_ranges: 0,
        }
    }

    /// Contiguous [b, s, h, d] q/o and [b, s, h_k, d] k/v.
    fn contiguous(mut self) -> Call {
        let (h, hk, d) = (self.h, self.h_k, self.d);
        self.batch_strides = [self.seqlen_q * h * d, self.seqlen_k * hk * d, self.seqlen_k * hk * d, self.seqlen_q * h * d];
        self.row_strides = [h * d, hk * d, hk * d, h * d];
        self.head_strides = [d; 4];
        self
    }

    /// Runs it; None when it succeeded, else the refusal.
    fn run(&self) -> Option<String> {
        let [qb, kb, vb, ob] = self.batch_strides;
        let [qr, kr, vr, or] = self.row_strides;
        let [qh, kh, vh, oh] = self.head_strides;
        // SAFETY: the pointers are device allocations of the test covering the described
        // tensors (or null where optional).
        unsafe {
            run_mha(
                self.q, self.k, self.v, self.o, self.lse, self.alibi, self.cu_q, self.cu_k, qb, kb, vb, ob, 0, qr, kr,
                vr, or, qh, kh, vh, oh, self.b, self.h, self.h_k, self.d, round_up(self.d, 32), self.scale,
                self.seqlen_q, self.seqlen_k, round_up(self.seqlen_q, 128), round_up(self.seqlen_k, 128),
                self.total_q, self.is_bf16, self.is_causal, self.unpadded_lse, self.window_left,
                self.window_right, self.softcap, self.block_table, self.block_table_batch_stride,
                self.page_block_size, self.mm_prefix_ranges, self.mm_prefix_range_batch_stride,
                self.max_mm_prefix_ranges, null_mut(),
            );
            let e = flare_candle_last_error();
            (!e.is_null()).then(|| CStr::from_ptr(e).to_string_lossy().into_owned())
        }
    }
}

fn f16(x: f32) -> f32 {
    half::round(DType::F16, x)
}

/// candle's test tensor: arange(0, 48) in fp16 reshaped [1, 3, 2, 8], divided by `div` in
/// fp16. Element (head, row, c) as a host value.
fn arange_tensor(div: f32) -> Vec<f32> {
    (0..48).map(|i| f16(f16(i as f32) / div)).collect()
}

/// [seq, heads, d] rows for the reference from candle's [heads, seq, d] data.
fn rows_from_heads(x: &[f32], heads: usize, seq: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for hh in 0..heads {
        for s in 0..seq {
            for c in 0..d {
                out[(s * heads + hh) * d + c] = x[(hh * seq + s) * d + c];
            }
        }
    }
    out
}

/// candle's test tensors: q, k, v = arange(48) / 30, 40, 50 in fp16, [heads 3, seq 2, d 8], on
/// the device as they are and, for the reference, as [seq, heads, d] rows.
struct CandleQkv {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dq: DeviceVec,
    dk: DeviceVec,
    dv: DeviceVec,
}

impl CandleQkv {
    fn new() -> CandleQkv {
        let (h, s, d) = (3, 2, 8);
        let upload = |x: &[f32]| DeviceVec::upload(&bits(DType::F16, x), DType::F16, &[48]);
        let (q, k, v) = (arange_tensor(30.0), arange_tensor(40.0), arange_tensor(50.0));
        CandleQkv {
            dq: upload(&q),
            dk: upload(&k),
            dv: upload(&v),
            q: rows_from_heads(&q, h, s, d),
            k: rows_from_heads(&k, h, s, d),
            v: rows_from_heads(&v, h, s, d),
        }
    }
}

fn bits(dtype: DType, x: &[f32]) -> Vec<u16> {
    x.iter().map(|&v| half::to_bits(dtype, v)).collect()
}

fn download(dtype: DType, t: &DeviceVec, n: usize) -> Vec<f32> {
    t.download::<u16>()[..n].iter().map(|&b| half::from_bits(dtype, b)).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert!(got.iter().all(|x| x.is_finite()), "{what}: an element is not finite (unwritten or NaN)");
    let err = max_abs_diff(got, want);
    assert!(err < tol, "{what}: max |diff| = {err:.3e} >= {tol:e}");
    eprintln!("{what}: max |diff| {err:.2e}");
}

/// candle's acausal case (and the same data with a softcap): q, k, v of [1, 3, 2, 8] seen by
/// flash_attn as [b=1, seq=2, heads=3, d=8] through transpose(1, 2): batch stride 48, row
/// stride 8, head stride 16; the output contiguous [1, 2, 3, 8].
#[test]
fn candle_acausal_and_softcap() {
    require_gpu!();
    let (h, s, d) = (3usize, 2usize, 8usize);
    let t = CandleQkv::new();
    for softcap in [0.0f32, 2.0] {
        let dout = DeviceVec::upload(&[half::nan_bits(DType::F16); 48], DType::F16, &[48]);
        let dlse = DeviceVec::upload(&vec![f32::NAN; h * s], DType::F32, &[h * s]);
        let mut c = Call::new(1, h as u32, h as u32, d as u32, s as u32, s as u32);
        (c.q, c.k, c.v, c.o, c.lse) = (t.dq.ptr(), t.dk.ptr(), t.dv.ptr(), dout.ptr(), dlse.ptr());
        c.batch_strides = [48; 4];
        c.row_strides = [8, 8, 8, 24];
        c.head_strides = [16, 16, 16, 8];
        c.scale = 0.5;
        c.softcap = softcap;
        assert_eq!(c.run(), None);
        let spec = Spec { softcap: softcap as f64, ..Spec::new(0.5) };
        let r = attend(&t.q, &t.k, &t.v, s, s, h, h, d, &spec);
        assert_close(&format!("acausal softcap={softcap}"), &download(DType::F16, &dout, 48), &r.out, TOL);
        assert_close("acausal lse", &dlse.download::<f32>(), &r.lse, 1e-3);
    }
}

/// candle's varlen case: q, k, v [3, 2, 8] seen as [total=2, heads=3, d=8] through
/// transpose(0, 1) (row stride 8, head stride 16), one sequence [0, 2], max lengths 32 / 32,
/// unpadded lse [h, total_q].
#[test]
fn candle_varlen() {
    require_gpu!();
    let (h, s, d) = (3usize, 2usize, 8usize);
    let t = CandleQkv::new();
    let dout = DeviceVec::upload(&[half::nan_bits(DType::F16); 48], DType::F16, &[48]);
    let dlse = DeviceVec::upload(&vec![f32::NAN; h * s], DType::F32, &[h * s]);
    let cu = DeviceVec::upload(&[0i32, 2], DType::I32, &[2]);
    let mut c = Call::new(1, h as u32, h as u32, d as u32, 32, 32);
    (c.q, c.k, c.v, c.o, c.lse) = (t.dq.ptr(), t.dk.ptr(), t.dv.ptr(), dout.ptr(), dlse.ptr());
    (c.cu_q, c.cu_k) = (cu.ptr() as *const i32, cu.ptr() as *const i32);
    c.row_strides = [8, 8, 8, 24];
    c.head_strides = [16, 16, 16, 8];
    c.total_q = 2;
    c.unpadded_lse = 1;
    c.scale = 0.5;
    assert_eq!(c.run(), None);
    let r = attend(&t.q, &t.k, &t.v, s, s, h, h, d, &Spec::new(0.5));
    assert_close("varlen", &download(DType::F16, &dout, 48), &r.out, TOL);
    assert_close("varlen lse", &dlse.download::<f32>(), &r.lse, 1e-3);
}

/// Split-KV: batch 1, 2 heads, 8 queries over 512 keys, d64 (run_mha takes the workspace from
/// the stream-ordered allocator), non-causal and causal, fp16 and bf16.
#[test]
fn candle_split_kv() {
    require_gpu!();
    let (b, h, sq, sk, d) = (1usize, 2usize, 8usize, 512usize, 64usize);
    for (dtype, causal) in [(DType::F16, false), (DType::F16, true), (DType::BF16, false)] {
        let mut rng = Rng::new(7);
        let (qb, q) = rng.tensor(dtype, b * sq * h * d);
        let (kb, k) = rng.tensor(dtype, b * sk * h * d);
        let (vb, v) = rng.tensor(dtype, b * sk * h * d);
        let dq = DeviceVec::upload(&qb, dtype, &[qb.len()]);
        let dk = DeviceVec::upload(&kb, dtype, &[kb.len()]);
        let dv = DeviceVec::upload(&vb, dtype, &[vb.len()]);
        let dout = DeviceVec::upload(&vec![half::nan_bits(dtype); qb.len()], dtype, &[qb.len()]);
        let dlse = DeviceVec::upload(&vec![f32::NAN; b * h * sq], DType::F32, &[b * h * sq]);
        let mut c = Call::new(b as u32, h as u32, h as u32, d as u32, sq as u32, sk as u32).contiguous();
        (c.q, c.k, c.v, c.o, c.lse) = (dq.ptr(), dk.ptr(), dv.ptr(), dout.ptr(), dlse.ptr());
        c.is_bf16 = (dtype == DType::BF16) as i32;
        // candle's causal: window (None, Some(0)) becomes is_causal = 1, left = seqlen_k, right = 0.
        if causal {
            (c.is_causal, c.window_left, c.window_right) = (1, sk as i32, 0);
        }
        assert_eq!(c.run(), None);
        let spec = Spec { causal, ..Spec::new(1.0 / (d as f64).sqrt()) };
        let r = attend(&q, &k, &v, sq, sk, h, h, d, &spec);
        assert_close(&format!("split-KV {dtype:?} causal={causal}"), &download(dtype, &dout, qb.len()), &r.out, TOL);
        assert_close("split-KV lse", &dlse.download::<f32>(), &r.lse, 1e-3);
    }
}

/// A sliding window with GQA and ALiBi, as candle's windowed / alibi functions pass them.
#[test]
fn candle_window_alibi_gqa() {
    require_gpu!();
    let (b, h, hk, sq, sk, d) = (2usize, 4usize, 2usize, 24usize, 80usize, 128usize);
    let mut rng = Rng::new(8);
    let (qb, q) = rng.tensor(DType::F16, b * sq * h * d);
    let (kb, k) = rng.tensor(DType::F16, b * sk * hk * d);
    let (vb, v) = rng.tensor(DType::F16, b * sk * hk * d);
    let slopes: Vec<f32> = (0..h).map(|i| 0.25 / (i + 1) as f32).collect();
    let dq = DeviceVec::upload(&qb, DType::F16, &[qb.len()]);
    let dk = DeviceVec::upload(&kb, DType::F16, &[kb.len()]);
    let dv = DeviceVec::upload(&vb, DType::F16, &[vb.len()]);
    let ds = DeviceVec::upload(&slopes, DType::F32, &[h]);
    let dout = DeviceVec::upload(&vec![half::nan_bits(DType::F16); qb.len()], DType::F16, &[qb.len()]);
    let dlse = DeviceVec::upload(&vec![0f32; b * h * sq], DType::F32, &[b * h * sq]);
    let mut c = Call::new(b as u32, h as u32, hk as u32, d as u32, sq as u32, sk as u32).contiguous();
    (c.q, c.k, c.v, c.o, c.lse, c.alibi) = (dq.ptr(), dk.ptr(), dv.ptr(), dout.ptr(), dlse.ptr(), ds.ptr());
    (c.window_left, c.window_right) = (16, 3);
    assert_eq!(c.run(), None);
    let got = download(DType::F16, &dout, qb.len());
    let mut want = vec![0.0; got.len()];
    for s in 0..b {
        let spec = Spec { window_left: 16, window_right: 3, alibi: slopes.iter().map(|&x| x as f64).collect(), ..Spec::new(1.0 / (d as f64).sqrt()) };
        let r = attend(&q[s * sq * h * d..(s + 1) * sq * h * d], &k[s * sk * hk * d..(s + 1) * sk * hk * d], &v[s * sk * hk * d..(s + 1) * sk * hk * d], sq, sk, h, hk, d, &spec);
        want[s * sq * h * d..(s + 1) * sq * h * d].copy_from_slice(&r.out);
    }
    assert_close("window + alibi + GQA", &got, &want, TOL);
}

/// Paged K/V: a pool of pages in shuffled order and the rows of each sequence through the
/// block table. `varlen` selects candle's paged varlen call (cu_seqlens_k counts the keys).
struct Paged {
    dtype: DType,
    b: usize,
    h: usize,
    hk: usize,
    d: usize,
    sq: usize,
    sk: usize,
    page: usize,
}

impl Paged {
    /// Runs through run_mha; Ok(()) when served and correct, Err(reason) when refused (the
    /// output then untouched).
    fn run(&self, varlen: bool) -> Result<(), String> {
        let Paged { dtype, b, h, hk, d, sq, sk, page } = *self;
        let pages_per_seq = sk.div_ceil(page);
        let pool = b * pages_per_seq + 5;
        let mut rng = Rng::new(11 + d as u64);
        let (qb, q) = rng.tensor(dtype, b * sq * h * d);
        let pools = rng.paged_pools(dtype, pool, page, hk, d, b, pages_per_seq);
        let dq = DeviceVec::upload(&qb, dtype, &[qb.len()]);
        let dk = DeviceVec::upload(&pools.k_bits, dtype, &[pools.k_bits.len()]);
        let dv = DeviceVec::upload(&pools.v_bits, dtype, &[pools.v_bits.len()]);
        let dt = DeviceVec::upload(&pools.table, DType::I32, &[pools.table.len()]);
        let dout = DeviceVec::upload(&vec![half::nan_bits(dtype); qb.len()], dtype, &[qb.len()]);
        let cu_q: Vec<i32> = (0..=b).map(|i| (i * sq) as i32).collect();
        let cu_k: Vec<i32> = (0..=b).map(|i| (i * sk) as i32).collect();
        let dcq = DeviceVec::upload(&cu_q, DType::I32, &[b + 1]);
        let dck = DeviceVec::upload(&cu_k, DType::I32, &[b + 1]);
        let mut c = Call::new(b as u32, h as u32, hk as u32, d as u32, sq as u32, sk as u32).contiguous();
        (c.q, c.k, c.v, c.o) = (dq.ptr(), dk.ptr(), dv.ptr(), dout.ptr());
        c.is_bf16 = (dtype == DType::BF16) as i32;
        c.is_causal = 1;
        (c.window_left, c.window_right) = (sk as i32, 0);
        c.block_table = dt.ptr() as *const i32;
        c.block_table_batch_stride = pages_per_seq as u32;
        c.page_block_size = page as i32;
        // The pools' batch stride is the page stride.
        c.batch_strides[1] = (page * hk * d) as u32;
        c.batch_strides[2] = (page * hk * d) as u32;
        if varlen {
            (c.cu_q, c.cu_k) = (dcq.ptr() as *const i32, dck.ptr() as *const i32);
            c.batch_strides[0] = 0;
            c.batch_strides[3] = 0;
        }
        if let Some(reason) = c.run() {
            let out = download(dtype, &dout, qb.len());
            assert!(out.iter().all(|x| x.is_nan()), "refused ({reason}) but the output was written");
            return Err(reason);
        }
        let got = download(dtype, &dout, qb.len());
        let mut want = vec![0.0; got.len()];
        for s in 0..b {
            let (keys, vals) = pools.sequence(s, sk);
            let spec = Spec { causal: true, ..Spec::new(1.0 / (d as f64).sqrt()) };
            let r = attend(&q[s * sq * h * d..(s + 1) * sq * h * d], &keys, &vals, sq, sk, h, hk, d, &spec);
            want[s * sq * h * d..(s + 1) * sq * h * d].copy_from_slice(&r.out);
        }
        assert_close(&format!("paged varlen={varlen} d{d}"), &got, &want, TOL);
        Ok(())
    }
}

/// Paged K/V with a shuffled block table, as candle's paged tests pass it: a padded batch
/// (flare's KV-cache path) and variable-length queries (flare's paged varlen), at d64, d256 and
/// d512.
#[test]
fn candle_paged_shuffled_block_table() {
    require_gpu!();
    for varlen in [false, true] {
        for d in [64, 256, 512] {
            let p = Paged { dtype: DType::BF16, b: 2, h: 4, hk: 2, d, sq: 4, sk: 100, page: 16 };
            if let Err(reason) = p.run(varlen) {
                panic!("paged varlen={varlen} d{d} refused: {reason}");
            }
        }
    }
}

/// Page sizes that are not a multiple of 16 (SGLang runs 1), padded and varlen, fp16.
#[test]
fn candle_paged_any_page_size() {
    require_gpu!();
    for varlen in [false, true] {
        for page in [1, 3, 48] {
            let p = Paged { dtype: DType::F16, b: 2, h: 4, hk: 2, d: 128, sq: 5, sk: 70, page };
            if let Err(reason) = p.run(varlen) {
                panic!("paged varlen={varlen} page {page} refused: {reason}");
            }
        }
    }
}

/// Multimodal prefix ranges with a sliding window (candle's mm_prefix_ranges with
/// window_size_left / right): an image span the window would cut is seen whole by its own
/// queries. Two ranges per sequence, batch stride 4; sequence 1's first slot is empty.
#[test]
fn candle_mm_prefix_ranges_with_window() {
    require_gpu!();
    let (b, h, hk, sq, sk, d) = (2usize, 4usize, 2usize, 48usize, 48usize, 64usize);
    let ranges: [[(i32, i32); 2]; 2] = [[(2, 6), (20, 40)], [(0, 0), (10, 30)]];
    for (dtype, causal) in [(DType::F16, true), (DType::BF16, false)] {
        let mut rng = Rng::new(12);
        let (qb, q) = rng.tensor(dtype, b * sq * h * d);
        let (kb, k) = rng.tensor(dtype, b * sk * hk * d);
        let (vb, v) = rng.tensor(dtype, b * sk * hk * d);
        let dq = DeviceVec::upload(&qb, dtype, &[qb.len()]);
        let dk = DeviceVec::upload(&kb, dtype, &[kb.len()]);
        let dv = DeviceVec::upload(&vb, dtype, &[vb.len()]);
        let dout = DeviceVec::upload(&vec![half::nan_bits(dtype); qb.len()], dtype, &[qb.len()]);
        let dlse = DeviceVec::upload(&vec![f32::NAN; b * h * sq], DType::F32, &[b * h * sq]);
        let flat: Vec<i32> = ranges.iter().flatten().flat_map(|&(a, e)| [a, e]).collect();
        let dranges = DeviceVec::upload(&flat, DType::I32, &[flat.len()]);
        let mut c = Call::new(b as u32, h as u32, hk as u32, d as u32, sq as u32, sk as u32).contiguous();
        (c.q, c.k, c.v, c.o, c.lse) = (dq.ptr(), dk.ptr(), dv.ptr(), dout.ptr(), dlse.ptr());
        c.is_bf16 = (dtype == DType::BF16) as i32;
        c.is_causal = causal as i32;
        (c.window_left, c.window_right) = (4, if causal { 0 } else { 2 });
        c.mm_prefix_ranges = dranges.ptr() as *const i32;
        c.mm_prefix_range_batch_stride = 4;
        c.max_mm_prefix_ranges = 2;
        assert_eq!(c.run(), None);
        let got = download(dtype, &dout, qb.len());
        let (mut want, mut want_lse) = (vec![0.0; got.len()], Vec::new());
        for s in 0..b {
            let spec = Spec {
                causal,
                window_left: 4,
                window_right: if causal { 0 } else { 2 },
                mm_ranges: ranges[s].iter().map(|&(a, e)| (a as i64, e as i64)).collect(),
                ..Spec::new(1.0 / (d as f64).sqrt())
            };
            let r = attend(&q[s * sq * h * d..(s + 1) * sq * h * d], &k[s * sk * hk * d..(s + 1) * sk * hk * d], &v[s * sk * hk * d..(s + 1) * sk * hk * d], sq, sk, h, hk, d, &spec);
            want[s * sq * h * d..(s + 1) * sq * h * d].copy_from_slice(&r.out);
            want_lse.extend(r.lse);
        }
        assert_close(&format!("mm_prefix_ranges + window {dtype:?} causal={causal}"), &got, &want, TOL);
        assert_close("mm_prefix_ranges lse", &dlse.download::<f32>(), &want_lse, 1e-3);
    }
}

/// On any machine: a refused call names its reason, and a later accepted one clears it.
#[test]
fn refusal_then_success_clears_the_error() {
    let mut c = Call::new(1, 2, 2, 64, 8, 8).contiguous();
    let buf = vec![0u128; 1024];
    let p = buf.as_ptr() as *const c_void;
    (c.q, c.k, c.v, c.o) = (p, p, p, p);
    c.scale = 0.0;
    let reason = c.run().expect("scale 0 accepted");
    assert!(reason.contains("softmax_scale 0"), "{reason}");
    if !testutil::cuda::have_gpu() {
        return;
    }
    let q = DeviceVec::alloc(8 * 2 * 64 * 2);
    let o = DeviceVec::alloc(8 * 2 * 64 * 2);
    (c.q, c.k, c.v, c.o) = (q.ptr(), q.ptr(), q.ptr(), o.ptr());
    c.scale = 0.125;
    assert_eq!(c.run(), None);
}

/// On any machine: the host side of candle_acausal (the tensors, their layout, the
/// reference) reproduces values candle's own test publishes for that case (rounded to 4
/// digits there).
#[test]
fn host_reference_reproduces_candles_published_values() {
    let (h, s, d) = (3usize, 2usize, 8usize);
    let q = rows_from_heads(&arange_tensor(30.0), h, s, d);
    let k = rows_from_heads(&arange_tensor(40.0), h, s, d);
    let v = rows_from_heads(&arange_tensor(50.0), h, s, d);
    let r = attend(&q, &k, &v, s, s, h, h, d, &Spec::new(0.5));
    // (head, row, c) -> value, from candle-flash-attn's flash_attn_acausal expectations.
    for (head, row, c, want) in [(0, 0, 0, 0.0837), (0, 1, 7, 0.2322), (1, 0, 4, 0.5005), (2, 1, 7, 0.9023)] {
        let got = r.out[(row * h + head) * d + c];
        assert!((got - want).abs() < 6e-4, "({head}, {row}, {c}): {got} vs {want}");
    }
}
