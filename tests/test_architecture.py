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


# ---------------------------------------------------------------- tasks.py stays thin

MAX_TASK_BODY = 15


def _invoke_task_names(tree):
    """What invoke's task decorator is called in this module: `task` (or its alias) and `invoke.task`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "invoke":
            names.update(alias.asname or alias.name for alias in node.names if alias.name == "task")
        elif isinstance(node, ast.Import):
            names.update("%s.task" % (alias.asname or alias.name) for alias in node.names if alias.name == "invoke")
    return names


def _decorator_name(decorator):
    node = decorator.func if isinstance(decorator, ast.Call) else decorator
    return ast.unparse(node)


def task_bodies(source):
    """{task function: (body lines without its docstring, decorator names)} of every function that
    invoke's @task decorates, at any depth."""
    tree = ast.parse(source)
    task_names = _invoke_task_names(tree)
    found = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        decorators = [_decorator_name(d) for d in node.decorator_list]
        if not task_names & set(decorators):
            continue
        body = node.body
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(
                body[0].value.value, str):
            body = body[1:]
        found[node.name] = (body[-1].end_lineno - body[0].lineno + 1 if body else 0, decorators)
    return found


def sulfur_error_handlers(source):
    """The `except` clauses of ``source`` that name SulfurError (alone, dotted or in a tuple)."""
    count = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            count += any(ast.unparse(c).split(".")[-1] == "SulfurError" for c in caught)
    return count


def touches_sys_path(source):
    """Whether ``source`` reads or changes sys.path (sys.path.insert, sys.path[:0] = ..., from sys import path)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "path" and ast.unparse(node.value) == "sys":
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "sys" and any(a.name == "path" for a in node.names):
            return True
    return False


def test_no_task_body_in_tasks_py_is_over_15_lines():
    """A task parses its flags, calls one library function and renders: anything longer belongs in remote/."""
    bodies = task_bodies((ROOT / "tasks.py").read_text())
    assert len(bodies) >= 18, "the task finder found only %s" % sorted(bodies)
    long = {name: lines for name, (lines, _) in bodies.items() if lines > MAX_TASK_BODY}
    assert long == {}, "task bodies over %d lines (move the work into remote/): %s" % (MAX_TASK_BODY, long)


def test_tasks_py_has_one_error_handler_and_no_sys_path_line():
    """Errors become exits in one decorator (remote/cli.py), under every task; invoke's loader puts
    tasks.py's folder on the path."""
    source = (ROOT / "tasks.py").read_text()
    assert sulfur_error_handlers(source) == 0
    assert sulfur_error_handlers((ROOT / "remote" / "cli.py").read_text()) == 1
    assert not touches_sys_path(source)
    bare = [name for name, (_, decorators) in task_bodies(source).items() if "one_line_error" not in decorators]
    assert bare == [], "tasks without @one_line_error (a SulfurError would be a traceback): %s" % bare


def test_the_tasks_py_checks_can_fail():
    """The checks above see a long body, a second handler and a sys.path line in a made-up tasks file."""
    source = '''
import sys
from invoke import task as t

sys.path.insert(0, ".")


@t(help={})
def long(c):
    """Not counted."""
%s

@t
def short(c):
    try:
        pass
    except (ValueError, errors.SulfurError):
        pass
    except SulfurError:
        pass


def helper():
%s
''' % ("    x = 1\n" * 16, "    x = 1\n" * 30)
    assert {name: lines for name, (lines, _) in task_bodies(source).items()} == {"long": 16, "short": 6}
    assert sulfur_error_handlers(source) == 2
    assert touches_sys_path(source)
    assert not touches_sys_path("import os\nos.path.join('a')\n")


# ---------------------------------------------------------------- rooms you can name

