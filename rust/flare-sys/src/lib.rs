//! Raw bindings to flare's C ABI, `include/flare/flare.h`, declared by hand.
//!
//! Every struct is `#[repr(C)]` with the header's field order; every enum is a `c_int` type
//! alias with one constant per enumerator (a C enum may carry values a Rust enum could not
//! hold); every function is declared with the header's name and argument types. The
//! [`abi`] tables list what is declared here, so the `abi_layout` test can compare it with the
//! header as the C compiler sees it (sizes, offsets, enum values, function names).
//!
//! With the `candle` feature (default) the [`candle`] module declares `run_mha`, candle-flash-
//! attn's FFI entry point as served by the `flare_candle` library, and that library is linked.
//!
//! Linking is decided by `build.rs`; see the crate's README section in `rust/README.md`.
//!
//! Everything here is `unsafe` to call: pointers are CUDA device pointers the caller vouches
//! for. The `flare` crate is the safe layer.
#![no_std]
#![deny(missing_docs)]
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_int, c_void};

/// The tables [`abi::STRUCTS`], [`abi::ENUMS`], [`abi::DEFINES`] and [`abi::FUNCTIONS`]: what
/// this crate declares, for the ABI-layout test.
pub mod abi {
    /// One field of a declared struct.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Field {
        /// The field's name.
        pub name: &'static str,
        /// `offset_of!` the field, in bytes.
        pub offset: usize,
        /// `size_of` the field's type, in bytes.
        pub size: usize,
    }

    /// A declared struct: its name, size, alignment and fields in declaration order.
    #[derive(Debug, Clone, Copy)]
    pub struct Struct {
        /// The C name of the struct (its typedef).
        pub name: &'static str,
        /// `size_of` the struct.
        pub size: usize,
        /// `align_of` the struct.
        pub align: usize,
        /// The fields, in declaration order.
        pub fields: &'static [Field],
    }

    /// A declared enum: its C name, the size of its Rust type, and its enumerators.
    #[derive(Debug, Clone, Copy)]
    pub struct Enum {
        /// The C name of the enum (its typedef).
        pub name: &'static str,
        /// `size_of` the Rust type standing for it.
        pub size: usize,
        /// `(enumerator, value)` pairs.
        pub values: &'static [(&'static str, i64)],
    }

    /// Every struct this crate declares.
    pub const STRUCTS: &[Struct] = &[
        super::flare_mha_fwd_params::LAYOUT,
        super::flare_merge_params::LAYOUT,
    ];

    /// Every enum this crate declares.
    pub const ENUMS: &[Enum] = &[super::FLARE_STATUS_ENUM, super::FLARE_DTYPE_ENUM];

    /// Every integer `#define` of the header this crate declares, as `(name, value)`.
    pub const DEFINES: &[(&str, i64)] = super::DEFINES;

    /// Every function this crate declares in the `flare.h` block (not the `candle` ones).
    pub const FUNCTIONS: &[&str] = super::FUNCTIONS;
}

/// Declares a `#[repr(C)]` struct and its [`abi::Struct`] table (`LAYOUT`) from one list of
/// fields, so the table cannot miss a field.
macro_rules! c_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty ),*
        }

        impl $name {
            /// This struct's layout as Rust compiles it (for the ABI-layout test).
            pub const LAYOUT: abi::Struct = abi::Struct {
                name: stringify!($name),
                size: core::mem::size_of::<$name>(),
                align: core::mem::align_of::<$name>(),
                fields: &[
                    $( abi::Field {
                        name: stringify!($field),
                        offset: core::mem::offset_of!($name, $field),
                        size: core::mem::size_of::<$ty>(),
                    } ),*
                ],
            };
        }
    };
}

/// Declares a C enum as a `c_int` alias with one constant per enumerator, and its
/// [`abi::Enum`] table.
macro_rules! c_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $table:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub type $name = c_int;
        $( $(#[$vmeta])* pub const $variant: $name = $value; )*
        const $table: abi::Enum = abi::Enum {
            name: stringify!($name),
            size: core::mem::size_of::<$name>(),
            values: &[ $( (stringify!($variant), $value as i64) ),* ],
        };
    };
}

