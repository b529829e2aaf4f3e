#!/usr/bin/env python3
"""flare against PyTorch SDPA backends, measured in one process on the same inputs.

flare is called through its C ABI (ctypes on libflare.so) on torch tensors' memory and on
torch's current stream; the peers are torch.nn.functional.scaled_dot_product_attention pinned
to one backend each (flash, cuDNN, memory-efficient). Ceilings (bf16 GEMM 8192^3, 1 GiB device
copy) are measured in the same run.

Outputs under --out: summary.json (docs: /work/shared/results-schema.md), table.md and one
multi-panel plots.png.

    python3 bench/compare.py --lib build/libflare.so --out out [--quick] [--dtype bf16|fp16]
        [--table prefill|prefill_fp8|decode|decode_fp8|chunked|d512|dv|overhead|serving|all]
        [--graphs]

Tables: prefill (head dims 64/128/256), prefill_fp8 (the prefill shapes with q, k, v in e4m3:
flare's FP8 prefill and cuDNN's FP8 SDPA next to flare and SDPA's cuDNN backend in --dtype,
TFLOP/s, rel_err against fp32 attention on the inputs each call reads, and issue 21's FP8
prefill targets per row; see Runner.prefill_fp8), decode, decode_fp8 (the decode shapes over
e4m3 and e5m2 KV caches next to flare's and cuDNN's bf16 calls: tokens/s, speed vs the bf16
cache and issue 21's two targets per row; FP8 through flare's Python package when it takes FP8
caches, else the C ABI), chunked, and the serving rows: d512 (the prefill table's
shapes at head dim 512), dv (head_dim 192 with head_dim_v 128; SDPA's cuDNN backend takes a
different V head dim, its FlashAttention-2 backend does not) and overhead (flare alone: d128
causal 4k with a sink, with mm_prefix_ranges holding no range and with a 1k-token image range,
each next to the same call without the feature).

Timing: warm-up (at least 5 runs and --warmup-ms of GPU time, default 200 ms, per system and
shape: the board runs at its power cap, so each system is timed at the clocks its own load
settles to), then >= 20 timed runs (more for short runs), each between two CUDA events, median
reported. Consecutive runs rotate over enough independent input sets that one sweep is
several times the L2 size. Large device copies are queued ahead of the timed runs so that the
host (Python) can enqueue all of them while the GPU is busy: the numbers are GPU time.

--graphs: every system of the prefill (d512 and dv included), decode, decode_fp8 and chunked
rows (not prefill_fp8's) is also replayed from a CUDA graph right after its eager timing: K
calls (rotating the input sets as the eager loop does; K such that one replay takes about
GRAPH_REPLAY_MS and sweeps every set) captured on a side stream after warm-up calls there, then
the replay timed as above (warm-up, events around each replay, median); per-call time = replay /
K. Rows gain ms (eager), graph_ms (null where capture or replay failed: graph_error holds the
exception's first line), graph_vs_eager = graph_ms / ms and graph_calls (K); flare's rows also
graph_rel_err (set 0's output, poisoned before the replays, against the eager output). table.md
gains a CUDA-graph table per table with a summary line per system (max |graph/eager - 1| and the
rows within GRAPH_TOLERANCE); summary.json gains "graph_summary" with the same numbers.

torch is needed only here; the library itself never uses it.
"""
import argparse
import ctypes
import dataclasses
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from typing import Optional

import peers

# ------------------------------------------------------------------------------------------
# The C ABI, mirrored field by field from include/flare/flare.h (order and types must match).

c_i32, c_u32, c_i64, c_f32, c_ptr, c_size = (ctypes.c_int32, ctypes.c_uint32, ctypes.c_int64,
                                              ctypes.c_float, ctypes.c_void_p, ctypes.c_size_t)


class FlareParams(ctypes.Structure):
    _fields_ = [
        ("struct_size", c_u32),
        ("dtype", c_i32),
        ("q", c_ptr), ("k", c_ptr), ("v", c_ptr), ("out", c_ptr),
        ("lse", c_ptr),  # float*
        ("batch", c_i32), ("seqlen_q", c_i32), ("seqlen_k", c_i32),
        ("num_heads", c_i32), ("num_heads_k", c_i32), ("head_dim", c_i32),
        ("q_batch_stride", c_i64), ("q_row_stride", c_i64), ("q_head_stride", c_i64),
        ("k_batch_stride", c_i64), ("k_row_stride", c_i64), ("k_head_stride", c_i64),
        ("v_batch_stride", c_i64), ("v_row_stride", c_i64), ("v_head_stride", c_i64),
        ("out_batch_stride", c_i64), ("out_row_stride", c_i64), ("out_head_stride", c_i64),
        ("softmax_scale", c_f32),
        ("causal", c_i32),
        ("window_left", c_i32),
        ("window_right", c_i32),
        ("softcap", c_f32),
        ("alibi_slopes", c_ptr),  # const float*
        ("alibi_batch_stride", c_i64),
        ("cu_seqlens_q", c_ptr), ("cu_seqlens_k", c_ptr), ("seqused_k", c_ptr),  # const int32_t*
        ("max_seqlen_q", c_i32), ("max_seqlen_k", c_i32),
        ("cache_seqlens", c_ptr), ("cache_batch_idx", c_ptr), ("leftpad_k", c_ptr),
        ("block_table", c_ptr),  # const int32_t*
        ("block_table_batch_stride", c_i64),
        ("page_block_size", c_i32),
        ("num_pages", c_i32),
        ("k_new", c_ptr), ("v_new", c_ptr),
        ("seqlen_new", c_i32),
        ("k_new_batch_stride", c_i64), ("k_new_row_stride", c_i64), ("k_new_head_stride", c_i64),
        ("v_new_batch_stride", c_i64), ("v_new_row_stride", c_i64), ("v_new_head_stride", c_i64),
        ("rotary_cos", c_ptr), ("rotary_sin", c_ptr),
        ("rotary_dim", c_i32), ("rotary_interleaved", c_i32), ("rotary_max_positions", c_i32),
        ("num_splits", c_i32),
        ("workspace", c_ptr),
        ("workspace_size", c_size),
        ("p_dropout", c_f32),
        ("sink", c_ptr),  # const float*
        ("mm_prefix_ranges", c_ptr),  # const int32_t*
        ("mm_prefix_ranges_batch_stride", c_i64),
        ("max_mm_prefix_ranges", c_i32),
        ("head_dim_v", c_i32),
        ("kv_dtype", c_i32), ("q_dtype", c_i32),
        ("q_descale", c_ptr),  # const float*
        ("q_descale_batch_stride", c_i64), ("q_descale_head_stride", c_i64),
        ("k_descale", c_ptr),
        ("k_descale_batch_stride", c_i64), ("k_descale_head_stride", c_i64),
        ("v_descale", c_ptr),
        ("v_descale_batch_stride", c_i64), ("v_descale_head_stride", c_i64),
    ]


FLARE_DTYPE = {"fp16": 0, "bf16": 1, "e4m3": 3, "e5m2": 4}
FLARE_OK = 0


class Flare:
    """libflare.so through ctypes."""

    def __init__(self, path):
        self.lib = lib = ctypes.CDLL(os.path.abspath(path))
        P = ctypes.POINTER(FlareParams)
        lib.flare_mha_fwd_params_init.argtypes = [c_ptr]
        lib.flare_mha_fwd_params_init.restype = None
        lib.flare_mha_fwd_workspace_size.argtypes = [P, ctypes.c_int, ctypes.POINTER(c_size)]
        lib.flare_mha_fwd_workspace_size.restype = ctypes.c_int
        lib.flare_can_implement.argtypes = [P, ctypes.c_int]
        lib.flare_can_implement.restype = ctypes.c_int
        lib.flare_mha_fwd.argtypes = [P, c_ptr]
        lib.flare_mha_fwd.restype = ctypes.c_int
        lib.flare_status_string.argtypes = [ctypes.c_int]
        lib.flare_status_string.restype = ctypes.c_char_p
        lib.flare_last_error.argtypes = []
        lib.flare_last_error.restype = ctypes.c_char_p
        lib.flare_mha_fwd_num_splits.argtypes = [P, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.flare_mha_fwd_num_splits.restype = ctypes.c_int
        self.check_layout()

    def check_layout(self):
        """init() on an oversized raw buffer: the C side's struct_size must equal ctypes' size,
        and the fields init sets to -1 must sit where ctypes puts them."""
        raw = ctypes.create_string_buffer(4096)
        self.lib.flare_mha_fwd_params_init(raw)
        c_size_of = c_u32.from_buffer(raw, 0).value
        py_size_of = ctypes.sizeof(FlareParams)
        if c_size_of != py_size_of:
            raise SystemExit(f"flare_mha_fwd_params layout mismatch: C struct_size {c_size_of}, "
                             f"ctypes sizeof {py_size_of}; update FlareParams in compare.py")
        for name in ("window_left", "window_right"):
            off = getattr(FlareParams, name).offset
            if c_i32.from_buffer(raw, off).value != -1:
                raise SystemExit(f"flare_mha_fwd_params layout mismatch at field {name}")
        print(f"flare_mha_fwd_params: {py_size_of} bytes, ctypes layout matches the library")

    def params(self):
        p = FlareParams()
        self.lib.flare_mha_fwd_params_init(ctypes.byref(p))
        return p

    def error(self, status):
        return (f"{self.lib.flare_status_string(status).decode()}: "
                f"{self.lib.flare_last_error().decode()}")

    def can_implement(self, p, device):
        return self.lib.flare_can_implement(ctypes.byref(p), device)

    def workspace_size(self, p, device):
        n = c_size(0)
        st = self.lib.flare_mha_fwd_workspace_size(ctypes.byref(p), device, ctypes.byref(n))
        if st != FLARE_OK:
            raise RuntimeError("flare_mha_fwd_workspace_size: " + self.error(st))
        return n.value

    def num_splits(self, p, device):
        n = ctypes.c_int(0)
        st = self.lib.flare_mha_fwd_num_splits(ctypes.byref(p), device, ctypes.byref(n))
        return n.value if st == FLARE_OK else None

    def fwd(self, p_ref, stream):
        """p_ref: ctypes.byref(params), prepared once (keeps the timed loop short)."""
        st = self.lib.flare_mha_fwd(p_ref, stream)
        if st != FLARE_OK:
            raise RuntimeError("flare_mha_fwd: " + self.error(st))


# ------------------------------------------------------------------------------------------
# Timing.

class Timer:
    def __init__(self, torch, min_iters=30, max_iters=300, warmup=5, target_ms=150.0,
                 warmup_ms=200.0):
        self.torch = torch
        self.min_iters, self.max_iters = min_iters, max_iters
        self.warmup, self.target_ms = warmup, target_ms
        # Warm-up of at least warmup_ms of GPU time per system and shape: the board runs at its
        # power cap, so each system is timed at the clocks its own load settles to rather than
        # at those the previous system (or an idle GPU) left behind.
        self.warmup_ms = warmup_ms
        gib = 1 << 30
        self.block_src = torch.empty(gib, dtype=torch.uint8, device="cuda").fill_(7)
        self.block_dst = torch.empty_like(self.block_src)
        self.copy_ms = None  # one 1 GiB copy, set by measure_copy

    def _median_events(self, fn, iters, first):
        torch = self.torch
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for i in range(iters):
            starts[i].record()
            fn(first + i)
            ends[i].record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))

    def median_ms(self, fn):
        """fn(i) launches run i (i rotates the input sets). Returns the median in ms."""
        torch = self.torch
        torch.cuda.synchronize()
        w0, w1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        w0.record()
        for i in range(self.warmup):
            fn(i)
        w1.record()
        host_per_call = (time.perf_counter() - t0) / self.warmup
        w1.synchronize()
        warm_ms = w0.elapsed_time(w1)
        gpu_per_call = max(1e-3, warm_ms / self.warmup)
        for i in range(min(10000, math.ceil(max(0.0, self.warmup_ms - warm_ms) / gpu_per_call))):
            fn(self.warmup + i)
        iters = min(self.max_iters, max(self.min_iters, math.ceil(self.target_ms / gpu_per_call)))
        # Enough copies ahead of the timed runs to cover the host's enqueue time (with margin).
        copy_ms = self.copy_ms or 0.7
        blockers = 1 + math.ceil(2.0 * iters * host_per_call * 1e3 / copy_ms)
        for _ in range(min(blockers, 200)):
            self.block_dst.copy_(self.block_src)
        return self._median_events(fn, iters, self.warmup)

    def capture(self, fn, calls):
        """fn(0), ..., fn(calls - 1) captured into one torch.cuda.CUDAGraph on a side stream.
        GRAPH_WARMUP_CALLS calls run on that stream first: lazy initialisation (library handles,
        workspaces, kernel attributes) must not happen during capture. fn must launch on
        torch's current stream (the capture stream while capturing)."""
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(GRAPH_WARMUP_CALLS):
                fn(i)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            for i in range(calls):
                fn(i)
        torch.cuda.synchronize()
        return graph

    def measure_copy(self):
        for _ in range(3):
            self.block_dst.copy_(self.block_src)
        self.torch.cuda.synchronize()
        ms = self._median_events(lambda i: self.block_dst.copy_(self.block_src), 20, 0)
        self.copy_ms = ms
        return 2.0 * self.block_src.numel() / (ms * 1e-3) / 1e9


