//! Host references of one sequence's attention, in the layouts of flare.h:
//! q `[sq, h, d]`, k `[sk, hk, d]`, v `[sk, hk, dv]` (head groups: q head i reads kv head
//! i / (h / hk)), out `[sq, h, dv]`, lse `[h, sq]`; `dv` is d unless a function says `_dv`.
//!
//! `attend` computes in float64: the ground truth. `attend_lowp` is the naive implementation
//! in low precision that the project's error bound is measured against: scores rounded to the
//! dtype, the normalised probabilities rounded to the dtype before P.V, the output rounded to
//! the dtype (the rounding points of the C++ suite's naive reference). Both are one loop,
//! [`attend_core`], with and without the rounding.
//!
//! k and v are f32 (fp16 / bf16 values) or f64: FP8 codes times their descale factor, exact in
//! float64 only, are the inputs of an FP8 K/V call (the naive model reads them unrounded too,
//! as src/reference does).

/// Masking and scoring of one call (flare.h's semantics).
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub scale: f64,
    pub causal: bool,
    /// -1: unbounded.
    pub window_left: i64,
    /// -1: unbounded.
    pub window_right: i64,
    /// 0: off.
    pub softcap: f64,
    /// One slope per q head (already picked for this sequence), or empty.
    pub alibi: Vec<f64>,
    /// One sink logit per q head, or empty (no sink); -inf is no sink for that head.
    pub sink: Vec<f64>,
    /// This sequence's multimodal prefix ranges `[start, end)` of key positions.
    pub mm_ranges: Vec<(i64, i64)>,
}

impl Spec {
    pub fn new(scale: f64) -> Spec {
        Spec { scale, window_left: -1, window_right: -1, ..Spec::default() }
    }

    /// Key j visible to query row i of a sequence of sq queries over sk keys: through the
    /// causal / window mask, or because one prefix range holds both j and the row's absolute
    /// position i + sk - sq.
    pub fn visible(&self, i: usize, j: usize, sq: usize, sk: usize) -> bool {
        let diag = i as i64 + sk as i64 - sq as i64;
        let j = j as i64;
        let right = if self.causal { 0 } else { self.window_right };
        let masked = (right >= 0 && j > diag + right) || (self.window_left >= 0 && j < diag - self.window_left);
        !masked || self.mm_ranges.iter().any(|&(start, end)| start <= j && j < end && start <= diag && diag < end)
    }

    fn score(&self, dot: f64, i: usize, j: usize, sq: usize, sk: usize, head: usize) -> f64 {
        let mut s = if self.softcap > 0.0 {
            self.softcap * (self.scale * dot / self.softcap).tanh()
        } else {
            self.scale * dot
        };
        if !self.alibi.is_empty() {
            let dist = (i as i64 + sk as i64 - sq as i64 - j as i64).abs() as f64;
            s -= self.alibi[head] * dist;
        }
        s
    }

    fn sink(&self, head: usize) -> f64 {
        self.sink.get(head).copied().unwrap_or(f64::NEG_INFINITY)
    }
}

pub struct Attn {
    pub out: Vec<f64>,
    pub lse: Vec<f64>,
}

