"""GPU tests: every function of the package is capturable in a CUDA graph (torch.cuda.graph).

A call captured once and replayed over new input values gives what an eager call on those
values gives, bit for bit (the same plan and kernels run). The calls that need a workspace
(split-KV, the rotated q of an append with rotary, the persistent Hopper tiles) take it from
torch's caching allocator, and an int cache_seqlens is filled on the device: a call allocates
nothing that capture cannot replay and never waits for the device.

Skipped with a visible reason when torch or a CUDA device is missing.
"""
import pytest

import flare
from flare import _interface

torch = pytest.importorskip("torch", reason="GPU tests need torch (not installed)")
# test_gpu skips the module without a CUDA device or kernels.
from test_gpu import D, DEV, DT  # noqa: E402


def rand(*shape, dtype=DT):
    return torch.randn(*shape, device=DEV, dtype=dtype)


def captured(step):
    """step() captured in a CUDA graph (after a warm-up on a side stream, as torch asks)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = step()
    return graph, result


def refill(*tensors):
    """New values in place (the graph reads the same addresses)."""
    for t in tensors:
        t.copy_(torch.randn_like(t, dtype=torch.float32).to(t.dtype))


def same(a, b):
    return torch.equal(a, b) if not isinstance(a, tuple) else all(map(torch.equal, a, b))


class AllocCount:
    """Counts the workspace allocations made with torch's caching allocator."""

    def __init__(self, monkeypatch):
        self.n = 0
        real = _interface._torch_workspace

        def counted(*args):
            alloc = real(*args)

            def wrapped(nbytes):
                self.n += 1
                return alloc(nbytes)

            return wrapped

        monkeypatch.setattr(_interface, "_torch_workspace", counted)


@pytest.mark.parametrize("causal", [False, True])
def test_flash_attn_func_fresh_outputs(causal):
    torch.manual_seed(200)
    q, k, v = rand(2, 128, 8, D), rand(2, 192, 2, D), rand(2, 192, 2, D)
    step = lambda: flare.flash_attn_func(q, k, v, causal=causal,  # noqa: E731
                                         return_attn_probs=True)[:2]
    graph, (out, lse) = captured(step)
    refill(q, k, v)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert same((out, lse), step())


def test_packed_functions_with_out():
    torch.manual_seed(201)
    qkv = rand(2, 64, 3, 4, D)
    out = torch.empty(2, 64, 4, D, device=DEV, dtype=DT)
    graph, _ = captured(lambda: flare.flash_attn_qkvpacked_func(qkv, causal=True, out=out))
    refill(qkv)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, flare.flash_attn_qkvpacked_func(qkv, causal=True))


def test_varlen_and_paged_varlen():
    torch.manual_seed(202)
    lens = [37, 128, 5]
    cu = torch.tensor([0, 37, 165, 170], dtype=torch.int32, device=DEV)
    q, k, v = rand(170, 8, D), rand(170, 2, D), rand(170, 2, D)
    step = lambda: flare.flash_attn_varlen_func(  # noqa: E731
        q, k, v, cu, cu, max(lens), max(lens), causal=True, return_attn_probs=True)[:2]
    graph, (out, lse) = captured(step)
    refill(q, k, v)
    graph.replay()
    torch.cuda.synchronize()
    assert same((out, lse), step())

    page, pages = 16, 8
    kp, vp = rand(3 * pages, page, 2, D), rand(3 * pages, page, 2, D)
    table = torch.randperm(3 * pages, device=DEV).to(torch.int32).view(3, pages)
    step = lambda: flare.flash_attn_varlen_func(  # noqa: E731
        q, kp, vp, cu, cu, max(lens), max(lens), causal=True, block_table=table)
    graph, out = captured(step)
    refill(q, kp, vp)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, step())


@pytest.mark.parametrize("seqlens", ["tensor", "int"])
def test_kvcache_decode_split_kv(monkeypatch, seqlens):
    # num_splits=4: the split accumulators live in the workspace (torch's allocator); an int
    # cache_seqlens is filled on the device (a memset node in the graph).
    torch.manual_seed(203)
    kc, vc = rand(2, 1024, 2, D), rand(2, 1024, 2, D)
    q = rand(2, 1, 8, D)
    cs = 700 if seqlens == "int" else torch.tensor([700, 1024], dtype=torch.int32, device=DEV)
    count = AllocCount(monkeypatch)
    step = lambda: flare.flash_attn_with_kvcache(  # noqa: E731
        q, kc, vc, cache_seqlens=cs, num_splits=4, return_softmax_lse=True)
    graph, (out, lse) = captured(step)
    assert count.n == 2  # the warm-up's and the captured call's workspace
    refill(q, kc, vc)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert same((out, lse), step())


def test_kvcache_append_rotary_paged():
    # The append (rotated keys written into the pages) and the rotated q in the workspace,
    # replayed: the same rows are written again, and attention reads them.
    torch.manual_seed(204)
    page, pages, b, hk, h, sn = 16, 6, 2, 2, 8, 1
    kp, vp = rand(b * pages, page, hk, D), rand(b * pages, page, hk, D)
    table = torch.randperm(b * pages, device=DEV).to(torch.int32).view(b, pages)
    q, kn, vn = rand(b, sn, h, D), rand(b, sn, hk, D), rand(b, sn, hk, D)
    cap = page * pages
    pos = torch.arange(cap, device=DEV, dtype=torch.float32)[:, None]
    freqs = 1.0 / (10000 ** (torch.arange(D // 4, device=DEV, dtype=torch.float32) / (D // 4)))
    cos, sin = torch.cos(pos * freqs).to(DT), torch.sin(pos * freqs).to(DT)
    cs = torch.tensor([5, 40], dtype=torch.int32, device=DEV)
    step = lambda: flare.flash_attn_with_kvcache(  # noqa: E731
        q, kp, vp, kn, vn, rotary_cos=cos, rotary_sin=sin, cache_seqlens=cs,
        block_table=table, causal=True)
    graph, out = captured(step)
    refill(q, kn, vn)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    replayed = out.clone()
    assert torch.equal(replayed, step())  # the eager call appends the same rows again


def test_kvcache_on_a_side_stream_records_the_workspace(monkeypatch):
    # stream= another stream than the current one: the workspace is recorded on it.
    torch.manual_seed(205)
    kc, vc = rand(1, 2048, 2, D), rand(1, 2048, 2, D)
    q = rand(1, 1, 8, D)
    count = AllocCount(monkeypatch)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    out = flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=2048, num_splits=3, stream=side)
    torch.cuda.current_stream().wait_stream(side)
    assert count.n == 1
    assert torch.equal(out, flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=2048,
                                                          num_splits=3))


def test_merge_attention_states():
    torch.manual_seed(206)
    parts = [rand(2, 16, 4, D) for _ in range(3)]
    lses = [torch.randn(2, 4, 16, device=DEV, dtype=torch.float32) for _ in range(3)]
    graph, (out, out_lse) = captured(lambda: flare.merge_attention_states(parts, lses))
    refill(*parts, *lses)
    graph.replay()
    torch.cuda.synchronize()
    assert same((out, out_lse), flare.merge_attention_states(parts, lses))
