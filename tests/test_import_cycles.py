"""No import cycles among the ``pgd`` modules.

* static: every ``import`` / ``from ... import`` of every ``pgd/**/*.py`` -- at module level AND
  inside functions (a lazy import still closes a cycle the moment it runs) -- plus
  ``importlib.import_module('<literal>')``, resolved to the ``pgd`` module it names (``from
  pkg import sub`` -> ``pkg.sub`` when that is a module), gives a directed graph; its strongly
  connected components with more than one module are the cycles. Imports under
  ``if TYPE_CHECKING:`` never run and are left out.
* dynamic: every ``pgd`` module imports in a fresh interpreter.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, FrozenSet, List, Set

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / 'pgd'

#: Known, accepted cycles (each entry: the modules of one cycle; a cycle found must lie inside
#: one entry -- a new module joining it, or any other cycle, fails).
ALLOWED_CYCLES: List[FrozenSet[str]] = [
    # none: add one only with a comment saying why it is benign and who removes it
]


def module_files(root: Path = PKG) -> Dict[str, Path]:
    out = {}
    for path in sorted(root.rglob('*.py')):
        parts = list(path.relative_to(root.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        out['.'.join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> Set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else \
                test.attr if isinstance(test, ast.Attribute) else None
            if name == 'TYPE_CHECKING':
                skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imported_names(module: str, path: Path, modules: Set[str]) -> Set[str]:
    """The pgd modules ``module`` imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(encoding='utf-8'), str(path))
    skip = _type_checking_nodes(tree)
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    targets: List[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition('.')[0]
                base = f'{base}.{node.module}' if node.module else base
            else:
                base = node.module or ''
            targets += [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base
                        for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == 'import_module' and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and not node.args[0].value.startswith('.')):
            targets.append(node.args[0].value)
    deps = set()
    for target in targets:
        while target and target not in modules:  # `import pgd.x.y` of a name in pgd.x.y
            target = target.rpartition('.')[0]
        if target and target != module:
            deps.add(target)
    return deps


def import_graph(root: Path = PKG) -> Dict[str, Set[str]]:
    files = module_files(root)
    return {m: imported_names(m, p, set(files)) for m, p in files.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def one_cycle(graph: Dict[str, Set[str]], component: List[str]) -> List[str]:
    """A concrete path a -> ... -> a inside ``component`` (for the failure message)."""
    comp = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(d for d in graph[path[-1]] if d in comp)
        back = [d for d in nxt if d == start]
        if back and len(path) > 1:
            return path + [start]
        step = next((d for d in nxt if d not in seen), None)
        if step is None:
            return path + [nxt[0]] if nxt else path
        path.append(step)
        seen.add(step)


def test_the_analysis_finds_cycles_through_function_level_imports(tmp_path):
    pkg = tmp_path / 'pgd'
    (pkg / 'sub').mkdir(parents=True)
    (pkg / '__init__.py').write_text('')
    (pkg / 'sub' / '__init__.py').write_text('')
    (pkg / 'a.py').write_text('from pgd.sub import b\n')
    (pkg / 'sub' / 'b.py').write_text('def f():\n    from ..a import g\n')
    (pkg / 'c.py').write_text('from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n'
                              '    from pgd import a\nimport importlib\n'
                              'importlib.import_module("pgd.sub.b")\n')
    graph = import_graph(pkg)
    assert graph['pgd.a'] == {'pgd.sub.b'} and graph['pgd.sub.b'] == {'pgd.a'}
    assert graph['pgd.c'] == {'pgd.sub.b'}  # TYPE_CHECKING import left out
    assert cycles(graph) == [['pgd.a', 'pgd.sub.b']]


def test_no_import_cycles_among_pgd_modules():
    graph = import_graph()
    assert 'pgd.catalog' in graph and 'pgd.engine.distill' in graph
    new = [c for c in cycles(graph) if not any(set(c) <= allowed for allowed in ALLOWED_CYCLES)]
    assert not new, 'import cycles among pgd modules:\n' + '\n'.join(
        ' -> '.join(one_cycle(graph, c)) + f'   (component: {", ".join(c)})' for c in new)


def test_distill_engines_import_only_the_common_module():
    graph = import_graph()
    engines = {'pgd.engine.distill_feature', 'pgd.engine.distill_ld', 'pgd.engine.distill_lgd'}
    assert graph['pgd.engine.distill'] >= engines
    for module in engines:
        assert not graph[module] & (engines | {'pgd.engine.distill'}), module
    assert not graph['pgd.catalog'], 'the catalog is pure data and imports nothing of pgd'


def test_every_pgd_module_imports_in_a_fresh_interpreter():
    modules = [m for m in module_files() if not m.endswith('__main__')]
    code = ('import importlib, sys, traceback\n'
            'bad = []\n'
            f'for m in {modules!r}:\n'
            '    try:\n'
            '        importlib.import_module(m)\n'
            '    except Exception:\n'
            '        bad.append(m + ": " + traceback.format_exc(limit=3))\n'
            'print("\\n".join(bad)); sys.exit(1 if bad else 0)\n')
    res = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
