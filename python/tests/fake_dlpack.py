"""A DLPack producer for the CPU tests: claims a CUDA array at a made-up address.

It lets the binding's own checks (dtypes, shapes, strides, devices) run without a GPU; the
address is never dereferenced, so every case using it must fail before anything touches the
device (or, on a machine without one, at the device check).
"""
import ctypes

import numpy as np


class FakeCuda:
    """A DLPack producer claiming a CUDA array at a made-up address (never dereferenced)."""

    class _Device(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int32), ("id", ctypes.c_int32)]

    class _DType(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]

    class _Tensor(ctypes.Structure):
        pass

    _Tensor._fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32),
                        ("dtype", _DType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                        ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64),
                        ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]
    # DLPack 1.1 (code, bits): float8_e4m3fn / float8_e5m2 are codes 10 / 12.
    _CODES = {"float16": (2, 16), "bfloat16": (4, 16), "float32": (2, 32), "float64": (2, 64),
              "int32": (0, 32), "uint8": (1, 8), "float8_e4m3fn": (10, 8),
              "float8_e4m3fnuz": (11, 8), "float8_e5m2": (12, 8)}
    _alive = []  # the structs outlive the capsules (there is no deleter)

    def __init__(self, shape, dtype="float16", strides=None, device=0, data=0x10000):
        if strides is None:
            strides = [int(np.prod(shape[i + 1:])) for i in range(len(shape))]
        self.shape, self.dtype, self.strides, self.device = tuple(shape), dtype, strides, device
        self.data = data

    def __dlpack_device__(self):
        return (2, self.device)  # kDLCUDA

    def __dlpack__(self, **kwargs):
        n = len(self.shape)
        t = self._Tensor(data=self.data, device=self._Device(2, self.device), ndim=n,
                         dtype=self._DType(*self._CODES[self.dtype], 1),
                         shape=(ctypes.c_int64 * n)(*self.shape),
                         strides=(ctypes.c_int64 * n)(*self.strides))
        self._alive.append(t)
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(ctypes.addressof(t), b"dltensor", None)
