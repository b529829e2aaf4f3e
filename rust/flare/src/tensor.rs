//! How tensors, workspaces and streams reach flare without flare knowing their owners.
//!
//! A tensor is anything implementing [`DeviceTensor`]: a device pointer, a [`DType`], a shape
//! and strides in elements. candle's `CudaStorage` with its `Layout`, a cudarc slice, or a
//! caller's own allocation plug in by implementing it (or by building a [`TensorView`]);
//! flare depends on none of them.

use core::ffi::c_void;

use flare_sys as sys;

use crate::error::{Error, Result, Status};

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE half precision (attention inputs and outputs).
    F16,
    /// bfloat16 (attention inputs and outputs).
    BF16,
    /// float32 (lse, ALiBi slopes, merge parts).
    F32,
    /// int32 (cu_seqlens, cache_seqlens, block tables, indices).
    I32,
    /// float8_e4m3fn codes (1 sign, 4 exponent, 3 mantissa bits; largest finite 448): FP8 K/V
    /// (or FP8 q), each code's value scaled by its tensor's [`crate::Descale`].
    E4M3,
    /// float8_e5m2 codes (1 sign, 5 exponent, 2 mantissa bits; largest finite 57344): FP8 K/V,
    /// each code's value scaled by its tensor's [`crate::Descale`].
    E5M2,
}

impl DType {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::E4M3 | DType::E5M2 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }

    /// true for the 8-bit floating-point code types ([`DType::E4M3`], [`DType::E5M2`]).
    pub fn is_fp8(self) -> bool {
        matches!(self, DType::E4M3 | DType::E5M2)
    }

    /// A short name: "fp16", "bf16", "fp32", "int32", "e4m3", "e5m2".
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "fp16",
            DType::BF16 => "bf16",
            DType::F32 => "fp32",
            DType::I32 => "int32",
            DType::E4M3 => "e4m3",
            DType::E5M2 => "e5m2",
        }
    }

    /// The `flare_dtype` of a floating-point type; `None` for [`DType::I32`].
    pub fn to_flare(self) -> Option<sys::flare_dtype> {
        match self {
            DType::F16 => Some(sys::FLARE_DTYPE_FP16),
            DType::BF16 => Some(sys::FLARE_DTYPE_BF16),
            DType::F32 => Some(sys::FLARE_DTYPE_FP32),
            DType::E4M3 => Some(sys::FLARE_DTYPE_E4M3),
            DType::E5M2 => Some(sys::FLARE_DTYPE_E5M2),
            DType::I32 => None,
        }
    }
}

/// A tensor in CUDA device memory, described by its first element's address, dtype, shape and
/// strides (in elements, one per dimension).
///
/// A framework's tensor type plugs in by implementing it, e.g. for an allocation of one's own:
///
/// ```
/// use core::ffi::c_void;
/// use flare::{DType, DeviceTensor};
///
/// struct MyTensor { ptr: u64, shape: Vec<usize>, strides: Vec<usize> } // ptr from cuMemAlloc
///
/// // SAFETY: MyTensor owns its allocation and never changes shape while borrowed.
/// unsafe impl DeviceTensor for MyTensor {
///     fn device_ptr(&self) -> *const c_void { self.ptr as *const c_void }
///     fn dtype(&self) -> DType { DType::BF16 }
///     fn shape(&self) -> &[usize] { &self.shape }
///     fn strides(&self) -> &[usize] { &self.strides }
/// }
/// ```
///
/// # Safety
/// An implementation guarantees that, for as long as the value is borrowed by flare, every
/// element the shape and strides address lies in live device memory of the device the call
/// runs on, and that the returned values do not change during the borrow. Tensors flare writes
/// (outputs) are passed as `&mut`; the implementation must then allow writes.
pub unsafe trait DeviceTensor {
    /// Device address of element (0, 0, ...).
    fn device_ptr(&self) -> *const c_void;
    /// Element type.
    fn dtype(&self) -> DType;
    /// Extent of every dimension.
    fn shape(&self) -> &[usize];
    /// Stride of every dimension, in elements.
    fn strides(&self) -> &[usize];
}

/// A plain [`DeviceTensor`]: a raw device pointer with its dtype, shape and strides (up to 4
/// dimensions). It owns nothing.
#[derive(Debug, Clone, Copy)]
pub struct TensorView {
    ptr: *const c_void,
    dtype: DType,
    rank: usize,
    shape: [usize; 4],
    strides: [usize; 4],
}

