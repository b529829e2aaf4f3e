//! [`Descale`]: the fp32 factors that give an FP8 tensor's codes their values (flare.h, "FP8
//! inputs").
//!
//! A code c of K/V head hk in batch entry b stands for `float(c) * descale[b * batch_stride +
//! hk * head_stride]` (strides in floats; 0 and 0: one factor for the whole tensor). Each FP8
//! tensor needs its array (k and v: `kv_dtype` FP8; q: FP8 q), and only an FP8 tensor may have
//! one: that rule, the 4-byte alignment and the strides' range are the library's checks. The
//! values themselves (finite, non-zero) are the caller's responsibility: nothing reads device
//! memory before the launch.

use core::ffi::c_void;
use core::marker::PhantomData;

use crate::error::{Error, Result};
use crate::tensor::{DType, DeviceTensor};

/// Where the factors of one FP8 tensor live and how they are indexed.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// One factor for the whole tensor (strides 0, 0).
    PerTensor,
    /// `[batch, heads_k]` with the tensor's strides: checked against the call's batch and K/V
    /// heads when the builder takes it.
    PerBatchHead,
    /// A device pointer and strides from the caller, checked by the library only.
    Raw,
}

/// The descale factors of an FP8 tensor: a device fp32 array indexed by (batch entry, K/V
/// head). Hand it to [`crate::MhaParams::k_descale`] / [`crate::MhaParams::v_descale`] /
/// [`crate::MhaParams::q_descale`] or to the fields of [`crate::AttnOptions`].
#[derive(Clone, Copy)]
pub struct Descale<'a> {
    ptr: *const f32,
    batch_stride: usize,
    head_stride: usize,
    shape: Shape,
    /// `[batch, heads_k]` of a [`Descale::per_batch_head`] array.
    dims: [usize; 2],
    _memory: PhantomData<&'a ()>,
}

impl<'a> Descale<'a> {
    /// One factor for the whole tensor: an fp32 tensor of exactly one element (strides 0, 0).
    pub fn per_tensor(t: &'a dyn DeviceTensor) -> Result<Descale<'a>> {
        expect_f32(t)?;
        let n: usize = t.shape().iter().product();
        if n != 1 {
            return Err(Error::invalid(format!(
                "a per-tensor descale holds one fp32 factor, got shape {:?}",
                t.shape()
            )));
        }
        Ok(Descale::new(t.device_ptr(), 0, 0, Shape::PerTensor, [1, 1]))
    }

    /// One factor per (batch entry, K/V head): an fp32 tensor `[batch, heads_k]` with any
    /// strides (FlashAttention-3's layout is the contiguous one; a zero stride shares factors,
    /// e.g. batch stride 0 for per-head factors common to the batch). Its shape is checked
    /// against the call when a builder takes it.
    pub fn per_batch_head(t: &'a dyn DeviceTensor) -> Result<Descale<'a>> {
        expect_f32(t)?;
        if t.shape().len() != 2 || t.strides().len() != 2 {
            return Err(Error::invalid(format!(
                "a per-(batch, head) descale is fp32 [batch, heads_k], got {} dimensions",
                t.shape().len()
            )));
        }
        let (shape, strides) = (t.shape(), t.strides());
        // A dimension of extent 1 is never stepped over: its stride does not matter.
        let batch_stride = if shape[0] > 1 { strides[0] } else { 0 };
        let head_stride = if shape[1] > 1 { strides[1] } else { 0 };
        Ok(Descale::new(t.device_ptr(), batch_stride, head_stride, Shape::PerBatchHead, [shape[0], shape[1]]))
    }

    /// A device fp32 array and its (batch, head) strides in floats, as flare.h takes them.
    ///
    /// # Safety
    /// Every index `b * batch_stride + hk * head_stride` of the calls it is used in (b < batch,
    /// hk < heads_k) must address live device fp32 memory for as long as the params are used.
    pub unsafe fn from_raw(ptr: *const f32, batch_stride: usize, head_stride: usize) -> Descale<'a> {
        Descale::new(ptr as *const c_void, batch_stride, head_stride, Shape::Raw, [0, 0])
    }

    fn new(ptr: *const c_void, batch_stride: usize, head_stride: usize, shape: Shape, dims: [usize; 2]) -> Descale<'a> {
        Descale { ptr: ptr as *const f32, batch_stride, head_stride, shape, dims, _memory: PhantomData }
    }

    /// The device address of the factor of (0, 0).
    pub fn device_ptr(&self) -> *const f32 {
        self.ptr
    }

    /// (batch, head) strides in floats, as passed to flare.
    pub fn strides(&self) -> (usize, usize) {
        (self.batch_stride, self.head_stride)
    }

    /// The C fields (pointer, batch stride, head stride) for a call of `batch` entries and
    /// `heads_k` K/V heads; `name` is the field ("k_descale"...) the messages name.
    pub(crate) fn resolve(&self, name: &str, batch: usize, heads_k: usize) -> Result<(*const f32, i64, i64)> {
        if let Shape::PerBatchHead = self.shape {
            for (d, (got, want, what)) in
                [(self.dims[0], batch, "the batch"), (self.dims[1], heads_k, "the heads of k/v")].into_iter().enumerate()
            {
                if got != want {
                    return Err(Error::invalid(format!("{name}.shape[{d}] ({got}) must equal {what} ({want})")));
                }
            }
        }
        let stride = |s: usize, which: &str| {
            i64::try_from(s).map_err(|_| Error::invalid(format!("{name} {which} stride ({s}) is out of range")))
        };
        Ok((self.ptr, stride(self.batch_stride, "batch")?, stride(self.head_stride, "head")?))
    }
}

fn expect_f32(t: &dyn DeviceTensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::invalid(format!("descale factors are fp32, got {}", t.dtype().name())));
    }
    Ok(())
}

impl core::fmt::Debug for Descale<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Descale")
            .field("ptr", &self.ptr)
            .field("batch_stride", &self.batch_stride)
            .field("head_stride", &self.head_stride)
            .field("shape", &self.shape)
            .finish()
    }
}
