#!/usr/bin/env python3
"""Fails when the library's modules depend on each other in a cycle, or a module imports a
layer above its own.

Why a script of our own: `cargo-modules` (the well-kept tool for this) builds rust-analyzer,
which takes longer to compile on CI's two cores than the whole test suite runs; the rules we
need are about `use` paths, which a small reader of the sources sees exactly.

What it reads: every `crate::...`, `super::...` and `self::...` path in `src/**/*.rs` outside
comments, string literals and test code (`#[cfg(test)]` modules may use anything), resolved to the deepest module that exists (one `.rs` file or
folder = one module). An edge from a module to its own ancestor or descendant is structure
(declaring and re-exporting children), not a dependency, and is skipped. Then:
  1. no cycle among the modules under one parent (siblings), at every level (the top-level
     modules included);
  2. each top-level module imports only modules of a lower layer (LAYERS below) or its own;
  3. the public API (issue 10) names no type of the azure crates (a plain `pub` item whose
     declaration, up to its body, names an azure crate's path, `azure_core::...`; a type
     imported by name is not seen), outside the test-only modules (TEST_ONLY),
     and every public error enum (`pub enum ...Error`) is `#[non_exhaustive]`. A `pub` item of
     a private module is caught too: keep such items `pub(crate)`.
Usage: scripts/check-modules.py [src-dir]   (exit 1 and a report on failure)
       scripts/check-modules.py --self-test  (shows that it fails on a planted cycle and on a
                                              planted upward import, and passes a clean tree)
"""

import os
import re
import sys
import tempfile
from collections import defaultdict

# Lower index = lower layer. A module may import only modules of strictly lower layers (or
# of its own top-level module). The binary (main.rs and its modules) is outside the library.
LAYERS = [
    # The core model and the contracts every adapter implements.
    {"stream"},
    # Credentials the adapters share: the managed identity's tokens.
    {"identity"},
    # Storage adapters, what folds and what notifies: each over the contracts only.
    {"storage", "projection", "notify", "telemetry", "runtime"},
    # Read models, built on the fold engine.
    {"readmodel"},
    # Settings, then the composition of the app from them.
    {"config"},
    {"app"},
    # What composes the app's parts for one operation (erasing a stream).
    {"erasure"},
    # The operator CLI's commands (binary `streamfold`), over the app and its operations.
    {"ops"},
    # The HTTP layer, then what re-exports for users.
    {"functions"},
    {"prelude", "testing", "backend"},
    # The fuzz targets' entry points, which build an app with the test doubles.
    {"fuzzing"},
]

# Top-level modules compiled only for tests (feature `testing`) or fuzzing: outside the API.
TEST_ONLY = {"testing", "fuzzing"}
AZURE_IN_PUBLIC = re.compile(
    r"^[ \t]*pub[ \t]+(?:async[ \t]+)?(?:unsafe[ \t]+)?(?:fn|struct|enum|trait|type|const|static|use)\b"
    r"[^;{]*?\bazure_(?:core|storage|storage_blobs|data_tables|messaging_eventgrid|identity)::",
    re.M,
)
ERROR_ENUM = re.compile(r"^[ \t]*pub[ \t]+enum[ \t]+(\w*Error)\b", re.M)

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)::\{([^;]*)\};", re.S)


