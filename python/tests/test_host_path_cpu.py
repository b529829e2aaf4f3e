"""The wrapper's per-call host path, without a GPU: torch tensors reach the core as capsules of
torch's C exporter (never through the Python Tensor.__dlpack__), the stream is torch's raw
current stream, fresh outputs and the workspace come from torch's allocator, and the fast paths
keep every check's message.

torch is replaced by a fake module (just what the wrapper touches) whose tensors export
FakeCuda arrays; the calls then stop where a machine without a GPU stops them.
"""
import sys
import types

import pytest

import flare
from flare import _interface

from fake_dlpack import FakeCuda

pytestmark = pytest.mark.skipif(
    flare.cuda_device_count() > 0,
    reason="a GPU is visible: these tests' arrays are fake and must not reach it")

NO_DEVICE = "flare: no CUDA driver/GPU found"


class FakeTorch:
    """torch as the wrapper sees it: Tensor (CUDA or not), dtypes, torch._C's exporter and raw
    current stream, Tensor.new_empty, record_stream, cuda.ExternalStream. Records each use."""

    def __init__(self, is_cuda=True, stream=0x5000):
        self.exports, self.dunder, self.streams, self.empties, self.recorded = [], 0, [], [], []
        fake = self
        m = self.module = types.ModuleType("torch")
        for name in ("float16", "bfloat16", "float32", "uint8", "int32", "float8_e4m3fn",
                     "float8_e5m2"):
            setattr(m, name, name)

        def to_dlpack(t):
            if t.refuse:
                raise RuntimeError("cannot export")
            fake.exports.append(t.name)
            return t.array.__dlpack__()

        def raw_stream(index):
            fake.streams.append(index)
            return stream

        m._C = types.SimpleNamespace(_to_dlpack=to_dlpack, _cuda_getCurrentRawStream=raw_stream)
        m.cuda = types.SimpleNamespace(ExternalStream=lambda h, device=None: ("ext", h))

        class Tensor:
            requires_grad = False
            refuse = False

            def __init__(self, name, shape, dtype="float16", **kw):
                self.name, self.shape, self.dtype = name, tuple(shape), dtype
                self.array = FakeCuda(shape, dtype, **kw)
                self.is_cuda = is_cuda
                self.device = "cuda:0"

            def get_device(self):
                return 0 if self.is_cuda else -1

            def __dlpack__(self, **kwargs):
                fake.dunder += 1
                return self.array.__dlpack__(**kwargs)

            def __dlpack_device__(self):
                return (2, 0)

            def new_empty(self, shape, dtype=None):
                fake.empties.append((tuple(shape), dtype or self.dtype))
                return Tensor(f"empty{len(fake.empties)}", shape, dtype or self.dtype)

            def data_ptr(self):
                return self.array.data

            def record_stream(self, s):
                fake.recorded.append((self.name, s))

        m.Tensor = Tensor
        self.Tensor = Tensor


@pytest.fixture
def fake_torch(monkeypatch):
    def install(**kw):
        fake = FakeTorch(**kw)
        monkeypatch.setitem(sys.modules, "torch", fake.module)
        monkeypatch.setattr(_interface, "_torch_pieces", None)
        return fake
    yield install


def no_device(call):
    with pytest.raises(RuntimeError) as info:
        call()
    assert str(info.value).startswith(NO_DEVICE), str(info.value)


def test_torch_tensors_go_through_torchs_c_exporter(fake_torch):
    fake = fake_torch()
    T = fake.Tensor
    q, kc, vc = T("q", (2, 1, 8, 64)), T("kc", (2, 128, 2, 64)), T("vc", (2, 128, 2, 64))
    cs = T("cs", (2,), "int32")
    no_device(lambda: flare.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=cs,
                                                    return_softmax_lse=True))
    # out and lse from torch's allocator, shaped as the call's results.
    assert fake.empties == [((2, 1, 8, 64), "float16"), ((2, 8, 1), "float32")]
    assert fake.exports == ["q", "kc", "vc", "cs", "empty1", "empty2"]
    assert fake.dunder == 0  # never the Python Tensor.__dlpack__
    assert fake.streams == [0]  # the raw current stream of q's device, read once
    assert fake.recorded == []  # the current stream: nothing to record


