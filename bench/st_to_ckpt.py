#!/usr/bin/env python3
"""Writes a safetensors file as a PyTorch zip checkpoint (what torch.save writes: archive/data.pkl
with persistent storage ids, archive/data/N stored uncompressed, archive/version), without
torch: the pickle names torch._utils._rebuild_tensor_v2 and torch.*Storage through stand-in
modules. Used by `imgd-bench registry` to make a .ckpt of a random SD 1.5.

usage: st_to_ckpt.py IN.safetensors OUT.ckpt"""
import collections
import json
import pickle
import struct
import sys
import types
import zipfile

STORAGE = {"F16": "HalfStorage", "F32": "FloatStorage", "BF16": "BFloat16Storage",
           "F64": "DoubleStorage", "I64": "LongStorage", "I32": "IntStorage",
           "I16": "ShortStorage", "I8": "CharStorage", "U8": "ByteStorage", "BOOL": "BoolStorage"}


def fake_torch():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*a):
        raise RuntimeError("stand-in")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in STORAGE.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    sys.modules["torch"] = torch
    sys.modules["torch._utils"] = utils
    return torch, utils


TORCH, UTILS = fake_torch()


class Storage:
    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, tuple(shape)

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        return (UTILS._rebuild_tensor_v2,
                (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict()))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", getattr(TORCH, STORAGE[obj.dtype]), obj.key, "cpu", obj.numel)
        return None


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        base = 8 + n
        hdr.pop("__metadata__", None)
        sd = collections.OrderedDict()
        items = sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0])
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for i, (name, t) in enumerate(items):
                a, b = t["data_offsets"]
                size = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2,
                        "I8": 1, "U8": 1, "BOOL": 1}[t["dtype"]]
                sd[name] = Tensor(Storage(str(i), t["dtype"], (b - a) // size), t["shape"])
                f.seek(base + a)
                with z.open(f"archive/data/{i}", "w", force_zip64=True) as out:
                    left = b - a
                    while left:
                        chunk = f.read(min(left, 64 << 20))
                        out.write(chunk)
                        left -= len(chunk)
            import io
            buf = io.BytesIO()
            Pickler(buf, protocol=2).dump({"state_dict": sd})
            z.writestr("archive/data.pkl", buf.getvalue())
            z.writestr("archive/version", "3\n")


if __name__ == "__main__":
    main()
