//! The FP8 formats of flare.h, written here independently of the library (src/common/fp8.h) so
//! the tests can check what the kernels write:
//!
//! - e4m3 (float8_e4m3fn): 1 sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities,
//!   S.1111.111 is NaN; largest finite 448 (code 0x7e), smallest subnormal 2^-9;
//! - e5m2: 1 sign, 5 exponent bits (bias 15), 2 mantissa bits; S.11111.00 is infinity,
//!   S.11111.xx NaN; largest finite 57344 (code 0x7b), smallest subnormal 2^-16.
//!
//! [`encode`] is flare.h's rule for an append into an FP8 cache, the code nearest to the value
//! (round to nearest, ties to the even code, saturated to the largest finite magnitude, the
//! sign kept, NaN to S.1111111), found here by searching the decoded codes rather than by bit
//! arithmetic.
use flare::DType;

/// The value of `code` in an FP8 format ([`DType::E4M3`] or [`DType::E5M2`]); exact.
pub fn decode(dtype: DType, code: u8) -> f64 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let (exp_bits, mant_bits, bias) = layout(dtype);
    let exp = ((code & 0x7f) >> mant_bits) as i32;
    let mant = (code & ((1u8 << mant_bits) - 1)) as i32;
    let exp_max = (1 << exp_bits) - 1;
    match dtype {
        DType::E4M3 if exp == exp_max && mant == 7 => return f64::NAN,
        DType::E5M2 if exp == exp_max => return if mant == 0 { sign * f64::INFINITY } else { f64::NAN },
        _ => {}
    }
    let one = 1 << mant_bits;
    if exp == 0 {
        sign * mant as f64 * 2f64.powi(1 - bias - mant_bits as i32)
    } else {
        sign * (one + mant) as f64 * 2f64.powi(exp - bias - mant_bits as i32)
    }
}

/// (exponent bits, mantissa bits, bias) of an FP8 format.
fn layout(dtype: DType) -> (u32, u32, i32) {
    match dtype {
        DType::E4M3 => (4, 3, 7),
        DType::E5M2 => (5, 2, 15),
        other => panic!("{other:?} is not an FP8 format"),
    }
}

/// The largest finite positive code.
pub fn max_code(dtype: DType) -> u8 {
    match dtype {
        DType::E4M3 => 0x7e,
        DType::E5M2 => 0x7b,
        other => panic!("{other:?} is not an FP8 format"),
    }
}

/// The code of `x` (round to nearest, ties to even, saturating; see the module comment).
pub fn encode(dtype: DType, x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    if x.is_nan() {
        return sign | 0x7f;
    }
    let a = (x as f64).abs();
    let top = max_code(dtype);
    if a >= decode(dtype, top) {
        return sign | top;
    }
    // Positive codes 0..=top increase with their value: c is the last one not above a.
    let (mut lo, mut hi) = (0u8, top);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if decode(dtype, mid) <= a {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let c = lo;
    let (below, above) = (a - decode(dtype, c), decode(dtype, c + 1) - a);
    let code = if below < above || (below == above && c % 2 == 0) { c } else { c + 1 };
    sign | code
}

/// The code an append writes for value `x` with factor `descale`: the nearest code to
/// x / descale, the division in float32 (IEEE, round to nearest).
pub fn quantize(dtype: DType, x: f32, descale: f32) -> u8 {
    encode(dtype, x / descale)
}
