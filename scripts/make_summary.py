#!/usr/bin/env python3
"""Merge GoogleTest counts into a results summary.json and print the key numbers.

    python3 scripts/make_summary.py --summary OUT/summary.json [--gtest OUT/gpu_tests.json]
                                    [--bench OUT/bench.json] [--test-status N] [--print]

--summary   the summary to update (bench/compare.py writes it). When it does not exist yet and
            --bench is given, flare_bench's JSON (same schema, flare rows only) becomes the base.
--gtest     the --gtest_output=json file; sets "tests": {suite, passed, failed, skipped}.
--test-status  exit status of the test binary; a crash that left no JSON is recorded as such.
--print     print a short summary (tests, ceilings, flare against the best peer).
Standard library only.
"""
import argparse
import json
import os
import statistics
import sys


def gtest_counts(path, suite):
    with open(path) as f:
        data = json.load(f)
    passed = failed = skipped = 0
    for ts in data.get("testsuites", []):
        for t in ts.get("testsuite", []):
            if t.get("failures"):
                failed += 1
            elif t.get("result") in ("SKIPPED", "SUPPRESSED") or t.get("status") == "NOTRUN":
                skipped += 1
            else:
                passed += 1
    return {"suite": suite, "passed": passed, "failed": failed, "skipped": skipped}


def metric(r):
    return r.get("tflops") if "tflops" in r else r.get("gbs")


def print_summary(s):
    t = s.get("tests")
    if t:
        extra = f" ({t['note']})" if t.get("note") else ""
        print(f"tests [{t['suite']}]: {t['passed']} passed, {t['failed']} failed, "
              f"{t['skipped']} skipped{extra}")
    c = s.get("ceilings", {})
    print(f"ceilings: GEMM bf16 {c.get('gemm_bf16_tflops')} TFLOP/s, copy {c.get('copy_gbs')} GB/s")
    rows = s.get("rows", [])
    flare_sys = sorted({r["system"] for r in rows if r["system"].startswith("flare")})
    for sy in flare_sys:
        for table, unit in (("prefill", "TFLOP/s"), ("varlen", "TFLOP/s"), ("decode", "GB/s")):
            mine = [r for r in rows if r["system"] == sy and r["table"] == table]
            if not mine:
                continue
            vals = [metric(r) for r in mine if metric(r) is not None]
            ratios = [r["ratio_to_best_peer"] for r in mine
                      if r.get("ratio_to_best_peer") is not None]
            errs = [r["rel_err"] for r in mine if r.get("rel_err") is not None]
            line = f"{sy} {table}: {len(vals)}/{len(mine)} shapes measured"
            if vals:
                line += f", max {max(vals):.0f} {unit}"
            if ratios:
                line += (f", vs best peer: median {statistics.median(ratios):.2f}x, "
                         f"min {min(ratios):.2f}x, max {max(ratios):.2f}x")
            if errs:
                line += f", max rel_err {max(errs):.2e}"
            print(line)
        # Decode over FP8 KV caches: the speed over the 16-bit cache and the two FP8 decode targets
        # (each row's meets_* field: true / false, null where the target does not apply).
        fp8 = [r for r in rows if r["system"] == sy and r["table"] == "decode_fp8"
               and r.get("kv_dtype") in ("e4m3", "e5m2")]
        for kind in sorted({r["kv_dtype"] for r in fp8}):
            mine = [r for r in fp8 if r["kv_dtype"] == kind]
            speeds = [r["speed_vs_base"] for r in mine if r.get("speed_vs_base") is not None]
            line = f"{sy} decode_fp8 {kind}: {len(speeds)}/{len(mine)} rows measured"
            if speeds:
                line += (f", tokens/s vs the 16-bit cache: median "
                         f"{statistics.median(speeds):.2f}x, min {min(speeds):.2f}x")
            for key, what in (("meets_speed_target", ">= 1.8x (rows >= 1 GB)"),
                              ("meets_copy_target", ">= 85% of copy")):
                judged = [r[key] for r in mine if r.get(key) is not None]
                line += f", {what} on {sum(judged)}/{len(judged)}"
            print(line)
        # A few landmark shapes.
        for r in rows:
            if r["system"] != sy:
                continue
            if (r["table"] == "prefill" and r["head_dim"] == 128 and r["seqlen_q"] == 16384) or \
               (r["table"] == "decode" and (r["batch"], r["seqlen_k"]) in ((1, 131072), (64, 8192))):
                what = (f"prefill d=128 s=16k causal={r['causal']}" if r["table"] == "prefill"
                        else f"decode b={r['batch']} L={r['seqlen_k']} paged={r['paged']}")
                ratio = r.get("ratio_to_best_peer")
                print(f"  {what}: {metric(r)} " + ("" if ratio is None else f"({ratio:.2f}x best peer)"))


def main():
    ap = argparse.ArgumentParser(description="merge gtest counts into summary.json")
    ap.add_argument("--summary", required=True)
    ap.add_argument("--gtest")
    ap.add_argument("--bench")
    ap.add_argument("--suite", default="flare_tests_gpu")
    ap.add_argument("--test-status", type=int)
    ap.add_argument("--print", dest="do_print", action="store_true")
    args = ap.parse_args()

    changed = False
    if os.path.exists(args.summary):
        with open(args.summary) as f:
            summary = json.load(f)
        if args.bench and os.path.exists(args.bench):
            # flare_bench tables that compare.py does not measure (varlen) join the summary.
            with open(args.bench) as f:
                bench = json.load(f)
            have = {r["table"] for r in summary.get("rows", [])}
            extra = [dict(r, source="flare_bench") for r in bench.get("rows", [])
                     if r["table"] not in have]
            if extra:
                summary["rows"] = summary.get("rows", []) + extra
                changed = True
    elif args.bench and os.path.exists(args.bench):
        with open(args.bench) as f:
            summary = json.load(f)
    else:
        summary = None

    if summary is not None and (args.gtest or args.test_status is not None):
        changed = True
        if args.gtest and os.path.exists(args.gtest):
            tests = gtest_counts(args.gtest, args.suite)
            if args.test_status and tests["failed"] == 0:
                tests["note"] = f"test binary exited with status {args.test_status}"
        else:
            tests = {"suite": args.suite, "passed": 0, "failed": 0, "skipped": 0,
                     "note": f"no gtest JSON (exit status {args.test_status})"}
        summary["tests"] = tests
    if changed:
        # Keep the schema's key order: tests after ceilings, rows last.
        order = ["device", "date", "commit", "ceilings", "tests", "rows"]
        summary = {k: summary[k] for k in order if k in summary} | \
                  {k: v for k, v in summary.items() if k not in order}
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=1)

    if args.do_print:
        if summary is None:
            print("no summary to print")
        else:
            print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
