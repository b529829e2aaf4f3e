#!/usr/bin/env python3
"""Checks, in the SASS of built Hopper kernels, that each key block's softmax runs while the
P V wgmma issued before it is on the tensor cores.

The Hopper kernels' main loop issues S_i = Q K_i^T and P_(i-1) V_(i-1), waits for S_i
(wgmma.wait_group 1), runs the softmax of block i, then waits for P V (wait_group 0). ptxas
places a wait as early as the registers allow; the kernels keep the softmax ahead of the second
wait (softmax_before_wait, kernels/sm90/softmax_sm90.cuh). Two defects show only in the SASS:

  hoisted     the wait for P V sits above the softmax's exponentials (MUFU.EX2 after the
              loop's 'WARPGROUP.DEPBAR.LE gsb0, 0x0'), so the softmax runs after P V;
  serialised  more than one 'WARPGROUP.DEPBAR.LE gsb0, 0x0' in the loop: ptxas waits after
              each wgmma (it does so for lack of registers without a C7513 warning).

Every function with a 'DEPBAR.LE gsb0, 0x1' is checked; its main loop is the innermost loop
(backward branch) around that wait.

Usage: sass_wait_order.py [--cuobjdump PATH] FILE...   (objects, cubins or SASS text dumps)
       sass_wait_order.py --self-test
Exit status 1 when a kernel has a defect or no kernel was found; each kernel gets one line.
"""
import argparse
import re
import subprocess
import sys

INS = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
BRANCH = re.compile(r"\bBRA\s+(?:!?U?P\w+,\s*)?0x([0-9a-f]+)")
WAIT_S = "WARPGROUP.DEPBAR.LE gsb0, 0x1"
WAIT_ALL = "WARPGROUP.DEPBAR.LE gsb0, 0x0"


def functions(sass):
    """(name, [(address, instruction)]) of each function of a cuobjdump -sass dump."""
    for part in sass.split("Function : ")[1:]:
        name = part.split("\n", 1)[0].strip()
        body = [(int(m.group(1), 16), m.group(2)) for m in map(INS.match, part.split("\n")) if m]
        yield name, body


def check(body):
    """None for a function without the overlapped loop, else (defects, waits, ex2 after)."""
    waits_s = [a for a, t in body if WAIT_S in t]
    if not waits_s:
        return None
    loops = []
    for a, t in body:
        m = BRANCH.search(t)
        if m and int(m.group(1), 16) < a:
            loops.append((int(m.group(1), 16), a))
    around = [l for l in loops if l[0] <= waits_s[0] <= l[1]]
    if not around:
        return ["no loop around the wait for S"], 0, 0
    lo, hi = min(around, key=lambda l: l[1] - l[0])
    loop = [(a, t) for a, t in body if lo <= a <= hi]
    waits = [a for a, t in loop if WAIT_ALL in t]
    ex2_after = sum(1 for a, t in loop if "MUFU.EX2" in t and waits and a > waits[-1])
    defects = []
    if len(waits) != 1:
        defects.append(f"serialised ({len(waits)} full waits in the loop)")
    if ex2_after:
        defects.append(f"hoisted ({ex2_after} MUFU.EX2 after the wait for P V)")
    return defects, len(waits), ex2_after


def dump(path, cuobjdump):
    if path.endswith(".sass") or path.endswith(".txt"):
        with open(path) as f:
            return f.read()
    return subprocess.run([cuobjdump, "-sass", path], check=True, capture_output=True,
                          text=True).stdout


def run(paths, cuobjdump):
    checked = failed = 0
    for path in paths:
        for name, body in functions(dump(path, cuobjdump)):
            result = check(body)
            if result is None:
                continue
            defects, waits, ex2_after = result
            checked += 1
            failed += bool(defects)
            status = "; ".join(defects) if defects else "ok"
            print(f"{status:60s} {path.rsplit('/', 1)[-1]}: {name}")
    print(f"sass_wait_order: {checked} kernels checked, {failed} with a defect")
    return 0 if checked and not failed else 1


def self_test():
    """The checker against hand-written loops: it must pass the good one and fail the others."""
    def fn(lines):
        body = "\n".join(f"        /*{16 * i:04x}*/ {t} ;" for i, t in enumerate(lines))
        return "Function : k\n" + body + "\n"
    head = ["HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ", "HGMMA.64x128x16.F32.BF16 R88, R152",
            WAIT_S]
    good = ["NOP"] + head + ["MUFU.EX2 R1, R1", "MUFU.EX2 R2, R2", WAIT_ALL, "FMUL R88, R88, R3",
                             "@P0 BRA 0x0000"]
    hoisted = ["NOP"] + head + [WAIT_ALL, "MUFU.EX2 R1, R1", "FMUL R88, R88, R3", "@P0 BRA 0x0000"]
    serial = ["NOP"] + head + [WAIT_ALL, "MUFU.EX2 R1, R1", WAIT_ALL, "@P0 BRA 0x0000"]
    cases = [(good, []), (hoisted, ["hoisted"]), (serial, ["serialised"])]
    ok = True
    for lines, expect in cases:
        (_, body), = functions(fn(lines))
        defects = [d.split(" ")[0] for d in check(body)[0]]
        ok &= defects == expect
    ok &= check(next(functions(fn(["NOP", "BRA 0x0000"])))[1]) is None
    print("sass_wait_order self-test:", "passed" if ok else "FAILED")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--cuobjdump", default="cuobjdump")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not args.files:
        ap.error("no files")
    return run(args.files, args.cuobjdump)


if __name__ == "__main__":
    sys.exit(main())
