#!/usr/bin/env python3
"""Reads the per-SASS-instruction CSV of scripts/profile_source.sh (Nsight Compute source page).

  source_counters.py FILE.csv.gz summary        totals: stall reasons, instructions, branches
  source_counters.py FILE.csv.gz top [N]        the N instructions with the most stall samples
  source_counters.py FILE.csv.gz regions [W]    samples, instruction-fetch stalls and executed
                                                instructions per stretch of W SASS lines
  source_counters.py FILE.csv.gz range A B      SASS lines A..B with their counts
"""
import collections
import csv
import gzip
import sys


def load(path):
    rows = list(csv.reader(gzip.open(path, "rt") if path.endswith(".gz") else open(path)))
    header, data = rows[1], rows[2:]  # row 0 names the kernel
    col = {h: i for i, h in enumerate(header)}
    stalls = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    out = []
    for r in data:
        num = lambda h: int(r[col[h]] or 0)
        out.append({
            "addr": r[col["Address"]], "sass": r[col["Source"]].strip(),
            "samples": num("Warp Stall Sampling (All Samples)"),
            "executed": num("Instructions Executed"),
            "stalls": {h[6:]: num(h) for h in stalls},
        })
    return out


def top_stalls(ins, n=2):
    return sorted(((v, k) for k, v in ins["stalls"].items() if v), reverse=True)[:n]


def main(argv):
    data, mode = load(argv[1]), argv[2] if len(argv) > 2 else "summary"
    total = sum(i["samples"] for i in data) or 1
    if mode == "summary":
        by_reason = collections.Counter()
        for i in data:
            by_reason.update(i["stalls"])
        print("SASS lines %d, warp instructions executed %d, stall samples %d" %
              (len(data), sum(i["executed"] for i in data), total))
        print("branches executed %d" % sum(i["executed"] for i in data if "BRA" in i["sass"]))
        print(", ".join("%s %.1f%%" % (k, 100 * v / total) for k, v in by_reason.most_common(12)))
    elif mode == "top":
        n = int(argv[3]) if len(argv) > 3 else 40
        for k, i in sorted(enumerate(data), key=lambda x: -x[1]["samples"])[:n]:
            print("%5d %-60s samples %6d (%4.1f%%) executed %9d %s" %
                  (k, i["sass"][:60], i["samples"], 100 * i["samples"] / total, i["executed"],
                   top_stalls(i)))
    elif mode == "regions":
        w = int(argv[3]) if len(argv) > 3 else 300
        for a in range(0, len(data), w):
            blk = data[a:a + w]
            print("%5d-%5d samples %5.1f%% fetch (no_inst) %5.1f%% executed %10d HGMMA %3d BRA %3d" %
                  (a, a + w, 100 * sum(i["samples"] for i in blk) / total,
                   100 * sum(i["stalls"].get("no_inst", 0) for i in blk) / total,
                   sum(i["executed"] for i in blk), sum("HGMMA" in i["sass"] for i in blk),
                   sum("BRA" in i["sass"] for i in blk)))
    elif mode == "range":
        for k in range(int(argv[3]), int(argv[4])):
            i = data[k]
            print("%5d %s %-70s samples %6d executed %9d %s" %
                  (k, i["addr"][-5:], i["sass"][:70], i["samples"], i["executed"], top_stalls(i)))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
