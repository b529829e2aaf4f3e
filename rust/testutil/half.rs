//! fp16 and bf16 bit conversions (round to nearest even), and the dtype-generic helpers the
//! tests use to upload rounded data.
use flare::DType;

pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1u32 << shift) - 1);
        let mut r = m >> shift;
        if rest > half || (rest == half && (r & 1) == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && (r & 1) == 1) {
        r += 1;
    }
    sign | r as u16
}

pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if mant == 0 {
            sign
        } else {
            // Subnormal: value = mant * 2^-24.
            let v = mant as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (mant << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}

pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    ((bits + rounding) >> 16) as u16
}

pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

pub fn to_bits(dtype: DType, x: f32) -> u16 {
    match dtype {
        DType::F16 => f32_to_f16(x),
        DType::BF16 => f32_to_bf16(x),
        _ => panic!("not a 16-bit dtype"),
    }
}

pub fn from_bits(dtype: DType, h: u16) -> f32 {
    match dtype {
        DType::F16 => f16_to_f32(h),
        DType::BF16 => bf16_to_f32(h),
        _ => panic!("not a 16-bit dtype"),
    }
}

/// x rounded to the dtype.
pub fn round(dtype: DType, x: f32) -> f32 {
    from_bits(dtype, to_bits(dtype, x))
}

/// A NaN bit pattern of the dtype (poison for outputs).
pub fn nan_bits(dtype: DType) -> u16 {
    match dtype {
        DType::F16 => 0x7e00,
        _ => 0x7fc0,
    }
}

/// Deterministic values in [-1, 1) (a 64-bit LCG), rounded to the dtype.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407))
    }
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// `n` values of the dtype: (bits, the exact value of each).
    pub fn tensor(&mut self, dtype: DType, n: usize) -> (Vec<u16>, Vec<f32>) {
        let bits: Vec<u16> = (0..n).map(|_| to_bits(dtype, self.next_f32())).collect();
        let vals = bits.iter().map(|&b| from_bits(dtype, b)).collect();
        (bits, vals)
    }
    /// A permutation of 0..n.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = ((self.next_f32() + 1.0) * 0.5 * (i + 1) as f32) as usize % (i + 1);
            p.swap(i, j);
        }
        p
    }
    /// Random K and V pools of `pool_pages` pages `[page, heads_k, d]` each and a block table
    /// `[seqs, pages_per_seq]` of distinct pool pages in shuffled order.
    #[allow(clippy::too_many_arguments)]
    pub fn paged_pools(
        &mut self,
        dtype: DType,
        pool_pages: usize,
        page: usize,
        heads_k: usize,
        d: usize,
        seqs: usize,
        pages_per_seq: usize,
    ) -> PagedPools {
        let n = pool_pages * page * heads_k * d;
        let (k_bits, k) = self.tensor(dtype, n);
        let (v_bits, v) = self.tensor(dtype, n);
        let perm = self.permutation(pool_pages);
        let table = perm[..seqs * pages_per_seq].iter().map(|&i| i as i32).collect();
        PagedPools { k_bits, k, v_bits, v, table, page, row: heads_k * d, pages_per_seq }
    }
}

/// [`Rng::paged_pools`]: the pools as bits and values, and the block table.
pub struct PagedPools {
    pub k_bits: Vec<u16>,
    pub k: Vec<f32>,
    pub v_bits: Vec<u16>,
    pub v: Vec<f32>,
    pub table: Vec<i32>,
    page: usize,
    row: usize,
    pages_per_seq: usize,
}

impl PagedPools {
    /// The first `len` key and value rows `[len, heads_k, d]` of sequence `seq`, gathered
    /// through its block-table row.
    pub fn sequence(&self, seq: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
        let (mut keys, mut vals) = (Vec::new(), Vec::new());
        for r in 0..len {
            let pg = self.table[seq * self.pages_per_seq + r / self.page] as usize;
            let at = (pg * self.page + r % self.page) * self.row;
            keys.extend_from_slice(&self.k[at..at + self.row]);
            vals.extend_from_slice(&self.v[at..at + self.row]);
        }
        (keys, vals)
    }
}
