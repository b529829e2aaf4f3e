//! GPU tests of the safe API: every function of the candle-flash-attn family, the builders'
//! lse / split-KV / KV-cache paths (16-bit and FP8 caches) and the merge, against the float64
//! host reference.
//!
//! Bound (the project's): every output element written (outputs are poisoned with NaN first)
//! and finite, and max |flare - float64| <= 2 x (the naive low-precision implementation's
//! error) + 1e-5. The lse is checked to 1e-3 absolute (the naive float32 lse is exact to
//! ~1e-6, far below what a kernel's exp2 arithmetic promises).
//! Without a GPU each test prints one "skipped" line and passes.
#[path = "../../testutil/mod.rs"]
mod testutil;

use flare::{AttnOptions, DType, DeviceTensor, KvCache, Launch, MergeParams, MhaParams, Stream};
use testutil::cuda::DeviceVec;
use testutil::half::{self, Rng};
use testutil::reference::{assert_within_bound, attend, attend_dv, attend_lowp, attend_lowp_dv, Attn, Spec};

/// One attention problem: per-sequence query/key counts, heads, head dim, dtype, and whether
/// the tensors are packed (varlen) or padded.
#[derive(Clone)]
struct Problem {
    dtype: DType,
    sqs: Vec<usize>,
    sks: Vec<usize>,
    h: usize,
    hk: usize,
    d: usize,
    varlen: bool,
}

impl Problem {
    fn padded(dtype: DType, b: usize, sq: usize, sk: usize, h: usize, hk: usize, d: usize) -> Problem {
        Problem { dtype, sqs: vec![sq; b], sks: vec![sk; b], h, hk, d, varlen: false }
    }
    fn varlen(dtype: DType, sqs: &[usize], sks: &[usize], h: usize, hk: usize, d: usize) -> Problem {
        Problem { dtype, sqs: sqs.to_vec(), sks: sks.to_vec(), h, hk, d, varlen: true }
    }
    fn b(&self) -> usize {
        self.sqs.len()
    }
    fn total_q(&self) -> usize {
        self.sqs.iter().sum()
    }
    fn total_k(&self) -> usize {
        self.sks.iter().sum()
    }
    /// Row offsets of each sequence in the q/out and k/v tensors.
    fn q_row0(&self, s: usize) -> usize {
        if self.varlen { self.sqs[..s].iter().sum() } else { s * self.sqs[0] }
    }
    fn k_row0(&self, s: usize) -> usize {
        if self.varlen { self.sks[..s].iter().sum() } else { s * self.sks[0] }
    }
    fn q_shape(&self) -> Vec<usize> {
        if self.varlen { vec![self.total_q(), self.h, self.d] } else { vec![self.b(), self.sqs[0], self.h, self.d] }
    }
    fn k_shape(&self) -> Vec<usize> {
        if self.varlen { vec![self.total_k(), self.hk, self.d] } else { vec![self.b(), self.sks[0], self.hk, self.d] }
    }
    fn cu(lens: &[usize]) -> Vec<i32> {
        let mut cu = vec![0i32];
        for l in lens {
            cu.push(cu.last().unwrap() + *l as i32);
        }
        cu
    }
}

/// Host data and its device copies for one problem.
struct Data {
    p: Problem,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dq: DeviceVec,
    dk: DeviceVec,
    dv: DeviceVec,
    dout: DeviceVec,
    cu_q: DeviceVec,
    cu_k: DeviceVec,
}

impl Data {
    fn new(p: &Problem, seed: u64) -> Data {
        let mut rng = Rng::new(seed);
        let nq = p.total_q() * p.h * p.d;
        let nk = p.total_k() * p.hk * p.d;
        let (qb, q) = rng.tensor(p.dtype, nq);
        let (kb, k) = rng.tensor(p.dtype, nk);
        let (vb, v) = rng.tensor(p.dtype, nk);
        let poison = vec![half::nan_bits(p.dtype); nq];
        Data {
            dq: DeviceVec::upload(&qb, p.dtype, &p.q_shape()),
            dk: DeviceVec::upload(&kb, p.dtype, &p.k_shape()),
            dv: DeviceVec::upload(&vb, p.dtype, &p.k_shape()),
            dout: DeviceVec::upload(&poison, p.dtype, &p.q_shape()),
            cu_q: DeviceVec::upload(&Problem::cu(&p.sqs), DType::I32, &[p.b() + 1]),
            cu_k: DeviceVec::upload(&Problem::cu(&p.sks), DType::I32, &[p.b() + 1]),
            p: p.clone(),
            q,
            k,
            v,
        }
    }

    /// float64 and naive references of every sequence, in the output's layout; lse as
    /// [b, h, sq] (padded) or [h, total_q] (varlen).
    fn reference(&self, spec_of: &dyn Fn(usize) -> Spec) -> (Attn, Attn) {
        let p = &self.p;
        let (h, hk, d) = (p.h, p.hk, p.d);
        let mut exact = Attn { out: vec![0.0; self.q.len()], lse: vec![0.0; p.total_q() * h] };
        let mut naive = Attn { out: vec![0.0; self.q.len()], lse: vec![0.0; p.total_q() * h] };
        let dtype = p.dtype;
        for s in 0..p.b() {
            let (sq, sk, q0, k0) = (p.sqs[s], p.sks[s], p.q_row0(s), p.k_row0(s));
            let q = &self.q[q0 * h * d..(q0 + sq) * h * d];
            let k = &self.k[k0 * hk * d..(k0 + sk) * hk * d];
            let v = &self.v[k0 * hk * d..(k0 + sk) * hk * d];
            let spec = spec_of(s);
            let e = attend(q, k, v, sq, sk, h, hk, d, &spec);
            let n = attend_lowp(q, k, v, sq, sk, h, hk, d, &spec, &|x| half::round(dtype, x));
            exact.out[q0 * h * d..(q0 + sq) * h * d].copy_from_slice(&e.out);
            naive.out[q0 * h * d..(q0 + sq) * h * d].copy_from_slice(&n.out);
            for head in 0..h {
                for i in 0..sq {
                    let at = if p.varlen { head * p.total_q() + q0 + i } else { (s * h + head) * sq + i };
                    exact.lse[at] = e.lse[head * sq + i];
                    naive.lse[at] = n.lse[head * sq + i];
                }
            }
        }
        (exact, naive)
    }

    fn out_f32(&self) -> Vec<f32> {
        self.dout.download::<u16>().iter().map(|&b| half::from_bits(self.p.dtype, b)).collect()
    }

