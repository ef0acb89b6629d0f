"""The package's shape: no import cycle (imports inside functions count too), and each layer calls only
the ones below it."""

from __future__ import annotations

import ast
from pathlib import Path

import backend

ROOT = Path(backend.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the backend modules it imports, anywhere in its code (a lazy import is still a dependency)."""

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*kept, base] if base else kept)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                resolved = owner(target)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_backend_has_no_import_cycle():
    graph = _imports(_modules())
    assert "backend.evaluation.tasks" in graph["backend.evaluation.materialize"]  # the graph is real
    assert _cycles(graph) == []


def test_layers_call_only_the_layers_below():
    """Interfaces (cli, api, scheduler) -> services -> storage -> drivers: no layer imports one above it,
    and the CLI never imports the HTTP API (what both need lives in the services)."""
    graph = _imports(_modules())
    above = {
        "backend.storage": (
            "backend.services",
            "backend.api",
            "backend.web",
            "backend.cli",
            "backend.scheduler",
        ),
        "backend.services": ("backend.api", "backend.web", "backend.cli", "backend.scheduler"),
        "backend.evaluation": (
            "backend.services",
            "backend.api",
            "backend.web",
            "backend.cli",
            "backend.scheduler",
        ),
        "backend.leaderboards": (
            "backend.services",
            "backend.api",
            "backend.web",
            "backend.cli",
            "backend.storage",
        ),
        "backend.hub": ("backend.services", "backend.api", "backend.web", "backend.cli", "backend.storage"),
        "backend.judged": (
            "backend.services",
            "backend.api",
            "backend.web",
            "backend.cli",
            "backend.storage",
            "backend.scheduler",
        ),
        # The arena: its configs, pairing, battles, ratings and the endpoints its models answer through, under
        # the services and the interfaces.
        "backend.arena": (
            "backend.services",
            "backend.api",
            "backend.web",
            "backend.cli",
            "backend.scheduler",
            "backend.storage",
        ),
        # The model endpoint and its client: over the model store, never the database or the services.
        "backend.serving": (
            "backend.services",
            "backend.api",
            "backend.web",
            "backend.cli",
            "backend.scheduler",
            "backend.storage",
        ),
    }
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        for layer, forbidden in above.items()
        if module.startswith(layer)
        for target in targets
        if target.startswith(forbidden)
    ]
    assert not wrong, wrong


def test_the_cli_takes_from_the_http_api_only_the_app_it_serves():
    """`leaderboard serve` builds and runs the API; everything else the CLI needs (tokens, identities) is a service."""
    taken = set()
    for path in (ROOT / "cli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("backend.api"):
                taken |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("backend.api") for a in node.names), path
    assert taken == {"backend.api.app.create_api", "backend.api.server.run"}


def test_the_readme_map_of_the_package_is_the_package():
    """README "How it is built" names every package and top-level module of `backend`, and nothing else."""
    readme = (ROOT.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How it is built", 1)[1].split("```", 2)[1]
    in_backend = section.split("backend/\n", 1)[1]
    listed = {line.split()[0] for line in in_backend.splitlines() if line.startswith("  ") and line[2] != " "}
    present = {f"{p.name}/" for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    present |= {p.name for p in ROOT.glob("*.py") if p.name != "__init__.py"}
    assert listed == present