/// Declares the integer `#define`s as constants and the [`abi::DEFINES`] table.
macro_rules! c_defines {
    ( $( $(#[$meta:meta])* $name:ident : $ty:ty = $value:expr ; )* ) => {
        $( $(#[$meta])* pub const $name: $ty = $value; )*
        const DEFINES: &[(&str, i64)] = &[ $( (stringify!($name), $value as i64) ),* ];
    };
}

/// Declares the extern functions and the [`abi::FUNCTIONS`] name table, plus
/// [`function_addresses`], which takes every function's address (so a test binary that calls
/// it fails to link when the library lacks a declared function).
macro_rules! c_functions {
    (
        $(
            $(#[$meta:meta])*
            pub fn $name:ident ( $( $arg:ident : $aty:ty ),* $(,)? ) $( -> $ret:ty )? ;
        )*
    ) => {
        extern "C" {
            $( $(#[$meta])* pub fn $name( $( $arg: $aty ),* ) $( -> $ret )?; )*
        }
        const FUNCTIONS: &[&str] = &[ $( stringify!($name) ),* ];

        /// `(name, address)` of every function of the `flare.h` block, in declaration order.
        pub fn function_addresses() -> [(&'static str, usize); FUNCTIONS.len()] {
            [ $( (stringify!($name), $name as *const () as usize) ),* ]
        }
    };
}

c_defines! {
    /// Major version of the header these bindings follow.
    FLARE_VERSION_MAJOR: c_int = 0;
    /// Minor version of the header these bindings follow.
    FLARE_VERSION_MINOR: c_int = 1;
    /// Patch version of the header these bindings follow.
    FLARE_VERSION_PATCH: c_int = 0;
    /// Version of [`flare_mha_fwd_params`] (bumped when fields are added).
    FLARE_MHA_FWD_PARAMS_VERSION: c_int = 3;
    /// Version of [`flare_merge_params`] (bumped when fields are added).
    FLARE_MERGE_PARAMS_VERSION: c_int = 1;
    /// Most entries `flare_merge_params::part_ptrs` / `lse_ptrs` may hold.
    FLARE_MERGE_MAX_PART_PTRS: c_int = 64;
}

c_enum! {
    /// Result of every flare call (`flare_status`).
    flare_status, FLARE_STATUS_ENUM {
        /// Success.
        FLARE_OK = 0,
        /// A value out of range, a missing pointer.
        FLARE_ERROR_INVALID_ARGUMENT = 1,
        /// A pointer or stride breaks 16-byte alignment.
        FLARE_ERROR_MISALIGNED = 2,
        /// The dtype is not served.
        FLARE_ERROR_UNSUPPORTED_DTYPE = 3,
        /// The head dimension is not served.
        FLARE_ERROR_UNSUPPORTED_HEAD_DIM = 4,
        /// A feature or combination flare does not offer.
        FLARE_ERROR_NOT_SUPPORTED = 5,
        /// Device older than sm80, or kernels not built for it.
        FLARE_ERROR_ARCH_NOT_SUPPORTED = 6,
        /// `workspace_size` is below what the call needs.
        FLARE_ERROR_WORKSPACE_TOO_SMALL = 7,
        /// A CUDA runtime call or launch failed.
        FLARE_ERROR_CUDA = 8,
        /// No CUDA driver or no GPU found.
        FLARE_ERROR_NO_DEVICE = 9,
    }
}

c_enum! {
    /// Element type of tensors (`flare_dtype`).
    flare_dtype, FLARE_DTYPE_ENUM {
        /// IEEE half precision.
        FLARE_DTYPE_FP16 = 0,
        /// bfloat16.
        FLARE_DTYPE_BF16 = 1,
        /// float32: `flare_merge_attention_states` only; `flare_mha_fwd` rejects it.
        FLARE_DTYPE_FP32 = 2,
        /// float8_e4m3fn (`kv_dtype` / `q_dtype` of [`flare_mha_fwd_params`] only).
        FLARE_DTYPE_E4M3 = 3,
        /// float8_e5m2 (`kv_dtype` only).
        FLARE_DTYPE_E5M2 = 4,
    }
}

c_struct! {
    /// Parameters of [`flare_mha_fwd`]; see `include/flare/flare.h` for every field's meaning.
    /// Initialise with [`flare_mha_fwd_params_init`].
    pub struct flare_mha_fwd_params {
        /// `size_of::<flare_mha_fwd_params>()`, set by the init function.
        pub struct_size: u32,
        /// A [`flare_dtype`].
        pub dtype: i32,
        /// Queries.
        pub q: *const c_void,
        /// Keys (the K cache with `cache_seqlens`).
        pub k: *const c_void,
        /// Values (the V cache with `cache_seqlens`).
        pub v: *const c_void,
        /// Output, like q.
        pub out: *mut c_void,
        /// Optional log-sum-exp output, fp32.
        pub lse: *mut f32,
        /// Sequences in the batch.
        pub batch: i32,
        /// Query rows per sequence (padded batch).
        pub seqlen_q: i32,
        /// Key rows per sequence (KV cache: capacity).
        pub seqlen_k: i32,
        /// Query heads.
        pub num_heads: i32,
        /// Key/value heads.
        pub num_heads_k: i32,
        /// Head dimension.
        pub head_dim: i32,
        /// q stride between sequences, elements.
        pub q_batch_stride: i64,
        /// q stride between rows, elements.
        pub q_row_stride: i64,
        /// q stride between heads, elements.
        pub q_head_stride: i64,
        /// k stride between sequences (paged: pages), elements.
        pub k_batch_stride: i64,
        /// k stride between rows, elements.
        pub k_row_stride: i64,
        /// k stride between heads, elements.
        pub k_head_stride: i64,
        /// v stride between sequences (paged: pages), elements.
        pub v_batch_stride: i64,
        /// v stride between rows, elements.
        pub v_row_stride: i64,
        /// v stride between heads, elements.
        pub v_head_stride: i64,
        /// out stride between sequences, elements.
        pub out_batch_stride: i64,
        /// out stride between rows, elements.
        pub out_row_stride: i64,
        /// out stride between heads, elements.
        pub out_head_stride: i64,
        /// Score scale; 0 means 1/sqrt(head_dim).
        pub softmax_scale: f32,
        /// 1: causal (same as window_right = 0).
        pub causal: i32,
        /// Left window, -1 = unbounded.
        pub window_left: i32,
        /// Right window, -1 = unbounded.
        pub window_right: i32,
        /// Softcap, 0 = off.
        pub softcap: f32,
        /// Optional ALiBi slopes, `[num_heads]` or `[batch, num_heads]`.
        pub alibi_slopes: *const f32,
        /// 0 when the slopes are shared by every batch entry.
        pub alibi_batch_stride: i64,
        /// Varlen: cumulative query rows, `[batch + 1]`.
        pub cu_seqlens_q: *const i32,
        /// Varlen: cumulative key rows, `[batch + 1]`.
        pub cu_seqlens_k: *const i32,
        /// Optional: keys used per sequence.
        pub seqused_k: *const i32,
        /// Varlen: longest query sequence.
        pub max_seqlen_q: i32,
        /// Varlen: longest key sequence.
        pub max_seqlen_k: i32,
        /// KV cache: rows in use per sequence, `[batch]`.
        pub cache_seqlens: *const i32,
        /// Optional: cache row of sequence b.
        pub cache_batch_idx: *const i32,
        /// Optional: left padding per sequence.
        pub leftpad_k: *const i32,
        /// Optional paged KV: `[batch, max_pages]`.
        pub block_table: *const i32,
        /// Entries between block-table rows.
        pub block_table_batch_stride: i64,
        /// Rows per page.
        pub page_block_size: i32,
        /// Pages in the pools (for validation).
        pub num_pages: i32,
        /// Keys to append.
        pub k_new: *const c_void,
        /// Values to append.
        pub v_new: *const c_void,
        /// Rows to append per sequence.
        pub seqlen_new: i32,
        /// k_new stride between sequences.
        pub k_new_batch_stride: i64,
        /// k_new stride between rows.
        pub k_new_row_stride: i64,
        /// k_new stride between heads.
        pub k_new_head_stride: i64,
        /// v_new stride between sequences.
        pub v_new_batch_stride: i64,
        /// v_new stride between rows.
        pub v_new_row_stride: i64,
        /// v_new stride between heads.
        pub v_new_head_stride: i64,
        /// Rotary cos table, `[positions, rotary_dim / 2]`, dtype of q.
        pub rotary_cos: *const c_void,
        /// Rotary sin table, like rotary_cos.
        pub rotary_sin: *const c_void,
        /// Rotated dimensions (even, <= head_dim).
        pub rotary_dim: i32,
        /// 1: pairs (0,1),(2,3)...; 0: pairs (i, i + rotary_dim/2).
        pub rotary_interleaved: i32,
        /// Rows of the rotary tables.
        pub rotary_max_positions: i32,
        /// 0 = heuristic, 1 = no split, n = forced.
        pub num_splits: i32,
        /// Device workspace.
        pub workspace: *mut c_void,
        /// Bytes of workspace.
        pub workspace_size: usize,
        /// Must be 0.
        pub p_dropout: f32,
        /// Optional per-head sink logit, fp32 `[num_heads]`, in the units of the scores; joins
        /// the softmax denominator only.
        pub sink: *const f32,
        /// Optional multimodal prefix ranges, int32 `[batch, max_mm_prefix_ranges, 2]` of
        /// `[start, end)` key positions: a query inside a range sees the whole range.
        pub mm_prefix_ranges: *const i32,
        /// int32 elements between the ranges of consecutive sequences (>= 2 * max ranges).
        pub mm_prefix_ranges_batch_stride: i64,
        /// Ranges per sequence, >= 0.
        pub max_mm_prefix_ranges: i32,
        /// Head dim of v and out; 0 = head_dim.
        pub head_dim_v: i32,
        /// Element type of k and v: 0 = `dtype`, or `FLARE_DTYPE_E4M3` / `FLARE_DTYPE_E5M2`
        /// (codes scaled by `k_descale` / `v_descale`).
        pub kv_dtype: i32,
        /// Element type of q: 0 = `dtype`, or `FLARE_DTYPE_E4M3` (FP8 prefill).
        pub q_dtype: i32,
        /// fp32 descale factors of q, indexed by (batch entry, K/V head); null unless q is FP8.
        pub q_descale: *const f32,
        /// Elements between the factors of consecutive batch entries (0: shared).
        pub q_descale_batch_stride: i64,
        /// Elements between the factors of consecutive K/V heads (0: shared).
        pub q_descale_head_stride: i64,
        /// fp32 descale factors of k; null unless `kv_dtype` is FP8.
        pub k_descale: *const f32,
        /// Batch stride of `k_descale`.
        pub k_descale_batch_stride: i64,
        /// Head stride of `k_descale`.
        pub k_descale_head_stride: i64,
        /// fp32 descale factors of v; null unless `kv_dtype` is FP8.
        pub v_descale: *const f32,
        /// Batch stride of `v_descale`.
        pub v_descale_batch_stride: i64,
        /// Head stride of `v_descale`.
        pub v_descale_head_stride: i64,
    }
}

c_struct! {
    /// Parameters of [`flare_merge_attention_states`]; see `include/flare/flare.h`.
    /// Initialise with [`flare_merge_params_init`].
    pub struct flare_merge_params {
        /// `size_of::<flare_merge_params>()`, set by the init function.
        pub struct_size: u32,
        /// Parts to merge, >= 1.
        pub num_parts: i32,
        /// [`flare_dtype`] of the partial outputs.
        pub part_dtype: i32,
        /// [`flare_dtype`] of out.
        pub out_dtype: i32,
        /// Host array of num_parts device pointers, or null.
        pub part_ptrs: *const *const c_void,
        /// Or one device pointer with part s at `parts + s * part_stride`.
        pub parts: *const c_void,
        /// Elements between parts.
        pub part_stride: i64,
        /// Host array of num_parts lse device pointers, or null.
        pub lse_ptrs: *const *const f32,
        /// Or one lse device pointer.
        pub lse: *const f32,
        /// Floats between the lse of consecutive parts.
        pub lse_part_stride: i64,
        /// Batch.
        pub batch: i32,
        /// Rows per sequence.
        pub seqlen: i32,
        /// Heads.
        pub num_heads: i32,
        /// Head dimension (a multiple of 4 in [4, 512]).
        pub head_dim: i32,
        /// Part stride between sequences.
        pub part_batch_stride: i64,
        /// Part stride between rows.
        pub part_row_stride: i64,
        /// Part stride between heads.
        pub part_head_stride: i64,
        /// lse stride between sequences.
        pub lse_batch_stride: i64,
        /// lse stride between rows.
        pub lse_row_stride: i64,
        /// lse stride between heads.
        pub lse_head_stride: i64,
        /// Merged output.
        pub out: *mut c_void,
        /// out stride between sequences.
        pub out_batch_stride: i64,
        /// out stride between rows.
        pub out_row_stride: i64,
        /// out stride between heads.
        pub out_head_stride: i64,
        /// Optional merged lse.
        pub out_lse: *mut f32,
        /// out_lse stride between sequences.
        pub out_lse_batch_stride: i64,
        /// out_lse stride between rows.
        pub out_lse_row_stride: i64,
        /// out_lse stride between heads.
        pub out_lse_head_stride: i64,
    }
}

c_functions! {
    /// Zeroes the struct, sets struct_size, window_left = window_right = -1.
    pub fn flare_mha_fwd_params_init(params: *mut flare_mha_fwd_params);
    /// Bytes of workspace flare_mha_fwd needs for these params on this device.
    pub fn flare_mha_fwd_workspace_size(
        params: *const flare_mha_fwd_params,
        device: c_int,
        bytes: *mut usize,
    ) -> flare_status;
    /// FLARE_OK when flare_mha_fwd would accept these params on this device (no launch).
    pub fn flare_can_implement(params: *const flare_mha_fwd_params, device: c_int) -> flare_status;
    /// Runs attention on the stream's device; on error nothing is launched or written.
    pub fn flare_mha_fwd(params: *const flare_mha_fwd_params, cuda_stream: *mut c_void) -> flare_status;
    /// A static description of a status.
    pub fn flare_status_string(status: flare_status) -> *const c_char;
    /// The message of this thread's last failed call ("" when none).
    pub fn flare_last_error() -> *const c_char;
    /// The split count flare would use for these params on this device.
    pub fn flare_mha_fwd_num_splits(
        params: *const flare_mha_fwd_params,
        device: c_int,
        num_splits: *mut c_int,
    ) -> flare_status;
    /// Zeroes the struct and sets struct_size.
    pub fn flare_merge_params_init(params: *mut flare_merge_params);
    /// Merges partial attention states; on a validation error nothing is launched or written.
    pub fn flare_merge_attention_states(
        params: *const flare_merge_params,
        cuda_stream: *mut c_void,
    ) -> flare_status;
    /// The library's version, "MAJOR.MINOR.PATCH".
    pub fn flare_version() -> *const c_char;
    /// `key=value` lines: version, cuda_runtime, archs, dtypes, head_dims, tuning.
    pub fn flare_build_info() -> *const c_char;
}

#[cfg(feature = "candle")]
pub mod candle;
