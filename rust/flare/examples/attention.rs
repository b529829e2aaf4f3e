//! Causal attention on the GPU through the safe API: host data in fp16, device buffers from
//! cudaMalloc (declared by hand here; candle, cudarc or any allocator would do), the split-KV
//! workspace sized by flare, and one output row checked against a float64 computation.
//!
//!   cargo run --example attention            (needs a GPU; FLARE_DIR etc. as for the tests)
use core::ffi::c_void;

use flare::{DType, Launch, MhaParams, RawBuffer, Stream, TensorView};

extern "C" {
    fn cudaMalloc(ptr: *mut *mut c_void, size: usize) -> i32;
    fn cudaFree(ptr: *mut c_void) -> i32;
    fn cudaMemcpy(dst: *mut c_void, src: *const c_void, count: usize, kind: i32) -> i32;
}

/// A device copy of `data` (or `bytes` of uninitialised memory when `data` is empty).
fn upload(data: &[u16], bytes: usize) -> *mut c_void {
    let mut ptr = core::ptr::null_mut();
    unsafe {
        let err = cudaMalloc(&mut ptr, bytes.max(256));
        if err != 0 {
            eprintln!("attention: cudaMalloc failed (CUDA error {err}): this example needs a GPU");
            std::process::exit(1);
        }
        if !data.is_empty() {
            assert_eq!(cudaMemcpy(ptr, data.as_ptr().cast(), bytes, 1), 0, "cudaMemcpy");
        }
    }
    ptr
}

/// fp16 bits of x (x in the normal range; round to nearest even).
fn to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let (sign, exp, mant) = ((b >> 16) & 0x8000, ((b >> 23) & 0xff) as i32 - 112, b & 0x7f_ffff);
    if exp <= 0 {
        return sign as u16;
    }
    let mut h = ((exp as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    (sign | h) as u16
}

fn from_f16(h: u16) -> f32 {
    let (sign, exp, mant) = ((h as u32 & 0x8000) << 16, (h >> 10) as u32 & 0x1f, h as u32 & 0x3ff);
    if exp == 0 {
        return 0.0;
    }
    f32::from_bits(sign | ((exp + 112) << 23) | (mant << 13))
}

fn main() -> Result<(), flare::Error> {
    let (b, s, h, d) = (1usize, 256usize, 8usize, 64usize);
    let n = b * s * h * d;
    let host: Vec<u16> = (0..3 * n).map(|i| to_f16(((i * 7919) % 1000) as f32 / 1000.0 - 0.5)).collect();
    let (q_ptr, k_ptr, v_ptr) = (upload(&host[..n], n * 2), upload(&host[n..2 * n], n * 2), upload(&host[2 * n..], n * 2));
    let o_ptr = upload(&[], n * 2);

    let shape = [b, s, h, d];
    let q = unsafe { TensorView::contiguous(q_ptr, DType::F16, &shape)? };
    let k = unsafe { TensorView::contiguous(k_ptr, DType::F16, &shape)? };
    let v = unsafe { TensorView::contiguous(v_ptr, DType::F16, &shape)? };
    let mut out = unsafe { TensorView::contiguous(o_ptr, DType::F16, &shape)? };

    let params = MhaParams::prefill(&q, &k, &v, &mut out)?.causal(true);
    let bytes = params.workspace_size(0)?;
    let workspace = unsafe { RawBuffer::new(upload(&[], bytes), bytes) };
    let launch = Launch::on(Stream::DEFAULT).with_workspace(&workspace);
    println!("flare {}: {} split(s), workspace {bytes} bytes", flare::version(), params.planned_splits(0, &launch)?);
    params.run(&launch)?;

    // Row s-1, head 0 sees every key: compare it with float64.
    let mut got = vec![0u16; n];
    unsafe { assert_eq!(cudaMemcpy(got.as_mut_ptr().cast(), o_ptr, n * 2, 2), 0, "cudaMemcpy") };
    let f = |t: usize, row: usize, c: usize| from_f16(host[t * n + (row * h) * d + c]) as f64;
    let scores: Vec<f64> = (0..s).map(|j| (0..d).map(|c| f(0, s - 1, c) * f(1, j, c)).sum::<f64>() / (d as f64).sqrt()).collect();
    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
    let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
    let mut err = 0f64;
    for c in 0..d {
        let want: f64 = (0..s).map(|j| (scores[j] - max).exp() / sum * f(2, j, c)).sum();
        err = err.max((from_f16(got[((s - 1) * h) * d + c]) as f64 - want).abs());
    }
    println!("last row, head 0: max |flare - float64| = {err:.2e}");
    unsafe {
        for p in [q_ptr, k_ptr, v_ptr, o_ptr, workspace_ptr(&workspace)] {
            cudaFree(p);
        }
    }
    Ok(())
}

fn workspace_ptr(w: &RawBuffer) -> *mut c_void {
    flare::DeviceBuffer::device_ptr(w)
}