    fn check(&self, what: &str, spec_of: &dyn Fn(usize) -> Spec) {
        let (exact, naive) = self.reference(spec_of);
        assert_within_bound(what, &self.out_f32(), &exact.out, &naive.out);
    }
}

fn spec(p: &Problem, causal: bool, wl: i64, wr: i64, softcap: f64, alibi: &[f32]) -> Spec {
    Spec {
        scale: 1.0 / (p.d as f64).sqrt(),
        causal,
        window_left: wl,
        window_right: wr,
        softcap,
        alibi: alibi.iter().map(|&x| x as f64).collect(),
        ..Spec::default()
    }
}

fn slopes(h: usize) -> (Vec<f32>, DeviceVec) {
    let s: Vec<f32> = (0..h).map(|i| 0.5f32.powi(i as i32 + 1)).collect();
    let dev = DeviceVec::upload(&s, DType::F32, &[h]);
    (s, dev)
}

fn scale(p: &Problem) -> f32 {
    1.0 / (p.d as f32).sqrt()
}

fn launch() -> Launch<'static> {
    Launch::on(Stream::DEFAULT)
}

// ---- padded batch ----

#[test]
fn flash_attn_matches_reference() {
    require_gpu!();
    for (dtype, causal) in [(DType::F16, false), (DType::F16, true), (DType::BF16, true)] {
        let p = Problem::padded(dtype, 2, 37, 70, 4, 2, 64);
        let mut t = Data::new(&p, 1);
        flare::flash_attn(&t.dq, &t.dk, &t.dv, &mut t.dout, scale(&p), causal, &launch()).unwrap();
        t.check(&format!("flash_attn {dtype:?} causal={causal}"), &|_| spec(&p, causal, -1, -1, 0.0, &[]));
    }
}

#[test]
fn flash_attn_windowed_matches_reference() {
    require_gpu!();
    let p = Problem::padded(DType::F16, 2, 37, 70, 4, 2, 128);
    let mut t = Data::new(&p, 2);
    flare::flash_attn_windowed(&t.dq, &t.dk, &t.dv, &mut t.dout, scale(&p), Some(5), Some(2), &launch()).unwrap();
    t.check("flash_attn_windowed (5, 2)", &|_| spec(&p, false, 5, 2, 0.0, &[]));
    // None / Some(0) is the causal mask.
    let mut t = Data::new(&p, 3);
    flare::flash_attn_windowed(&t.dq, &t.dk, &t.dv, &mut t.dout, scale(&p), None, Some(0), &launch()).unwrap();
    t.check("flash_attn_windowed (None, 0)", &|_| spec(&p, true, -1, -1, 0.0, &[]));
}

#[test]
fn flash_attn_alibi_matches_reference() {
    require_gpu!();
    let p = Problem::padded(DType::F16, 2, 33, 65, 4, 4, 64);
    let (s, ds) = slopes(p.h);
    let mut t = Data::new(&p, 4);
    flare::flash_attn_alibi(&t.dq, &t.dk, &t.dv, &mut t.dout, &ds, scale(&p), true, &launch()).unwrap();
    t.check("flash_attn_alibi causal", &|_| spec(&p, true, -1, -1, 0.0, &s));
}

#[test]
fn flash_attn_alibi_windowed_matches_reference() {
    require_gpu!();
    let p = Problem::padded(DType::BF16, 1, 40, 96, 4, 1, 64);
    let (s, ds) = slopes(p.h);
    let mut t = Data::new(&p, 5);
    flare::flash_attn_alibi_windowed(&t.dq, &t.dk, &t.dv, &mut t.dout, &ds, scale(&p), Some(20), Some(3), &launch()).unwrap();
    t.check("flash_attn_alibi_windowed (20, 3)", &|_| spec(&p, false, 20, 3, 0.0, &s));
}

#[test]
fn flash_attn_alibi_windowed_softcap_matches_reference() {
    require_gpu!();
    let p = Problem::padded(DType::F16, 2, 24, 50, 4, 2, 96);
    let (s, ds) = slopes(p.h);
    let mut t = Data::new(&p, 6);
    // A large scale so the softcap bends the scores.
    flare::flash_attn_alibi_windowed_softcap(&t.dq, &t.dk, &t.dv, &mut t.dout, Some(&ds), 2.0, Some(10), None, 1.5, &launch()).unwrap();
    t.check("flash_attn_alibi_windowed_softcap (alibi)", &|_| Spec { scale: 2.0, ..spec(&p, false, 10, -1, 1.5, &s) });
    let mut t = Data::new(&p, 7);
    flare::flash_attn_alibi_windowed_softcap(&t.dq, &t.dk, &t.dv, &mut t.dout, None, 2.0, None, Some(0), 1.5, &launch()).unwrap();
    t.check("flash_attn_alibi_windowed_softcap (no alibi, causal)", &|_| Spec { scale: 2.0, ..spec(&p, true, -1, -1, 1.5, &[]) });
}

// ---- variable length ----

fn varlen_problem(dtype: DType, d: usize) -> Problem {
    Problem::varlen(dtype, &[5, 17, 1, 30], &[9, 33, 40, 30], 4, 2, d)
}

#[test]
fn flash_attn_varlen_matches_reference() {
    require_gpu!();
    for causal in [false, true] {
        let p = varlen_problem(DType::F16, 64);
        let mut t = Data::new(&p, 8);
        flare::flash_attn_varlen(&t.dq, &t.dk, &t.dv, &mut t.dout, &t.cu_q, &t.cu_k, 30, 40, scale(&p), causal, &launch()).unwrap();
        t.check(&format!("flash_attn_varlen causal={causal}"), &|_| spec(&p, causal, -1, -1, 0.0, &[]));
    }
}

#[test]
fn flash_attn_varlen_windowed_matches_reference() {
    require_gpu!();
    let p = varlen_problem(DType::BF16, 128);
    let mut t = Data::new(&p, 9);
    flare::flash_attn_varlen_windowed(&t.dq, &t.dk, &t.dv, &mut t.dout, &t.cu_q, &t.cu_k, 30, 40, scale(&p), Some(7), Some(1), &launch()).unwrap();
    t.check("flash_attn_varlen_windowed (7, 1)", &|_| spec(&p, false, 7, 1, 0.0, &[]));
}

#[test]
fn flash_attn_varlen_alibi_matches_reference() {
    require_gpu!();
    let p = varlen_problem(DType::F16, 64);
    let (s, ds) = slopes(p.h);
    let mut t = Data::new(&p, 10);
    flare::flash_attn_varlen_alibi(&t.dq, &t.dk, &t.dv, &mut t.dout, &ds, &t.cu_q, &t.cu_k, 30, 40, scale(&p), true, &launch()).unwrap();
    t.check("flash_attn_varlen_alibi causal", &|_| spec(&p, true, -1, -1, 0.0, &s));
}

