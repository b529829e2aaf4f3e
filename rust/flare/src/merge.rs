//! [`MergeParams`]: merging partial attention states (`flare_merge_attention_states`).
//!
//! Attention over keys split into parts, merged by log-sum-exp:
//! `lse = log(sum_s exp(lse_s))`, `out = sum_s exp(lse_s - lse) * o_s`.
//! - part s: `[batch, seqlen, heads, d]`, fp16, bf16 or fp32; all parts share dtype, shape and
//!   strides, the head dimension contiguous;
//! - lse of part s: fp32 `[batch, heads, seqlen]` (flare's lse layout), any strides, the same
//!   for every part;
//! - out: `[batch, seqlen, heads, d]`, fp16, bf16 or fp32; out_lse (optional) like an lse.

use core::ffi::c_void;
use core::marker::PhantomData;

use flare_sys as sys;

use crate::error::{check, Error, Result};
use crate::tensor::{expect_dim, expect_rank, expect_same_shape, stride_i64, to_i32, DType, DeviceTensor, Stream};

/// Parameters of one merge, borrowing its tensors for `'a`.
pub struct MergeParams<'a> {
    raw: sys::flare_merge_params,
    part_ptrs: Vec<*const c_void>,
    lse_ptrs: Vec<*const f32>,
    _tensors: PhantomData<&'a ()>,
}

impl core::fmt::Debug for MergeParams<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MergeParams").field("raw", &self.raw).field("parts", &self.part_ptrs).finish()
    }
}

fn check_lse(name: &str, t: &dyn DeviceTensor, out: &dyn DeviceTensor) -> Result<()> {
    if t.shape().len() != 3 || t.strides().len() != 3 {
        return Err(Error::invalid(format!("{name} must have 3 dimensions [batch, heads, seqlen]")));
    }
    if t.dtype() != DType::F32 {
        return Err(Error::invalid(format!("{name} must be fp32, got {}", t.dtype().name())));
    }
    expect_dim(name, t, 0, out.shape()[0], "out.shape[0]")?;
    expect_dim(name, t, 1, out.shape()[2], "out.shape[2]")?;
    expect_dim(name, t, 2, out.shape()[1], "out.shape[1]")
}

fn float_dtype(name: &str, t: &dyn DeviceTensor) -> Result<i32> {
    t.dtype()
        .to_flare()
        .ok_or_else(|| Error::invalid(format!("{name} must be fp16, bf16 or fp32, got {}", t.dtype().name())))
}