/// One sequence's attention with every rounding point passed through `rnd` (the identity:
/// float64). The sink joins the denominator only (and becomes the max when it is above every
/// score); a row that sees no key gets out 0 and lse = its sink (-inf without one).
#[allow(clippy::too_many_arguments)]
pub fn attend_core<T: Copy + Into<f64>>(
    q: &[f32], k: &[T], v: &[T], sq: usize, sk: usize, h: usize, hk: usize, d: usize, dv: usize, spec: &Spec,
    rnd: &dyn Fn(f64) -> f64,
) -> Attn {
    let group = h / hk;
    let mut out = vec![0.0; sq * h * dv];
    let mut lse = vec![f64::NEG_INFINITY; h * sq];
    let mut scores = vec![0.0f64; sk];
    for head in 0..h {
        let kh = head / group;
        let sink = spec.sink(head);
        for i in 0..sq {
            let mut max = f64::NEG_INFINITY;
            let mut any = false;
            for j in 0..sk {
                scores[j] = f64::NEG_INFINITY;
                if !spec.visible(i, j, sq, sk) {
                    continue;
                }
                let dot: f64 = (0..d).map(|c| q[(i * h + head) * d + c] as f64 * k[(j * hk + kh) * d + c].into()).sum();
                scores[j] = rnd(spec.score(dot, i, j, sq, sk, head));
                max = max.max(scores[j]);
                any = true;
            }
            if !any {
                lse[head * sq + i] = sink;
                continue; // no visible key: out 0
            }
            max = max.max(sink);
            let sink_term = if sink > f64::NEG_INFINITY { (sink - max).exp() } else { 0.0 };
            let sum: f64 = sink_term + scores.iter().map(|s| (s - max).exp()).sum::<f64>();
            lse[head * sq + i] = max + sum.ln();
            let mut acc = vec![0.0f64; dv];
            for j in 0..sk {
                let p = rnd((scores[j] - max).exp() / sum);
                if p == 0.0 {
                    continue;
                }
                for c in 0..dv {
                    acc[c] += p * v[(j * hk + kh) * dv + c].into();
                }
            }
            for c in 0..dv {
                out[(i * h + head) * dv + c] = rnd(acc[c]);
            }
        }
    }
    Attn { out, lse }
}

/// float64 attention of one sequence.
#[allow(clippy::too_many_arguments)]
pub fn attend<T: Copy + Into<f64>>(q: &[f32], k: &[T], v: &[T], sq: usize, sk: usize, h: usize, hk: usize, d: usize, spec: &Spec) -> Attn {
    attend_core(q, k, v, sq, sk, h, hk, d, d, spec, &|x| x)
}

/// float64 attention of one sequence whose v / out have head dim `dv`.
#[allow(clippy::too_many_arguments)]
pub fn attend_dv(
    q: &[f32], k: &[f32], v: &[f32], sq: usize, sk: usize, h: usize, hk: usize, d: usize, dv: usize, spec: &Spec,
) -> Attn {
    attend_core(q, k, v, sq, sk, h, hk, d, dv, spec, &|x| x)
}

/// The naive low-precision attention of one sequence (see the module comment): the rounding
/// points of src/reference/reference.cpp's naive pipeline, so the bound means what it means
/// in the C++ GPU suite.
#[allow(clippy::too_many_arguments)]
pub fn attend_lowp<T: Copy + Into<f64>>(
    q: &[f32], k: &[T], v: &[T], sq: usize, sk: usize, h: usize, hk: usize, d: usize, spec: &Spec,
    round: &dyn Fn(f32) -> f32,
) -> Attn {
    attend_core(q, k, v, sq, sk, h, hk, d, d, spec, &|x| round(x as f32) as f64)
}

/// [`attend_lowp`] with v / out of head dim `dv`.
#[allow(clippy::too_many_arguments)]
pub fn attend_lowp_dv(
    q: &[f32], k: &[f32], v: &[f32], sq: usize, sk: usize, h: usize, hk: usize, d: usize, dv: usize, spec: &Spec,
    round: &dyn Fn(f32) -> f32,
) -> Attn {
    attend_core(q, k, v, sq, sk, h, hk, d, dv, spec, &|x| round(x as f32) as f64)
}

/// Largest |got - want| over finite pairs; infinity if any got is not finite where want is.
pub fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            if w.is_infinite() && (g as f64) == w {
                0.0
            } else if !g.is_finite() {
                f64::INFINITY
            } else {
                (g as f64 - w).abs()
            }
        })
        .fold(0.0, f64::max)
}

/// The project's bound: every element finite, and the error against float64 at most twice the
/// naive low-precision implementation's (+1e-5).
pub fn assert_within_bound(what: &str, got: &[f32], exact: &[f64], naive: &[f64]) {
    let err = max_abs_diff(got, exact);
    let naive_err = max_abs_diff(&naive.iter().map(|&x| x as f32).collect::<Vec<_>>(), exact);
    assert!(
        err.is_finite() && err <= 2.0 * naive_err + 1e-5,
        "{what}: max |flare - float64| = {err:.3e}, bound 2 x naive ({naive_err:.3e}) + 1e-5"
    );
    eprintln!("{what}: max err {err:.2e} (naive {naive_err:.2e})");
}
