//! flare: exact attention forward (FlashAttention-class) for NVIDIA GPUs, from Rust.
//!
//! A safe layer over the C ABI of [`flare_sys`]:
//! - tensors are anything implementing [`DeviceTensor`] (device pointer, [`DType`], shape,
//!   strides in elements), so candle, cudarc or a caller's own allocator plug in without flare
//!   depending on them; [`TensorView`] is a plain implementation over a raw pointer;
//! - [`MhaParams`] builds one call (prefill, varlen, KV cache with append / rotary / paging)
//!   and answers the library's questions (workspace size, split count, can-implement) before
//!   running it; [`MergeParams`] merges partial attention states;
//! - FP8 K/V: k and v of [`DType::E4M3`] / [`DType::E5M2`] with their [`Descale`] factors
//!   ([`MhaParams::k_descale`], [`AttnOptions::k_descale`]) in every call shape;
//! - the functions of candle-flash-attn's family ([`flash_attn`], [`flash_attn_varlen`],
//!   [`flash_attn_with_kvcache`], ...) by name, writing into a caller-provided output;
//! - every failure is an [`Error`]: a [`Status`] and the message naming the field at fault.
//!
//! flare never allocates: a call that can use a split-KV workspace gets one through
//! [`Launch::with_workspace`], sized by [`MhaParams::workspace_size`]; the stream is a raw
//! `cudaStream_t` ([`Stream`]).
//!
//! ```no_run
//! use flare::{DType, Launch, MhaParams, RawBuffer, Stream, TensorView};
//! # fn alloc(bytes: usize) -> *mut core::ffi::c_void { unimplemented!() }
//! # fn main() -> Result<(), flare::Error> {
//! let (b, s, h, d) = (2, 128, 8, 64);
//! // Device buffers from the caller's allocator (candle, cudarc, cudaMalloc...).
//! let (q_ptr, k_ptr, v_ptr, o_ptr) = (alloc(b * s * h * d * 2), alloc(b * s * h * d * 2),
//!                                     alloc(b * s * h * d * 2), alloc(b * s * h * d * 2));
//! let q = unsafe { TensorView::contiguous(q_ptr, DType::BF16, &[b, s, h, d])? };
//! let k = unsafe { TensorView::contiguous(k_ptr, DType::BF16, &[b, s, h, d])? };
//! let v = unsafe { TensorView::contiguous(v_ptr, DType::BF16, &[b, s, h, d])? };
//! let mut out = unsafe { TensorView::contiguous(o_ptr, DType::BF16, &[b, s, h, d])? };
//! let params = MhaParams::prefill(&q, &k, &v, &mut out)?.causal(true);
//! let bytes = params.workspace_size(0)?;
//! let workspace = unsafe { RawBuffer::new(alloc(bytes), bytes) };
//! params.run(&Launch::on(Stream::DEFAULT).with_workspace(&workspace))?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod descale;
mod error;
mod family;
mod merge;
mod params;
mod tensor;

pub use descale::Descale;
pub use error::{Error, Result, Status};
pub use family::{
    flash_attn, flash_attn_alibi, flash_attn_alibi_windowed, flash_attn_alibi_windowed_softcap,
    flash_attn_varlen, flash_attn_varlen_alibi, flash_attn_varlen_alibi_windowed,
    flash_attn_varlen_alibi_windowed_softcap, flash_attn_varlen_paged_windowed,
    flash_attn_varlen_windowed, flash_attn_varlen_with_options, flash_attn_windowed,
    flash_attn_with_kvcache,
};
pub use merge::MergeParams;
pub use params::{AttnOptions, KvCache, MhaParams};
pub use tensor::{DType, DeviceBuffer, DeviceTensor, Launch, RawBuffer, Stream, TensorView};

/// The flare-sys bindings this crate is built on.
pub use flare_sys as sys;

/// The library's version, "MAJOR.MINOR.PATCH" (`flare_version`).
pub fn version() -> &'static str {
    // SAFETY: flare_version returns a static NUL-terminated string.
    unsafe { error::static_str(sys::flare_version()) }
}

/// The library's build description (`flare_build_info`): `key=value` lines (version,
/// cuda_runtime, archs, dtypes, head_dims, tuning).
pub fn build_info() -> &'static str {
    // SAFETY: flare_build_info returns a static NUL-terminated string.
    unsafe { error::static_str(sys::flare_build_info()) }
}
