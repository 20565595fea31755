"""core/'s import graph in numbers: modules, import edges, layers (the longest chain of
imports, counted in modules) and circles (groups of modules that import each other),
read by grimp, import-linter's graph library, as `./run lint` reads it (type-only
imports left out). `-v` lists the modules by layer.

    .venv/arq/bin/python scripts/import_graph.py [-v] [PACKAGE]
"""

from __future__ import annotations

import sys
from functools import cache

import grimp


def main(argv: list[str]) -> None:
    verbose = "-v" in argv
    package = next((a for a in argv if not a.startswith("-")), "core")
    graph = grimp.build_graph(package, exclude_type_checking_imports=True, cache_dir=None)
    modules = sorted(m for m in graph.modules if ".migrations" not in m)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules}
             - {m} for m in modules}
    circles = [group for group in _strongly_connected(edges) if len(group) > 1]
    group_of = {m: frozenset(g) for g in _strongly_connected(edges) for m in g}

    @cache
    def layer(group: frozenset[str]) -> int:
        below = {group_of[i] for m in group for i in edges[m]} - {group}
        return 1 + max((layer(g) for g in below), default=-1)

    layers = {m: layer(group_of[m]) for m in modules}
    print(f"{package}: {len(modules)} modules, {sum(map(len, edges.values()))} edges, "
          f"{1 + max(layers.values())} layers, {len(circles)} circles")
    for group in circles:
        print("  circle:", " <-> ".join(sorted(group)))
    if verbose:
        for n in range(1 + max(layers.values())):
            print(f"  {n}: {' '.join(m for m in modules if layers[m] == n)}")


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the modules that reach each other, in groups."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    groups.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


if __name__ == "__main__":
    main(sys.argv[1:])