#[test]
fn flash_attn_varlen_alibi_windowed_matches_reference() {
    require_gpu!();
    let p = varlen_problem(DType::F16, 64);
    let (s, ds) = slopes(p.h);
    let mut t = Data::new(&p, 11);
    flare::flash_attn_varlen_alibi_windowed(&t.dq, &t.dk, &t.dv, &mut t.dout, &ds, &t.cu_q, &t.cu_k, 30, 40, scale(&p), Some(4), Some(4), &launch()).unwrap();
    t.check("flash_attn_varlen_alibi_windowed (4, 4)", &|_| spec(&p, false, 4, 4, 0.0, &s));
}

#[test]
fn flash_attn_varlen_alibi_windowed_softcap_matches_reference() {
    require_gpu!();
    let p = varlen_problem(DType::BF16, 64);
    let (s, ds) = slopes(p.h);
    let mut t = Data::new(&p, 12);
    flare::flash_attn_varlen_alibi_windowed_softcap(&t.dq, &t.dk, &t.dv, &mut t.dout, Some(&ds), &t.cu_q, &t.cu_k, 30, 40, 2.0, None, None, 1.5, &launch()).unwrap();
    t.check("flash_attn_varlen_alibi_windowed_softcap", &|_| Spec { scale: 2.0, ..spec(&p, false, -1, -1, 1.5, &s) });
}

/// Paged variable-length attention (chunked prefill over a paged cache) through
/// flash_attn_varlen_paged_windowed: shuffled pool pages, page sizes 1, 3 and 16, a left
/// window, and multimodal prefix ranges on the same call.
#[test]
fn flash_attn_varlen_paged_windowed_matches_reference() {
    require_gpu!();
    let p = Problem::varlen(DType::F16, &[3, 8], &[20, 40], 4, 2, 64);
    let ranges: [[(i32, i32); 1]; 2] = [[(2, 10)], [(30, 39)]];
    let flat: Vec<i32> = ranges.iter().flatten().flat_map(|&(a, e)| [a, e]).collect();
    let dranges = DeviceVec::upload(&flat, DType::I32, &[2, 1, 2]);
    for page in [1usize, 3, 16] {
        for with_ranges in [false, true] {
            let mut t = Data::new(&p, 13);
            let max_pages = p.sks.iter().max().unwrap().div_ceil(page);
            let mut rng = Rng::new(99 + page as u64);
            let perm = rng.permutation(2 * max_pages);
            // Pool page perm[s * max_pages + j] holds rows [j * page, (j + 1) * page) of sequence s.
            let row = p.hk * p.d;
            let mut kpool = vec![0u16; 2 * max_pages * page * row];
            let mut vpool = kpool.clone();
            let kb: Vec<u16> = t.k.iter().map(|&x| half::to_bits(p.dtype, x)).collect();
            let vb: Vec<u16> = t.v.iter().map(|&x| half::to_bits(p.dtype, x)).collect();
            let mut table = vec![0i32; 2 * max_pages];
            for s in 0..2 {
                for j in 0..max_pages {
                    let slot = perm[s * max_pages + j];
                    table[s * max_pages + j] = slot as i32;
                    for r in 0..page {
                        let src_row = j * page + r;
                        if src_row < p.sks[s] {
                            let src = (p.k_row0(s) + src_row) * row;
                            let dst = (slot * page + r) * row;
                            kpool[dst..dst + row].copy_from_slice(&kb[src..src + row]);
                            vpool[dst..dst + row].copy_from_slice(&vb[src..src + row]);
                        }
                    }
                }
            }
            let shape = [2 * max_pages, page, p.hk, p.d];
            let dkp = DeviceVec::upload(&kpool, p.dtype, &shape);
            let dvp = DeviceVec::upload(&vpool, p.dtype, &shape);
            let dtable = DeviceVec::upload(&table, DType::I32, &[2, max_pages]);
            let r = flare::flash_attn_varlen_paged_windowed(
                &t.dq,
                &dkp,
                &dvp,
                &mut t.dout,
                &t.cu_q,
                &t.cu_k,
                &dtable,
                if with_ranges { Some(&dranges as &dyn DeviceTensor) } else { None },
                8,
                40,
                scale(&p),
                Some(6),
                None,
                page,
                None,
                &launch(),
            );
            r.unwrap_or_else(|e| panic!("paged varlen page {page} ranges={with_ranges}: {e}"));
            t.check(&format!("flash_attn_varlen_paged_windowed page {page} ranges={with_ranges}"), &|s| Spec {
                mm_ranges: if with_ranges { ranges[s].iter().map(|&(a, e)| (a as i64, e as i64)).collect() } else { Vec::new() },
                ..spec(&p, false, 6, -1, 0.0, &[])
            });
        }
    }
}

// ---- serving fields: sink, prefix ranges, head_dim_v ----

#[test]
fn sink_matches_reference() {
    require_gpu!();
    let p = Problem::padded(DType::F16, 2, 37, 70, 4, 2, 64);
    // A sink above every score, a small one, a negative one, and none (-inf) for the last head.
    let sinks = [8.0f32, 0.5, -1.0, f32::NEG_INFINITY];
    let dsink = DeviceVec::upload(&sinks, DType::F32, &[p.h]);
    let sink_spec = |causal| Spec { sink: sinks.iter().map(|&x| x as f64).collect(), ..spec(&p, causal, -1, -1, 0.0, &[]) };
    for causal in [false, true] {
        let mut t = Data::new(&p, 21);
        MhaParams::prefill(&t.dq, &t.dk, &t.dv, &mut t.dout).unwrap().causal(causal).sink(&dsink).unwrap().run(&launch()).unwrap();
        t.check(&format!("sink (causal {causal})"), &|_| sink_spec(causal));
    }
    // Split-KV must count the sink once: one query row over 600 keys, forced splits.
    let p = Problem::padded(DType::BF16, 2, 1, 600, 4, 2, 128);
    for splits in [1u32, 4] {
        let mut t = Data::new(&p, 24);
        let params = MhaParams::prefill(&t.dq, &t.dk, &t.dv, &mut t.dout).unwrap().sink(&dsink).unwrap().num_splits(splits);
        let ws = DeviceVec::alloc(params.workspace_size(0).unwrap().max(256));
        let l = launch().with_workspace(&ws);
        let planned = params.planned_splits(0, &l).unwrap();
        assert!((planned > 1) == (splits > 1), "num_splits({splits}) planned {planned} split(s)");
        params.run(&l).unwrap();
        t.check(&format!("sink with {splits} splits"), &|_| Spec { sink: sinks.iter().map(|&x| x as f64).collect(), ..spec(&p, false, -1, -1, 0.0, &[]) });
    }
}