HOST = "remote.host"
#: the host package's rooms, lowest first: a module may import its own room and the rooms before it,
#: never one after (common knows nothing of supervision; supervision nothing of releases); the entry
#: modules (ctl, supervisor, agent) sit on top and may import any room
LAYERS = ("common", "probes", "supervision", "data", "releases")
ENTRIES = ("remote.host.ctl", "remote.host.supervisor", "remote.host.agent")


def room(name):
    parts = name.split(".")
    return parts[2] if len(parts) > 3 and parts[2] in LAYERS else None


def test_the_host_package_is_grouped_by_duty_with_entries_on_top():
    host = {n: p for n, p in modules().items() if n.startswith(HOST + ".")}
    loose = sorted(n for n, p in host.items() if room(n) is None and n not in ENTRIES and p.name != "__init__.py")
    assert loose == [], "every host module belongs to a room (%s) or is an entry" % ", ".join(LAYERS)
    for name, deps in graph().items():
        if room(name) is None:
            continue
        for dep in deps:
            if dep.startswith(HOST + ".") and room(dep) is not None:
                assert LAYERS.index(room(dep)) <= LAYERS.index(room(name)), "%s imports %s: an arrow back up" % (
                    name, dep)
            assert dep not in ENTRIES, "%s imports the entry %s" % (name, dep)


def classes(package_prefixes):
    """[(module, ast.ClassDef)] of every class in the first-party modules under the prefixes."""
    found = []
    for name, path in modules().items():
        if name.startswith(package_prefixes):
            found += [(name, node) for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)]
    return found


#: a first-party class may build on another only where it is an exception, a TypedDict or a Protocol
ALLOWED_ROOTS = {"Exception", "BaseException", "TypedDict", "Protocol"}


def first_party_base_offenders(found):
    bases = {node.name: [ast.unparse(b) for b in node.bases] for _, node in found}

    def allowed(name, seen=()):
        return name in ALLOWED_ROOTS or (name in bases and name not in seen and bases[name] != [] and all(
            allowed(b, seen + (name,)) for b in bases[name]))

    return sorted("%s.%s(%s)" % (module, node.name, base) for module, node in found
                  for base in bases[node.name] if base in bases and not allowed(base))


def test_no_host_class_has_a_first_party_base_class():
    """Mixins that read and write another class's attributes are how a reader loses track of who may
    touch what; the supervisor's policies get a Context instead."""
    assert first_party_base_offenders(classes((HOST,))) == []


def test_the_base_class_check_can_fail():
    tree = ast.parse("class Duties:\n    pass\nclass Loop(Duties):\n    pass\n"
                     "class Failure(Exception):\n    pass\nclass Bad(Failure):\n    pass\n")
    found = [("m", node) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    assert first_party_base_offenders(found) == ["m.Loop(Duties)"]


MAX_CLASS = 250
MAX_SUPERVISOR = 300


def test_no_class_is_over_250_lines_and_the_supervisor_reads_in_one_sitting():
    long = {"%s.%s" % (m, n.name): n.end_lineno - n.lineno + 1 for m, n in classes(FIRST_PARTY)
            if n.end_lineno - n.lineno + 1 > MAX_CLASS}
    assert long == {}
    for name in ("remote.host.supervisor", "remote.host.supervision.loop"):
        assert len(modules()[name].read_text().splitlines()) < MAX_SUPERVISOR, name


def test_service_names_are_written_once():
    """A list of service names written twice is how a new service ends up controllable from one place
    and invisible in another: every list derives from remote/host/common/names.py."""
    written = []
    for name, path in modules().items():
        if name == "remote.host.common.names":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                words = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if {"dashboard", "bot"} <= words:
                    written.append("%s:%d" % (name, node.lineno))
    for path in list((ROOT / "dashboard" / "static").glob("*.js")) + list((ROOT / "remote" / "fleet" / "static").glob(
            "*.js")):
        if '"dashboard", "bot"' in path.read_text():
            written.append(str(path.relative_to(ROOT)))
    assert written == []
