#!/usr/bin/env python3
"""Summarises an A/B log of scripts/ab_builds.sh: per shape, the median TFLOP/s of each tree
over its rounds and its ratio to the first tree (> 1: faster than the first tree). Rows of the
prefill table count their last column; rows of the prefill_fp8 table (12 columns) their e4m3
call's TFLOP/s (the ninth).

  ab_summary.py LOG
"""
import collections
import re
import statistics
import sys


def main(path):
    runs = collections.defaultdict(list)  # (shape, tree) -> TFLOP/s of each round
    shapes, trees, tree = [], [], None
    for line in open(path):
        m = re.match(r"=== (.*), round \d+: (\S+)", line)
        if m:
            tree = m.group(2)
            if tree not in trees:
                trees.append(tree)
            continue
        f = line.split()
        if tree is None or len(f) < 7 or not f[0].isdigit():
            continue
        shape = " ".join(f[:3])  # head dim, causal, seqlen (prefill rows of flare_bench)
        if shape not in shapes:
            shapes.append(shape)
        runs[(shape, tree)].append(float(f[8] if len(f) >= 12 else f[-1]))
    print("shape (d causal seqlen) | " + " | ".join(trees) + " | " +
          " | ".join(f"{t}/{trees[0]}" for t in trees[1:]))
    for shape in shapes:
        med = [statistics.median(runs[(shape, t)]) if runs[(shape, t)] else float("nan")
               for t in trees]
        print(f"{shape} | " + " | ".join(f"{v:.1f}" for v in med) + " | " +
              " | ".join(f"{v / med[0]:.3f}" for v in med[1:]))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
