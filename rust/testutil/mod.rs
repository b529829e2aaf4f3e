//! Helpers shared by the test binaries of flare-sys and flare (included with `#[path]`, not a
//! crate): CUDA memory declared by hand over the runtime flare-sys links, fp16/bf16 conversion,
//! the FP8 formats (decoding, and the encoding an append into an FP8 cache follows), and the
//! host references (float64, and the naive low-precision one the error bound is
//! measured against).
#![allow(dead_code)]

pub mod cuda;
pub mod fp8;
pub mod half;
pub mod reference;

/// Returns from the calling test with one line on stderr when no CUDA GPU is usable.
#[macro_export]
macro_rules! require_gpu {
    () => {
        if !$crate::testutil::cuda::have_gpu() {
            eprintln!("skipped: no CUDA GPU ({})", module_path!());
            return;
        }
    };
}
