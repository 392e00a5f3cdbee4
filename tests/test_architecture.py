"""The shape of the code, checked rather than remembered: two sides, no import cycles, small modules."""

import ast
import sys

from dashproc import ROOT

FIRST_PARTY = ("remote", "dashboard", "tasks")
MAX_LINES = 500


def modules():
    """{module name: path} of every first-party module (tests and benches excluded)."""
    found = {"tasks": ROOT / "tasks.py"}
    for package in ("remote", "dashboard"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name, path):
    """First-party modules ``name`` imports, anywhere in the file (a lazy import is still a dependency)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update("%s.%s" % (base, alias.name) for alias in node.names)
    return out


def graph():
    known = modules()
    return {name: sorted(m for m in imports(name, path) if m in known and m != name) for name, path in known.items()}


def find_cycle(edges):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in edges.get(node, []):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_there_is_no_first_party_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    """The check above can fail: a made-up graph with a cycle is caught."""
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]


def test_the_host_side_imports_only_the_standard_library_and_itself():
    stdlib = set(sys.stdlib_module_names)
    for name, path in modules().items():
        if not name.startswith("remote.host"):
            continue
        for module in imports(name, path):
            top = module.split(".")[0]
            if top == "remote":
                assert module == "remote.host" or module.startswith("remote.host."), (name, module)
            else:
                assert top in stdlib, "%s imports %s, which is not in the standard library" % (name, module)


def test_the_dashboard_builds_on_the_host_side_never_the_reverse():
    edges = graph()
    assert any(dep.startswith("remote.host") for dep in edges["dashboard.app"])
    for name, deps in edges.items():
        if name.startswith("dashboard"):
            assert all(d.startswith(("dashboard", "remote.host")) for d in deps), (name, deps)


def test_no_first_party_module_is_over_500_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