def strip_comments_and_strings(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def without_tests(text):
    """The text before an inline `#[cfg(test)] mod tests { ... }`: tests may use any module."""
    match = re.search(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
    return text[: match.start()] if match else text


def test_only_children(path):
    """Modules this file declares under `#[cfg(test)]` (`#[cfg(test)] mod tests;`)."""
    text = strip_comments_and_strings(open(path).read())
    return set(re.findall(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text))


def module_of(path, src):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return tuple(rel)


def collect(src):
    modules = {}
    for root, _, files in os.walk(src):
        for name in files:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                modules[module_of(path, src)] = path
    return modules


def library_roots(src):
    roots = set()
    text = strip_comments_and_strings(open(os.path.join(src, "lib.rs")).read())
    for m in re.finditer(r"\bmod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;", text):
        roots.add(m.group(1))
    return roots


def resolve(base, segments, modules):
    """The deepest existing module named by `base` + `segments`."""
    path = list(base)
    best = tuple(path)
    for segment in segments:
        if segment in ("super",):
            path = path[:-1]
            best = tuple(path)
            continue
        if segment == "self":
            continue
        path.append(segment)
        if tuple(path) in modules:
            best = tuple(path)
        else:
            break
    return best


def edges_of(module, path, modules):
    text = without_tests(strip_comments_and_strings(open(path).read()))
    found = set()
    # Grouped imports: `use crate::{a::X, b::{Y, Z}};` -> one path per leading segment.
    for m in USE_GROUP.finditer(text):
        anchor = m.group(1)
        for item in re.split(r",", m.group(2)):
            item = item.strip().lstrip("{").strip()
            if item:
                found.add((anchor, tuple(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", item)[:4])))
    for m in PATH.finditer(text):
        anchor, rest = m.group(1), m.group(2)
        found.add((anchor, tuple(s for s in rest.split("::") if s and s != "{")))
    targets = set()
    for anchor, segments in found:
        # `self` is this module whether it is `x.rs` or `x/mod.rs`; `super` its parent.
        base = {"crate": (), "self": module, "super": module[:-1]}[anchor]
        target = resolve(base, segments, modules)
        if target and target != module:
            targets.add(target)
    return targets


def related(a, b):
    return a[: len(b)] == b or b[: len(a)] == a


def cycles(graph):
    """The strongly connected components of `graph` with more than one node (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(name):
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    return None


def check(src):
    """The problems found in the library under `src` (empty when none)."""
    modules = collect(src)
    roots = library_roots(src)
    lib = {m: p for m, p in modules.items() if m and m[0] in roots}
    test_only = {
        module + (child,) for module, path in lib.items() for child in test_only_children(path)
    }
    lib = {
        m: p for m, p in lib.items() if not any(m[: len(t)] == t for t in test_only)
    }
    problems = []
    deps = defaultdict(set)  # module -> modules (with why)
    why = {}
    for module, path in lib.items():
        for target in edges_of(module, path, lib):
            if related(module, target):
                continue
            deps[module].add(target)
            why.setdefault((module, target), path)

    # 1. Cycles among siblings, at every level.
    by_parent = defaultdict(lambda: defaultdict(set))
    for a, targets in deps.items():
        for b in targets:
            # The first differing level: a[:k] == b[:k], a[k] != b[k].
            k = 0
            while k < min(len(a), len(b)) and a[k] == b[k]:
                k += 1
            if k < len(a) and k < len(b):
                parent = a[:k]
                by_parent[parent][a[: k + 1]].add(b[: k + 1])
    for parent, graph in sorted(by_parent.items()):
        for component in cycles(graph):
            names = ", ".join("::".join(m) for m in component)
            problems.append(f"module cycle under {'::'.join(parent) or 'crate'}: {names}")

    # 2. Layers of the top-level modules.
    for a, targets in sorted(deps.items()):
        for b in sorted(targets):
            la, lb = layer_of(a[0]), layer_of(b[0])
            if a[0] == b[0] or la is None or lb is None:
                continue
            if lb >= la:
                problems.append(
                    f"layering: {'::'.join(a)} ({why[(a, b)]}) imports {'::'.join(b)}, "
                    f"which is not below it"
                )
    # 3. The public API: no azure type, error enums non-exhaustive.
    for module, path in sorted(lib.items()):
        if module[0] in TEST_ONLY:
            continue
        text = without_tests(strip_comments_and_strings(open(path).read()))
        for m in AZURE_IN_PUBLIC.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"public API: {path}:{line} names an azure crate in a pub item")
        for m in ERROR_ENUM.finditer(text):
            attributes = text[: m.start()].rstrip().rsplit("\n", 8)[1:]
            block = []
            for candidate in reversed(attributes):
                if not candidate.strip().startswith("#["):
                    break
                block.append(candidate)
            if not any("non_exhaustive" in a for a in block):
                problems.append(f"public API: {path}: pub enum {m.group(1)} is not #[non_exhaustive]")
    unknown = sorted(r for r in roots if layer_of(r) is None)
    if unknown:
        problems.append(f"top-level modules with no layer in LAYERS: {unknown}")

    return problems, len(lib)


def write_tree(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def self_test():
    """Plants a sibling cycle and an upward import in small trees and checks they are caught,
    and that the same tree without them passes."""
    clean = {
        "lib.rs": "pub mod stream;\npub mod storage;\n",
        "stream/mod.rs": "pub mod a;\npub mod b;\n",
        "stream/a.rs": "use super::b::B;\n",
        "stream/b.rs": "pub struct B;\n",
        "storage/mod.rs": "use crate::stream::a;\n",
    }
    cycle = dict(clean, **{"stream/b.rs": "use super::a::A;\npub struct B;\n"})
    upward = dict(clean, **{"stream/b.rs": "use crate::storage::X;\npub struct B;\n"})
    # A test module may use anything: this one must not count.
    test_only = dict(
        clean,
        **{"stream/b.rs": "pub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::storage::X;\n}\n"},
    )
    azure = dict(
        clean, **{"storage/mod.rs": "pub fn code(e: &azure_core::Error) -> u16 {\n    0\n}\n"}
    )
    azure_crate_only = dict(
        clean, **{"storage/mod.rs": "pub(crate) fn code(e: &azure_core::Error) -> u16 {\n    0\n}\n"}
    )
    exhaustive = dict(
        clean, **{"stream/b.rs": "#[derive(Debug)]\npub enum BError {\n    A,\n}\n"}
    )
    non_exhaustive = dict(
        clean,
        **{"stream/b.rs": "#[derive(Debug)]\n#[non_exhaustive]\npub enum BError {\n    A,\n}\n"},
    )
    cases = [
        ("clean tree", clean, None),
        ("planted azure type in a pub fn", azure, "names an azure crate"),
        ("azure type in a pub(crate) fn", azure_crate_only, None),
        ("planted exhaustive error enum", exhaustive, "pub enum BError is not #[non_exhaustive]"),
        ("non-exhaustive error enum", non_exhaustive, None),
        ("planted cycle", cycle, "module cycle under stream: stream::a, stream::b"),
        ("planted upward import", upward, "layering: stream::b"),
        ("upward import in test code", test_only, None),
    ]
    failed = False
    for name, files, expected in cases:
        with tempfile.TemporaryDirectory() as root:
            write_tree(root, files)
            problems, _ = check(root)
        caught = any(expected in p for p in problems) if expected else not problems
        print(f"self-test {name}: {'ok' if caught else 'WRONG'} {problems}")
        failed |= not caught
    return 1 if failed else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "src"
    )
    problems, count = check(src)
    if problems:
        print("module check failed:")
        for p in problems:
            print("  " + p)
        return 1
    print(
        f"module check: {count} modules, no cycle, layers respected, "
        f"no azure type in the public API, public error enums non-exhaustive"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