impl<'a> MergeParams<'a> {
    /// Merges `parts` (with their `lses`) into `out`. At most
    /// [`sys::FLARE_MERGE_MAX_PART_PTRS`] parts.
    pub fn new(
        parts: &[&'a dyn DeviceTensor],
        lses: &[&'a dyn DeviceTensor],
        out: &'a mut dyn DeviceTensor,
    ) -> Result<MergeParams<'a>> {
        if parts.is_empty() {
            return Err(Error::invalid("merge needs at least one part"));
        }
        if lses.len() != parts.len() {
            return Err(Error::invalid(format!("{} parts but {} lse tensors", parts.len(), lses.len())));
        }
        if parts.len() > sys::FLARE_MERGE_MAX_PART_PTRS as usize {
            return Err(Error::invalid(format!(
                "merge takes at most {} parts, got {}",
                sys::FLARE_MERGE_MAX_PART_PTRS,
                parts.len()
            )));
        }
        let out_ref: &dyn DeviceTensor = &*out;
        expect_rank("out", out_ref, 4)?;
        let (p0, l0) = (parts[0], lses[0]);
        for (s, (part, lse)) in parts.iter().zip(lses).enumerate() {
            let name = format!("parts[{s}]");
            expect_rank(&name, *part, 4)?;
            if part.dtype() != p0.dtype() {
                return Err(Error::invalid(format!(
                    "{name} is {} but parts[0] is {}",
                    part.dtype().name(),
                    p0.dtype().name()
                )));
            }
            expect_same_shape(&name, *part, "out", out_ref)?;
            if part.strides() != p0.strides() {
                return Err(Error::invalid(format!("{name} has other strides than parts[0]")));
            }
            let lname = format!("lses[{s}]");
            check_lse(&lname, *lse, out_ref)?;
            if lse.strides() != l0.strides() {
                return Err(Error::invalid(format!("{lname} has other strides than lses[0]")));
            }
        }
        let mut raw = core::mem::MaybeUninit::<sys::flare_merge_params>::uninit();
        // SAFETY: the init function writes the whole struct.
        let mut raw = unsafe {
            sys::flare_merge_params_init(raw.as_mut_ptr());
            raw.assume_init()
        };
        raw.num_parts = parts.len() as i32;
        raw.part_dtype = float_dtype("parts[0]", p0)?;
        raw.out_dtype = float_dtype("out", out_ref)?;
        raw.batch = to_i32("out", 0, out_ref.shape()[0])?;
        raw.seqlen = to_i32("out", 1, out_ref.shape()[1])?;
        raw.num_heads = to_i32("out", 2, out_ref.shape()[2])?;
        raw.head_dim = to_i32("out", 3, out_ref.shape()[3])?;
        let ps = p0.strides();
        raw.part_batch_stride = stride_i64("parts[0]", 0, ps[0])?;
        raw.part_row_stride = stride_i64("parts[0]", 1, ps[1])?;
        raw.part_head_stride = stride_i64("parts[0]", 2, ps[2])?;
        let ls = l0.strides();
        raw.lse_batch_stride = stride_i64("lses[0]", 0, ls[0])?;
        raw.lse_head_stride = stride_i64("lses[0]", 1, ls[1])?;
        raw.lse_row_stride = stride_i64("lses[0]", 2, ls[2])?;
        let os = out_ref.strides();
        raw.out_batch_stride = stride_i64("out", 0, os[0])?;
        raw.out_row_stride = stride_i64("out", 1, os[1])?;
        raw.out_head_stride = stride_i64("out", 2, os[2])?;
        raw.out = out.device_ptr() as *mut c_void;
        Ok(MergeParams {
            raw,
            part_ptrs: parts.iter().map(|p| p.device_ptr()).collect(),
            lse_ptrs: lses.iter().map(|l| l.device_ptr() as *const f32).collect(),
            _tensors: PhantomData,
        })
    }

    /// Also writes the merged lse, fp32 `[batch, heads, seqlen]`, any strides.
    pub fn out_lse(mut self, out_lse: &'a mut dyn DeviceTensor) -> Result<Self> {
        let shape = [self.raw.batch as usize, self.raw.seqlen as usize, self.raw.num_heads as usize];
        if out_lse.shape().len() != 3 || out_lse.dtype() != DType::F32 {
            return Err(Error::invalid("out_lse must be fp32 with 3 dimensions [batch, heads, seqlen]"));
        }
        let s = out_lse.shape();
        if s[0] != shape[0] || s[1] != shape[2] || s[2] != shape[1] {
            return Err(Error::invalid(format!(
                "out_lse.shape {:?} must be [batch, heads, seqlen] = [{}, {}, {}]",
                s, shape[0], shape[2], shape[1]
            )));
        }
        let st = out_lse.strides();
        self.raw.out_lse_batch_stride = stride_i64("out_lse", 0, st[0])?;
        self.raw.out_lse_head_stride = stride_i64("out_lse", 1, st[1])?;
        self.raw.out_lse_row_stride = stride_i64("out_lse", 2, st[2])?;
        self.raw.out_lse = out_lse.device_ptr() as *mut f32;
        Ok(self)
    }

    /// The C struct as built; its pointer tables point into `self`.
    pub fn as_raw(&self) -> sys::flare_merge_params {
        let mut raw = self.raw;
        raw.part_ptrs = self.part_ptrs.as_ptr();
        raw.lse_ptrs = self.lse_ptrs.as_ptr();
        raw
    }

    /// Runs the merge on `stream`. On a validation error nothing is launched or written.
    pub fn run(&self, stream: Stream) -> Result<()> {
        let raw = self.as_raw();
        // SAFETY: the tensors' DeviceTensor contracts cover every device pointer; the host
        // pointer tables live in self for the call.
        check(unsafe { sys::flare_merge_attention_states(&raw, stream.as_raw()) })
    }
}
