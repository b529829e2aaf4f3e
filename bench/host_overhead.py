"""Host time per call of flare's Python decode call against PyTorch SDPA (cuDNN backend).

Usage (a GPU machine with torch and the flare package installed):

    python bench/host_overhead.py [--batch 1 --seqlen-k 512 --heads 32 --heads-k 8 --head-dim 128]
                                  [--calls 200] [--repeats 7] [--json out.json]

Systems, on the same inputs (q (b, 1, h, d), K/V (b, L, hk, d), GQA):
  flare          flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=<int32 tensor>)
  flare-int      the same with cache_seqlens an int (a device-side fill per call)
  flare-out      the same with out= preallocated
  sdpa-cudnn     F.scaled_dot_product_attention on (b, h, s, d) views, enable_gqa, cuDNN only

Columns (microseconds per call, the median over --repeats runs of --calls calls):
  host_queued  the time to enqueue the calls while the GPU is busy with an earlier sleep kernel
               (torch.cuda._sleep): the host never waits for the GPU, so this is the host's own
               cost per call. `busy` says whether the GPU was still busy when the last call was
               enqueued (True: the measurement is clean).
  host_idle    the time to enqueue the calls on an idle GPU: equal to host_queued when the host
               is the bottleneck (a short step), larger when the launch queue fills and the host
               waits for the GPU.
  loop         the calls plus the final synchronisation: a decode loop's time per step.
  gpu_eager    GPU time of the calls run back to back (events around the queued calls).
  gpu_graph    GPU time per call when --calls calls captured in one CUDA graph are replayed.
  replay_host  host time of one graph replay, per captured call.
The shape's default is small (a short GPU step) so that host cost decides the loop time.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import flare


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seqlen-k", type=int, default=512)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--heads-k", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", help="write the results here")
    return p.parse_args()


def sleep_cycles_per_us():
    """GPU clock cycles of torch.cuda._sleep per microsecond, measured with events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    cycles = 10_000_000
    torch.cuda._sleep(cycles // 10)  # warm-up
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return cycles / (start.elapsed_time(end) * 1000.0)


def measure(step, calls, repeats, cycles_per_us):
    """The columns of one system (see the module docstring), in microseconds per call."""
    for _ in range(20):  # warm-up: first-call costs (kernel attributes, device facts, cuDNN plans)
        step()
    torch.cuda.synchronize()

    host_idle, loop = [], []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            step()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        host_idle.append((t1 - t0) / calls * 1e6)
        loop.append((t2 - t0) / calls * 1e6)

    # The GPU is kept busy long enough to outlast the enqueue loop (twice the idle loop's time,
    # at least 20 ms), so no call waits for it.
    sleep_us = max(20_000.0, 2.0 * max(loop) * calls)
    host_queued, gpu_eager, busy = [], [], []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        torch.cuda._sleep(int(sleep_us * cycles_per_us))
        start.record()
        t0 = time.perf_counter()
        for _ in range(calls):
            step()
        t1 = time.perf_counter()
        end.record()
        busy.append(not start.query())  # the GPU had not reached the first call yet
        end.synchronize()
        host_queued.append((t1 - t0) / calls * 1e6)
        gpu_eager.append(start.elapsed_time(end) * 1000.0 / calls)

    # Graph: `calls` calls captured once (on a side stream, as torch.cuda.graph does), replayed.
    gpu_graph, replay_host = [], []
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                step()
        graph.replay()
        torch.cuda.synchronize()
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            t0 = time.perf_counter()
            graph.replay()
            t1 = time.perf_counter()
            end.record()
            end.synchronize()
            replay_host.append((t1 - t0) / calls * 1e6)
            gpu_graph.append(start.elapsed_time(end) * 1000.0 / calls)
        del graph
    except Exception as e:  # noqa: BLE001 - a call that cannot be captured: say so, go on
        print(f"  capture failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
        torch.cuda.synchronize()

    def med(xs):
        return statistics.median(xs) if xs else float("nan")

    return {"host_queued": med(host_queued), "host_idle": med(host_idle), "loop": med(loop),
            "gpu_eager": med(gpu_eager), "gpu_graph": med(gpu_graph),
            "replay_host": med(replay_host), "busy": all(busy)}


def main():
    args = parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    b, L, h, hk, d = args.batch, args.seqlen_k, args.heads, args.heads_k, args.head_dim
    torch.manual_seed(0)
    q = torch.randn(b, 1, h, d, device="cuda", dtype=dtype)
    kc = torch.randn(b, L, hk, d, device="cuda", dtype=dtype)
    vc = torch.randn(b, L, hk, d, device="cuda", dtype=dtype)
    seqlens = torch.full((b,), L, dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    qt, kt, vt = q.transpose(1, 2), kc.transpose(1, 2), vc.transpose(1, 2)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    def sdpa():
        return F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)

    steps = {
        "flare": lambda: flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens),
        "flare-int": lambda: flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=L),
        "flare-out": lambda: flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens,
                                                           out=out),
        "sdpa-cudnn": sdpa,
    }
    ref = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens)
    cycles_per_us = sleep_cycles_per_us()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"flare {flare.__version__}")
    print(f"shape: batch {b}, seqlen_k {L}, heads {h}/{hk}, head_dim {d}, {args.dtype}; "
          f"{args.calls} calls x {args.repeats} repeats (medians, us per call)")
    cols = ["host_queued", "host_idle", "loop", "gpu_eager", "gpu_graph", "replay_host"]
    print(f"{'system':<12}" + "".join(f"{c:>13}" for c in cols) + "  busy")
    results = []
    for name, step in steps.items():
        try:
            if name == "sdpa-cudnn":
                with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                    diff = (sdpa().transpose(1, 2).float() - ref.float()).abs().max().item()
                    r = measure(step, args.calls, args.repeats, cycles_per_us)
                r["max_abs_diff_vs_flare"] = diff
            else:
                r = measure(step, args.calls, args.repeats, cycles_per_us)
        except Exception as e:  # noqa: BLE001 - a backend may refuse the shape: report, go on
            print(f"{name:<12} unavailable ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
            torch.cuda.synchronize()
            continue
        print(f"{name:<12}" + "".join(f"{r[c]:>13.2f}" for c in cols) + f"  {r['busy']}")
        results.append(dict(r, system=name, batch=b, seqlen_k=L, heads=h, heads_k=hk,
                            head_dim=d, dtype=args.dtype, calls=args.calls,
                            device=torch.cuda.get_device_name()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
