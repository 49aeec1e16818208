#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a circle.

For every crate under crates/, each file belongs to the top-level module of
its path (src/config.rs -> config, src/api/send.rs -> api; lib.rs and main.rs
are the crate root and are left out). A file's `crate::x` paths (in `use`
lines and in expressions) are its edges. A cycle among these modules is
printed with one file and line for each step, and the exit code is 1.

Also refuses any path from a worker module to the HTTP layer (`api`): the
delivery and webhook workers must not depend on the API.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# Worker modules that may not reach the API layer, by crate.
WORKERS = {"otpgate": {"delivery", "webhooks"}}
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def module_of(src, path):
    rel = os.path.relpath(path, src)
    first = rel.split(os.sep)[0]
    if first in ("lib.rs", "main.rs"):
        return None
    return first[:-3] if first.endswith(".rs") else first


def edges_of(src):
    edges = {}  # (a, b) -> "file:line"
    modules = set()
    for dirpath, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            here = module_of(src, path)
            if here is None:
                continue
            modules.add(here)
            text = strip_comments(open(path, encoding="utf-8").read())
            # `#[cfg(test)] mod tests` blocks may reach anything.
            cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests", text)
            if cut:
                text = text[: cut.start()]
            found = [(m.start(), m.group(1)) for m in PATH.finditer(text)]
            for g in GROUP.finditer(text):
                for item in re.split(r",\s*", g.group(1)):
                    item = item.strip()
                    if item:
                        found.append((g.start(), re.split(r"[:\s{]", item)[0]))
            for pos, target in found:
                if target in ("self", "super") or target == here:
                    continue
                line = text.count("\n", 0, pos) + 1
                where = f"{os.path.relpath(path, ROOT)}:{line}"
                edges.setdefault((here, target), where)
    return modules, edges


def cycles(modules, edges):
    graph = {m: sorted({b for (a, b) in edges if a == m}) for m in modules}
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return out


def reaches(edges, start, goal):
    seen, todo = set(), [(start, [start])]
    while todo:
        v, path = todo.pop()
        if v == goal:
            return path
        for (a, b) in edges:
            if a == v and b not in seen:
                seen.add(b)
                todo.append((b, path + [b]))
    return None


def self_test():
    """The check finds a planted circle and a worker reaching the API."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.makedirs(os.path.join(src, "api"))
        files = {
            "lib.rs": "pub mod a; pub mod b; pub mod api; pub mod webhooks;",
            "a.rs": "use crate::b::Thing;",
            "b.rs": "// use crate::c::X;\nuse crate::{a::Other, api};",
            "api/mod.rs": "pub fn handler() {}",
            "webhooks.rs": "fn f() { crate::api::handler() }\n#[cfg(test)]\nmod tests { use crate::a::T; }",
        }
        for name, text in files.items():
            with open(os.path.join(src, name), "w", encoding="utf-8") as f:
                f.write(text)
        modules, edges = edges_of(src)
        assert cycles(modules, edges) == [["a", "b"]], cycles(modules, edges)
        assert reaches(edges, "webhooks", "api") == ["webhooks", "api"]
        assert ("webhooks", "a") not in edges, "test modules are left out"
        assert ("b", "c") not in edges, "comments are left out"
    print("self-test passed")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return 0
    failed = False
    crates = os.path.join(ROOT, "crates")
    for crate in sorted(os.listdir(crates)):
        src = os.path.join(crates, crate, "src")
        if not os.path.isdir(src):
            continue
        modules, edges = edges_of(src)
        for comp in cycles(modules, edges):
            failed = True
            print(f"{crate}: modules import each other in a circle: {', '.join(comp)}")
            for (a, b), where in sorted(edges.items()):
                if a in comp and b in comp:
                    print(f"  {a} -> {b}  ({where})")
        for worker in WORKERS.get(crate.replace("-", "_"), set()):
            path = reaches(edges, worker, "api") if worker in modules else None
            if path:
                failed = True
                print(f"{crate}: worker `{worker}` depends on the HTTP layer: {' -> '.join(path)}")
                for a, b in zip(path, path[1:]):
                    print(f"  {a} -> {b}  ({edges[(a, b)]})")
    if failed:
        return 1
    print("no import cycles between modules; no worker depends on the API")
    return 0


if __name__ == "__main__":
    sys.exit(main())
