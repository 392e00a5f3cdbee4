"""inventory.yml edited as text, for add-host and remove-host: the user's comments, order and layout stay.

PyYAML's node tree says where each host and group is written (line, column, offset); the edits are
made in the text at those places, then the whole new text is validated by inventory.load before it
replaces the file (atomically, keeping its mode). A layout these edits cannot follow (a flow-style
`hosts: {...}`) is refused with one line, never written half.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import yaml

from .errors import InventoryError
from .inventory import Inventory, load

_PLAIN = re.compile(r"[A-Za-z0-9_./~@][A-Za-z0-9_./~@:-]*")  # fullmatch: "x\n" is no plain word
_YAML_WORDS = {"y", "yes", "n", "no", "true", "false", "on", "off", "null", "~"}


def scalar(value: Any) -> str:
    """``value`` as YAML reads it back: plain where that is safe, else a JSON (= YAML) string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS and not re.fullmatch(r"[0-9.:]+", text):
        return text
    return json.dumps(text)


def entry_line(name: str, values: Dict[str, Any], indent: int = 2) -> str:
    return "%s%s: {%s}" % (" " * indent, name, ", ".join("%s: %s" % (k, scalar(v)) for k, v in values.items()))


def _section(root: yaml.Node, name: str) -> Optional[Tuple[yaml.Node, yaml.Node]]:
    for key, value in root.value if isinstance(root, yaml.MappingNode) else []:
        if key.value == name:
            return key, value
    return None


def _last_content_line(lines: List[str], start: int, end: int) -> int:
    """The last line in [start, end) with something on it other than a comment."""
    for number in range(min(end, len(lines)) - 1, start - 1, -1):
        stripped = lines[number].strip()
        if stripped and not stripped.startswith("#"):
            return number
    return start


def _block(node: yaml.Node, what: str, path: Path) -> None:
    if getattr(node, "flow_style", False):
        raise InventoryError("%s:%d: %s is written in flow style ({...} or [...]): add or remove this host by "
                             "hand" % (path, node.start_mark.line + 1, what))


def _append_to_mapping(lines: List[str], key: yaml.Node, value: yaml.Node, line: str, path: Path,
                       what: str) -> None:
    """Insert ``line`` as the last entry of the block mapping ``value`` (or as its first, if it is empty)."""
    if isinstance(value, yaml.ScalarNode):  # `hosts:` with nothing under it yet (but its own comments)
        at = key.start_mark.line + 1
        while at < len(lines) and lines[at][:1] in (" ", "\t") and lines[at].strip().startswith("#"):
            at += 1
        lines.insert(at, line)
        return
    _block(value, what, path)
    after = _last_content_line(lines, key.start_mark.line, value.end_mark.line + (value.end_mark.column > 0))
    lines.insert(after + 1, line)


def add_host(text: str, path: Path, name: str, values: Dict[str, Any], group: Optional[str] = None) -> str:
    """The inventory's text with host ``name`` added (and put in ``group``)."""
    root = yaml.compose(text) if text.strip() else None
    lines = text.splitlines()
    hosts = _section(root, "hosts") if root is not None else None
    if hosts is None:
        lines += ["hosts:", entry_line(name, values)]
    else:
        indent = hosts[1].value[0][0].start_mark.column if isinstance(hosts[1], yaml.MappingNode) and \
            hosts[1].value else 2
        _append_to_mapping(lines, hosts[0], hosts[1], entry_line(name, values, indent), path, "hosts")
    if group:
        text = "\n".join(lines) + "\n"
        lines = _add_to_group(text, path, name, group)
    return "\n".join(lines) + "\n"