impl TensorView {
    /// A view with explicit strides (in elements).
    ///
    /// # Safety
    /// `ptr` with `shape` and `strides` must satisfy [`DeviceTensor`]'s contract for as long as
    /// the view is used.
    pub unsafe fn from_raw_parts(
        ptr: *const c_void,
        dtype: DType,
        shape: &[usize],
        strides: &[usize],
    ) -> Result<TensorView> {
        if shape.is_empty() || shape.len() > 4 {
            return Err(Error::invalid(format!(
                "a TensorView has 1 to 4 dimensions, got {}",
                shape.len()
            )));
        }
        if strides.len() != shape.len() {
            return Err(Error::invalid(format!(
                "a TensorView needs one stride per dimension: {} dimensions, {} strides",
                shape.len(),
                strides.len()
            )));
        }
        let mut view =
            TensorView { ptr, dtype, rank: shape.len(), shape: [0; 4], strides: [0; 4] };
        view.shape[..shape.len()].copy_from_slice(shape);
        view.strides[..shape.len()].copy_from_slice(strides);
        Ok(view)
    }

    /// A row-major (contiguous) view.
    ///
    /// # Safety
    /// As for [`TensorView::from_raw_parts`].
    pub unsafe fn contiguous(ptr: *const c_void, dtype: DType, shape: &[usize]) -> Result<TensorView> {
        let strides = contiguous_strides(shape);
        TensorView::from_raw_parts(ptr, dtype, shape, &strides[..shape.len().min(4)])
    }

    /// The same memory with two dimensions swapped (like a transpose of the view).
    pub fn transpose(mut self, a: usize, b: usize) -> Result<TensorView> {
        if a >= self.rank || b >= self.rank {
            return Err(Error::invalid(format!(
                "transpose({a}, {b}) of a view with {} dimensions",
                self.rank
            )));
        }
        self.shape.swap(a, b);
        self.strides.swap(a, b);
        Ok(self)
    }
}

/// Row-major strides of `shape` (first 4 dimensions).
pub(crate) fn contiguous_strides(shape: &[usize]) -> [usize; 4] {
    let mut strides = [0usize; 4];
    let n = shape.len().min(4);
    let mut step = 1usize;
    for d in (0..n).rev() {
        strides[d] = step;
        step = step.saturating_mul(shape[d]);
    }
    strides
}

// SAFETY: the constructors are unsafe and hand the contract to their caller.
unsafe impl DeviceTensor for TensorView {
    fn device_ptr(&self) -> *const c_void {
        self.ptr
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape[..self.rank]
    }
    fn strides(&self) -> &[usize] {
        &self.strides[..self.rank]
    }
}

/// Device memory flare may use as scratch (the split-KV workspace). flare never allocates.
///
/// # Safety
/// `device_ptr` must address `size_bytes` bytes of live device memory on the call's device that
/// nothing else uses while the call's work is in flight on its stream.
pub unsafe trait DeviceBuffer {
    /// Device address of the first byte (flare requires 256-byte alignment).
    fn device_ptr(&self) -> *mut c_void;
    /// Bytes available.
    fn size_bytes(&self) -> usize;
}

/// A plain [`DeviceBuffer`]: a raw device pointer and a size. It owns nothing.
#[derive(Debug, Clone, Copy)]
pub struct RawBuffer {
    ptr: *mut c_void,
    size: usize,
}

impl RawBuffer {
    /// # Safety
    /// `ptr` and `size` must satisfy [`DeviceBuffer`]'s contract while the buffer is used.
    pub unsafe fn new(ptr: *mut c_void, size: usize) -> RawBuffer {
        RawBuffer { ptr, size }
    }
}

// SAFETY: the constructor is unsafe and hands the contract to its caller.
unsafe impl DeviceBuffer for RawBuffer {
    fn device_ptr(&self) -> *mut c_void {
        self.ptr
    }
    fn size_bytes(&self) -> usize {
        self.size
    }
}

/// A CUDA stream (`cudaStream_t`) as a raw handle; flare enqueues its work on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream(*mut c_void);

impl Stream {
    /// The legacy default stream (a null `cudaStream_t`).
    pub const DEFAULT: Stream = Stream(core::ptr::null_mut());

    /// Wraps a `cudaStream_t` (or `CUstream`, the same handle).
    ///
    /// # Safety
    /// `handle` must be null or a stream that stays alive while flare's work on it runs.
    pub unsafe fn from_raw(handle: *mut c_void) -> Stream {
        Stream(handle)
    }

    /// The raw `cudaStream_t`.
    pub fn as_raw(self) -> *mut c_void {
        self.0
    }
}

impl Default for Stream {
    fn default() -> Stream {
        Stream::DEFAULT
    }
}

