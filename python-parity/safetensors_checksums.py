"""Independent checksums of safetensors files, for the tests of peft4j's own reader.

Pure standard library on purpose: a second implementation of the format that shares nothing with the
core (no torch, no safetensors package). Prints JSON: {file: {tensor: {dtype, shape, count, sum, abs_sum,
first, last}}} for every *.safetensors under the given directory, paths relative to it.
"""
import json
import math
import os
import struct
import sys

FORMATS = {"F64": "d", "F32": "f", "F16": "e", "I64": "q", "I32": "i", "I16": "h", "I8": "b", "U8": "B", "BOOL": "?"}


def values(dtype, raw):
    if dtype == "BF16":
        # bfloat16 is the upper half of a float32
        halves = struct.unpack("<%dH" % (len(raw) // 2), raw)
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
    fmt = FORMATS[dtype]
    n = len(raw) // struct.calcsize(fmt)
    return [float(v) for v in struct.unpack("<%d%s" % (n, fmt), raw)]


def checksums(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        vals = values(info["dtype"], data[begin:end])
        out[name] = {
            "dtype": info["dtype"],
            "shape": info["shape"],
            "count": len(vals),
            "sum": math.fsum(vals),
            "abs_sum": math.fsum(abs(v) for v in vals),
            "first": vals[0] if vals else None,
            "last": vals[-1] if vals else None,
        }
    return out


def main(root):
    result = {}
    for directory, _, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(".safetensors"):
                path = os.path.join(directory, name)
                result[os.path.relpath(path, root)] = checksums(path)
    json.dump(result, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
