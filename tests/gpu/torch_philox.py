#!/usr/bin/env python3
"""Records torch's CUDA generator (Philox) output for tests/unit/test_rng.c.

Runs only where torch and a CUDA device exist (the lent GPU machine):
    python3 tests/gpu/torch_philox.py OUT.json
For each seed and shape it draws torch.randn twice from one torch.Generator('cuda') (the
second draw checks the counter offset after the first) and keeps a sample of elements:
the first 32, the last 32 and every 997th, with their flat indices. The device name and
SM count go with them: torch's grid size depends on the SM count, and past one wave of
the grid the mapping depends on it."""
import json
import sys

import torch


def sample(t):
    flat = t.flatten().double().cpu()
    n = flat.numel()
    idx = sorted(set(list(range(min(32, n))) + list(range(max(0, n - 32), n)) +
                     list(range(0, n, 997))))
    return {"index": idx, "value": [float(flat[i]) for i in idx]}


def main():
    out = sys.argv[1]
    props = torch.cuda.get_device_properties(0)
    cases = []
    for seed in (0, 42, 1234567890123, 2**32 + 5):
        for shape in ((3,), (17,), (1, 4, 8, 8), (1, 4, 64, 64), (2, 4, 64, 64),
                      (1, 4, 128, 128), (4, 4, 128, 128), (1, 16, 128, 128)):
            g = torch.Generator(device="cuda").manual_seed(seed)
            a = torch.randn(shape, generator=g, device="cuda", dtype=torch.float32)
            b = torch.randn(shape, generator=g, device="cuda", dtype=torch.float32)
            cases.append({"seed": seed, "shape": list(shape), "first": sample(a),
                          "second": sample(b)})
    doc = {"device": torch.cuda.get_device_name(0), "sm_count": props.multi_processor_count,
           "torch": torch.__version__, "cases": cases}
    with open(out, "w") as f:
        json.dump(doc, f)
    print(f"torch_philox: {len(cases)} cases from {doc['device']} "
          f"({doc['sm_count']} SMs, torch {doc['torch']}) -> {out}")


if __name__ == "__main__":
    main()