#[test]
fn mm_prefix_ranges_match_reference() {
    require_gpu!();
    // Causal with a left window of 8: the ranges open keys the mask hides, to the right (inside
    // a range) and to the left (a range longer than the window). Sequence 1's second slot is
    // empty (start == end).
    let p = Problem::padded(DType::F16, 2, 50, 50, 4, 2, 64);
    let ranges: [[(i32, i32); 2]; 2] = [[(5, 20), (30, 34)], [(0, 12), (12, 12)]];
    let flat: Vec<i32> = ranges.iter().flatten().flat_map(|&(a, b)| [a, b]).collect();
    let dranges = DeviceVec::upload(&flat, DType::I32, &[2, 2, 2]);
    let mut t = Data::new(&p, 22);
    MhaParams::prefill(&t.dq, &t.dk, &t.dv, &mut t.dout)
        .unwrap()
        .causal(true)
        .window(Some(8), Some(0))
        .mm_prefix_ranges(&dranges, 2)
        .unwrap()
        .run(&launch())
        .unwrap();
    t.check("mm_prefix_ranges (causal, window 8)", &|s| Spec {
        mm_ranges: ranges[s].iter().map(|&(a, b)| (a as i64, b as i64)).collect(),
        ..spec(&p, true, 8, 0, 0.0, &[])
    });
}

/// head_dim 192 with head_dim_v 128 (the accepted separate pair): v and out 128 wide.
#[test]
fn head_dim_v_matches_reference() {
    require_gpu!();
    let (dtype, b, sq, sk, h, hk, d, dv) = (DType::BF16, 2usize, 24usize, 50usize, 4usize, 2usize, 192usize, 128usize);
    let mut rng = Rng::new(23);
    let (qb, q) = rng.tensor(dtype, b * sq * h * d);
    let (kb, k) = rng.tensor(dtype, b * sk * hk * d);
    let (vb, v) = rng.tensor(dtype, b * sk * hk * dv);
    let dq = DeviceVec::upload(&qb, dtype, &[b, sq, h, d]);
    let dk = DeviceVec::upload(&kb, dtype, &[b, sk, hk, d]);
    let dvv = DeviceVec::upload(&vb, dtype, &[b, sk, hk, dv]);
    let mut dout = DeviceVec::upload(&vec![half::nan_bits(dtype); b * sq * h * dv], dtype, &[b, sq, h, dv]);
    MhaParams::prefill(&dq, &dk, &dvv, &mut dout).unwrap().causal(true).run(&launch()).unwrap();
    let got: Vec<f32> = dout.download::<u16>().iter().map(|&x| half::from_bits(dtype, x)).collect();
    let spec = Spec { causal: true, ..Spec::new(1.0 / (d as f64).sqrt()) };
    let (mut exact, mut naive) = (Vec::new(), Vec::new());
    for s in 0..b {
        let qs = &q[s * sq * h * d..(s + 1) * sq * h * d];
        let ks = &k[s * sk * hk * d..(s + 1) * sk * hk * d];
        let vs = &v[s * sk * hk * dv..(s + 1) * sk * hk * dv];
        exact.extend(attend_dv(qs, ks, vs, sq, sk, h, hk, d, dv, &spec).out);
        naive.extend(attend_lowp_dv(qs, ks, vs, sq, sk, h, hk, d, dv, &spec, &|x| half::round(dtype, x)).out);
    }
    assert_within_bound("head_dim 192 / head_dim_v 128", &got, &exact, &naive);
}

// ---- lse, split-KV, merge ----

#[test]
fn lse_and_forced_splits_match_reference() {
    require_gpu!();
    let p = Problem::padded(DType::F16, 1, 8, 512, 2, 2, 64);
    let mut t = Data::new(&p, 14);
    let lse_dev = DeviceVec::upload(&vec![f32::NAN; p.h * 8], DType::F32, &[1, p.h, 8]);
    let mut lse_view = lse_dev.view(DType::F32, &[1, p.h, 8], &[p.h * 8, 8, 1]);
    let params = MhaParams::prefill(&t.dq, &t.dk, &t.dv, &mut t.dout).unwrap().num_splits(4).lse(&mut lse_view).unwrap();
    let bytes = params.workspace_size(0).unwrap();
    assert!(bytes > 0, "a forced split needs a workspace");
    let ws = DeviceVec::alloc(bytes);
    let l = launch().with_workspace(&ws);
    let splits = params.planned_splits(0, &l).unwrap();
    assert!(splits > 1, "num_splits(4) with a workspace planned {splits} split(s)");
    params.run(&l).unwrap();
    t.check("prefill, 4 splits", &|_| spec(&p, false, -1, -1, 0.0, &[]));
    let (exact, _) = t.reference(&|_| spec(&p, false, -1, -1, 0.0, &[]));
    let lse = lse_dev.download::<f32>();
    for (i, (&g, &w)) in lse.iter().zip(&exact.lse).enumerate() {
        assert!((g as f64 - w).abs() < 1e-3, "lse[{i}] = {g}, want {w}");
    }

    // Too small a workspace is refused before anything is written.
    let mut t2 = Data::new(&p, 15);
    let params = MhaParams::prefill(&t2.dq, &t2.dk, &t2.dv, &mut t2.dout).unwrap().num_splits(4);
    let small = DeviceVec::alloc(256);
    let e = params.run(&launch().with_workspace(&small)).unwrap_err();
    assert_eq!(e.status(), flare::Status::WorkspaceTooSmall, "{e}");
    assert!(t2.out_f32().iter().all(|x| x.is_nan()));
}