def test_torch_other_stream_records_fresh_outputs(fake_torch):
    fake = fake_torch()
    T = fake.Tensor
    q, k = T("q", (1, 16, 4, 64)), T("k", (1, 16, 4, 64))
    no_device(lambda: flare.flash_attn_func(q, k, k, stream=0x7000))
    assert fake.recorded == [("empty1", ("ext", 0x7000))]


def test_workspace_allocator_for_torch_inputs(fake_torch):
    fake = fake_torch()
    T = fake.Tensor
    q = T("q", (1, 16, 4, 64))
    outs = _interface._Outputs(q, None, (1, 16, 4, 64), (1, 4, 16), True, 0x5000)
    owner, address = outs.alloc(1000)
    assert fake.empties[-1] == ((1000,), "uint8")
    assert address == owner.data_ptr()
    outs = _interface._Outputs(q, None, (1, 16, 4, 64), (1, 4, 16), False, 0x7000)
    owner, _ = outs.alloc(64)
    assert fake.recorded[-1] == (owner.name, ("ext", 0x7000))
    # CPU tensors and other frameworks: no torch allocation, the core's own workspace.
    cpu = fake_torch(is_cuda=False).Tensor("q", (1, 16, 4, 64))
    assert _interface._Outputs(cpu, None, (1, 16, 4, 64), None, False, 0).alloc is None
    other = FakeCuda((1, 16, 4, 64))
    assert _interface._Outputs(other, None, (1, 16, 4, 64), None, False, 0).alloc is None


def test_a_tensor_torch_cannot_export_is_named_by_the_core(fake_torch):
    fake = fake_torch()
    T = fake.Tensor
    q, k = T("q", (1, 16, 4, 64)), T("k", (1, 16, 4, 64))
    k.refuse = True
    k.__class__ = type("Tensor", (T,), {"__dlpack__": lambda self, **kw: 1 / 0})
    with pytest.raises(ValueError, match=r"^k must be a CUDA array supporting DLPack .*; got "
                                         r"\S*Tensor$"):
        flare.flash_attn_func(q, k, k)


def test_cpu_torch_tensor_message_and_stream(fake_torch):
    fake = fake_torch(is_cuda=False)
    T = fake.Tensor
    q = T("q", (1, 16, 4, 64), device=0)
    q.array.__class__ = type("CpuFake", (FakeCuda,), {
        "__dlpack__": lambda self, **kw: _cpu_capsule(self)})
    with pytest.raises(ValueError, match=r"^q must be a CUDA array .*DLPack device type 1 \(CPU\)"):
        flare.flash_attn_func(q, q, q)
    assert fake.streams == []  # a CPU tensor has no current CUDA stream: stream 0


def _cpu_capsule(array):
    import numpy as np
    return np.zeros(array.shape, dtype=np.float16).__dlpack__()


def test_window_fast_path_keeps_the_checks():
    q = FakeCuda((1, 16, 4, 64))
    default = __import__("inspect").signature(flare.flash_attn_func).parameters["window_size"]
    assert default.default == (-1, -1)
    with pytest.raises(ValueError, match=r"^window_size\[0\] must be an int, got float$"):
        flare.flash_attn_func(q, q, q, window_size=(-1.0, -1))
    with pytest.raises(ValueError, match=r"^window_size must be a pair"):
        flare.flash_attn_with_kvcache(q, q, q, window_size=-1)
    no_device(lambda: flare.flash_attn_func(q, q, q, window_size=[-1, -1]))
    no_device(lambda: flare.flash_attn_func(q, q, q, window_size=(-1, -1)))


def test_core_takes_a_workspace_allocator_argument():
    # The private core's signature: the allocator (or None) just before the stream.
    for name in ("_fwd", "_varlen_fwd", "_kvcache_fwd"):
        doc = getattr(flare._flare, name).__doc__
        assert "workspace_alloc: object | None, stream: int" in doc, doc
