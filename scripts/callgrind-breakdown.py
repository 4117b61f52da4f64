#!/usr/bin/env python3
"""Reads `callgrind_annotate` output (self cost per function) on stdin and prints the
instructions per append by crate and the top functions (scripts/instructions.sh).

A function's crate is the first path segment of its Rust name (`<T as Trait>::f` counts for
T's crate; `<&T as ...>` likewise); functions outside Rust code are grouped by the object
file they come from (libc's malloc and memcpy, the dynamic loader, the kernel's vDSO).
"""
import argparse
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)\s*(?:\[(.+)\])?\s*$")


def crate_of(function, obj):
    name = function.split(":", 1)[1] if ":" in function.split("::", 1)[0] else function
    name = name.lstrip("<&*").replace("mut ", "").replace("dyn ", "")
    if "::" in name:
        return name.split("::", 1)[0]
    base = obj.rsplit("/", 1)[-1] if obj else "?"
    if base.startswith("libc") or base.startswith("ld-"):
        return f"libc ({name})" if name in ("malloc", "free", "realloc", "memcpy", "memmove") else base
    return base if base != "?" else name


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--appends", type=float, required=True)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    total = 0
    functions = []
    in_table = False
    for line in sys.stdin:
        if line.startswith("--------"):
            continue
        if "file:function" in line:
            in_table = True
            continue
        m = LINE.match(line)
        if not m:
            # The function table ends at the first line that is no row (source annotation,
            # if callgrind_annotate was asked for it, follows).
            if in_table and functions and line.strip():
                break
            continue
        count = int(m.group(1).replace(",", ""))
        rest = m.group(2)
        if "PROGRAM TOTALS" in rest:
            total = count
            continue
        if not in_table:
            continue
        functions.append((count, rest, m.group(3) or ""))
    if not total:
        total = sum(c for c, _, _ in functions)
    # The frames that were on the stack when the counters were zeroed (thread start, the
    # runtime's worker loop) are charged the whole dump as "self" cost: not a function's own
    # work. Any row above half the total is one of them.
    stacked = [f for f in functions if f[0] > total / 2]
    functions = [f for f in functions if f[0] <= total / 2]
    if stacked:
        print(f"(left out: {len(stacked)} frames on the stack when the counters were zeroed)")
    per = args.appends or 1
    crates = defaultdict(int)
    for count, function, obj in functions:
        crates[crate_of(function, obj)] += count
    print(f"total: {total / per:,.0f} instructions per append")
    print("by crate (self cost):")
    for crate, count in sorted(crates.items(), key=lambda kv: -kv[1])[:20]:
        print(f"  {count / per:>10,.0f}  {100 * count / total:5.1f}%  {crate}")
    print(f"top {args.top} functions (self cost):")
    for count, function, _ in sorted(functions, key=lambda f: -f[0])[: args.top]:
        name = function.split(":", 1)[1] if ":" in function.split("::", 1)[0] else function
        print(f"  {count / per:>10,.0f}  {100 * count / total:5.1f}%  {name[:140]}")


if __name__ == "__main__":
    main()