# ------------------------------------------------------------------------------------------
# CUDA-graph replay (--graphs).

# Calls captured per graph: enough that one replay takes about GRAPH_REPLAY_MS of GPU time, at
# least one sweep over the input sets, at most GRAPH_MAX_CALLS. GRAPH_WARMUP_CALLS eager calls
# run on the capture stream before capture. GRAPH_TOLERANCE: the |graph / eager - 1| that the
# summary lines count rows within.
GRAPH_REPLAY_MS, GRAPH_MAX_CALLS, GRAPH_WARMUP_CALLS, GRAPH_TOLERANCE = 3.0, 1000, 3, 0.02


def graph_calls(eager_ms, nsets):
    return min(GRAPH_MAX_CALLS, max(nsets, math.ceil(GRAPH_REPLAY_MS / max(eager_ms, 1e-3))))


@dataclasses.dataclass
class Timing:
    """One system on one shape: the eager median per call (ms) and, where a graph was tried
    (graphed), the replay's per-call median (graph_ms, None where capture or replay failed and
    graph_error says why), the calls captured, and for flare the graph's output of set 0
    against the eager one (graph_rel_err)."""
    ms: float
    graphed: bool = False
    graph_ms: Optional[float] = None
    graph_calls: Optional[int] = None
    graph_error: Optional[str] = None
    graph_rel_err: Optional[float] = None

    def fields(self):
        """The row fields --graphs adds ({} where no graph was tried)."""
        if not self.graphed:
            return {}
        f = {"ms": self.ms, "graph_ms": self.graph_ms, "graph_calls": self.graph_calls,
             "graph_vs_eager": None if self.graph_ms is None else self.graph_ms / self.ms,
             "graph_error": self.graph_error}
        if self.graph_rel_err is not None:
            f["graph_rel_err"] = self.graph_rel_err
        return f

    @staticmethod
    def faster(a, b):
        """The faster of two timings of one call, eager and graph each (None: not measured)."""
        if a is None or b is None:
            return a or b
        g = min((t for t in (a, b) if t.graph_ms is not None), key=lambda t: t.graph_ms,
                default=a)
        return dataclasses.replace(g, ms=min(a.ms, b.ms))


def ms_of(t):
    return None if t is None else t.ms


def error_line(e, width=160):
    """An exception's type and the first line of its message."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:width]}"


def root_cause(e):
    """The exception a chain started from: a capture that fails inside torch.cuda.graph raises
    again when the capture ends, and the first error is the one that says why."""
    seen = {id(e)}
    while e.__context__ is not None and id(e.__context__) not in seen:
        e = e.__context__
        seen.add(id(e))
    return e


# ------------------------------------------------------------------------------------------
# Shapes.

PREFILL_HEAD_DIMS = [64, 128, 256]
PREFILL_SEQLENS = [512, 1024, 2048, 4096, 8192, 16384]
DECODE_SHAPES = [(1, 8192), (1, 32768), (1, 131072), (8, 8192), (8, 32768), (32, 4096),
                 (64, 8192), (128, 2048)]
DECODE_PAGES = [0, 64, 256]
QUICK_DECODE_SHAPES, QUICK_DECODE_PAGES = [(1, 32768), (64, 8192)], [0, 64]
# Decode over FP8 KV caches: the decode shapes, contiguous and paged 16, each with the --dtype
# cache, an e4m3 cache with one descale per (batch, KV head) and an e5m2 cache with one descale
# per tensor: (kv_dtype, torch dtype name, largest finite value, per-head descales).
DECODE_FP8_PAGES = [0, 16]
E4M3_MAX = 448.0
FP8_CACHES = [("e4m3", "float8_e4m3fn", E4M3_MAX, True), ("e5m2", "float8_e5m2", 57344.0, False)]
# The FP8 decode targets per row (printed and recorded, never asserted): tokens/s at least
# FP8_SPEED_TARGET times the --dtype cache's on shapes whose bf16 K+V is >= FP8_SPEED_MIN_BYTES,
# and GB/s (FP8 bytes) at least FP8_COPY_TARGET of the copy ceiling.
FP8_SPEED_TARGET, FP8_SPEED_MIN_BYTES, FP8_COPY_TARGET = 1.8, 1e9, 0.85
# SDPA's backends, then the optional peers that import here (bench/peers.py: FlashAttention-4).
PEERS = ["sdpa-flash", "sdpa-cudnn", "sdpa-efficient"] + peers.available()
# FP8 prefill (prefill_fp8): the prefill shapes; flare and SDPA's cuDNN backend in --dtype, flare's
# FP8 prefill and cuDNN's FP8 SDPA (bench/peers.py, where the cudnn module imports) on e4m3
# codes of one per-tensor quantization (descale = amax / E4M3_MAX). The peers that rows of each
# q_dtype are compared with (ratio_to_best_peer): SDPA's cuDNN backend and CUDNN_FP8.
CUDNN_FP8 = "cudnn-fp8"
FP8_PEERS = [CUDNN_FP8]
# Issue 21's FP8 prefill targets, printed and recorded per row as measured, never asserted: the
# e4m3 call's TFLOP/s on the non-causal rows of FP8_PREFILL_TARGET_SEQLEN keys of these head dims,
# and its speed at least FP8_PREFILL_CUDNN_TARGET times cuDNN FP8's on every row where that runs.
FP8_PREFILL_TFLOPS_TARGETS = {128: 1000.0, 256: 1150.0}
FP8_PREFILL_TARGET_SEQLEN = 16384
FP8_PREFILL_CUDNN_TARGET = 1.0
# prefill_fp8's rel_err tolerance per input format: twice the rms relative error that two
# roundings to the format leave in O (P before P.V, and O itself), each uniform within half a unit
# in the last place (relative: 2^-8 for 16-bit, bf16's being the coarser, 2^-4 for e4m3) and
# uncorrelated over keys and rows: 2 * sqrt(2) * u / sqrt(3). Random inputs like these tables'
# give about a third of it (e4m3: ~0.025 with a 16-bit O, ~0.037 with an e4m3 O). flare rows
# beyond it count as failures of the run; peers' are recorded.
PREFILL_FP8_TOLERANCE = {"16-bit": 2 * math.sqrt(2) * 2.0 ** -8 / math.sqrt(3),
                         "e4m3": 2 * math.sqrt(2) * 2.0 ** -4 / math.sqrt(3)}
# flare statuses that mean "not offered by this build or device": such rows are skipped (one
# line per distinct reason), not failures. FLARE_ERROR_UNSUPPORTED_DTYPE, _UNSUPPORTED_HEAD_DIM,
# _NOT_SUPPORTED, _ARCH_NOT_SUPPORTED.
FLARE_NOT_OFFERED = (3, 4, 5, 6)
# Chunked prefill over a paged cache: sequences x new tokens over cached tokens, q / kv heads,
# head dim; flare's contiguous varlen call (page 0) and its paged calls at these page sizes.
CHUNKED_SEQS, CHUNKED_NEW, CHUNKED_CACHED = 8, 512, 8192
CHUNKED_HQ, CHUNKED_HK, CHUNKED_D = 32, 8, 128
CHUNKED_PAGES = [0, 1, 16, 256]
TOKENS, MODEL_DIM = 16384, 2048
DEC_HQ, DEC_HK, DEC_D = 32, 8, 128

# Serving rows: the d512 and (192, 128) prefill tables' seqlens (16k tokens per call), the
# (head_dim, head_dim_v, heads) of the latter, and the overhead rows' (head_dim, heads, seqlen)
# with the image range [start, end) of every sequence.
SERVING_SEQLENS = [1024, 2048, 4096, 8192, 16384]
DV_SHAPE = (192, 128, 16)
OVERHEAD_SHAPE = (128, 16, 4096)
OVERHEAD_IMAGE = (512, 1536)


class DecodeCall:
    """flare's decode call on every input set (q, k, v), prepared once: K/V contiguous (a plain
    batch call) or, page > 0, scattered into shuffled page pools read through a block table
    with cache_seqlens. fp8: per set (kv_dtype name, k_descale, v_descale), the sets' K/V then
    holding FP8 codes; package: flare's Python flash_attn_with_kvcache to call instead of the C
    ABI (FP8 only). Holds every tensor the calls point to (outs, pools, tables, descales) for
    as long as it lives. outs[0]: the output of set 0; splits: the C ABI's split count."""

    def __init__(self, runner, sets, page, label, fp8=None, package=None):
        self.runner, self.sets, self.page, self.label = runner, sets, page, label
        self.fp8, self.package = fp8, package
        self.outs = [runner.torch.empty_like(q) for q, _, _ in sets]
        if page == 0:
            self.params = [runner.flare_params(q, k, v, o)
                           for (q, k, v), o in zip(sets, self.outs)]
            self.keep = None
        else:
            self.params, self.keep = runner.paged_params(sets, self.outs, page)
        for p, (kind, kd, vd) in zip(self.params, fp8 or []):
            p.kv_dtype = FLARE_DTYPE[kind]
            p.k_descale, p.v_descale = kd.data_ptr(), vd.data_ptr()
            if kd.numel() > 1:  # (batch, KV head); one element: strides 0, 0 (one per tensor)
                p.k_descale_batch_stride, p.k_descale_head_stride = kd.stride()
                p.v_descale_batch_stride, p.v_descale_head_stride = vd.stride()
        self.splits = runner.flare.num_splits(self.params[0], runner.device)

    def time(self):
        """A Timing over the sets, or None (the failure recorded in runner.failures)."""
        if not self.package:
            t, ws = self.runner.time_flare(self.params, self.label, check=self.outs[0])
            del ws
            return t
        calls = []
        for i, ((q, k, v), o, (_, kd, vd)) in enumerate(zip(self.sets, self.outs, self.fp8)):
            kw = dict(out=o, k_descale=kd, v_descale=vd)
            if self.page:  # the same pools and block tables as the C ABI's params
                kw.update(block_table=self.keep[i][0], cache_seqlens=k.shape[1])
                k, v = self.keep[i][1:3]
            calls.append(((q, k, v), kw))
        n, fn = len(calls), self.package
        label = f"flare (Python package) {self.label}"
        try:
            return self.runner.measure(lambda i: fn(*calls[i % n][0], **calls[i % n][1]), n,
                                       label, check=self.outs[0], flare=True)
        except Exception as e:  # the package's argument errors and the library's statuses
            msg = f"{label}: {error_line(e, 200)}"
            print("  " + msg)
            self.runner.failures.append(msg)
            self.runner.torch.cuda.synchronize()
            return None


def dense_strides(t):
    """(batch, row, head) element strides of a [b, s, h, d] tensor (d contiguous)."""
    assert t.stride(-1) == 1
    return t.stride(0), t.stride(1), t.stride(2)


