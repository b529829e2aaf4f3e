"""Peers outside PyTorch's SDPA, for bench/compare.py. Each is optional: it joins the tables only
where its package imports on the GPU machine (shared/peers/README.md says how to carry it).

fa4  FlashAttention-4's CuTe-DSL forward (`flash_attn.cute.flash_attn_func`; runs its Hopper
     kernels on sm90). It takes [b, s, h, d] tensors and GQA natively, returns (out, lse), and
     JIT-compiles each variant on its first call: compare.py's warm-up covers that before timing.
cudnn-fp8  cuDNN's FP8 SDPA forward through the `cudnn` module of nvidia-cudnn-frontend (on the
     libcudnn that torch loads): one `sdpa_fp8` graph per shape over e4m3 q, k, v with per-tensor
     descale factors. Only compare.py's prefill_fp8 table runs it (class CudnnFp8Sdpa), so it is
     not one of available()'s peers.
"""

import math

_fa4 = None  # (function or None, why not) once probed
_cudnn = None  # (module or None, why not) once probed


def _why(e):
    """An exception's type and the first line of its message."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def fa4():
    """FlashAttention-4's flash_attn_func, or None with the import error's first line."""
    global _fa4
    if _fa4 is None:
        try:
            from flash_attn.cute import flash_attn_func  # noqa: PLC0415 - optional peer
            _fa4 = (flash_attn_func, "")
        except Exception as e:  # noqa: BLE001 - any failure means: not available here
            _fa4 = (None, _why(e))
    return _fa4


def cudnn_fp8():
    """The `cudnn` module (nvidia-cudnn-frontend) when it imports here and builds sdpa_fp8 graphs,
    else None with why not."""
    global _cudnn
    if _cudnn is None:
        try:
            import cudnn  # noqa: PLC0415 - optional peer
            if not hasattr(getattr(cudnn, "pygraph", None), "sdpa_fp8"):
                raise ImportError(f"cudnn {getattr(cudnn, '__version__', '?')} has no "
                                  "pygraph.sdpa_fp8")
            _cudnn = (cudnn, "")
        except Exception as e:  # noqa: BLE001 - any failure means: not available here
            _cudnn = (None, _why(e))
    return _cudnn


def cudnn_fp8_version():
    """'frontend X, cuDNN Y' of the cudnn module (cudnn_fp8() must have found it)."""
    cudnn = cudnn_fp8()[0]
    try:
        backend = cudnn.backend_version_string()
    except Exception:  # noqa: BLE001 - an older frontend: the number only
        backend = str(cudnn.backend_version())
    return f"frontend {getattr(cudnn, '__version__', '?')}, cuDNN {backend}"


def available():
    """The peer names that import here, in table order."""
    return ["fa4"] if fa4()[0] is not None else []


def time_fa4(measure, views, causal, label):
    """views: per input set (q, k, v) in [b, h, s, d]; measure: compare.py's Runner.measure.
    Times FlashAttention-4 rotating over the sets (each as [b, s, h, d], copied outside the
    timing where the view is not already that layout). Returns (Timing, output of set 0 in
    [b, h, s, dv])."""
    fn, why = fa4()
    if fn is None:
        raise RuntimeError(f"fa4 unavailable ({why})")
    sets = [tuple(x.transpose(1, 2).contiguous() for x in qkv) for qkv in views]
    n = len(sets)
    out0, _ = fn(*sets[0], causal=causal)
    t = measure(lambda i: fn(*sets[i % n], causal=causal), n, label)
    return t, out0.transpose(1, 2)


class CudnnFp8Sdpa:
    """cuDNN's FP8 SDPA forward (an sdpa_fp8 graph) on one prefill shape, built once and run on
    any of its input sets.

    sets: per set (q, k, v), float8_e4m3fn [b, s, h, d] tensors of codes with d contiguous,
    described to cuDNN in its (b, h, s, d) order over that memory; descales: per set (descale_q,
    descale_k, descale_v), one-element float32 device tensors (value = code x descale, one factor
    per tensor: cuDNN's FP8 SDPA takes no finer ones). causal: top-left causal mask (seqlen_q =
    seqlen_k here). amax_o: a bound of |O| (the reference output's largest magnitude).

    P is quantized with scale_s = E4M3_MAX (P <= 1 then spans e4m3's range) and descale_s =
    1 / E4M3_MAX. O is written in bfloat16 where cuDNN's engines offer that (o_dtype "bf16",
    scale_o 1), else in e4m3 (o_dtype "e4m3") with scale_o = E4M3_MAX / (2 amax_o), the factor 2
    keeping the other sets' outputs, whose amax is not measured, in range.
    The amax outputs (of S and O) are written to buffers of their own. Raises on anything cuDNN
    does not take, with the reason of each output type tried.
    """

    E4M3_MAX = 448.0

    def __init__(self, torch, sets, descales, causal, amax_o):
        cudnn, why = cudnn_fp8()
        if cudnn is None:
            raise RuntimeError(f"cudnn unavailable ({why})")
        self.torch, self.cudnn = torch, cudnn
        q = sets[0][0]
        b, s, h, d = q.shape
        self.dims = [b, h, s, d]
        self.strides = [q.stride(0), q.stride(2), q.stride(1), q.stride(3)]
        self.handle = cudnn.create_handle()
        cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream().cuda_stream)
        tried = []
        for o_dtype in ("bf16", "e4m3"):
            try:
                self.graph, names = self._build(o_dtype, causal, 1.0 / math.sqrt(d))
                break
            except Exception as e:  # noqa: BLE001 - cuDNN refuses the graph: try the next
                tried.append(f"O {o_dtype}: {_why(e)}")
        else:
            self.close()
            raise RuntimeError("; ".join(tried))
        self.o_dtype = o_dtype
        def one(v):
            return torch.full((1, 1, 1, 1), v, dtype=torch.float32, device="cuda")

        self.scale_o = 1.0 if o_dtype == "bf16" else self.E4M3_MAX / (2.0 * max(amax_o, 1e-30))
        scalars = {"descale_s": one(1.0 / self.E4M3_MAX), "scale_s": one(self.E4M3_MAX),
                   "scale_o": one(self.scale_o), "amax_s": one(0.0), "amax_o": one(0.0)}
        out_dtype = torch.bfloat16 if o_dtype == "bf16" else torch.float8_e4m3fn
        self.outs = [torch.empty(b, s, h, d, dtype=out_dtype, device="cuda") for _ in sets]
        size = self.graph.get_workspace_size()
        self.workspace = torch.empty(max(1, size), dtype=torch.uint8, device="cuda")
        self.packs = []
        for (qs, ks, vs), (dq, dk, dv), o in zip(sets, descales, self.outs):
            data = dict(scalars, q=qs, k=ks, v=vs, o=o, descale_q=dq.reshape(1, 1, 1, 1),
                        descale_k=dk.reshape(1, 1, 1, 1), descale_v=dv.reshape(1, 1, 1, 1))
            self.packs.append({names[n]: t for n, t in data.items()})

    def _build(self, o_dtype, causal, attn_scale):
        """The graph with O of o_dtype, built, and its tensors by name."""
        cudnn = self.cudnn
        fp8, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
        graph = cudnn.pygraph(io_data_type=fp8, intermediate_data_type=fp32,
                              compute_data_type=fp32, handle=self.handle)
        names = {n: graph.tensor(name=n, dim=self.dims, stride=self.strides, data_type=fp8)
                 for n in ("q", "k", "v")}
        for n in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o"):
            names[n] = graph.tensor(name=n, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=fp32)
        o, _, amax_s, amax_o = graph.sdpa_fp8(
            names["q"], names["k"], names["v"], names["descale_q"], names["descale_k"],
            names["descale_v"], names["descale_s"], names["scale_s"], names["scale_o"],
            generate_stats=False, attn_scale=attn_scale, use_causal_mask=causal,
            name="sdpa_fp8")
        o.set_output(True).set_dim(self.dims).set_stride(self.strides).set_data_type(
            cudnn.data_type.BFLOAT16 if o_dtype == "bf16" else fp8)
        for t in (amax_s, amax_o):
            t.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(fp32)
        names.update(o=o, amax_s=amax_s, amax_o=amax_o)
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        return graph, names

    def run(self, i):
        """One call on input set i (mod the number of sets), on torch's current stream."""
        self.graph.execute(self.packs[i % len(self.packs)], self.workspace, handle=self.handle)

    def output(self, i=0):
        """Set i's output in value units (O / scale_o), float32 [b, s, h, d]."""
        return self.outs[i].float() / self.scale_o

    def close(self):
        """Releases the cuDNN handle (the graph and buffers go with the object)."""
        if self.handle is not None:
            self.cudnn.destroy_handle(self.handle)
            self.handle = None


def time_cudnn_fp8(measure, call, label):
    """Times a CudnnFp8Sdpa rotating over its sets; measure: compare.py's Runner.measure (not
    replayed from a CUDA graph: the handle's stream is fixed). Returns a Timing."""
    return measure(call.run, len(call.packs), label, graph=False)
