#!/usr/bin/env python3
"""Tables for scripts/size-report.sh: ELF sections, bytes per linked library (lld link map)
and per Rust crate (symbol table). Usage: size-report.py BINARY LINK_MAP BINUTILS_PREFIX"""
import collections
import re
import subprocess
import sys

binary, link_map, prefix = sys.argv[1:4]


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


# ELF sections that are loaded (non-zero address); .pdr, .symtab, .comment etc. never ship.
print("== ELF sections (loaded, bytes) ==")
loaded = {}
for line in run(f"{prefix}-size", "-A", binary).splitlines():
    p = line.split()
    if len(p) == 3 and p[0].startswith(".") and p[2] != "0":
        loaded[p[0]] = int(p[1])
for name, size in sorted(loaded.items(), key=lambda kv: -kv[1]):
    print(f"  {name:22} {size:9d}")
print(f"  {'total':22} {sum(loaded.values()):9d}")


def library(path):
    m = re.match(r"(.*?\.a)\(", path)
    name = (m.group(1) if m else path).rsplit("/", 1)[-1]
    if name.endswith(".rcgu.o") or name.startswith("raopd-"):
        return "Rust: raopd, crates, std (one LTO object)"
    if name.startswith("libcompiler_builtins"):
        return "Rust: compiler_builtins"
    if name.startswith("libasound"):
        return "alsa-lib"
    if name in ("libc.a", "libzigc.a") or name.startswith(("crt", "libc.so")):
        return "musl"
    if name == "libunwind.a":
        return "libunwind"
    if name == "libcompiler_rt.a":
        return "compiler-rt"
    if name == "<internal>":
        return "linker (GOT, .eh_frame_hdr, merged strings)"
    return name


# lld --print-map columns: VMA LMA Size Align, then the output section at column 33, an
# input section (file:(section)) at column 41, a symbol at column 49.
per_lib = collections.Counter()
cell = collections.Counter()
out = None
with open(link_map) as f:
    next(f)
    for line in f:
        if len(line) > 34 and line[33] != " ":
            out = line[33:].split()[0]
        elif len(line) > 49 and line[41] != " " and out in loaded:
            size = int(line.split()[2], 16)
            lib = library(line[41:].split(":(")[0].strip())
            per_lib[lib] += size
            cell[(lib, out)] += size
print("\n== Per library (link map, loaded sections, bytes) ==")
for lib, size in per_lib.most_common():
    print(f"{size:10d}  {lib}")
print("\n== Per library and section, 4 KiB or more ==")
for (lib, sec), size in cell.most_common():
    if size >= 4096:
        print(f"{size:10d}  {lib:45} {sec}")

print("\n== Functions per crate (symbol table, bytes) ==")
crates = collections.Counter()
largest = []
for line in run(f"{prefix}-nm", "-S", "-C", "--size-sort", binary).splitlines():
    p = line.split(" ", 3)
    if len(p) < 4 or p[2] not in "tTwW":
        continue
    size, name = int(p[1], 16), p[3]
    largest.append((size, name))
    bare = re.sub(r"^([<&*]|mut |dyn |const |impl )+", "", name)
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", bare)
    crates[m.group(1) if m else "(C: alsa-lib, musl, libunwind, compiler-rt)"] += size
small = 0
for crate, size in crates.most_common():
    if size >= 2048:
        print(f"{size:10d}  {crate}")
    else:
        small += size
print(f"{small:10d}  (crates under 2 KiB each)\n{sum(crates.values()):10d}  total")

print("\n== 25 largest functions (bytes) ==")
for size, name in sorted(largest, reverse=True)[:25]:
    print(f"{size:8d}  {name[:140]}")