#[test]
fn merge_of_two_key_halves_matches_full_attention() {
    require_gpu!();
    let (dtype, b, sq, sk, h, d) = (DType::F16, 2, 16, 96, 4, 64);
    let full = Problem::padded(dtype, b, sq, sk, h, h, d);
    let data = Data::new(&full, 16);
    let half_k = sk / 2;
    let mut parts = Vec::new();
    let mut lses = Vec::new();
    let mut naive_parts = Vec::new();
    for part in 0..2 {
        // Keys [part * half_k, (part + 1) * half_k) of every sequence.
        let mut kb = Vec::new();
        let mut vb = Vec::new();
        let (mut kf, mut vf) = (Vec::new(), Vec::new());
        for s in 0..b {
            let r0 = (s * sk + part * half_k) * h * d;
            let r1 = r0 + half_k * h * d;
            kf.extend_from_slice(&data.k[r0..r1]);
            vf.extend_from_slice(&data.v[r0..r1]);
        }
        kb.extend(kf.iter().map(|&x| half::to_bits(dtype, x)));
        vb.extend(vf.iter().map(|&x| half::to_bits(dtype, x)));
        let dk = DeviceVec::upload(&kb, dtype, &[b, half_k, h, d]);
        let dv = DeviceVec::upload(&vb, dtype, &[b, half_k, h, d]);
        let mut out = DeviceVec::upload(&vec![half::nan_bits(dtype); b * sq * h * d], dtype, &[b, sq, h, d]);
        let mut lse = DeviceVec::upload(&vec![f32::NAN; b * h * sq], DType::F32, &[b, h, sq]);
        MhaParams::prefill(&data.dq, &dk, &dv, &mut out).unwrap().lse(&mut lse).unwrap().run(&launch()).unwrap();
        // The naive implementation of the same computation: naive parts, merged in float32.
        let mut np = Vec::new();
        for s in 0..b {
            let q = &data.q[s * sq * h * d..(s + 1) * sq * h * d];
            let ks = &kf[s * half_k * h * d..(s + 1) * half_k * h * d];
            let vs = &vf[s * half_k * h * d..(s + 1) * half_k * h * d];
            np.push(attend_lowp(q, ks, vs, sq, half_k, h, h, d, &spec(&full, false, -1, -1, 0.0, &[]), &|x| half::round(dtype, x)));
        }
        naive_parts.push(np);
        parts.push(out);
        lses.push(lse);
    }
    let mut merged = DeviceVec::upload(&vec![half::nan_bits(dtype); b * sq * h * d], dtype, &[b, sq, h, d]);
    let mut merged_lse = DeviceVec::upload(&vec![f32::NAN; b * h * sq], DType::F32, &[b, h, sq]);
    let part_refs: Vec<&dyn DeviceTensor> = parts.iter().map(|p| p as &dyn DeviceTensor).collect();
    let lse_refs: Vec<&dyn DeviceTensor> = lses.iter().map(|p| p as &dyn DeviceTensor).collect();
    MergeParams::new(&part_refs, &lse_refs, &mut merged).unwrap().out_lse(&mut merged_lse).unwrap().run(Stream::DEFAULT).unwrap();

    let (exact, _) = data.reference(&|_| spec(&full, false, -1, -1, 0.0, &[]));
    let mut naive = vec![0.0f64; b * sq * h * d];
    for s in 0..b {
        for head in 0..h {
            for i in 0..sq {
                let l0 = naive_parts[0][s].lse[head * sq + i] as f32;
                let l1 = naive_parts[1][s].lse[head * sq + i] as f32;
                let m = l0.max(l1);
                let lse = m + ((l0 - m).exp() + (l1 - m).exp()).ln();
                for c in 0..d {
                    let at = (i * h + head) * d + c;
                    let o = (l0 - lse).exp() * naive_parts[0][s].out[at] as f32 + (l1 - lse).exp() * naive_parts[1][s].out[at] as f32;
                    naive[s * sq * h * d + at] = half::round(dtype, o) as f64;
                }
            }
        }
    }
    let got: Vec<f32> = merged.download::<u16>().iter().map(|&x| half::from_bits(dtype, x)).collect();
    assert_within_bound("merge of two halves", &got, &exact.out, &naive);
    let lse = merged_lse.download::<f32>();
    for (i, (&g, &w)) in lse.iter().zip(&exact.lse).enumerate() {
        assert!((g as f64 - w).abs() < 1e-3, "merged lse[{i}] = {g}, want {w}");
    }
}

// ---- KV cache ----

/// Host model of a KV cache call: the keys/values each sequence attends to after the append,
/// and the (rotated) queries.
struct Rotary {
    cos: Vec<f32>,
    sin: Vec<f32>,
    dim: usize,
    interleaved: bool,
}

impl Rotary {
    /// `x` rotated at position `pos`, rounded to the dtype.
    fn rotate(&self, x: &[f32], pos: usize, dtype: DType) -> Vec<f32> {
        self.rotate_f32(x, pos).iter().map(|&v| half::round(dtype, v)).collect()
    }

    /// `x` rotated at position `pos` in float32, unrounded: two products and their difference
    /// (first of a pair) or sum (second), each rounded once, as flare's rotary_apply computes
    /// the value an append quantizes into an FP8 cache.
    fn rotate_f32(&self, x: &[f32], pos: usize) -> Vec<f32> {
        let half_dim = self.dim / 2;
        let mut y = x.to_vec();
        for t in 0..self.dim {
            let (partner, freq, first) = if self.interleaved {
                (if t % 2 == 0 { t + 1 } else { t - 1 }, t / 2, t % 2 == 0)
            } else if t < half_dim {
                (t + half_dim, t, true)
            } else {
                (t - half_dim, t - half_dim, false)
            };
            let c = self.cos[pos * half_dim + freq];
            let s = self.sin[pos * half_dim + freq];
            y[t] = if first { x[t] * c - x[partner] * s } else { x[partner] * s + x[t] * c };
        }
        y
    }
}