def _add_to_group(text: str, path: Path, name: str, group: str) -> List[str]:
    root = yaml.compose(text)
    lines = text.splitlines()
    groups = _section(root, "groups")
    if groups is None:
        return lines + ["groups:", "  %s: [%s]" % (group, name)]
    members = _section(groups[1], group) if isinstance(groups[1], yaml.MappingNode) else None
    if members is None:
        _append_to_mapping(lines, groups[0], groups[1], "  %s: [%s]" % (group, name), path, "groups")
        return lines
    node = members[1]
    if not isinstance(node, yaml.SequenceNode):
        raise InventoryError("%s:%d: groups.%s is not a list: add %s to it by hand"
                             % (path, node.start_mark.line + 1, group, name))
    if node.flow_style:  # [a, b] -> [a, b, name], at the closing bracket
        at = node.end_mark.index - 1
        text = text[:at] + (", " if node.value else "") + name + text[at:]
        return text.splitlines()
    last = node.value[-1]
    indent = " " * (last.start_mark.column - 2)
    lines.insert(last.end_mark.line + (last.end_mark.column > 0), "%s- %s" % (indent, name))
    return lines


def remove_host(text: str, path: Path, name: str) -> str:
    """The inventory's text without host ``name``, nor its place in any group."""
    root = yaml.compose(text)
    hosts = _section(root, "hosts")
    if hosts is None or not isinstance(hosts[1], yaml.MappingNode):
        raise InventoryError("%s: no host %r to remove" % (path, name))
    _block(hosts[1], "hosts", path)
    lines = text.splitlines()
    entries = hosts[1].value
    for number, (key, value) in enumerate(entries):
        if key.value != name:
            continue
        end = entries[number + 1][0].start_mark.line if number + 1 < len(entries) else (
            value.end_mark.line + (value.end_mark.column > 0))
        last = _last_content_line(lines, key.start_mark.line, end)
        del lines[key.start_mark.line:last + 1]
        break
    else:
        raise InventoryError("%s: no host %r to remove" % (path, name))
    text = "\n".join(lines) + "\n"
    return _remove_from_groups(text, name)


def _remove_from_groups(text: str, name: str) -> str:
    """``name`` out of every group's list; done from the end of the text, so offsets stay right."""
    root = yaml.compose(text)
    groups = _section(root, "groups")
    if groups is None or not isinstance(groups[1], yaml.MappingNode):
        return text
    cuts: List[Tuple[int, int, str]] = []  # (start, end, what goes there instead)
    for group, members in groups[1].value:
        if not isinstance(members, yaml.SequenceNode):
            continue
        for index, item in enumerate(members.value):
            if item.value != name:
                continue
            if members.flow_style:  # "a, name" or "name, b": the item and one comma go
                if index > 0:
                    previous = members.value[index - 1]
                    cuts.append((previous.end_mark.index, item.end_mark.index, ""))
                elif len(members.value) > 1:
                    cuts.append((item.start_mark.index, members.value[1].start_mark.index, ""))
                else:
                    cuts.append((item.start_mark.index, item.end_mark.index, ""))
            else:  # "  - name": its whole line; the last one leaves an empty list, `group: []`
                start = text.rfind("\n", 0, item.start_mark.index) + 1
                end = text.find("\n", item.end_mark.index)
                cuts.append((start, len(text) if end < 0 else end + 1, ""))
                if len(members.value) == 1:
                    colon = text.index(":", group.end_mark.index) + 1
                    cuts.append((colon, colon, " []"))
    for start, end, instead in sorted(cuts, reverse=True):
        text = text[:start] + instead + text[end:]
    return text


@contextlib.contextmanager
def _beside(path: Path, text: str) -> Iterator[str]:
    """``text`` in a new file of its own next to ``path`` (same directory: a relative app_dir reads
    the same, and a rename over ``path`` is atomic); gone afterwards unless renamed."""
    fd, tmp = tempfile.mkstemp(prefix=".%s." % path.name, dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check(path: Path, text: str) -> Inventory:
    """The inventory ``text`` would be at ``path``; InventoryError (naming ``path``) when it is not valid."""
    with _beside(path, text) as tmp:
        try:
            inventory = load(Path(tmp))
        except InventoryError as exc:
            raise InventoryError(str(exc).replace(tmp, str(path))) from None
    inventory.path = path
    return inventory


def write(path: Path, text: str) -> None:
    """Replace the file atomically, keeping its mode: a crash leaves the old text or the new, whole."""
    with _beside(path, text) as tmp:
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
