//! [`Error`]: a flare status and the message that explains it.

use core::ffi::CStr;
use core::fmt;

use flare_sys as sys;

/// What kind of failure an [`Error`] is: flare's `flare_status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// A value out of range, a missing pointer, tensors whose shapes disagree.
    InvalidArgument,
    /// A pointer or stride breaks 16-byte alignment.
    Misaligned,
    /// The dtype is not served (attention takes fp16 and bf16).
    UnsupportedDtype,
    /// The head dimension is not served.
    UnsupportedHeadDim,
    /// A feature or combination flare does not offer.
    NotSupported,
    /// The device is older than sm80, or this build has no kernel for it.
    ArchNotSupported,
    /// The workspace is smaller than the call needs.
    WorkspaceTooSmall,
    /// A CUDA runtime call or launch failed.
    Cuda,
    /// No CUDA driver or no GPU found.
    NoDevice,
    /// A status this crate does not know (a newer library).
    Other(i32),
}

impl Status {
    /// The status of a raw `flare_status`; `None` for `FLARE_OK`.
    pub fn from_raw(raw: sys::flare_status) -> Option<Status> {
        Some(match raw {
            sys::FLARE_OK => return None,
            sys::FLARE_ERROR_INVALID_ARGUMENT => Status::InvalidArgument,
            sys::FLARE_ERROR_MISALIGNED => Status::Misaligned,
            sys::FLARE_ERROR_UNSUPPORTED_DTYPE => Status::UnsupportedDtype,
            sys::FLARE_ERROR_UNSUPPORTED_HEAD_DIM => Status::UnsupportedHeadDim,
            sys::FLARE_ERROR_NOT_SUPPORTED => Status::NotSupported,
            sys::FLARE_ERROR_ARCH_NOT_SUPPORTED => Status::ArchNotSupported,
            sys::FLARE_ERROR_WORKSPACE_TOO_SMALL => Status::WorkspaceTooSmall,
            sys::FLARE_ERROR_CUDA => Status::Cuda,
            sys::FLARE_ERROR_NO_DEVICE => Status::NoDevice,
            other => Status::Other(other),
        })
    }

    /// The raw `flare_status` value.
    pub fn raw(self) -> sys::flare_status {
        match self {
            Status::InvalidArgument => sys::FLARE_ERROR_INVALID_ARGUMENT,
            Status::Misaligned => sys::FLARE_ERROR_MISALIGNED,
            Status::UnsupportedDtype => sys::FLARE_ERROR_UNSUPPORTED_DTYPE,
            Status::UnsupportedHeadDim => sys::FLARE_ERROR_UNSUPPORTED_HEAD_DIM,
            Status::NotSupported => sys::FLARE_ERROR_NOT_SUPPORTED,
            Status::ArchNotSupported => sys::FLARE_ERROR_ARCH_NOT_SUPPORTED,
            Status::WorkspaceTooSmall => sys::FLARE_ERROR_WORKSPACE_TOO_SMALL,
            Status::Cuda => sys::FLARE_ERROR_CUDA,
            Status::NoDevice => sys::FLARE_ERROR_NO_DEVICE,
            Status::Other(raw) => raw,
        }
    }

    /// The library's description of the status (`flare_status_string`).
    pub fn description(self) -> &'static str {
        // SAFETY: flare_status_string returns a static NUL-terminated string for any value.
        unsafe { static_str(sys::flare_status_string(self.raw())) }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// A failed flare call: its [`Status`] and a message naming the field or tensor at fault
/// (`flare_last_error()` for a refusal by the library, this crate's own text for tensors whose
/// shapes, ranks or dtypes disagree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    /// An error with the given status and message.
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error { status, message: message.into() }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(Status::InvalidArgument, message)
    }

    /// The kind of failure.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The message explaining it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for Error {}

/// `Result` with [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

/// Ok for `FLARE_OK`, else the status with this thread's `flare_last_error()`.
pub(crate) fn check(raw: sys::flare_status) -> Result<()> {
    match Status::from_raw(raw) {
        None => Ok(()),
        Some(status) => {
            // SAFETY: flare_last_error returns this thread's NUL-terminated message buffer.
            let message = unsafe { CStr::from_ptr(sys::flare_last_error()) }.to_string_lossy();
            let message = if message.is_empty() {
                status.description().to_string()
            } else {
                message.into_owned()
            };
            Err(Error { status, message })
        }
    }
}

/// # Safety
/// `ptr` is null or a NUL-terminated string that lives for the program.
pub(crate) unsafe fn static_str(ptr: *const core::ffi::c_char) -> &'static str {
    if ptr.is_null() {
        return "";
    }
    CStr::from_ptr(ptr).to_str().unwrap_or("(not UTF-8)")
}