#[test]
fn flash_attn_with_kvcache_append_and_rotary_matches_reference() {
    require_gpu!();
    for (causal, interleaved) in [(false, false), (true, true)] {
        let (dtype, b, sq, cap, h, hk, d, new) = (DType::F16, 2, 3, 64, 4, 2, 64, 2);
        let cache_lens = [20usize, 37];
        let mut rng = Rng::new(17);
        let (qb, q) = rng.tensor(dtype, b * sq * h * d);
        let (kcb, kc) = rng.tensor(dtype, b * cap * hk * d);
        let (vcb, vc) = rng.tensor(dtype, b * cap * hk * d);
        let (knb, kn) = rng.tensor(dtype, b * new * hk * d);
        let (vnb, vn) = rng.tensor(dtype, b * new * hk * d);
        let rdim = d / 2;
        let positions = cap;
        let cos: Vec<f32> = (0..positions * rdim / 2).map(|i| half::round(dtype, ((i as f32) * 0.37).cos())).collect();
        let sin: Vec<f32> = (0..positions * rdim / 2).map(|i| half::round(dtype, ((i as f32) * 0.37).sin())).collect();
        let rot = Rotary { cos: cos.clone(), sin: sin.clone(), dim: rdim, interleaved };

        let dq = DeviceVec::upload(&qb, dtype, &[b, sq, h, d]);
        let mut dkc = DeviceVec::upload(&kcb, dtype, &[b, cap, hk, d]);
        let mut dvc = DeviceVec::upload(&vcb, dtype, &[b, cap, hk, d]);
        let dkn = DeviceVec::upload(&knb, dtype, &[b, new, hk, d]);
        let dvn = DeviceVec::upload(&vnb, dtype, &[b, new, hk, d]);
        let lens: Vec<i32> = cache_lens.iter().map(|&x| x as i32).collect();
        let dlens = DeviceVec::upload(&lens, DType::I32, &[b]);
        let cosb: Vec<u16> = cos.iter().map(|&x| half::to_bits(dtype, x)).collect();
        let sinb: Vec<u16> = sin.iter().map(|&x| half::to_bits(dtype, x)).collect();
        let dcos = DeviceVec::upload(&cosb, dtype, &[positions, rdim / 2]);
        let dsin = DeviceVec::upload(&sinb, dtype, &[positions, rdim / 2]);
        let mut dout = DeviceVec::upload(&vec![half::nan_bits(dtype); b * sq * h * d], dtype, &[b, sq, h, d]);

        let kv = KvCache::new(&dlens).append(&dkn, &dvn).rotary(&dcos, &dsin, interleaved);
        let opts = AttnOptions { causal, ..AttnOptions::default() };
        let params = MhaParams::kv_cache(&dq, &mut dkc, &mut dvc, &mut dout, &kv).unwrap().options(&opts).unwrap();
        let bytes = params.workspace_size(0).unwrap();
        let ws = DeviceVec::alloc(bytes);
        flare::flash_attn_with_kvcache(&dq, &mut dkc, &mut dvc, &mut dout, &kv, &opts, &launch().with_workspace(&ws)).unwrap();

        let got: Vec<f32> = dout.download::<u16>().iter().map(|&x| half::from_bits(dtype, x)).collect();
        let kcache_after: Vec<f32> = dkc.download::<u16>().iter().map(|&x| half::from_bits(dtype, x)).collect();
        let mut exact = vec![0.0; got.len()];
        let mut naive = vec![0.0; got.len()];
        let row = hk * d;
        for s in 0..b {
            let len = cache_lens[s];
            let sk = len + new;
            let mut keys = kc[s * cap * row..(s * cap + len) * row].to_vec();
            let mut vals = vc[s * cap * row..(s * cap + len) * row].to_vec();
            for t in 0..new {
                for kh in 0..hk {
                    let src = ((s * new + t) * hk + kh) * d;
                    let rk = rot.rotate(&kn[src..src + d], len + t, dtype);
                    // The appended, rotated key is in the cache.
                    let at = ((s * cap + len + t) * hk + kh) * d;
                    for c in 0..d {
                        assert!((kcache_after[at + c] - rk[c]).abs() <= rk[c].abs() * 2e-3 + 1e-3, "cache row {} of seq {s}", len + t);
                    }
                    keys.extend_from_slice(&rk);
                    vals.extend_from_slice(&vn[src..src + d]);
                }
            }
            let mut qs = Vec::new();
            for i in 0..sq {
                for head in 0..h {
                    let src = ((s * sq + i) * h + head) * d;
                    qs.extend(rot.rotate(&q[src..src + d], len + if causal { i } else { 0 }, dtype));
                }
            }
            let sp = Spec { causal, ..Spec::new(1.0 / (d as f64).sqrt()) };
            let e = attend(&qs, &keys, &vals, sq, sk, h, hk, d, &sp);
            let n = attend_lowp(&qs, &keys, &vals, sq, sk, h, hk, d, &sp, &|x| half::round(dtype, x));
            exact[s * sq * h * d..(s + 1) * sq * h * d].copy_from_slice(&e.out);
            naive[s * sq * h * d..(s + 1) * sq * h * d].copy_from_slice(&n.out);
        }
        assert_within_bound(&format!("kvcache append+rotary causal={causal} interleaved={interleaved}"), &got, &exact, &naive);
    }
}

#[test]
fn flash_attn_with_kvcache_paged_shuffled_matches_reference() {
    require_gpu!();
    for d in [64usize, 256] {
        let (dtype, b, sq, h, hk, page, max_pages) = (DType::BF16, 2, 4, 4, 2, 16, 4);
        let lens = [33usize, 50];
        let pool_pages = b * max_pages + 3;
        let mut rng = Rng::new(18 + d as u64);
        let (qb, q) = rng.tensor(dtype, b * sq * h * d);
        let pools = rng.paged_pools(dtype, pool_pages, page, hk, d, b, max_pages);
        let dq = DeviceVec::upload(&qb, dtype, &[b, sq, h, d]);
        let mut dkp = DeviceVec::upload(&pools.k_bits, dtype, &[pool_pages, page, hk, d]);
        let mut dvp = DeviceVec::upload(&pools.v_bits, dtype, &[pool_pages, page, hk, d]);
        let dtable = DeviceVec::upload(&pools.table, DType::I32, &[b, max_pages]);
        let dlens = DeviceVec::upload(&lens.iter().map(|&x| x as i32).collect::<Vec<_>>(), DType::I32, &[b]);
        let mut dout = DeviceVec::upload(&vec![half::nan_bits(dtype); b * sq * h * d], dtype, &[b, sq, h, d]);
        let kv = KvCache::new(&dlens).paged(&dtable);
        let opts = AttnOptions { causal: true, ..AttnOptions::default() };
        flare::flash_attn_with_kvcache(&dq, &mut dkp, &mut dvp, &mut dout, &kv, &opts, &launch()).unwrap();
        let got: Vec<f32> = dout.download::<u16>().iter().map(|&x| half::from_bits(dtype, x)).collect();
        let mut exact = vec![0.0; got.len()];
        let mut naive = vec![0.0; got.len()];
        for s in 0..b {
            let (keys, vals) = pools.sequence(s, lens[s]);
            let qs = &q[s * sq * h * d..(s + 1) * sq * h * d];
            let sp = Spec { causal: true, ..Spec::new(1.0 / (d as f64).sqrt()) };
            let e = attend(qs, &keys, &vals, sq, lens[s], h, hk, d, &sp);
            let n = attend_lowp(qs, &keys, &vals, sq, lens[s], h, hk, d, &sp, &|x| half::round(dtype, x));
            exact[s * sq * h * d..(s + 1) * sq * h * d].copy_from_slice(&e.out);
            naive[s * sq * h * d..(s + 1) * sq * h * d].copy_from_slice(&n.out);
        }
        assert_within_bound(&format!("kvcache paged shuffled d{d}"), &got, &exact, &naive);
    }
}