/// Where a call runs: its stream and, optionally, the workspace it may use for split-KV
/// (size it with [`crate::MhaParams::workspace_size`]; without one flare does not split).
#[derive(Clone, Copy, Default)]
pub struct Launch<'w> {
    /// The stream the work is enqueued on.
    pub stream: Stream,
    /// Scratch device memory for the call, if any.
    pub workspace: Option<&'w dyn DeviceBuffer>,
}

impl<'w> Launch<'w> {
    /// On `stream`, without a workspace.
    pub fn on(stream: Stream) -> Launch<'w> {
        Launch { stream, workspace: None }
    }

    /// The same launch with a workspace.
    pub fn with_workspace(self, workspace: &'w dyn DeviceBuffer) -> Launch<'w> {
        Launch { workspace: Some(workspace), ..self }
    }
}

impl core::fmt::Debug for Launch<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Launch")
            .field("stream", &self.stream)
            .field("workspace", &self.workspace.map(|w| (w.device_ptr(), w.size_bytes())))
            .finish()
    }
}

// ---- checks shared by the builders (messages name the tensor, dimension and value) ----

pub(crate) fn dim_text(name: &str, d: usize, value: usize) -> String {
    format!("{name}.shape[{d}] ({value})")
}

pub(crate) fn to_i32(name: &str, d: usize, value: usize) -> Result<i32> {
    i32::try_from(value)
        .map_err(|_| Error::invalid(format!("{} is out of range [0, 2^31)", dim_text(name, d, value))))
}

pub(crate) fn stride_i64(name: &str, d: usize, value: usize) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| Error::invalid(format!("{name}.strides[{d}] ({value}) is out of range")))
}

pub(crate) fn expect_rank(name: &str, t: &dyn DeviceTensor, rank: usize) -> Result<()> {
    if t.shape().len() != rank || t.strides().len() != rank {
        return Err(Error::invalid(format!(
            "{name} must have {rank} dimensions, got {}",
            t.shape().len()
        )));
    }
    if t.strides()[rank - 1] != 1 {
        return Err(Error::invalid(format!(
            "{name}.strides[{}] ({}) must be 1: the last dimension is contiguous",
            rank - 1,
            t.strides()[rank - 1]
        )));
    }
    Ok(())
}

pub(crate) fn expect_dtype(name: &str, t: &dyn DeviceTensor, dtype: DType, what: &str) -> Result<()> {
    if t.dtype() != dtype {
        return Err(Error::invalid(format!(
            "{name} is {} but {what} is {}",
            t.dtype().name(),
            dtype.name()
        )));
    }
    Ok(())
}

pub(crate) fn expect_dim(name: &str, t: &dyn DeviceTensor, d: usize, expected: usize, what: &str) -> Result<()> {
    let value = t.shape()[d];
    if value != expected {
        return Err(Error::invalid(format!(
            "{} must equal {what} ({expected})",
            dim_text(name, d, value)
        )));
    }
    Ok(())
}

pub(crate) fn expect_same_shape(name: &str, t: &dyn DeviceTensor, ref_name: &str, r: &dyn DeviceTensor) -> Result<()> {
    for d in 0..r.shape().len() {
        expect_dim(name, t, d, r.shape()[d], &format!("{ref_name}.shape[{d}]"))?;
    }
    Ok(())
}

/// A dense int32 / fp32 array of the given shape (the C ABI takes these without strides).
pub(crate) fn expect_dense(name: &str, t: &dyn DeviceTensor, dtype: DType, shape: &[usize]) -> Result<()> {
    if t.dtype() != dtype {
        return Err(Error::invalid(format!("{name} must be {}, got {}", dtype.name(), t.dtype().name())));
    }
    if t.shape() != shape {
        return Err(Error::invalid(format!("{name} must have shape {shape:?}, got {:?}", t.shape())));
    }
    // Dimensions of extent 1 are never stepped over: any stride will do there.
    let dense = contiguous_strides(shape);
    if (0..shape.len()).any(|d| shape[d] > 1 && t.strides()[d] != dense[d]) {
        return Err(Error::invalid(format!(
            "{name} must be contiguous (strides {:?}), got strides {:?}",
            &contiguous_strides(shape)[..shape.len()],
            t.strides()
        )));
    }
    Ok(())
}

/// The flare dtype of an attention input or output in 16 bits (fp16 / bf16).
pub(crate) fn attention_dtype(name: &str, t: &dyn DeviceTensor) -> Result<sys::flare_dtype> {
    match t.dtype() {
        DType::F16 | DType::BF16 => Ok(t.dtype().to_flare().unwrap()),
        other => Err(Error::new(
            Status::UnsupportedDtype,
            format!("{name} is {}: attention takes fp16 or bf16", other.name()),
        )),
    }
}
