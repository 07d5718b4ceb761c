"""The package's import graph points one way: each module imports only its own package or lower layers.

Layers, lowest first: ``kernels`` (Triton; torch, triton and kernels/common.py only) -> ``errors``,
``io``, ``options``, ``ops``, ``run_setup``, ``version`` -> ``models`` -> ``loss``, ``data``, ``metrics``,
``checkpoint`` -> ``engine`` -> ``api`` -> ``cli``. Every ``import`` statement is checked, at module level
and inside functions, absolute and relative. A failure names the file and line; move the shared code down
(or the importing code up) rather than hiding the import in a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Rank of each part of the package; a module may import its own part and any part of lower rank.
LAYERS: dict[str, int] = {
    "yolov9k.kernels": 0,
    "yolov9k._C": 0,
    "yolov9k.errors": 1,
    "yolov9k.io": 1,
    "yolov9k.options": 1,
    "yolov9k.ops": 1,
    "yolov9k.run_setup": 1,
    "yolov9k.version": 1,
    "yolov9k.models": 2,
    "yolov9k.loss": 3,
    "yolov9k.data": 3,
    "yolov9k.metrics": 3,
    "yolov9k.checkpoint": 3,
    "yolov9k.engine": 4,
    "yolov9k.api": 5,
    "yolov9k.cli": 6,
    "yolov9k.__main__": 7,
    "yolov9k": 7,  # the package __init__: the public re-exports
}

# (importing part, imported part): why the arrow may point up. Keep this short.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    """Dotted name -> file for every module of yolov9k/ and kernels/ (installed as yolov9k.kernels)."""
    out: dict[str, Path] = {}
    for base, prefix in ((ROOT / "yolov9k", ("yolov9k",)), (ROOT / "kernels", ("yolov9k", "kernels"))):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join((*prefix, *parts))] = path
    return out


def _part(module: str) -> str:
    """The entry of LAYERS a dotted module name belongs to (longest matching prefix)."""
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len, default=None)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def _imports(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported yolov9k module) for every import statement of the module ``name``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import sub`` imports the submodule when there is one
            found += [(node.lineno, f"{base}.{a.name}" if base == "yolov9k" or not node.module else base)
                      for a in node.names]  # fmt: skip
    return [(line, mod) for line, mod in found if mod == "yolov9k" or mod.startswith("yolov9k.")]


def _edges() -> list[tuple[str, int, str, str]]:
    """(module, line, imported module, importing part) for every import inside the package."""
    edges = []
    for name, path in sorted(_modules().items()):
        for line, target in _imports(name, path):
            edges.append((name, line, target, _part(name)))
    return edges


def test_every_module_has_a_layer():
    for name in _modules():
        _part(name)


def test_no_module_imports_a_higher_layer():
    upward = []
    for name, line, target, part in _edges():
        to = _part(target)
        if LAYERS[to] > LAYERS[part] and (part, to) not in ALLOWED_UPWARD:
            upward.append(
                f"{name}:{line} imports {target} ({part} rank {LAYERS[part]} -> {to} rank {LAYERS[to]})"
            )
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_cycle_between_parts():
    graph: dict[str, set[str]] = {}
    for _, _, target, part in _edges():
        to = _part(target)
        if to != part and (part, to) not in ALLOWED_UPWARD:
            graph.setdefault(part, set()).add(to)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_kernels_import_only_their_helpers():
    """Triton kernels depend on triton, torch (numpy) and kernels/common.py, never on the op layer."""
    for name, line, target, _ in _edges():
        if name.startswith("yolov9k.kernels"):
            assert target.startswith("yolov9k.kernels."), f"{name}:{line} imports {target}"