#[test]
fn flash_attn_with_kvcache_batch_idx_and_leftpad_match_reference() {
    require_gpu!();
    let (dtype, b, sq, entries, cap, h, hk, d) = (DType::F16, 2, 1, 3, 32, 4, 4, 128);
    let lens = [20usize, 10];
    let idx = [2usize, 0];
    let leftpad = [3usize, 0];
    let mut rng = Rng::new(19);
    let (qb, q) = rng.tensor(dtype, b * sq * h * d);
    let (kcb, kc) = rng.tensor(dtype, entries * cap * hk * d);
    let (vcb, vc) = rng.tensor(dtype, entries * cap * hk * d);
    let dq = DeviceVec::upload(&qb, dtype, &[b, sq, h, d]);
    let mut dkc = DeviceVec::upload(&kcb, dtype, &[entries, cap, hk, d]);
    let mut dvc = DeviceVec::upload(&vcb, dtype, &[entries, cap, hk, d]);
    let as_i32 = |xs: &[usize]| xs.iter().map(|&x| x as i32).collect::<Vec<_>>();
    let dlens = DeviceVec::upload(&as_i32(&lens), DType::I32, &[b]);
    let didx = DeviceVec::upload(&as_i32(&idx), DType::I32, &[b]);
    let dpad = DeviceVec::upload(&as_i32(&leftpad), DType::I32, &[b]);
    let mut dout = DeviceVec::upload(&vec![half::nan_bits(dtype); b * sq * h * d], dtype, &[b, sq, h, d]);
    let kv = KvCache::new(&dlens).cache_batch_idx(&didx).leftpad_k(&dpad);
    flare::flash_attn_with_kvcache(&dq, &mut dkc, &mut dvc, &mut dout, &kv, &AttnOptions::default(), &launch()).unwrap();
    let got: Vec<f32> = dout.download::<u16>().iter().map(|&x| half::from_bits(dtype, x)).collect();
    let row = hk * d;
    let mut exact = vec![0.0; got.len()];
    let mut naive = vec![0.0; got.len()];
    for s in 0..b {
        let (r0, r1) = ((idx[s] * cap + leftpad[s]) * row, (idx[s] * cap + lens[s]) * row);
        let sk = lens[s] - leftpad[s];
        let qs = &q[s * sq * h * d..(s + 1) * sq * h * d];
        let sp = Spec::new(1.0 / (d as f64).sqrt());
        let e = attend(qs, &kc[r0..r1], &vc[r0..r1], sq, sk, h, hk, d, &sp);
        let n = attend_lowp(qs, &kc[r0..r1], &vc[r0..r1], sq, sk, h, hk, d, &sp, &|x| half::round(dtype, x));
        exact[s * sq * h * d..(s + 1) * sq * h * d].copy_from_slice(&e.out);
        naive[s * sq * h * d..(s + 1) * sq * h * d].copy_from_slice(&n.out);
    }
    assert_within_bound("kvcache cache_batch_idx + leftpad", &got, &exact, &naive);
}

// ---- FP8 KV cache ----

