"""The generated pages of jettag's documentation: the configuration reference and the API reference.

Both are written at build time, so they cannot go stale:

- `<!-- generated: config-reference -->` becomes a table of every key of every file of `configs/`,
  with its value (the default) and the comments next to it in the YAML file.
- `<!-- generated: api-reference -->` becomes an autodoc section for every module of `jettag`, found
  by walking the package (a module that moves or is split is found where it is now).

`python docs/_ext/jettag_docs.py` prints the configuration reference as Markdown.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
# the primary configs, one per command (a file at the top of configs/), in this order
COMMANDS = {
    "train": "jettag-train",
    "eval": "jettag-eval",
    "predict": "jettag-predict",
    "export": "jettag-export",
}
MARKERS = {
    "config-reference": lambda: config_reference(),
    "api-reference": lambda: api_reference(),
}


# --------------------------------------------------------------------------- configuration reference


@dataclass
class Entry:
    """One key of a config file: its dotted path (as set on the command line), its value as written."""

    path: tuple[str, ...]
    value: str | None = None  # as written on the key's line; None when it is a block (mapping or list)
    comment: list[str] = field(default_factory=list)
    items: list[tuple[str, list[str]]] = field(default_factory=list)  # defaults-list entries


@dataclass
class ConfigFile:
    path: Path
    relative: str  # its path under configs/
    group: str  # "" for a primary config
    package: str  # the prefix of its keys ("" for _global_ and primary configs)
    description: list[str]
    entries: list[Entry]
    values: dict

    @property
    def name(self) -> str:
        return self.path.stem


def _split_comment(text: str) -> tuple[str, str | None, int]:
    """`value  # comment` -> (value, comment, column of the #); a # inside quotes is not a comment."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1 :].strip(), i
    return text.rstrip(), None, -1


def _comment_text(line: str) -> str:
    text = line.strip()[1:]
    return text[1:] if text.startswith(" ") else text


KEY = re.compile(r"^(?P<indent> *)(?P<key>[^\s#'\"-][^:#]*?|'[^']*'|\"[^\"]*\"):(?:\s+(?P<rest>.*))?$")


def parse_config(path: Path, configs: Path = CONFIGS) -> ConfigFile:
    """A config file's keys, values as written and comments (those above a key and after it)."""
    lines = path.read_text().splitlines()
    relative = path.relative_to(configs)
    group = relative.parent.as_posix() if relative.parent != Path(".") else ""
    package = group.replace("/", ".")
    description: list[str] = []
    i = 0
    while i < len(lines) and lines[i].lstrip().startswith("#"):
        match = re.match(r"#\s*@package\s+(\S+)", lines[i].strip())
        if match:
            package = "" if match.group(1) == "_global_" else match.group(1)
        else:
            description.append(_comment_text(lines[i]))
        i += 1

    entries: list[Entry] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    pending: list[str] = []  # comment lines waiting for the next key
    continued: tuple[int, Entry] | None = None  # (column, entry) of a trailing comment that may go on
    opened: tuple[int, Entry] | None = None  # (indent, entry) of a key without a value on its line
    block: tuple[int, Entry] | None = None  # (indent, entry) of the block list being read
    for line in lines[i:]:
        stripped = line.strip()
        if not stripped:  # a comment block above a blank line still goes with the next key
            continued = None
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            if continued and indent == continued[0]:
                continued[1].comment.append(_comment_text(line))
            else:
                pending.append(_comment_text(line))
                continued = None
            continue
        continued = None
        if opened and stripped.startswith("-"):  # the key just read holds a block list
            block = opened
        opened = None
        if block and (stripped.startswith("-") or indent > block[0]):
            # an item of a block list (or a line inside one): its comments go to the list's key,
            # or to the item for a defaults list
            entry = block[1]
            content, trailing, column = _split_comment(line)
            content = content.strip()
            notes = [*pending, *([trailing] if trailing else [])]
            pending = []
            if entry.path == ("defaults",) and stripped.startswith("-"):
                entry.items.append((content[1:].strip(), notes))
            else:
                entry.comment.extend(notes)
            if trailing:
                continued = (column, entry)
            continue
        block = None
        match = KEY.match(line)
        if not match:  # not a form this reader knows: its values come from the loaded file
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = match.group("key").strip("'\"")
        value, trailing, column = _split_comment(line[match.start("rest") :] if match.group("rest") else "")
        entry = Entry(
            (*(k for _, k in stack), key), value or None, [*pending, *([trailing] if trailing else [])]
        )
        pending = []
        entries.append(entry)
        if trailing:
            continued = (match.start("rest") + column, entry)
        if not value:
            stack.append((indent, key))
            opened = (indent, entry)
    description += pending  # comments after the last key
    values = yaml.safe_load(path.read_text()) or {}
    return ConfigFile(path, relative.as_posix(), group, package, description, entries, values)


def leaf_paths(values: dict, above: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of every value of a loaded config (lists are values; `defaults` is left out)."""
    paths = []
    for key, value in values.items():
        if not above and key == "defaults":
            continue
        path = (*above, str(key))
        if isinstance(value, dict) and value:
            paths.extend(leaf_paths(value, path))
        else:
            paths.append(path)
    return paths


def dotted(config: ConfigFile, path: tuple[str, ...]) -> str:
    """A key as it is set on the command line: `data.batch_size`, `hydra.launcher.partition`."""
    return ".".join([config.package, *path] if config.package else path)


def config_keys(config: ConfigFile) -> list[str]:
    """Every key of the file as it is set on the command line."""
    return [dotted(config, path) for path in leaf_paths(config.values)]


def _flow(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _lookup(values: dict, path: tuple[str, ...]):
    node = values
    for part in path:
        node = node[part]
    return node


def _code(text: str) -> str:
    """Inline code in a table cell."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _prose(lines: list[str]) -> str:
    """Comment text as Markdown: code spans kept, everything else escaped."""
    text = " ".join(line.strip() for line in lines if line.strip())
    parts = re.split(r"(`[^`]*`)", text)
    escaped = [
        part if part.startswith("`") else re.sub(r"([\\*_\[\]<>|{}])", r"\\\1", part) for part in parts
    ]
    return "".join(escaped)


def _table(config: ConfigFile) -> list[str]:
    by_path = {entry.path: entry for entry in config.entries}
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for path in leaf_paths(config.values):
        entry = by_path.get(path) or Entry(path)
        value = entry.value if entry.value is not None else _flow(_lookup(config.values, path))
        rows.append(f"| {_code(dotted(config, path))} | {_code(value)} | {_prose(entry.comment)} |")
    return rows


def _parent_notes(config: ConfigFile) -> list[str]:
    """Comments on mapping keys (those of a block such as `schedule:`), which have no row of their own."""
    leaves = set(leaf_paths(config.values))
    notes = []
    for entry in config.entries:
        if entry.path not in leaves and entry.path != ("defaults",) and entry.comment:
            notes.append(f"- {_code(dotted(config, entry.path))}: {_prose(entry.comment)}")
    return notes


def _description(comment: list[str]) -> list[str]:
    """A file's head comment: prose as paragraphs, indented lines (command examples) as code blocks."""
    lines: list[str] = []
    prose: list[str] = []
    code: list[str] = []
    for line in [*comment, ""]:
        if line.startswith("  ") and line.strip():
            if prose:
                lines += [_prose(prose), ""]
                prose = []
            code.append(line[2:])
            continue
        if code:
            lines += ["```text", *code, "```", ""]
            code = []
        if line.strip():
            prose.append(line)
    if prose:
        lines += [_prose(prose), ""]
    return lines


def _defaults(config: ConfigFile) -> list[str]:
    entry = next((e for e in config.entries if e.path == ("defaults",)), None)
    if entry is None or not entry.items:
        return []
    lines = ["Defaults list (what it is composed of, in order):", ""]
    for item, notes in entry.items:
        lines.append(f"- {_code(item)}" + (f": {_prose(notes)}" if notes else ""))
    return [*lines, ""]


def load_configs(configs: Path = CONFIGS) -> list[ConfigFile]:
    return [parse_config(path, configs) for path in sorted(configs.rglob("*.yaml"))]


def _section(config: ConfigFile, title: str, level: str) -> list[str]:
    lines = [f"{level} {title}", "", f"`configs/{config.relative}`", ""]
    lines += _description(config.description)
    lines += _defaults(config)
    notes = _parent_notes(config)
    if notes:
        lines += [*notes, ""]
    if leaf_paths(config.values):
        lines += [*_table(config), ""]
    return lines


def config_reference(configs: Path = CONFIGS) -> str:
    """Markdown: every config file of `configs/`, its keys, defaults and comments."""
    files = load_configs(configs)
    primary = {c.name: c for c in files if not c.group}
    groups: dict[str, list[ConfigFile]] = {}
    for config in files:
        if config.group:
            groups.setdefault(config.group, []).append(config)
    train = primary.get("train")
    choices = {}
    if train is not None:
        for item, _ in next((e.items for e in train.entries if e.path == ("defaults",)), []):
            name, _, choice = item.partition(":")
            choices[name.strip()] = choice.strip()

    lines = ["## The commands", ""]
    ordered = [name for name in COMMANDS if name in primary] + sorted(set(primary) - set(COMMANDS))
    for name in ordered:
        title = f"`{COMMANDS[name]}`: {name}.yaml" if name in COMMANDS else f"{name}.yaml"
        lines += _section(primary[name], title, "###")
    lines += ["## The config groups", ""]
    for group in sorted(groups):
        lines += [f"### `{group}`", ""]
        default = choices.get(group)
        choose = f"Choose one with `{group}=NAME` on the command line"
        if default is not None:
            lines.append(f"{choose}; `jettag-train`'s default: `{default}`.")
        else:
            lines.append(f"{choose}.")
        lines.append("")
        for config in groups[group]:
            lines += _section(config, f"`{group}={config.name}`", "####")
    return "\n".join(lines)


# --------------------------------------------------------------------------- API reference


def public_modules(package: str = "jettag") -> list[str]:
    """The package's modules and subpackages, depth first, skipping _private ones and the data folders."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.iter_modules(root.__path__):
        if info.name.startswith("_"):
            continue
        name = f"{package}.{info.name}"
        if info.ispkg:
            names += public_modules(name)
        else:
            names.append(name)
    return names


def api_reference(package: str = "jettag") -> str:
    """MyST: for each package its docstring and exports, for each module its documented members."""
    lines = []
    for name in public_modules(package):
        module = importlib.import_module(name)
        depth = name.count(".")
        heading = "#" * min(2 + depth, 4)
        lines += [f"{heading} `{name}`", ""]
        is_package = hasattr(module, "__path__")
        # what the module defines itself; a package's re-exports are linked below, not repeated
        options = ["   :members:", "   :undoc-members:", "   :ignore-module-all:"]
        lines += ["```{eval-rst}", f".. automodule:: {name}", *options, "```", ""]
        exported = getattr(module, "__all__", None) if is_package else None
        if exported:
            refs = []
            for attr in exported:
                obj = getattr(module, attr, None)
                home = getattr(obj, "__module__", None)
                target = f"{home}.{attr}" if home and home.startswith(package) else f"{name}.{attr}"
                refs.append(f"{{py:obj}}`{attr} <{target}>`")
            lines += ["Exports: " + ", ".join(refs) + ".", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- docstrings

# jettag's docstrings are Markdown-flavoured prose: `code` in single backticks, |eta|, x * y,
# "- " lists right under a paragraph, indented examples. Read as reST they would be emphasis,
# substitutions and indentation errors; `plain_docstring` makes reST that shows them as written.
BULLET = re.compile(r"([-*+]|\d+[.)]) ")
OPENS_AFTER = " -:/'\"<([{"  # what reST lets stand before an inline literal
CLOSES_BEFORE = " -.,:;!?\\/'\")]}>"  # ... and after it


def _inline(text: str, in_code: bool) -> tuple[str, bool]:
    """One line of prose as reST: `x` -> ``x``, every other markup character escaped."""
    out = []
    for i, char in enumerate(text):
        if char == "`":
            before = text[i - 1] if i else " "
            after = text[i + 1] if i + 1 < len(text) else " "
            if not in_code:
                out.append(("" if before in OPENS_AFTER else "\\ ") + "``")
            else:
                out.append("``" + ("" if after in CLOSES_BEFORE else "\\ "))
            in_code = not in_code
        elif in_code:
            out.append(char)
        elif char in "\\*|_[]":
            out.append("\\" + char)
        else:
            out.append(char)
    line = "".join(out)
    if line.startswith(".."):  # not a comment or directive
        line = "\\" + line
    if len(set(line.strip())) == 1 and len(line.strip()) >= 3 and not line.strip()[0].isalnum():
        line = "\\" + line.lstrip()  # not a section underline
    return line, in_code


def plain_docstring(lines: list[str]) -> list[str]:
    """A docstring's lines (dedented) as reST that renders as written and never warns."""
    out: list[str] = []
    base = 0  # indent of the paragraph being read
    literal: int | None = None  # inside an indented block: the indent it must exceed
    item: int | None = None  # inside a list item: the indent of its text
    in_code = False
    for line in lines:
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        if not text:
            out.append("")
            continue
        if literal is not None:
            if indent > literal:
                out.append(line)
                continue
            literal = None
            out.append("")
        if item is None and out and indent > base:  # an indented block: shown as it is
            previous = next((o for o in reversed(out) if o), "")
            if out[-1]:
                out.append("")
            if not previous.endswith("::"):
                out += ["::", ""]
            out.append(line)
            literal = base
            in_code = False
            continue
        bullet = BULLET.match(text)
        if bullet and (item is None or indent <= item):
            if item is None and out and out[-1]:
                out.append("")
            item = indent + len(bullet.group())
            body, in_code = _inline(text[bullet.end() :], in_code)
            out.append(" " * indent + bullet.group() + body)
            continue
        if item is not None:
            if indent >= item:
                body, in_code = _inline(text, in_code)
                out.append(" " * item + body)
                continue
            item = None
            if out and out[-1]:
                out.append("")
        if not out or not out[-1]:
            base = indent
        body, in_code = _inline(text, in_code)
        out.append(" " * indent + body)
    return out


def _docstring(app, what, name, obj, options, lines):
    if name.startswith("jettag"):
        lines[:] = plain_docstring(lines)


# --------------------------------------------------------------------------- Sphinx


def _fill(app, docname, source):
    for name, render in MARKERS.items():
        marker = f"<!-- generated: {name} -->"
        if marker in source[0]:
            source[0] = source[0].replace(marker, render())


def setup(app):
    app.connect("source-read", _fill)
    app.connect("autodoc-process-docstring", _docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    print(config_reference())
