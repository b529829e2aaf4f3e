//! The few CUDA runtime calls the GPU tests need, declared by hand (flare-sys links the CUDA
//! runtime), and `DeviceVec`, an owning device allocation that is a `DeviceTensor`.
use core::ffi::c_void;

use flare::{DType, DeviceTensor, TensorView};

const CUDA_MEMCPY_HOST_TO_DEVICE: i32 = 1;
const CUDA_MEMCPY_DEVICE_TO_HOST: i32 = 2;

extern "C" {
    fn cudaMalloc(ptr: *mut *mut c_void, size: usize) -> i32;
    fn cudaFree(ptr: *mut c_void) -> i32;
    fn cudaMemcpy(dst: *mut c_void, src: *const c_void, count: usize, kind: i32) -> i32;
    fn cudaDeviceSynchronize() -> i32;
    fn cudaGetDeviceCount(count: *mut i32) -> i32;
    fn cudaGetLastError() -> i32;
}

/// true when the CUDA runtime finds at least one GPU.
pub fn have_gpu() -> bool {
    let mut n = 0;
    // SAFETY: plain runtime queries.
    let ok = unsafe { cudaGetDeviceCount(&mut n) } == 0 && n > 0;
    unsafe { cudaGetLastError() };
    ok
}

/// Waits for the device and panics on an asynchronous error.
pub fn sync() {
    // SAFETY: plain runtime call.
    let err = unsafe { cudaDeviceSynchronize() };
    assert_eq!(err, 0, "cudaDeviceSynchronize: CUDA error {err}");
}

/// An owning device allocation with a tensor shape (contiguous unless built `with_strides`).
pub struct DeviceVec {
    ptr: *mut c_void,
    bytes: usize,
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

fn contiguous(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

impl DeviceVec {
    /// `bytes` of device memory (at least 256, so empty tensors have a real address).
    pub fn alloc(bytes: usize) -> DeviceVec {
        let mut ptr = core::ptr::null_mut();
        // SAFETY: plain runtime call.
        let err = unsafe { cudaMalloc(&mut ptr, bytes.max(256)) };
        assert_eq!(err, 0, "cudaMalloc({bytes}): CUDA error {err}");
        DeviceVec { ptr, bytes, dtype: DType::I32, shape: vec![bytes / 4], strides: vec![1] }
    }

    /// Uploads raw elements (u16 bits for fp16/bf16, f32, i32) as a contiguous tensor.
    pub fn upload<T: Copy>(data: &[T], dtype: DType, shape: &[usize]) -> DeviceVec {
        assert_eq!(core::mem::size_of::<T>(), dtype.size_bytes());
        let bytes = core::mem::size_of_val(data);
        let mut v = DeviceVec::alloc(bytes);
        // SAFETY: v holds `bytes` bytes; data is a host slice of that size.
        let err = unsafe {
            cudaMemcpy(v.ptr, data.as_ptr() as *const c_void, bytes, CUDA_MEMCPY_HOST_TO_DEVICE)
        };
        assert_eq!(err, 0, "cudaMemcpy H2D: CUDA error {err}");
        v.dtype = dtype;
        v.shape = shape.to_vec();
        v.strides = contiguous(shape);
        v
    }

    /// The same memory seen with other shape and strides (they must stay inside it).
    pub fn with_strides(mut self, shape: &[usize], strides: &[usize]) -> DeviceVec {
        let extent: usize = shape.iter().zip(strides).map(|(n, s)| (n.max(&1) - 1) * s).sum::<usize>() + 1;
        assert!(extent * self.dtype.size_bytes() <= self.bytes.max(1), "view past the allocation");
        self.shape = shape.to_vec();
        self.strides = strides.to_vec();
        self
    }

    /// Downloads the whole allocation as elements of T.
    pub fn download<T: Copy + Default>(&self) -> Vec<T> {
        sync();
        let n = self.bytes / core::mem::size_of::<T>();
        let mut out = vec![T::default(); n];
        // SAFETY: out holds n * size_of::<T>() <= bytes bytes.
        let err = unsafe {
            cudaMemcpy(
                out.as_mut_ptr() as *mut c_void,
                self.ptr,
                n * core::mem::size_of::<T>(),
                CUDA_MEMCPY_DEVICE_TO_HOST,
            )
        };
        assert_eq!(err, 0, "cudaMemcpy D2H: CUDA error {err}");
        out
    }

    /// A view of this memory as an fp16/bf16/... tensor of the given layout.
    pub fn view(&self, dtype: DType, shape: &[usize], strides: &[usize]) -> TensorView {
        // SAFETY: the view stays inside this allocation, which outlives the test's use of it.
        unsafe { TensorView::from_raw_parts(self.ptr, dtype, shape, strides).unwrap() }
    }

    /// The raw device pointer.
    pub fn ptr(&self) -> *mut c_void {
        self.ptr
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for DeviceVec {
    fn drop(&mut self) {
        // SAFETY: ptr came from cudaMalloc.
        unsafe { cudaFree(self.ptr) };
    }
}

// SAFETY: the allocation lives as long as the DeviceVec and covers the shape (checked in
// with_strides; contiguous by construction otherwise).
unsafe impl DeviceTensor for DeviceVec {
    fn device_ptr(&self) -> *const c_void {
        self.ptr
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn strides(&self) -> &[usize] {
        &self.strides
    }
}

// SAFETY: a cudaMalloc allocation of `bytes` bytes (256-byte aligned).
unsafe impl flare::DeviceBuffer for DeviceVec {
    fn device_ptr(&self) -> *mut c_void {
        self.ptr
    }
    fn size_bytes(&self) -> usize {
        self.bytes
    }
}