/// Decoding over an FP8 cache (e4m3, and e5m2) with one descale factor per (batch entry, K/V
/// head) for k and for v, appending rows (with rotary embedding in one case) through
/// flash_attn_with_kvcache:
/// - the appended codes equal, byte for byte, round-to-nearest-even saturating quantization of
///   x / descale (testutil::fp8, x the appended value, rotated in float32 where rotary is on),
///   and no other cache byte changes; one factor per tensor is small enough that appended
///   values saturate;
/// - the output is within the project's bound of the float64 attention over the dequantized
///   cache (code x descale, exact in float64): 2 x the naive bf16 implementation's error on the
///   same inputs + 1e-5, every element written (poisoned with NaN first) and finite.
#[test]
fn flash_attn_with_kvcache_fp8_append_matches_reference() {
    use testutil::fp8;
    require_gpu!();
    for (case, (kv_dtype, rotary, causal, sq)) in
        [(DType::E4M3, false, false, 1), (DType::E4M3, true, true, 2), (DType::E5M2, false, false, 1)].into_iter().enumerate()
    {
        let (dtype, b, cap, h, hk, d, new) = (DType::BF16, 2, 64, 8, 2, 128, 3);
        let what = format!("fp8 kvcache {kv_dtype:?} rotary={rotary} causal={causal} sq={sq}");
        let cache_lens = [20usize, 37];
        let row = hk * d;
        let mut rng = Rng::new(40 + case as u64);

        // Factors of (s, kh): k's stored with batch stride 3 (padded rows), v's dense [b, hk].
        // k's (1, 0) and v's (0, 1) map 0.75 to the format's largest code, so larger appended
        // magnitudes saturate.
        let sat = 0.75 / fp8::decode(kv_dtype, fp8::max_code(kv_dtype)) as f32;
        let k_scale = [[0.0071f32, 0.0123], [sat, 0.0049]];
        let v_scale = [[0.0093f32, sat], [0.0066, 0.0137]];
        let k_scale_mem: Vec<f32> = k_scale.iter().flat_map(|r| [r[0], r[1], f32::NAN]).collect();
        let v_scale_mem: Vec<f32> = v_scale.iter().flatten().copied().collect();
        let dks = DeviceVec::upload(&k_scale_mem, DType::F32, &[b * 3]).with_strides(&[b, hk], &[3, 1]);
        let dvs = DeviceVec::upload(&v_scale_mem, DType::F32, &[b, hk]);

        // The caches: codes of values in [-1, 1) under their factors, every row (those past
        // cache_seqlens must stay as they are, except the appended ones).
        let mut codes = |scale: &[[f32; 2]; 2]| -> Vec<u8> {
            (0..b * cap * row).map(|i| {
                let (s, kh) = (i / (cap * row), (i / d) % hk);
                fp8::quantize(kv_dtype, rng.next_f32(), scale[s][kh])
            }).collect()
        };
        let kc0 = codes(&k_scale);
        let vc0 = codes(&v_scale);
        let (qb, q) = rng.tensor(dtype, b * sq * h * d);
        let (knb, kn) = rng.tensor(dtype, b * new * hk * d);
        let (vnb, vn) = rng.tensor(dtype, b * new * hk * d);
        let rdim = d / 2;
        let cos: Vec<f32> = (0..cap * rdim / 2).map(|i| half::round(dtype, ((i as f32) * 0.37).cos())).collect();
        let sin: Vec<f32> = (0..cap * rdim / 2).map(|i| half::round(dtype, ((i as f32) * 0.37).sin())).collect();
        let rot = Rotary { cos: cos.clone(), sin: sin.clone(), dim: rdim, interleaved: false };

        // The cache the append must leave: row cache_lens[s] + t of (s, kh) holds the codes of
        // k_new / v_new row t, k rotated at that position when rotary is on.
        let mut k_want = kc0.clone();
        let mut v_want = vc0.clone();
        for s in 0..b {
            for t in 0..new {
                for kh in 0..hk {
                    let src = ((s * new + t) * hk + kh) * d;
                    let dst = ((s * cap + cache_lens[s] + t) * hk + kh) * d;
                    let k_vals = if rotary { rot.rotate_f32(&kn[src..src + d], cache_lens[s] + t) } else { kn[src..src + d].to_vec() };
                    for c in 0..d {
                        k_want[dst + c] = fp8::quantize(kv_dtype, k_vals[c], k_scale[s][kh]);
                        v_want[dst + c] = fp8::quantize(kv_dtype, vn[src + c], v_scale[s][kh]);
                    }
                }
            }
        }
        // The saturating factors are exercised: some appended codes are the largest magnitude.
        let top = fp8::max_code(kv_dtype);
        let appended = |cache: &[u8], s: usize, kh: usize| -> Vec<u8> {
            (0..new).flat_map(|t| {
                let at = ((s * cap + cache_lens[s] + t) * hk + kh) * d;
                cache[at..at + d].to_vec()
            }).collect()
        };
        assert!(appended(&k_want, 1, 0).iter().any(|&c| c & 0x7f == top), "{what}: no saturated k code");
        assert!(appended(&v_want, 0, 1).iter().any(|&c| c & 0x7f == top), "{what}: no saturated v code");

        let dq = DeviceVec::upload(&qb, dtype, &[b, sq, h, d]);
        let mut dkc = DeviceVec::upload(&kc0, kv_dtype, &[b, cap, hk, d]);
        let mut dvc = DeviceVec::upload(&vc0, kv_dtype, &[b, cap, hk, d]);
        let dkn = DeviceVec::upload(&knb, dtype, &[b, new, hk, d]);
        let dvn = DeviceVec::upload(&vnb, dtype, &[b, new, hk, d]);
        let lens: Vec<i32> = cache_lens.iter().map(|&x| x as i32).collect();
        let dlens = DeviceVec::upload(&lens, DType::I32, &[b]);
        let cosb: Vec<u16> = cos.iter().map(|&x| half::to_bits(dtype, x)).collect();
        let sinb: Vec<u16> = sin.iter().map(|&x| half::to_bits(dtype, x)).collect();
        let dcos = DeviceVec::upload(&cosb, dtype, &[cap, rdim / 2]);
        let dsin = DeviceVec::upload(&sinb, dtype, &[cap, rdim / 2]);
        let mut dout = DeviceVec::upload(&vec![half::nan_bits(dtype); b * sq * h * d], dtype, &[b, sq, h, d]);

        let mut kv = KvCache::new(&dlens).append(&dkn, &dvn);
        if rotary {
            kv = kv.rotary(&dcos, &dsin, false);
        }
        let opts = AttnOptions {
            causal,
            k_descale: Some(flare::Descale::per_batch_head(&dks).unwrap()),
            v_descale: Some(flare::Descale::per_batch_head(&dvs).unwrap()),
            ..AttnOptions::default()
        };
        let params = MhaParams::kv_cache(&dq, &mut dkc, &mut dvc, &mut dout, &kv).unwrap().options(&opts).unwrap();
        assert_eq!((params.as_raw().k_descale_batch_stride, params.as_raw().v_descale_batch_stride), (3, 2));
        let bytes = params.workspace_size(0).unwrap_or_else(|e| panic!("{what}: {e}"));
        let ws = DeviceVec::alloc(bytes);
        flare::flash_attn_with_kvcache(&dq, &mut dkc, &mut dvc, &mut dout, &kv, &opts, &launch().with_workspace(&ws))
            .unwrap_or_else(|e| panic!("{what}: {e}"));

        // The caches, byte for byte.
        for (name, got, want) in [("k", dkc.download::<u8>(), &k_want), ("v", dvc.download::<u8>(), &v_want)] {
            if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
                let (s, r, kh, c) = (i / (cap * row), (i / row) % cap, (i / d) % hk, i % d);
                let appended_row = r >= cache_lens[s] && r < cache_lens[s] + new;
                panic!(
                    "{what}: {name} cache byte {i} (seq {s}, row {r}, head {kh}, col {c}; {}): got {:#04x}, want {:#04x}",
                    if appended_row { "appended" } else { "must be untouched" },
                    got[i],
                    want[i]
                );
            }
        }

        // Attention over the dequantized cache, float64 and the naive bf16 model.
        let got: Vec<f32> = dout.download::<u16>().iter().map(|&x| half::from_bits(dtype, x)).collect();
        let mut exact = vec![0.0; got.len()];
        let mut naive = vec![0.0; got.len()];
        for s in 0..b {
            let sk = cache_lens[s] + new;
            let dequant = |cache: &[u8], scale: &[[f32; 2]; 2]| -> Vec<f64> {
                (0..sk * row).map(|i| {
                    let kh = (i / d) % hk;
                    fp8::decode(kv_dtype, cache[s * cap * row + i]) * scale[s][kh] as f64
                }).collect()
            };
            let keys = dequant(&k_want, &k_scale);
            let vals = dequant(&v_want, &v_scale);
            let mut qs = Vec::new();
            for i in 0..sq {
                for head in 0..h {
                    let src = ((s * sq + i) * h + head) * d;
                    if rotary {
                        qs.extend(rot.rotate(&q[src..src + d], cache_lens[s] + if causal { i } else { 0 }, dtype));
                    } else {
                        qs.extend_from_slice(&q[src..src + d]);
                    }
                }
            }
            let sp = Spec { causal, ..Spec::new(1.0 / (d as f64).sqrt()) };
            let e = attend(&qs, &keys, &vals, sq, sk, h, hk, d, &sp);
            let n = attend_lowp(&qs, &keys, &vals, sq, sk, h, hk, d, &sp, &|x| half::round(dtype, x));
            exact[s * sq * h * d..(s + 1) * sq * h * d].copy_from_slice(&e.out);
            naive[s * sq * h * d..(s + 1) * sq * h * d].copy_from_slice(&n.out);
        }
        assert_within_bound(&what, &got, &exact, &naive);
    }
}