class Runner:
    def __init__(self, args, torch, flare):
        self.args, self.torch, self.flare = args, torch, flare
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
        self.F, self.sdpa_kernel = F, sdpa_kernel
        self.backends = {"sdpa-flash": SDPBackend.FLASH_ATTENTION,
                         "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
                         "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION}
        self.device = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(self.device)
        l2 = getattr(props, "L2_cache_size", 50 << 20) or (50 << 20)
        self.rotate_bytes = max(4 * l2, 128 << 20)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
        self.timer = Timer(torch, min_iters=args.iters, warmup_ms=args.warmup_ms)
        self.gen = torch.Generator(device="cuda")
        self.gen.manual_seed(1234)
        self.rows = []
        self.failures = []
        self.not_offered = set()  # flare's answers for calls it does not offer, printed once each
        self.copy_gbs = None  # set by ceilings()

    def sets_for(self, set_bytes):
        return max(1, min(64, math.ceil(self.rotate_bytes / max(1, set_bytes))))

    def randn(self, *shape):
        return self.torch.randn(*shape, generator=self.gen, device="cuda", dtype=self.dtype)

    # --- timing ----------------------------------------------------------------------------
    def measure(self, fn, nsets, label, graph_fn=None, check=None, flare=False, graph=True):
        """fn(i) runs call i over nsets rotating input sets. Returns a Timing: the eager median
        (Timer.median_ms; its errors propagate to the caller) and, with --graphs (and graph),
        graph_fn (default fn; it must launch on torch's current stream) replayed from a CUDA
        graph, whose failures are recorded in the Timing (and, flare, in self.failures).
        check: the output that call 0 writes (flare), poisoned before the replays and compared
        with the eager result after them, so a graph that skips the call cannot pass; flare's
        captured calls replay bit-identical to eager ones (README), so any difference is a
        failure."""
        ms = self.timer.median_ms(fn)
        if not (graph and self.args.graphs):
            return Timing(ms)
        t = self.replay(graph_fn or fn, ms, nsets, check)
        problem = t.graph_error
        if problem is None and t.graph_rel_err:
            problem = f"replayed output != eager output (rel_err {t.graph_rel_err:.2e})"
        if problem is not None:
            print(f"  {label}: CUDA graph: {problem}")
            if flare:
                self.failures.append(f"{label} (CUDA graph): {problem}")
        return t

    def replay(self, fn, eager_ms, nsets, check):
        torch = self.torch
        calls = graph_calls(eager_ms, nsets)
        t = Timing(eager_ms, graphed=True, graph_calls=calls)
        eager_out = None if check is None else check.clone()
        graph = None
        try:
            graph = self.timer.capture(fn, calls)
            if check is not None:
                check.fill_(float("nan"))
            t.graph_ms = self.timer.median_ms(lambda i: graph.replay()) / calls
            if check is not None:
                t.graph_rel_err = self.rel_err(check, eager_out)
                if not math.isfinite(t.graph_rel_err):
                    t.graph_ms, t.graph_error = None, "the replays left set 0's output poisoned"
        except Exception as e:  # capture unsupported by the call: record, go on
            t.graph_error = error_line(root_cause(e), 200)
            try:
                torch.cuda.synchronize()
            except Exception:
                pass
        del graph
        if check is not None:
            check.copy_(eager_out)  # the caller's rel_err is the eager call's
        return t

    def graph_fields(self, t):
        """The fields --graphs adds to a row timed as t (None: the eager call failed)."""
        if not self.args.graphs:
            return {}
        if t is None:
            return {"ms": None, "graph_ms": None, "graph_vs_eager": None, "graph_calls": None,
                    "graph_error": "the eager call failed"}
        return t.fields()

    # --- flare ---------------------------------------------------------------------------
    def flare_params(self, q, k, v, out, causal=False):
        p = self.flare.params()
        p.dtype = FLARE_DTYPE[self.args.dtype]
        p.q, p.k, p.v, p.out = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
        p.batch, p.seqlen_q, p.num_heads, p.head_dim = q.shape[0], q.shape[1], q.shape[2], q.shape[3]
        p.seqlen_k, p.num_heads_k = k.shape[1], k.shape[2]
        p.head_dim_v = 0 if v.shape[3] == q.shape[3] else v.shape[3]
        p.q_batch_stride, p.q_row_stride, p.q_head_stride = dense_strides(q)
        p.k_batch_stride, p.k_row_stride, p.k_head_stride = dense_strides(k)
        p.v_batch_stride, p.v_row_stride, p.v_head_stride = dense_strides(v)
        p.out_batch_stride, p.out_row_stride, p.out_head_stride = dense_strides(out)
        p.causal = int(causal)
        return p

    def time_flare(self, params_list, label, check=None, graph=True):
        """params_list: one FlareParams per input set (workspace set here, shared). Returns
        (Timing or None, workspace); check, graph: as for measure."""
        st = self.flare.can_implement(params_list[0], self.device)
        if st != FLARE_OK:
            msg = self.flare.error(st)
            print(f"  flare {label}: cannot implement ({msg})")
            self.failures.append(f"flare {label}: {msg}")
            return None, None
        ws_bytes = self.flare.workspace_size(params_list[0], self.device)
        ws = self.torch.empty(max(ws_bytes, 1), dtype=self.torch.uint8, device="cuda")
        for p in params_list:
            p.workspace, p.workspace_size = ws.data_ptr(), ws_bytes
        refs = [ctypes.byref(p) for p in params_list]
        current = self.torch.cuda.current_stream
        stream = current().cuda_stream
        n = len(refs)
        fwd = self.flare.fwd
        try:
            # The eager loop passes the stream read once; the captured calls read it per call
            # (while capturing it is the capture stream).
            t = self.measure(lambda i: fwd(refs[i % n], stream), n, f"flare {label}",
                             graph_fn=lambda i: fwd(refs[i % n], current().cuda_stream),
                             check=check, flare=True, graph=graph)
        except RuntimeError as e:
            print(f"  flare {label}: {e}")
            self.failures.append(f"flare {label}: {e}")
            return None, ws
        return t, ws

    def flare_offered(self, p, what):
        """Whether flare takes p in this build on this device. A status of FLARE_NOT_OFFERED
        prints one line per distinct answer (at the first call it skips) and gives False; any
        other status gives True and is left to time_flare, which records it as a failure."""
        st = self.flare.can_implement(p, self.device)
        if st == FLARE_OK or st not in FLARE_NOT_OFFERED:
            return True
        msg = self.flare.error(st)
        if msg not in self.not_offered:
            self.not_offered.add(msg)
            print(f"  flare {what} skipped on every row where flare answers: {msg}")
        return False

    def flare_fp8_params(self, q, k, v, out, causal, descales):
        """flare_params for FP8 prefill: q, k, v of e4m3 codes, descales (q, k, v) float32
        [batch, heads_k] tensors; out stays --dtype."""
        p = self.flare_params(q, k, v, out, causal)
        p.q_dtype = p.kv_dtype = FLARE_DTYPE["e4m3"]
        for name, t in zip(("q", "k", "v"), descales):
            setattr(p, f"{name}_descale", t.data_ptr())
            setattr(p, f"{name}_descale_batch_stride", t.stride(0))
            setattr(p, f"{name}_descale_head_stride", t.stride(1))
        return p

    # --- peers ---------------------------------------------------------------------------
    def time_peer(self, system, views, causal, gqa, label):
        """views: per set (q, k, v) in [b, h, s, d]. Returns (Timing, output of set 0 in [b, h,
        s, dv]), or (None, None) when the peer cannot run the shape.

        Every system of PEERS is timed here: SDPA's backends, and the peers of bench/peers.py
        that import on this machine."""
        if system.startswith("sdpa-"):
            kw = {"is_causal": causal}
            if gqa:
                kw["enable_gqa"] = True
            return self.time_sdpa(system, views, kw, label)
        if system == "fa4":
            try:
                return peers.time_fa4(self.measure, views, causal, f"{system} {label}")
            except Exception as e:  # a shape FlashAttention-4 does not take: record null, go on
                print(f"  {system} {label}: unavailable ({error_line(e)})")
                self.torch.cuda.synchronize()
                return None, None
        raise ValueError(f"no runner for peer {system}")

    def time_sdpa(self, system, views, kw, label, graph=True):
        """views: per set (q, k, v) in [b, h, s, d]; kw: SDPA's keyword arguments. Returns
        (Timing, output of set 0) or (None, None); graph: as for measure."""
        F = self.F
        n = len(views)
        try:
            with warnings.catch_warnings(), self.sdpa_kernel([self.backends[system]]):
                # A backend that cannot take the shape warns why, then raises: keep only the error.
                warnings.simplefilter("ignore")
                out0 = F.scaled_dot_product_attention(*views[0], **kw)
                t = self.measure(lambda i: F.scaled_dot_product_attention(*views[i % n], **kw),
                                 n, f"{system} {label}", graph=graph)
            return t, out0
        except Exception as e:  # a backend may not support a shape: record null, go on
            print(f"  {system} {label}: unavailable ({error_line(e)})")
            self.torch.cuda.synchronize()
            return None, None

    @staticmethod
    def rel_err(out, ref):
        if out is None or ref is None:
            return None
        o, r = out.float(), ref.float()
        return float((o - r).norm() / r.norm())

    # --- tables --------------------------------------------------------------------------
    def prefill(self):
        hds, seqlens = PREFILL_HEAD_DIMS, PREFILL_SEQLENS
        if self.args.quick:
            hds, seqlens = [128], [1024, 4096]
        print(f"\n== prefill {self.args.dtype}, {TOKENS} tokens, model dim {MODEL_DIM} ==")
        for d in hds:
            for causal in (False, True):
                for s in seqlens:
                    self.prefill_shape(d, d, MODEL_DIM // d, causal, s)

    def prefill_d512(self):
        seqlens = [1024, 8192] if self.args.quick else SERVING_SEQLENS
        print(f"\n== prefill d512 {self.args.dtype}, {TOKENS} tokens, model dim {MODEL_DIM} ==")
        for causal in (False, True):
            for s in seqlens:
                self.prefill_shape(512, 512, MODEL_DIM // 512, causal, s)

    def prefill_dv(self):
        d, dv, h = DV_SHAPE
        seqlens = [1024, 8192] if self.args.quick else SERVING_SEQLENS
        print(f"\n== prefill head_dim {d} / head_dim_v {dv} {self.args.dtype}, {TOKENS} tokens, "
              f"{h} heads ==")
        for causal in (False, True):
            for s in seqlens:
                self.prefill_shape(d, dv, h, causal, s)

    def prefill_shape(self, d, dv, h, causal, s):
        """One prefill row per system: q/k [b, s, h, d], v/out [b, s, h, dv], b = TOKENS / s."""
        torch = self.torch
        b = TOKENS // s
        label = f"d={d}" + (f"/{dv}" if dv != d else "") + f" causal={int(causal)} s={s} b={b} h={h}"
        nsets = self.sets_for(2 * b * s * h * (d + dv) * 2)
        sets = [(self.randn(b, s, h, d), self.randn(b, s, h, d), self.randn(b, s, h, dv))
                for _ in range(nsets)]
        outs = [torch.empty_like(v) for _, _, v in sets]
        views = [(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)) for q, k, v in sets]
        flops = 2.0 * b * h * s * s * (d + dv) * (0.5 if causal else 1.0)
        base = {"table": "prefill", "dtype": self.args.dtype, "head_dim": d,
                "causal": causal, "batch": b, "heads": h, "seqlen_q": s, "seqlen_k": s}
        if dv != d:
            base["head_dim_v"] = dv
        ref = None
        peer = {}
        for system in PEERS:
            t, out0 = self.time_peer(system, views, causal, False, label)
            peer[system] = t
            if ref is None and out0 is not None:
                ref = out0.transpose(1, 2)  # back to [b, s, h, dv]
            del out0
            self.rows.append(dict(base, system=system, tflops=per_ms(flops / 1e9, ms_of(t)),
                                  **self.graph_fields(t)))
        params = [self.flare_params(q, k, v, o, causal) for (q, k, v), o in zip(sets, outs)]
        t, ws = self.time_flare(params, "prefill " + label, check=outs[0])
        err = self.rel_err(outs[0], ref) if t is not None else None
        self.rows.append(dict(base, system=self.args.system,
                              tflops=per_ms(flops / 1e9, ms_of(t)), rel_err=err,
                              **self.graph_fields(t)))
        timed = [(self.args.system, t)] + list(peer.items())
        print("  " + label + "  " + "  ".join(
            f"{sy}={fmt(per_ms(flops / 1e9, ms_of(ts)))}" for sy, ts in timed)
            + f"  TFLOP/s  rel_err={fmt(err, '.2e')}" + graph_text(timed))
        del sets, outs, views, ref, ws
        torch.cuda.empty_cache()

    def prefill_reference(self, q, k, v, causal, descales=None):
        """fp32 attention of q, k, v [b, s, h, d] with scale 1/sqrt(d), top-left causal or not:
        [b, s, h, d] float32. FP8 codes are dequantized with descales (q, k, v): one-element
        tensors (code x descale). One sequence and a slice of query rows at a time, so that the
        fp32 scores stay within 256 MiB."""
        torch = self.torch
        b, s, h, d = q.shape
        out = torch.empty(b, s, h, d, device="cuda", dtype=torch.float32)
        rows = max(1, min(s, (256 << 20) // (h * s * 4)))
        keys = torch.arange(s, device="cuda")
        for i in range(b):
            qf, kf, vf = ((x[i].float() if descales is None else x[i].float() * descales[j])
                          .transpose(0, 1) for j, x in enumerate((q, k, v)))  # [h, s, d]
            for r0 in range(0, s, rows):
                r1 = min(s, r0 + rows)
                sc = torch.matmul(qf[:, r0:r1], kf.transpose(1, 2)) / math.sqrt(d)
                if causal:
                    above = keys[None, :] > torch.arange(r0, r1, device="cuda")[:, None]
                    sc.masked_fill_(above, float("-inf"))
                out[i, r0:r1] = torch.matmul(sc.softmax(-1), vf).transpose(0, 1)
        return out

    def prefill_fp8(self):
        """Issue 21's FP8 prefill table: the prefill shapes, per shape four systems timed in turn
        and interleaved twice (the faster median of each kept, so clock drift over the table does
        not read as a difference between them; not replayed under --graphs):
          sdpa-cudnn and flare (C ABI) on --dtype inputs, the prefill table's calls;
          cudnn-fp8 (bench/peers.py) and flare's FP8 prefill (C ABI: q_dtype = kv_dtype e4m3) on
          e4m3 codes of values drawn like the --dtype inputs, one per-tensor quantization each
          (descale = amax / E4M3_MAX) that both read: cuDNN as one factor per tensor, flare as
          [batch, heads] descale arrays holding it.
        rel_err: against fp32 attention on the inputs each call reads (e4m3: code x descale),
        checked against PREFILL_FP8_TOLERANCE. Per flare e4m3 row: its speed over flare's --dtype
        call and over cudnn-fp8, and issue 21's targets (FP8_PREFILL_*) as measured. Missing
        pieces are skipped with one line each: torch without float8_e4m3fn (both e4m3
        systems), no cudnn module, a flare build or device without the FP8 prefill kernel
        (CMake FLARE_FP8_PREFILL)."""
        torch = self.torch
        hds, seqlens = PREFILL_HEAD_DIMS, PREFILL_SEQLENS
        if self.args.quick:
            hds, seqlens = [128], [1024, 4096]
        dt = self.args.dtype
        targets = ", ".join(f">= {t:.0f} TFLOP/s at d{d}"
                            for d, t in sorted(FP8_PREFILL_TFLOPS_TARGETS.items()))
        print(f"\n== FP8 prefill: q/k/v e4m3 vs {dt}, out {dt}, {TOKENS} tokens, model dim "
              f"{MODEL_DIM}: TFLOP/s; targets (flare e4m3): >= {FP8_PREFILL_CUDNN_TARGET:.1f}x "
              f"{CUDNN_FP8}, {targets} (non-causal, seqlen {FP8_PREFILL_TARGET_SEQLEN}) ==")
        fp8 = getattr(torch, "float8_e4m3fn", None)
        # Why cuDNN FP8 does not run (None: it does): printed once, here or at the first shape
        # whose graph fails for a missing module (which would fail every shape alike).
        self.cudnn_fp8_off = "torch has no float8_e4m3fn"
        if fp8 is None:
            print(f"  e4m3 systems ({self.args.system}, {CUDNN_FP8}) skipped: torch "
                  f"{torch.__version__} has no float8_e4m3fn")
        else:
            module, self.cudnn_fp8_off = peers.cudnn_fp8()
            if module is None:
                print(f"  {CUDNN_FP8} skipped: the cudnn module does not import "
                      f"({self.cudnn_fp8_off})")
            else:
                self.cudnn_fp8_off = None
                print(f"  {CUDNN_FP8}: cudnn {peers.cudnn_fp8_version()}")
        for d in hds:
            for causal in (False, True):
                for s in seqlens:
                    self.prefill_fp8_shape(d, causal, s, fp8)

    def prefill_fp8_shape(self, d, causal, s, fp8):
        """One prefill_fp8 row per system (Runner.prefill_fp8); fp8: torch.float8_e4m3fn or None."""
        torch = self.torch
        dt, me = self.args.dtype, self.args.system
        b, h = TOKENS // s, MODEL_DIM // d
        label = f"d={d} causal={int(causal)} s={s} b={b} h={h}"
        flops = 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)
        base = {"table": "prefill_fp8", "dtype": dt, "head_dim": d, "causal": causal, "batch": b,
                "heads": h, "seqlen_q": s, "seqlen_k": s}
        # runs: (system, q_dtype) -> fn() giving (Timing or None, set 0's output [b, s, h, d]).
        runs, info, refs = {}, {}, {}
        sets = [(self.randn(b, s, h, d), self.randn(b, s, h, d), self.randn(b, s, h, d))
                for _ in range(self.sets_for(4 * b * s * h * d * 2))]
        refs[dt] = self.prefill_reference(*sets[0], causal)
        views = [(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)) for q, k, v in sets]
        outs = [torch.empty_like(q) for q, _, _ in sets]
        params = [self.flare_params(q, k, v, o, causal) for (q, k, v), o in zip(sets, outs)]

        def sdpa():
            t, o = self.time_sdpa("sdpa-cudnn", views, {"is_causal": causal},
                                  f"prefill_fp8 {label}", graph=False)
            return t, None if o is None else o.transpose(1, 2)

        def flare_call(ps, os_, what):
            def run():
                t, ws = self.time_flare(ps, f"prefill_fp8 {label} {what}", graph=False)
                del ws
                return t, os_[0]
            return run

        runs[("sdpa-cudnn", dt)] = sdpa
        info[("sdpa-cudnn", dt)] = {"api": "torch", "descale": "none"}
        if self.flare_offered(params[0], dt):
            runs[(me, dt)] = flare_call(params, outs, dt)
            info[(me, dt)] = {"api": "c", "descale": "none"}
        cudnn_call = None
        if fp8 is not None:
            # q, k, v codes (1 byte) and a --dtype out (2 bytes) per set.
            sets8, descales8 = [], []
            for _ in range(self.sets_for(5 * b * s * h * d)):
                quantized = [self.quantize_cache(self.randn(b, s, h, d), fp8, E4M3_MAX, False)
                             for _ in range(3)]
                sets8.append(tuple(c for c, _ in quantized))
                descales8.append(tuple(ds for _, ds in quantized))
            refs["e4m3"] = self.prefill_reference(*sets8[0], causal, descales8[0])
            outs8 = [torch.empty(b, s, h, d, device="cuda", dtype=self.dtype) for _ in sets8]
            per_head = [tuple(ds.expand(b, h).contiguous() for ds in dss) for dss in descales8]
            params8 = [self.flare_fp8_params(q, k, v, o, causal, ph)
                       for (q, k, v), o, ph in zip(sets8, outs8, per_head)]
            if self.flare_offered(params8[0], "e4m3"):
                runs[(me, "e4m3")] = flare_call(params8, outs8, "e4m3")
                info[(me, "e4m3")] = {"api": "c", "descale": "per_head"}
            if self.cudnn_fp8_off is None:
                try:
                    cudnn_call = peers.CudnnFp8Sdpa(torch, sets8, descales8, causal,
                                                    float(refs["e4m3"].abs().amax()))
                except Exception as e:  # a graph cuDNN does not take: its row stays null
                    if "No module named" in str(e):
                        self.cudnn_fp8_off = error_line(e, 300)
                        print(f"  {CUDNN_FP8} skipped from {label} on: {self.cudnn_fp8_off}")
                    else:
                        print(f"  {CUDNN_FP8} {label}: unavailable ({error_line(e, 300)})")
                    torch.cuda.synchronize()
                if cudnn_call is not None:
                    def cudnn_run():
                        try:
                            t = peers.time_cudnn_fp8(self.measure, cudnn_call,
                                                     f"{CUDNN_FP8} {label}")
                            return t, cudnn_call.output()
                        except Exception as e:  # a failing execution: null, go on
                            print(f"  {CUDNN_FP8} {label}: failed ({error_line(e)})")
                            torch.cuda.synchronize()
                            return None, None
                    runs[(CUDNN_FP8, "e4m3")] = cudnn_run
                    info[(CUDNN_FP8, "e4m3")] = {"api": "cudnn-frontend", "descale": "per_tensor",
                                                 "o_dtype": cudnn_call.o_dtype}
        best, out0 = {}, {}
        for _ in range(2):
            for key, run in runs.items():
                t, o = run()
                best[key] = Timing.faster(best.get(key), t)
                if o is not None and key not in out0:
                    out0[key] = o
        ms_at = {key: ms_of(best.get(key)) for key in runs}
        line = []
        for key in runs:
            system, q_dtype = key
            ms = ms_at[key]
            e4m3 = q_dtype == "e4m3"
            tol = PREFILL_FP8_TOLERANCE["e4m3" if e4m3 else "16-bit"]
            err = self.rel_err(out0.get(key), refs[q_dtype]) if ms is not None else None
            row = dict(base, system=system, q_dtype=q_dtype, **info[key], ms=ms,
                       tflops=per_ms(flops / 1e9, ms), rel_err=err, rel_err_tolerance=tol,
                       within_tolerance=None if err is None else err <= tol)
            if system == me and e4m3:
                row.update(fp8_prefill_checks(row, ms_at.get((me, dt)),
                                              ms_at.get((CUDNN_FP8, "e4m3"))))
            if system == me and err is not None and err > tol:
                self.failures.append(f"flare prefill_fp8 {label} {q_dtype}: rel_err {err:.2e} "
                                     f"> tolerance {tol:.2e}")
            self.rows.append(row)
            line.append(f"{system} {q_dtype}={fmt(row['tflops'])} (rel_err {fmt(err, '.2e')}"
                        f"{'' if row['within_tolerance'] is not False else ' > tolerance'})")
        mine = find(self.rows[-len(runs):], system=me, q_dtype="e4m3") or {}
        print(f"  {label}  " + "  ".join(line) + "  TFLOP/s" + fp8_prefill_check_text(mine, dt))
        if cudnn_call is not None:
            cudnn_call.close()
        del sets, views, outs, params, refs, out0, runs, cudnn_call
        torch.cuda.empty_cache()

    def overhead(self):
        """flare alone: the plain d128 causal 4k call and the same call with each serving
        feature, interleaved twice (the faster median kept, so clock drift over the table does
        not read as a feature's cost). rel_err: against the plain call for the features that
        leave the result unchanged (no range), else null."""
        torch = self.torch
        d, h, s = OVERHEAD_SHAPE
        b = TOKENS // s
        print(f"\n== serving overhead {self.args.dtype}, d={d} causal, seqlen {s}, batch {b}, "
              f"{h} heads ==")
        nsets = self.sets_for(4 * b * s * h * d * 2)
        sets = [(self.randn(b, s, h, d), self.randn(b, s, h, d), self.randn(b, s, h, d))
                for _ in range(nsets)]
        sink = (torch.arange(h, device="cuda", dtype=torch.float32) % 5) * 0.25 - 0.5
        empty = torch.zeros(b, 1, 2, dtype=torch.int32, device="cuda")
        image = torch.tensor(OVERHEAD_IMAGE, dtype=torch.int32, device="cuda").repeat(b, 1, 1)

        def with_sink(p):
            p.sink = sink.data_ptr()

        def with_ranges(table):
            def apply(p):
                p.mm_prefix_ranges = table.data_ptr()
                p.max_mm_prefix_ranges = 1
                p.mm_prefix_ranges_batch_stride = 2
            return apply

        variants = [("none", None), ("sink", with_sink),
                    ("mm_prefix_ranges-empty", with_ranges(empty)),
                    ("mm_prefix_ranges-image-1k", with_ranges(image))]
        outs = {name: [torch.empty_like(q) for q, _, _ in sets] for name, _ in variants}
        best = {}
        for _ in range(2):
            for name, apply in variants:
                params = []
                for (q, k, v), o in zip(sets, outs[name]):
                    p = self.flare_params(q, k, v, o, True)
                    if apply:
                        apply(p)
                    params.append(p)
                t, ws = self.time_flare(params, f"overhead {name}", graph=False)
                ms = ms_of(t)
                del ws
                if ms is not None:
                    best[name] = min(best.get(name, ms), ms)
        flops = 4.0 * b * h * s * s * d * 0.5
        base_ms = best.get("none")
        base = {"table": "serving_overhead", "dtype": self.args.dtype, "head_dim": d,
                "causal": True, "batch": b, "heads": h, "seqlen_q": s, "seqlen_k": s}
        for name, _ in variants:
            ms = best.get(name)
            ratio = None if ms is None or not base_ms else ms / base_ms
            err = None
            if name == "mm_prefix_ranges-empty" and ms is not None and base_ms:
                err = self.rel_err(outs[name][0], outs["none"][0])
            self.rows.append(dict(base, feature=name, system=self.args.system,
                                  tflops=None if ms is None else flops / ms / 1e9,
                                  ms=ms, time_vs_none=ratio, rel_err=err))
            print(f"  {name:28s} {fmt(ms, '.4f')} ms  {fmt(None if ms is None else flops / ms / 1e9)}"
                  f" TFLOP/s  x{fmt(ratio, '.4f')} of none")
        del sets, outs
        torch.cuda.empty_cache()

    def decode_reference(self, q, k, v, k_descale=None, v_descale=None):
        """fp32 attention for seqlen_q = 1 with grouped heads: q [b,1,hq,d], k/v [b,L,hk,d];
        FP8 k/v are dequantized (code x descale, descales (b, hk) or one element)."""
        torch = self.torch
        b, _, hq, d = q.shape
        hk = k.shape[2]
        qf = q.float().view(b, hk, hq // hk, d)
        out = torch.empty(b, hk, hq // hk, d, device="cuda", dtype=torch.float32)

        def dequant(x, descale, i):
            x = x[i].float()  # [L, hk, d]
            return x if descale is None else x * descale.float().expand(b, hk)[i].view(1, hk, 1)

        for i in range(b):  # one sequence at a time keeps the fp32 copies small
            kf, vf = dequant(k, k_descale, i), dequant(v, v_descale, i)
            sc = torch.einsum("grd,lgd->grl", qf[i], kf) / math.sqrt(d)
            out[i] = torch.einsum("grl,lgd->grd", sc.softmax(-1), vf)
        return out.view(b, 1, hq, d)

    def decode_shapes(self):
        return QUICK_DECODE_SHAPES if self.args.quick else DECODE_SHAPES

    def decode_sets(self, b, L, kv_elem_bytes):
        """Input sets (q [b, 1, hq, d], k, v [b, L, hk, d]) of --dtype, enough that one sweep
        over their K/V stored with kv_elem_bytes per element exceeds the rotation size."""
        hq, hk, d = DEC_HQ, DEC_HK, DEC_D
        nsets = self.sets_for(2 * b * L * hk * d * kv_elem_bytes)
        return [(self.randn(b, 1, hq, d), self.randn(b, L, hk, d), self.randn(b, L, hk, d))
                for _ in range(nsets)]

    def decode_peer(self, system, sets, ref, kv_bytes, label):
        """A peer (SDPA backend) on the decode sets: (Timing, GB/s of K+V, rel_err against
        ref)."""
        views = [(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)) for q, k, v in sets]
        t, out0 = self.time_peer(system, views, False, True, label)
        gbs = per_ms(kv_bytes / 1e6, ms_of(t))
        err = self.rel_err(out0.transpose(1, 2), ref) if out0 is not None else None
        return t, gbs, err


    def decode(self):
        torch = self.torch
        pages = QUICK_DECODE_PAGES if self.args.quick else DECODE_PAGES
        hq, hk, d = DEC_HQ, DEC_HK, DEC_D
        print(f"\n== decode {self.args.dtype}, seqlen_q 1, {hq}/{hk} heads, d={d}: GB/s of K+V ==")
        for b, L in self.decode_shapes():
            label = f"b={b} L={L}"
            kv_bytes = 2 * b * L * hk * d * 2
            sets = self.decode_sets(b, L, 2)
            ref = self.decode_reference(*sets[0])
            base = {"table": "decode", "dtype": self.args.dtype, "head_dim": d, "batch": b,
                    "heads": hq, "heads_k": hk, "seqlen_q": 1, "seqlen_k": L}
            line, timed = [], []
            for system in PEERS:
                t, gbs, err = self.decode_peer(system, sets, ref, kv_bytes, label)
                self.rows.append(dict(base, paged=0, system=system, gbs=gbs, rel_err=err,
                                      **self.graph_fields(t)))
                line.append(f"{system}={fmt(gbs, '.0f')}")
                timed.append((system, t))
            for page in pages:
                call = DecodeCall(self, sets, page, f"decode {label} page={page}")
                t, splits = call.time(), call.splits
                gbs = per_ms(kv_bytes / 1e6, ms_of(t))
                err = self.rel_err(call.outs[0], ref) if t is not None else None
                self.rows.append(dict(base, paged=page, system=self.args.system, gbs=gbs,
                                      rel_err=err, **self.graph_fields(t)))
                line.append(f"{self.args.system}[page {page}, splits {splits}]={fmt(gbs, '.0f')}"
                            f" (rel_err {fmt(err, '.2e')})")
                timed.append((f"{self.args.system}[page {page}]", t))
                del call
            print(f"  {label}  " + "  ".join(line) + "  GB/s" + graph_text(timed))
            del sets, ref
            torch.cuda.empty_cache()

    def quantize_cache(self, x, torch_dtype, fmax, per_head):
        """x (b, L, hk, d) as FP8 codes of torch_dtype with descale = amax / fmax, amax over each
        (batch, KV head) (descale (b, hk)) or over the tensor (descale (1,)): (codes, descale).
        Clamped before the conversion, so no code is NaN or infinite."""
        torch = self.torch
        b, _, hk, _ = x.shape
        amax = x.abs().amax(dim=(1, 3)) if per_head else x.abs().amax().view(1)
        descale = (amax.float() / fmax).clamp_min(1e-12).contiguous()
        scale = descale.view(b, 1, hk, 1) if per_head else descale
        codes = (x.float() / scale).clamp_(-fmax, fmax).to(torch_dtype)
        return codes, descale

    def decode_fp8(self):
        """The decode shapes over FP8 KV caches: per shape, SDPA's cuDNN backend on the --dtype
        cache, then for contiguous K/V and pages of 16 flare on the --dtype cache (C ABI, the
        decode table's call) and on e4m3 (per-(batch, KV head) descales) and e5m2 (per-tensor
        descale) caches quantized from the same values, interleaved twice with the faster median
        kept. The FP8 calls go through flare's Python package when it takes FP8 caches
        (flash_attn_with_kvcache(..., k_descale=, v_descale=)), else through the C ABI. rel_err:
        against fp32 attention on the inputs each call reads (FP8: code x descale)."""
        torch = self.torch
        hq, hk, d = DEC_HQ, DEC_HK, DEC_D
        package = flare_package_fp8()
        api = "python" if package else "c"
        print(f"\n== decode over FP8 KV caches, q/out {self.args.dtype}, seqlen_q 1, {hq}/{hk} "
              f"heads, d={d}: tokens/s; FP8 through flare's "
              f"{'Python package' if package else 'C ABI (the package takes no FP8 caches)'} ==")
        caches = [(self.args.dtype, "none", None)] + [
            (kind, "per_head" if per_head else "per_tensor",
             (getattr(torch, tname), fmax, per_head))
            for kind, tname, fmax, per_head in FP8_CACHES]
        for b, L in self.decode_shapes():
            label = f"b={b} L={L}"
            elems = 2 * b * L * hk * d  # K and V
            sets = self.decode_sets(b, L, 1)  # the FP8 sweep is the shorter one
            base = {"table": "decode_fp8", "dtype": self.args.dtype, "head_dim": d, "batch": b,
                    "heads": hq, "heads_k": hk, "seqlen_q": 1, "seqlen_k": L}
            kv_sets, refs = {}, {}
            for kind, _, fp8 in caches:
                if fp8 is None:
                    kv_sets[kind], refs[kind] = None, self.decode_reference(*sets[0])
                    continue
                quantized = []
                for q, k, v in sets:
                    (kc, kd), (vc, vd) = (self.quantize_cache(x, *fp8) for x in (k, v))
                    quantized.append(((q, kc, vc), (kind, kd, vd)))
                kv_sets[kind] = quantized
                (q0, k0, v0), (_, kd0, vd0) = quantized[0]
                refs[kind] = self.decode_reference(q0, k0, v0, kd0, vd0)
            t, gbs, err = self.decode_peer("sdpa-cudnn", sets, refs[self.args.dtype],
                                           elems * 2, label)
            ms = ms_of(t)
            self.rows.append(dict(base, paged=0, kv_dtype=self.args.dtype, descale="none",
                                  system="sdpa-cudnn", api=None,
                                  us=None if ms is None else ms * 1e3,
                                  tokens_per_s=per_ms(b * 1e3, ms),
                                  kv_bytes=elems * 2, gbs=gbs, rel_err=err,
                                  **self.graph_fields(t)))
            print(f"  {label} sdpa-cudnn {self.args.dtype}: "
                  f"{fmt(per_ms(b * 1e3, ms), '.0f')} tokens/s, "
                  f"{fmt(gbs, '.0f')} GB/s" + graph_text([("sdpa-cudnn", t)]))
            for page in DECODE_FP8_PAGES:
                calls = {}
                for kind, _, fp8 in caches:
                    where = f"decode_fp8 {label} page={page} cache={kind}"
                    if fp8 is None:
                        calls[kind] = DecodeCall(self, sets, page, where)
                    else:
                        calls[kind] = DecodeCall(self, [s for s, _ in kv_sets[kind]], page, where,
                                                 fp8=[f for _, f in kv_sets[kind]],
                                                 package=package)
                best = {}
                for _ in range(2):
                    for kind, call in calls.items():
                        best[kind] = Timing.faster(best.get(kind), call.time())
                base_ms = ms_of(best.get(self.args.dtype))
                for kind, descale, fp8 in caches:
                    t, out0, splits = best.get(kind), calls[kind].outs[0], calls[kind].splits
                    ms = ms_of(t)
                    kv_bytes = elems * (2 if fp8 is None else 1)
                    row = dict(base, paged=page, kv_dtype=kind, descale=descale,
                               system=self.args.system, api="c" if fp8 is None else api,
                               splits=splits, us=None if ms is None else ms * 1e3,
                               tokens_per_s=per_ms(b * 1e3, ms),
                               kv_bytes=kv_bytes, gbs=per_ms(kv_bytes / 1e6, ms),
                               rel_err=self.rel_err(out0, refs[kind]) if ms is not None else None,
                               speed_vs_base=None if ms is None or not base_ms else base_ms / ms,
                               **self.graph_fields(t))
                    if fp8 is not None:
                        row.update(fp8_checks(row, self.copy_gbs))
                    self.rows.append(row)
                    print(f"  {label} page={page} {kind:5s} ({descale}, splits {splits}): "
                          f"{fmt(row['tokens_per_s'], '.0f')} tokens/s, "
                          f"{fmt(row['gbs'], '.0f')} GB/s"
                          f", x{fmt(row['speed_vs_base'], '.3f')} of {self.args.dtype}"
                          f", rel_err {fmt(row['rel_err'], '.2e')}" + fp8_check_text(row)
                          + graph_text([(kind, t)]))
                del calls
            del sets, kv_sets, refs
            torch.cuda.empty_cache()

    def scatter_to_pages(self, k, v, page):
        """k, v (batch, L, heads_k, d), L a multiple of page, scattered into page pools in a
        random page order: (block_table (batch, L // page) int32, k_pool, v_pool)."""
        torch = self.torch
        b, L, hk, d = k.shape
        pps = L // page
        num_pages = b * pps
        perm = torch.randperm(num_pages, device="cuda", generator=self.gen)
        table = perm.to(torch.int32).view(b, pps).contiguous()
        # One-byte (FP8) elements move as uint8: indexed writes need not support float8 types.
        raw = (lambda t: t.view(torch.uint8)) if k.element_size() == 1 else (lambda t: t)
        k_pool = torch.empty(num_pages, page, hk, d, device="cuda", dtype=k.dtype)
        v_pool = torch.empty_like(k_pool)
        raw(k_pool)[perm] = raw(k).reshape(num_pages, page, hk, d)
        raw(v_pool)[perm] = raw(v).reshape(num_pages, page, hk, d)
        return table, k_pool, v_pool

    def paged_params(self, sets, outs, page):
        """Scatter each set's contiguous K/V into a page pool in a random page order."""
        torch = self.torch
        keep = []
        params = []
        for (q, k, v), o in zip(sets, outs):
            b, L, hk, d = k.shape
            table, k_pool, v_pool = self.scatter_to_pages(k, v, page)
            cache_seqlens = torch.full((b,), L, dtype=torch.int32, device="cuda")
            p = self.flare_params(q, k_pool, v_pool, o)
            p.seqlen_k = L
            p.cache_seqlens = cache_seqlens.data_ptr()
            p.block_table = table.data_ptr()
            p.block_table_batch_stride = table.shape[1]
            p.page_block_size = page
            p.num_pages = k_pool.shape[0]
            keep.append((table, k_pool, v_pool, cache_seqlens))
            params.append(p)
        return params, keep

    def chunked(self):
        """Chunked prefill over a paged KV cache (causal, bottom-right aligned): flare's varlen
        call on contiguous K/V and on shuffled page pools of several page sizes, against SDPA on
        the contiguous layout with a lower-right causal mask (SDPA has no paged path)."""
        torch = self.torch
        from torch.nn.attention.bias import causal_lower_right
        n, sq, hq, hk, d = CHUNKED_SEQS, CHUNKED_NEW, CHUNKED_HQ, CHUNKED_HK, CHUNKED_D
        sk = CHUNKED_CACHED + sq
        pages = [0, 1, 16] if self.args.quick else CHUNKED_PAGES
        print(f"\n== chunked prefill over a paged cache {self.args.dtype}: {n} x {sq} new tokens "
              f"over {CHUNKED_CACHED} cached, {hq}/{hk} heads, d={d}, causal: TFLOP/s ==")
        q, k, v = self.randn(n, sq, hq, d), self.randn(n, sk, hk, d), self.randn(n, sk, hk, d)
        # Row i of a sequence sees CHUNKED_CACHED + i + 1 keys.
        flops = 4.0 * hq * d * n * (sq * CHUNKED_CACHED + sq * (sq + 1) / 2)
        base = {"table": "chunked", "dtype": self.args.dtype, "head_dim": d, "causal": True,
                "batch": n, "heads": hq, "heads_k": hk, "seqlen_q": sq, "seqlen_k": sk}
        label = f"n={n} sq={sq} sk={sk}"
        # SDPA on [b, h, s, d] views with the lower-right causal mask; K/V heads repeated for
        # the query heads (not every backend takes enable_gqa with a mask).
        mask = causal_lower_right(sq, sk)
        views = (q.transpose(1, 2), k.repeat_interleave(hq // hk, dim=2).transpose(1, 2),
                 v.repeat_interleave(hq // hk, dim=2).transpose(1, 2))
        ref, line, timed = None, [], []
        for system in PEERS:
            # A backend may not take the mask or GQA: null.
            t, out0 = self.time_sdpa(system, [views], {"attn_mask": mask}, "chunked " + label)
            if ref is None and out0 is not None:
                ref = out0.transpose(1, 2).contiguous()
            tflops = per_ms(flops / 1e9, ms_of(t))
            self.rows.append(dict(base, paged=0, system=system, tflops=tflops,
                                  **self.graph_fields(t)))
            line.append(f"{system}={fmt(tflops)}")
            timed.append((system, t))
            del out0
        # flare: q / out [n * sq, hq, d] and K/V [n * sk, hk, d] with cu_seqlens, or pools.
        qv = q.reshape(n * sq, hq, d)
        cu_q = torch.arange(0, n + 1, device="cuda", dtype=torch.int32) * sq
        cu_k = torch.arange(0, n + 1, device="cuda", dtype=torch.int32) * sk
        contiguous_ms = None
        for page in pages:
            out = torch.empty_like(qv)
            p = self.flare.params()
            p.dtype = FLARE_DTYPE[self.args.dtype]
            p.q, p.out = qv.data_ptr(), out.data_ptr()
            p.batch, p.seqlen_q, p.seqlen_k = n, sq, sk
            p.num_heads, p.num_heads_k, p.head_dim = hq, hk, d
            p.q_row_stride, p.q_head_stride = qv.stride(0), qv.stride(1)
            p.out_row_stride, p.out_head_stride = out.stride(0), out.stride(1)
            p.cu_seqlens_q, p.cu_seqlens_k = cu_q.data_ptr(), cu_k.data_ptr()
            p.max_seqlen_q, p.max_seqlen_k = sq, sk
            p.causal = 1
            if page == 0:
                kc, vc = k.reshape(n * sk, hk, d), v.reshape(n * sk, hk, d)
                keep = (kc, vc)
                p.k, p.v = kc.data_ptr(), vc.data_ptr()
                p.k_row_stride, p.k_head_stride = kc.stride(0), kc.stride(1)
                p.v_row_stride, p.v_head_stride = vc.stride(0), vc.stride(1)
            else:
                pps = sk // page
                table, k_pool, v_pool = self.scatter_to_pages(k, v, page)
                keep = (table, k_pool, v_pool)
                p.k, p.v = k_pool.data_ptr(), v_pool.data_ptr()
                p.k_batch_stride, p.k_row_stride, p.k_head_stride = k_pool.stride()[:3]
                p.v_batch_stride, p.v_row_stride, p.v_head_stride = v_pool.stride()[:3]
                p.block_table, p.block_table_batch_stride = table.data_ptr(), pps
                p.page_block_size, p.num_pages = page, k_pool.shape[0]
            t, ws = self.time_flare([p], f"chunked {label} page={page}", check=out)
            ms = ms_of(t)
            if page == 0:
                contiguous_ms = ms
            err = self.rel_err(out.view(n, sq, hq, d), ref) if ms is not None else None
            tflops = per_ms(flops / 1e9, ms)
            vs = None if ms is None or contiguous_ms is None else contiguous_ms / ms
            self.rows.append(dict(base, paged=page, system=self.args.system, tflops=tflops,
                                  rel_err=err, speed_vs_contiguous=vs, **self.graph_fields(t)))
            line.append(f"{self.args.system}[page {page}]={fmt(tflops)}"
                        f" (x{fmt(vs, '.3f')} of contiguous, rel_err {fmt(err, '.2e')})")
            timed.append((f"{self.args.system}[page {page}]", t))
            del keep, ws, out
        print(f"  {label}  " + "  ".join(line) + graph_text(timed))
        del q, k, v, views, ref
        torch.cuda.empty_cache()

    def ceilings(self):
        torch = self.torch
        self.copy_gbs = copy_gbs = self.timer.measure_copy()
        n = 8192
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        bm = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
        ms = self.timer.median_ms(lambda i: torch.mm(a, bm, out=c))
        gemm = 2.0 * n ** 3 / ms / 1e9
        print(f"ceilings: bf16 GEMM 8192^3 {gemm:.1f} TFLOP/s, 1 GiB device copy {copy_gbs:.0f} GB/s")
        del a, bm, c
        return {"gemm_bf16_tflops": gemm, "copy_gbs": copy_gbs}


def fmt(x, spec=".1f"):
    return "null" if x is None else format(x, spec)


def per_ms(amount, ms):
    """amount / ms (a rate from a time), None where nothing was measured."""
    return None if ms is None else amount / ms


def graph_text(timed):
    """The graph / eager ratios of (name, Timing or None) pairs for a progress line; "" where no
    graph was tried."""
    if not any(t is not None and t.graphed for _, t in timed):
        return ""
    return "  graph/eager " + " ".join(
        f"{name}={fmt((t.fields() if t else {}).get('graph_vs_eager'), '.3f')}"
        for name, t in timed)


def flare_package_fp8():
    """flare's Python flash_attn_with_kvcache when the installed package takes FP8 caches (the
    keyword arguments k_descale= and v_descale=), else None."""
    try:
        import flare as flare_package
        import inspect
        fn = flare_package.flash_attn_with_kvcache
        names = inspect.signature(fn).parameters
    except Exception:  # not installed, not built, or no signature to read
        return None
    return fn if "k_descale" in names and "v_descale" in names else None


def fp8_checks(row, copy_gbs):
    """The two FP8 decode targets for an FP8 row of decode_fp8: True / False, or None where the
    target does not apply (the speed target: bf16 K+V under FP8_SPEED_MIN_BYTES) or nothing
    was measured."""
    bf16_bytes = 2 * row["kv_bytes"]  # the row's FP8 bytes at 2 bytes per element
    speed, gbs = row.get("speed_vs_base"), row.get("gbs")
    return {"meets_speed_target": None if speed is None or bf16_bytes < FP8_SPEED_MIN_BYTES
            else speed >= FP8_SPEED_TARGET,
            "meets_copy_target": None if gbs is None or not copy_gbs
            else gbs / copy_gbs >= FP8_COPY_TARGET}


def check_text(met):
    return "n/a" if met is None else "yes" if met else "NO"


def fp8_check_text(row):
    if "meets_speed_target" not in row:
        return ""
    return (f"; >= {FP8_SPEED_TARGET}x: {check_text(row['meets_speed_target'])}, "
            f">= {FP8_COPY_TARGET:.0%} of copy: {check_text(row['meets_copy_target'])}")


def fp8_prefill_target(d, causal, s):
    """The TFLOP/s target of a prefill_fp8 shape (FP8_PREFILL_TFLOPS_TARGETS), or None."""
    if causal or s != FP8_PREFILL_TARGET_SEQLEN:
        return None
    return FP8_PREFILL_TFLOPS_TARGETS.get(d)


def fp8_prefill_checks(row, base_ms, cudnn_ms):
    """The fields of flare's e4m3 row of prefill_fp8: its speed over flare's --dtype call
    (base_ms) and over cuDNN FP8 (cudnn_ms; None where either was not measured), and issue 21's
    two targets: True / False, or None where a target does not apply or nothing was measured."""
    ms, tflops = row.get("ms"), row.get("tflops")
    vs_cudnn = None if ms is None or cudnn_ms is None else cudnn_ms / ms
    target = fp8_prefill_target(row["head_dim"], row["causal"], row["seqlen_q"])
    return {"speed_vs_base": None if ms is None or base_ms is None else base_ms / ms,
            "speed_vs_cudnn_fp8": vs_cudnn,
            "meets_cudnn_fp8_target": None if vs_cudnn is None
            else vs_cudnn >= FP8_PREFILL_CUDNN_TARGET,
            "tflops_target": target,
            "meets_tflops_target": None if target is None or tflops is None else tflops >= target}


def fp8_prefill_check_text(row, base):
    """The progress line's tail for flare's e4m3 row of prefill_fp8 ("" without one)."""
    if "meets_cudnn_fp8_target" not in row:
        return ""
    target = row["tflops_target"]
    return (f"; e4m3 x{fmt(row['speed_vs_base'], '.3f')} of {base}, "
            f"x{fmt(row['speed_vs_cudnn_fp8'], '.3f')} of {CUDNN_FP8} "
            f"(>= {FP8_PREFILL_CUDNN_TARGET:.1f}x: {check_text(row['meets_cudnn_fp8_target'])})"
            + ("" if target is None else
               f", >= {target:.0f} TFLOP/s: {check_text(row['meets_tflops_target'])}"))


# ------------------------------------------------------------------------------------------
# Derived fields, Markdown and plots.

def shape_key(r):
    """Rows compared with each other: one shape of one table (prefill_fp8: of one q_dtype)."""
    return (r["table"], r["dtype"], r["head_dim"], r.get("head_dim_v"), r.get("causal"),
            r["batch"], r["heads"], r["seqlen_q"], r["seqlen_k"], r.get("feature"),
            r.get("q_dtype"))


def flops_bound(r):
    """Rows measured in TFLOP/s (against the GEMM ceiling); the others in GB/s (copy)."""
    return "tflops" in r


def speed(r):
    """What flare is compared with the best peer by: TFLOP/s, else tokens/s where rows of one
    shape read different bytes per element (decode_fp8's caches), else GB/s."""
    if flops_bound(r):
        return r.get("tflops")
    return r.get("tokens_per_s") if "tokens_per_s" in r else r.get("gbs")


def add_ratios(rows, ceilings, flare_system):
    best = {}
    for r in rows:
        if r["system"] in PEERS or r["system"] in FP8_PEERS:
            m = speed(r)
            if m is not None:
                best[shape_key(r)] = max(best.get(shape_key(r), 0.0), m)
    for r in rows:
        metric = r.get("tflops") if flops_bound(r) else r.get("gbs")
        ceiling = ceilings["gemm_bf16_tflops"] if flops_bound(r) else ceilings["copy_gbs"]
        if r.get("q_dtype") == "e4m3":
            ceiling = None  # no FP8 GEMM ceiling is measured; the bf16 one does not bound it
        r["fraction_of_ceiling"] = None if metric is None or not ceiling else metric / ceiling
        if r["system"] == flare_system:
            b, m = best.get(shape_key(r)), speed(r)
            r["ratio_to_best_peer"] = None if m is None or not b else m / b


def find(rows, **kw):
    """The first row whose fields equal kw (a field the row lacks counts as None)."""
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def markdown(summary, flare_system, pages):
    rows = summary["rows"]
    out = [f"# flare vs PyTorch SDPA on {summary['device']} ({summary['date']}, commit "
           f"{summary['commit']})", "",
           f"Ceilings: bf16 GEMM 8192³ {fmt(summary['ceilings']['gemm_bf16_tflops'])} TFLOP/s, "
           f"1 GiB device copy {fmt(summary['ceilings']['copy_gbs'], '.0f')} GB/s (read + write).", ""]
    pre = [r for r in rows if r["table"] == "prefill"]
    if pre:
        dt = pre[0]["dtype"]
        out += [f"## Prefill, {dt}, {TOKENS} tokens, model dim {MODEL_DIM} (head dim 192/128: "
                f"{DV_SHAPE[2]} heads, FLOPs 2·b·h·s²·(d + dv)): TFLOP/s", "",
                f"| head dim | causal | seqlen | {flare_system} | " + " | ".join(PEERS) +
                " | flare / best peer | rel_err |",
                "|---|---|---|---|" + "---|" * len(PEERS) + "---|---|"]
        keys = sorted({(r["head_dim"], r.get("head_dim_v") or 0, r["causal"], r["seqlen_q"])
                       for r in pre})
        for d, dv, c, s in keys:
            at = dict(head_dim=d, head_dim_v=dv or None, causal=c, seqlen_q=s)
            f = find(pre, system=flare_system, **at) or {}
            cells = [fmt(f.get("tflops"), ".0f")]
            cells += [fmt((find(pre, system=p, **at) or {}).get("tflops"), ".0f") for p in PEERS]
            dims = f"{d}/{dv}" if dv else f"{d}"
            out.append(f"| {dims} | {'yes' if c else 'no'} | {s} | " + " | ".join(cells) +
                       f" | {fmt(f.get('ratio_to_best_peer'), '.2f')} | {fmt(f.get('rel_err'), '.1e')} |")
        out.append("")
    dec = [r for r in rows if r["table"] == "decode"]
    if dec:
        out += [f"## Decode, {dec[0]['dtype']}, seqlen_q 1, {DEC_HQ} q heads / {DEC_HK} kv heads, "
                f"d {DEC_D}: GB/s of K+V read", "",
                "| batch | kv length | " + " | ".join(
                    f"{flare_system} {'contiguous' if p == 0 else f'paged {p}'}" for p in pages) +
                " | " + " | ".join(PEERS) + " | flare (contiguous) / best peer | rel_err |",
                "|---|---|" + "---|" * (len(pages) + len(PEERS)) + "---|---|"]
        keys = sorted({(r["batch"], r["seqlen_k"]) for r in dec})
        for b, L in keys:
            fc = find(dec, batch=b, seqlen_k=L, system=flare_system, paged=0) or {}
            cells = [fmt((find(dec, batch=b, seqlen_k=L, system=flare_system, paged=p) or {}).get("gbs"),
                         ".0f") for p in pages]
            cells += [fmt((find(dec, batch=b, seqlen_k=L, system=p) or {}).get("gbs"), ".0f")
                      for p in PEERS]
            out.append(f"| {b} | {L} | " + " | ".join(cells) +
                       f" | {fmt(fc.get('ratio_to_best_peer'), '.2f')} | {fmt(fc.get('rel_err'), '.1e')} |")
        out.append("")
    ovh = [r for r in rows if r["table"] == "serving_overhead"]
    if ovh:
        r0 = ovh[0]
        out += [f"## Serving features' cost, {r0['dtype']}, d {r0['head_dim']} causal, seqlen "
                f"{r0['seqlen_q']}, batch {r0['batch']}, {r0['heads']} heads", "",
                "| feature | ms | TFLOP/s (plain call's FLOPs) | time / none |",
                "|---|---|---|---|"]
        for r in ovh:
            out.append(f"| {r['feature']} | {fmt(r.get('ms'), '.4f')} | {fmt(r.get('tflops'))} | "
                       f"{fmt(r.get('time_vs_none'), '.4f')} |")
        out.append("")
    return "\n".join(out)


def markdown_chunked(summary, flare_system):
    rows = [r for r in summary["rows"] if r["table"] == "chunked"]
    if not rows:
        return ""
    r0 = rows[0]
    pages = sorted({r["paged"] for r in rows if r["system"] == flare_system})
    out = [f"## Chunked prefill over a paged cache, {r0['dtype']}, {r0['batch']} sequences x "
           f"{r0['seqlen_q']} new tokens over {r0['seqlen_k'] - r0['seqlen_q']} cached, "
           f"{r0['heads']} q heads / {r0['heads_k']} kv heads, d {r0['head_dim']}, causal: "
           "TFLOP/s", "",
           "SDPA has no paged path: its columns run the contiguous layout (lower-right causal "
           "mask).", "",
           "| " + " | ".join(f"{flare_system} {'contiguous' if p == 0 else f'page {p}'}"
                             for p in pages) + " | " + " | ".join(PEERS) + " |",
           "|" + "---|" * (len(pages) + len(PEERS))]
    cells = [fmt((find(rows, system=flare_system, paged=p) or {}).get("tflops"), ".0f")
             for p in pages]
    cells += [fmt((find(rows, system=p) or {}).get("tflops"), ".0f") for p in PEERS]
    out.append("| " + " | ".join(cells) + " |")
    out += ["", "| page | speed / contiguous | flare / best peer | rel_err |", "|---|---|---|---|"]
    for p in pages:
        f = find(rows, system=flare_system, paged=p) or {}
        out.append(f"| {p if p else 'contiguous'} | {fmt(f.get('speed_vs_contiguous'), '.3f')} | "
                   f"{fmt(f.get('ratio_to_best_peer'), '.2f')} | {fmt(f.get('rel_err'), '.1e')} |")
    out.append("")
    return "\n".join(out)


def markdown_decode_fp8(summary, flare_system):
    rows = [r for r in summary["rows"] if r["table"] == "decode_fp8"]
    mine = [r for r in rows if r["system"] == flare_system]
    if not mine:
        return ""
    r0, base = mine[0], mine[0]["dtype"]
    kinds = [k for k, *_ in FP8_CACHES]
    fp8_api = next((r["api"] for r in mine if r["kv_dtype"] in kinds), "c")
    out = [f"## Decode over FP8 KV caches, q/out {base}, seqlen_q 1, {r0['heads']} q heads / "
           f"{r0['heads_k']} kv heads, d {r0['head_dim']}: tokens/s", "",
           f"FP8 calls through flare's {'Python package' if fp8_api == 'python' else 'C ABI'}; "
           f"e4m3 with one descale per (batch, KV head), e5m2 with one per tensor; SDPA cuDNN on "
           f"the {base} cache, contiguous. Targets per FP8 row: tokens/s >= {FP8_SPEED_TARGET}x "
           f"the {base} cache's where its K+V is >= {FP8_SPEED_MIN_BYTES / 1e9:.0f} GB (else "
           f"n/a), GB/s of FP8 bytes >= {FP8_COPY_TARGET:.0%} of the copy ceiling.", "",
           f"| batch | kv length | page | {base} K+V (MB) | {FP8_SPEED_TARGET}x applies | "
           f"sdpa-cudnn {base} | flare {base} | " + " | ".join(f"flare {k}" for k in kinds) +
           " | " + " | ".join(f"{k} / {base}" for k in kinds) + " | " +
           " | ".join(f"{k} % of copy" for k in kinds) + f" | >= {FP8_SPEED_TARGET}x (" +
           " / ".join(kinds) + f") | >= {FP8_COPY_TARGET:.0%} (" + " / ".join(kinds) +
           ") | rel_err (" + " / ".join(kinds) + ") |",
           "|" + "---|" * (8 + 3 * len(kinds) + 2)]
    for b, L, page in sorted({(r["batch"], r["seqlen_k"], r["paged"]) for r in mine}):
        at = dict(batch=b, seqlen_k=L, paged=page)
        cudnn = find(rows, system="sdpa-cudnn", **at) or {}
        by = {k: find(mine, kv_dtype=k, **at) or {} for k in [base] + kinds}
        pct = lambda r: (None if r.get("fraction_of_ceiling") is None
                         else 100 * r["fraction_of_ceiling"])
        base_bytes = 2 * b * L * r0["heads_k"] * r0["head_dim"] * 2
        cells = [f"{base_bytes / 1e6:.0f}", "yes" if base_bytes >= FP8_SPEED_MIN_BYTES else "no",
                 fmt(cudnn.get("tokens_per_s"), ".0f") if page == 0 else "—"]
        cells += [fmt(by[k].get("tokens_per_s"), ".0f") for k in [base] + kinds]
        cells += [fmt(by[k].get("speed_vs_base"), ".2f") for k in kinds]
        cells += [fmt(pct(by[k]), ".0f") for k in kinds]
        cells += [" / ".join(check_text(by[k].get(c)) for k in kinds)
                  for c in ("meets_speed_target", "meets_copy_target")]
        cells.append(" / ".join(fmt(by[k].get("rel_err"), ".1e") for k in kinds))
        out.append(f"| {b} | {L} | {page if page else 'contiguous'} | " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)


def markdown_prefill_fp8(summary, flare_system):
    rows = [r for r in summary["rows"] if r["table"] == "prefill_fp8"]
    if not rows:
        return ""
    base = rows[0]["dtype"]
    series = [("sdpa-cudnn", base), (flare_system, base), (CUDNN_FP8, "e4m3"),
              (flare_system, "e4m3")]
    names = [f"{sy} {q}" for sy, q in series]
    o_dtypes = sorted({r["o_dtype"] for r in rows if r.get("o_dtype")})
    targets = ", ".join(f">= {t:.0f} TFLOP/s at d{d}"
                        for d, t in sorted(FP8_PREFILL_TFLOPS_TARGETS.items()))
    out = [f"## FP8 prefill, q/k/v e4m3 vs {base}, out {base}, {TOKENS} tokens, model dim "
           f"{MODEL_DIM}: TFLOP/s", "",
           f"flare through its C ABI. e4m3 inputs: one per-tensor quantization (descale = amax / "
           f"{E4M3_MAX:.0f}) read by both FP8 systems, by flare as [batch, heads] descale arrays; "
           f"{CUDNN_FP8}: cuDNN's sdpa_fp8 graph (P scaled by {E4M3_MAX:.0f}), O in "
           f"{' / '.join(o_dtypes) or '—'}. rel_err against fp32 attention on the inputs each "
           f"call reads (e4m3: code × descale); tolerance "
           f"{PREFILL_FP8_TOLERANCE['16-bit']:.1e} ({base}), {PREFILL_FP8_TOLERANCE['e4m3']:.2f} "
           f"(e4m3). Targets for flare e4m3, measured, not asserted: >= "
           f"{FP8_PREFILL_CUDNN_TARGET:.1f}x {CUDNN_FP8} on every row where it runs; {targets} "
           f"(non-causal, seqlen {FP8_PREFILL_TARGET_SEQLEN}).", "",
           "| head dim | causal | seqlen | " + " | ".join(names) +
           f" | e4m3 / {base} | {flare_system} e4m3 / {CUDNN_FP8} | >= "
           f"{FP8_PREFILL_CUDNN_TARGET:.1f}x {CUDNN_FP8} | TFLOP/s target | rel_err (" +
           " / ".join(names) + ") |",
           "|" + "---|" * (3 + len(series) + 5)]
    mine = []
    for d, c, s in sorted({(r["head_dim"], r["causal"], r["seqlen_q"]) for r in rows}):
        at = dict(head_dim=d, causal=c, seqlen_q=s)
        by = [find(rows, system=sy, q_dtype=q, **at) or {} for sy, q in series]
        f8 = by[-1]
        if f8:
            mine.append(f8)
        target = fp8_prefill_target(d, c, s)
        cells = [fmt(r.get("tflops"), ".0f") for r in by]
        cells += [fmt(f8.get("speed_vs_base"), ".2f"), fmt(f8.get("speed_vs_cudnn_fp8"), ".2f"),
                  check_text(f8.get("meets_cudnn_fp8_target")),
                  "—" if target is None else
                  f"{target:.0f}: {check_text(f8.get('meets_tflops_target'))}",
                  " / ".join(fmt(r.get("rel_err"), ".1e") for r in by)]
        out.append(f"| {d} | {'yes' if c else 'no'} | {s} | " + " | ".join(cells) + " |")
    out.append("")
    vs = [r["speed_vs_cudnn_fp8"] for r in mine if r.get("speed_vs_cudnn_fp8") is not None]
    met = sum(v >= FP8_PREFILL_CUDNN_TARGET for v in vs)
    out.append(f"- {flare_system} e4m3 >= {FP8_PREFILL_CUDNN_TARGET:.1f}x {CUDNN_FP8}: on "
               f"{met} of {len(vs)} rows where both ran" +
               (f" ({min(vs):.2f}x–{max(vs):.2f}x, median {statistics.median(vs):.2f}x)"
                if vs else ""))
    for d, t in sorted(FP8_PREFILL_TFLOPS_TARGETS.items()):
        r = find(mine, head_dim=d, causal=False, seqlen_q=FP8_PREFILL_TARGET_SEQLEN) or {}
        got = r.get("tflops")
        out.append(f"- >= {t:.0f} TFLOP/s at d{d} non-causal {FP8_PREFILL_TARGET_SEQLEN}: " +
                   ("not measured" if got is None else
                    f"{got:.0f} ({check_text(r.get('meets_tflops_target'))})"))
    bad = [r for r in rows if r.get("within_tolerance") is False]
    out.append(f"- rel_err beyond its tolerance: {len(bad)} row(s)" + "".join(
        f"; {r['system']} {r['q_dtype']} d{r['head_dim']} "
        f"{'causal' if r['causal'] else 'non-causal'} {r['seqlen_q']}: {r['rel_err']:.2e}"
        for r in bad[:8]))
    out.append("")
    return "\n".join(out)


# The CUDA-graph tables: per table, the fields that make a row's shape (one line each) and those
# that, after the system, name a series (one pair of columns each: graph ms, graph / eager).
GRAPH_TABLES = [("prefill", ("head_dim", "head_dim_v", "causal", "seqlen_q"), ()),
                ("decode", ("batch", "seqlen_k"), ("paged",)),
                ("decode_fp8", ("batch", "seqlen_k", "paged"), ("kv_dtype",)),
                ("chunked", (), ("paged",))]
GRAPH_HEADERS = {"head_dim": "head dim", "head_dim_v": "head dim v", "causal": "causal",
                 "seqlen_q": "seqlen", "batch": "batch", "seqlen_k": "kv length", "paged": "page"}


def field_text(name, value):
    if value is None:
        return "—"
    if name == "causal":
        return "yes" if value else "no"
    if name == "paged":
        return f"page {value}" if value else "contiguous"
    return str(value)


def graph_summary(rows, flare_system):
    """Per (table, system) of the rows that carry graph fields: rows, rows captured, the largest
    |graph_vs_eager - 1| and the rows within GRAPH_TOLERANCE. flare first, then PEERS."""
    order = lambda sy: (sy != flare_system, PEERS.index(sy) if sy in PEERS else len(PEERS), sy)
    out = []
    for table, _, _ in GRAPH_TABLES:
        mine = [r for r in rows if r["table"] == table and "graph_ms" in r]
        for sy in sorted({r["system"] for r in mine}, key=order):
            devs = [abs(r["graph_vs_eager"] - 1.0) for r in mine
                    if r["system"] == sy and r["graph_vs_eager"] is not None]
            out.append({"table": table, "system": sy,
                        "rows": sum(r["system"] == sy for r in mine), "captured": len(devs),
                        "max_abs_deviation": max(devs, default=None),
                        "within_tolerance": sum(d <= GRAPH_TOLERANCE for d in devs),
                        "tolerance": GRAPH_TOLERANCE})
    return out


def markdown_graphs(summary, flare_system):
    """One table per GRAPH_TABLES entry with graph rows: per series the replay's per-call ms and
    graph / eager, then the summary line of each system and the distinct capture failures."""
    rows, out = summary["rows"], []
    stats = summary.get("graph_summary") or []
    for table, shape, extra in GRAPH_TABLES:
        mine = [r for r in rows if r["table"] == table and "graph_ms" in r]
        if not mine:
            continue
        name = lambda r: " ".join([r["system"]] + [field_text(f, r.get(f)) for f in extra])
        order = lambda r: (r["system"] != flare_system,
                           PEERS.index(r["system"]) if r["system"] in PEERS else len(PEERS),
                           r["system"], tuple(r.get(f) for f in extra))
        series = list(dict.fromkeys(name(r) for r in sorted(mine, key=order)))
        out += [f"## CUDA-graph replay: {table}, per-call ms (replay / calls captured) and graph / "
                f"eager", "",
                "| " + "".join(f"{GRAPH_HEADERS[f]} | " for f in shape) +
                " | ".join(f"{sr} graph ms | {sr} graph/eager" for sr in series) + " |",
                "|" + "---|" * (len(shape) + 2 * len(series))]
        lines = {}
        for r in mine:
            key = tuple(r.get(f) for f in shape)
            cells = lines.setdefault(key, {})
            cells[name(r)] = ("fail" if r["graph_ms"] is None else fmt(r["graph_ms"], ".4g"),
                              fmt(r["graph_vs_eager"], ".3f"))
        for key in sorted(lines, key=lambda k: tuple((v is not None, v or 0) for v in k)):
            cells = [c for sr in series for c in lines[key].get(sr, ("—", "—"))]
            out.append("| " + "".join(f"{field_text(f, v)} | " for f, v in zip(shape, key)) +
                       " | ".join(cells) + " |")
        out.append("")
        for st in (st for st in stats if st["table"] == table):
            missed = st["rows"] - st["captured"]
            dev = st["max_abs_deviation"]
            out.append(f"- {st['system']}: {st['within_tolerance']} of {st['rows']} rows within "
                       f"{st['tolerance']:.0%} of eager, max |graph/eager - 1| " +
                       ("—" if dev is None else f"{100 * dev:.2f}%") +
                       (f", {missed} not captured" if missed else ""))
        errors = {}
        for r in mine:
            if r.get("graph_error"):
                errors.setdefault((name(r), r["graph_error"]), []).append(r)
        for (sr, err), rs in errors.items():
            out.append(f"- {sr}, {len(rs)} row(s) not captured: {err}")
        out.append("")
    return "\n".join(out)


def plot(summary, flare_system, pages, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = summary["rows"]
    pre = [r for r in rows if r["table"] == "prefill"]
    dec = [r for r in rows if r["table"] == "decode"]
    hds = sorted({(r["head_dim"], r.get("head_dim_v")) for r in pre},
                 key=lambda x: (x[0], x[1] or 0)) or [(128, None)]
    fig = plt.figure(figsize=(6 * max(3, len(hds)), 16))
    grid = fig.add_gridspec(3, max(3, len(hds)))
    systems = [flare_system] + PEERS
    for col, (d, dv) in enumerate(hds):
        for row, causal in enumerate((False, True)):
            ax = fig.add_subplot(grid[row, col])
            for sy in systems:
                pts = sorted((r["seqlen_q"], r["tflops"]) for r in pre if r["head_dim"] == d
                             and r.get("head_dim_v") == dv and r["causal"] == causal
                             and r["system"] == sy and r.get("tflops") is not None)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=sy,
                            linewidth=2.5 if sy == flare_system else 1.2)
            ax.set_xscale("log", base=2)
            dims = f"{d}/{dv}" if dv else f"{d}"
            ax.set_title(f"prefill d={dims} {'causal' if causal else 'non-causal'}")
            ax.set_xlabel("seqlen (16k tokens per call)")
            ax.set_ylabel("TFLOP/s")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[2, :])
    keys = sorted({(r["batch"], r["seqlen_k"]) for r in dec})
    series = [(f"{flare_system} {'contig' if p == 0 else f'paged {p}'}", flare_system, p)
              for p in pages] + [(p, p, 0) for p in PEERS]
    width = 0.8 / max(1, len(series))
    for j, (name, sy, pg) in enumerate(series):
        vals = []
        for b, L in keys:
            r = find(dec, batch=b, seqlen_k=L, system=sy, paged=pg)
            vals.append((r or {}).get("gbs") or 0.0)
        ax.bar([i + j * width for i in range(len(keys))], vals, width, label=name)
    if summary["ceilings"].get("copy_gbs"):
        ax.axhline(summary["ceilings"]["copy_gbs"], color="k", linestyle="--", linewidth=0.8,
                   label="1 GiB copy (read + write)")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))])
    ax.set_xticklabels([f"b={b}\nL={L}" for b, L in keys])
    ax.set_ylabel("GB/s of K+V read")
    ax.set_title(f"decode, seqlen_q 1, {DEC_HQ}/{DEC_HK} heads, d {DEC_D}")
    ax.legend(fontsize=8, ncol=4)
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"flare vs SDPA on {summary['device']} ({summary['date']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def git_commit():
    # FLARE_COMMIT first: a snapshot copied without .git (device runs) would otherwise report
    # the HEAD of whatever repository encloses it.
    if os.environ.get("FLARE_COMMIT"):
        return os.environ["FLARE_COMMIT"]
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=here,
                                       stderr=subprocess.DEVNULL, text=True).strip()
    except Exception:
        return os.environ.get("FLARE_COMMIT", "unknown")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default="build/libflare.so", help="path of libflare.so")
    ap.add_argument("--out", default="out", help="output folder")
    ap.add_argument("--table", default="all",
                    choices=["prefill", "prefill_fp8", "decode", "decode_fp8", "chunked", "d512",
                             "dv", "overhead", "serving", "all"],
                    help="serving: d512 + dv + overhead; all: every table")
    ap.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    ap.add_argument("--quick", action="store_true", help="a tiny subset of the shapes")
    ap.add_argument("--iters", type=int, default=30, help="minimum timed runs per shape (>= 20)")
    ap.add_argument("--warmup-ms", type=float, default=200.0,
                    help="GPU time of warm-up runs per system and shape before timing")
    ap.add_argument("--graphs", action="store_true",
                    help="also time every system's calls replayed from a CUDA graph (prefill, "
                         "decode, decode_fp8 and chunked rows)")
    ap.add_argument("--system", default="flare", help="system name of flare's rows")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    if args.iters < 20:
        ap.error("--iters must be >= 20")
    os.makedirs(args.out, exist_ok=True)

    import torch
    if not torch.cuda.is_available():
        raise SystemExit("compare.py: no CUDA device visible to torch")
    flare = Flare(args.lib)
    runner = Runner(args, torch, flare)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}")
    ceilings = runner.ceilings()
    if args.table in ("prefill", "all"):
        runner.prefill()
    if args.table in ("prefill_fp8", "all"):
        runner.prefill_fp8()
    if args.table in ("d512", "serving", "all"):
        runner.prefill_d512()
    if args.table in ("dv", "serving", "all"):
        runner.prefill_dv()
    if args.table in ("overhead", "serving", "all"):
        runner.overhead()
    if args.table in ("decode", "all"):
        runner.decode()
    if args.table in ("decode_fp8", "all"):
        runner.decode_fp8()
    if args.table in ("chunked", "all"):
        runner.chunked()

    pages = QUICK_DECODE_PAGES if args.quick else DECODE_PAGES
    add_ratios(runner.rows, ceilings, args.system)
    summary = {
        "device": torch.cuda.get_device_name(),
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "ceilings": ceilings,
        "rows": runner.rows,
    }
    if args.graphs:
        summary["graph_summary"] = graph_summary(runner.rows, args.system)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    md = markdown(summary, args.system, pages)
    md += "\n" + markdown_chunked(summary, args.system)
    md += "\n" + markdown_decode_fp8(summary, args.system)
    md += "\n" + markdown_prefill_fp8(summary, args.system)
    if args.graphs:
        md += "\n" + markdown_graphs(summary, args.system)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(md + "\n")
    if not args.no_plot:
        try:
            plot(summary, args.system, pages, os.path.join(args.out, "plots.png"))
        except Exception as e:  # plots are a convenience; the numbers are already written
            print(f"plot failed: {type(e).__name__}: {e}")
    print("\n" + md)
    if runner.failures:
        print(f"\n{len(runner.failures)} flare failure(s):")
        for m in runner.failures:
            print("  " + m)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
