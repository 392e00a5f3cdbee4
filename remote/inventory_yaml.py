"""inventory.yml as a checked YAML node tree: whatever is wrong with the YAML itself is one line with the
file and the line (and the key when there is one), never a traceback, before a single value is read.

PyYAML only composes here (nodes, no objects), with the safe loader's resolver. Then every node is
checked once: only plain tags (text, numbers, true/false, null, dates, lists, mappings: no
`!!python/...`, no tag of one's own), keys that are plain text and given once in their mapping, at
most ``MAX_DEPTH`` levels, and at most ``MAX_NODES`` values once aliases (``*name``) are followed, so a
"billion laughs" of nested aliases is refused before anything expands it (a message that shows the
value, for one). Values are then built from single nodes by ``construct``, which reports a tag
that cannot read its text (``!!int abc``) the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from .errors import InventoryError

MAX_DEPTH = 50  # an inventory needs about six levels
MAX_NODES = 100_000  # a hundred hosts of thirty settings are some 10 000
_CORE = "tag:yaml.org,2002:"
#: the tags plain YAML resolves to by itself, and the three kinds of node: nothing else is data
PLAIN_TAGS = {tag for resolvers in yaml.SafeLoader.yaml_implicit_resolvers.values() for tag, _ in resolvers} | {
    _CORE + "str", _CORE + "seq", _CORE + "map"}


def shown_tag(tag: str) -> str:
    """A tag as it was written: ``!!python/object/apply:os.system``, ``!mine``."""
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


def brief(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut at ``limit`` characters: a message shows what was written, not all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def compose(path: Path) -> Optional[yaml.Node]:
    """The file's node tree, checked (see the module's docstring); None for an empty file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InventoryError("%s: cannot read the inventory (%s); create it or set SULFUR_INVENTORY"
                             % (path, exc.strerror)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError("%s:%d: not UTF-8 text (byte 0x%02x): save the file as UTF-8"
                             % (path, raw[:exc.start].count(b"\n") + 1, raw[exc.start])) from None
    try:
        _depth(path, text)  # the parser is a loop, the composer recursion: depth first, at its line
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise InventoryError(one_line("%s%s: not valid YAML: %s" % (path, _line(exc, text), _problem(exc)))) from None
    if root is not None:
        _Walk(path).node(root, "inventory", 0)
    return root


def one_line(text: str) -> str:
    """``text`` with control characters written as escapes (a key "pi\\n" must not end the line)."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _depth(path: Path, text: str) -> None:
    """InventoryError at the line of the first list or mapping nested deeper than MAX_DEPTH."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise InventoryError("%s:%d: nested more than %d levels deep (an inventory needs a few)"
                                     % (path, event.start_mark.line + 1, MAX_DEPTH))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def construct(node: yaml.Node) -> Any:
    """The Python value of one checked node (safe types only); ValueError, one clause, when its tag
    cannot read its text (``!!int abc``, ``!!bool maybe``)."""
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError as exc:
        raise ValueError(_problem(exc)) from None
    except (ValueError, TypeError, KeyError, OverflowError):  # the safe constructors' own, for an explicit tag
        raise ValueError("%s cannot read %s" % (shown_tag(node.tag), brief(node.value))) from None


def _line(exc: yaml.YAMLError, text: str) -> str:
    """:LINE of a YAML error, where PyYAML knows it."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return ":%d" % (mark.line + 1)
    position = getattr(exc, "position", None)  # a ReaderError: an index into the text
    return ":%d" % (text[:position].count("\n") + 1) if isinstance(position, int) else ""


def _problem(exc: yaml.YAMLError) -> str:
    """A YAML error's words on one line."""
    if isinstance(exc, yaml.reader.ReaderError):
        return "character #x%04x: %s" % (exc.character if isinstance(exc.character, int) else
                                         ord(exc.character), exc.reason)
    words = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    said = " ".join(w for w in words if w) or str(exc)
    return " ".join(said.split())


class _Walk:
    """One pass over the nodes; each node is checked once (an alias points at a node seen already),
    and counts as often as aliases repeat it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sizes: Dict[int, int] = {}
        self.open: set = set()

    def fail(self, node: yaml.Node, key: str, message: str) -> InventoryError:
        return InventoryError(one_line("%s:%d: %s: %s" % (self.path, node.start_mark.line + 1, key, message)))

    def node(self, node: yaml.Node, key: str, depth: int) -> int:
        """The number of values ``node`` stands for once aliases are followed; InventoryError on the
        first problem, at its own line."""
        if id(node) in self.sizes:
            return self.sizes[id(node)]
        if id(node) in self.open:
            raise self.fail(node, key, "an alias refers to the value it is part of: write the value out")
        if depth > MAX_DEPTH:
            raise self.fail(node, key, "nested more than %d levels deep" % MAX_DEPTH)
        if node.tag not in PLAIN_TAGS:
            raise self.fail(node, key, "the tag %s is not allowed: an inventory holds plain values (text, "
                                       "numbers, true/false, lists, mappings)" % shown_tag(node.tag))
        self.open.add(id(node))
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self.node(item, key, depth + 1) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += self.mapping(node, key, depth)
        self.open.discard(id(node))
        if size > MAX_NODES:
            raise self.fail(node, key, "stands for more than %d values once its aliases are followed: write "
                                       "it out plainly" % MAX_NODES)
        self.sizes[id(node)] = size
        return size

    def mapping(self, node: yaml.MappingNode, key: str, depth: int) -> int:
        seen: set = set()
        size = 0
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise self.fail(knode, key, "a key must be plain text, not a list or a mapping")
            name = knode.value if key == "inventory" else "%s.%s" % (key, knode.value)
            if knode.value in seen:
                raise self.fail(knode, name, "given twice")
            seen.add(knode.value)
            size += self.node(knode, name, depth + 1) + self.node(vnode, name, depth + 1)
        return size
