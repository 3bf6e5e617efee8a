"""qemu-img's option strings, mapped onto the keyword options of the engines.

`-o key=val,key2=val2` (create options; `,,` is a literal comma), `--image-opts
driver=vpc,file.filename=X,force_size_calc=chs` (open options), and the option lists that
`-o help` prints. qemu's option names are translated where ours differ (force_size_calc ->
size_rule, backing_file -> parent). The option lists come from each engine's declaration
(`Engine.capabilities`: `create_options` for `-o help`, `backing_create` for `-b`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DiskspecError, UnsupportedFeatureError
from ..registry import engine_for
from .units import parse_size

#: qemu's open-option names where ours differ
OPEN_ALIASES = {"force_size_calc": "size_rule"}

_TRUE = {"on", "true", "yes"}
_FALSE = {"off", "false", "no"}
#: qemu's boolean words (case-sensitive): on/off and their aliases, y and n included
BOOL_WORDS = {"on": True, "yes": True, "true": True, "y": True,
              "off": False, "no": False, "false": False, "n": False}
#: how a create option declares itself boolean in Capabilities.create_options
BOOL_MARK = "[on/off]"


def split_options(text: str) -> list[tuple[str, str]]:
    """`a=1,b=x,,y` -> [("a", "1"), ("b", "x,y")]; a bare word is ("word", "")."""
    items: list[str] = []
    current = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == ",":
            if text[i + 1 : i + 2] == ",":
                current.append(",")
                i += 2
                continue
            items.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    items.append("".join(current))
    out = []
    for item in items:
        if not item:
            continue
        key, sep, value = item.partition("=")
        out.append((key.strip(), value if sep else ""))
    return out


def coerce(key: str, value: str) -> Any:
    """on/off -> bool, numbers with size suffixes -> int, anything else stays text."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value and (value[0].isdigit() or value[0] == "."):
        try:
            return parse_size(value, key)
        except DiskspecError:
            return value
    return value


def parse_options(texts: Iterable[str]) -> dict[str, Any]:
    """Several `-o` arguments joined like qemu-img does (later keys win)."""
    out: dict[str, Any] = {}
    for text in texts:
        for key, value in split_options(text):
            out[key] = coerce(key, value)
    return out


def wants_help(texts: Iterable[str]) -> bool:
    return any(key in ("help", "?") for text in texts for key, _ in split_options(text))


def create_option_help(fmt: str) -> dict[str, str]:
    return dict(engine_for(fmt).capabilities.create_options or {"size": "Virtual disk size"})


def format_option_help(fmt: str) -> str:
    name = engine_for(fmt).format_name
    rows = create_option_help(fmt)
    width = max((len(k) for k in rows), default=0)
    lines = [f"Supported options for {name}:"]
    lines += [f"  {key:<{width}}  {text}" for key, text in rows.items()]
    return "\n".join(lines) + "\n"


def backing_create_options(fmt: str) -> dict[str, Any] | None:
    """The create options that make a `fmt` image over a backing file; None for a format
    whose images have no backing file."""
    caps = engine_for(fmt).capabilities
    return dict(caps.backing_create) if caps.backing else None


@dataclass
class CreateRequest:
    """What `create`/`convert -O` was asked for, in the runtime's terms."""

    format: str
    size: int | None
    options: dict[str, Any] = field(default_factory=dict)
    backing: str | None = None
    backing_format: str | None = None


def create_request(fmt: str, size: int | None, opts: dict[str, Any], backing: str | None = None,
                   backing_format: str | None = None) -> CreateRequest:
    """Translate qemu-img create options (-o, -b, -F, SIZE) for runtime.create()."""
    engine_for(fmt)  # unknown formats fail here, before anything else
    opts = booleans(fmt, opts)
    if "size" in opts:
        value = opts.pop("size")
        if not isinstance(value, int) or isinstance(value, bool):
            raise DiskspecError(f"invalid size {value!r}")
        if size is not None and size != value:
            raise DiskspecError("the size is given twice (SIZE and -o size=) with different values")
        size = value
    if "backing_file" in opts:
        value = str(opts.pop("backing_file"))
        if backing is not None and backing != value:
            raise DiskspecError("the backing file is given twice (-b and -o backing_file=)")
        backing = value
    if "backing_fmt" in opts:
        value = str(opts.pop("backing_fmt"))
        if backing_format is not None and backing_format != value:
            raise DiskspecError("the backing format is given twice (-F and -o backing_fmt=)")
        backing_format = value
    if backing_format is not None and backing is None:
        raise DiskspecError("a backing format (-F) needs a backing file (-b)")
    if "preallocation" in opts:
        opts = preallocation_option(fmt, opts)
    if backing is not None:
        needed = backing_create_options(fmt)
        if needed is None:
            raise UnsupportedFeatureError(f"a backing file for {fmt} images")
        for key, value in needed.items():
            if key in opts and opts[key] != value:
                raise DiskspecError(f"-o {key}={opts[key]} cannot be combined with a backing file "
                                    f"({key}={value} is needed)")
            opts[key] = value
        opts["parent"] = backing
    return CreateRequest(fmt, size, opts, backing, backing_format)


def preallocation_option(fmt: str, opts: dict[str, Any]) -> dict[str, Any]:
    """-o preallocation=: passed to engines that declare it (raw); for the others only 'off'.
    qemu's vpc and vhdx hand it to the file under the image, which they create empty, so it
    preallocates nothing there; an allocated VHD/VHDX is -o subformat=fixed."""
    value = opts["preallocation"]
    mode = "off" if value is False else str(value)
    if "preallocation" in engine_for(fmt).capabilities.create_options:
        return {**opts, "preallocation": mode}
    if mode != "off":
        raise UnsupportedFeatureError(
            f"preallocation={mode} for {engine_for(fmt).format_name} images (an allocated "
            "image is -o subformat=fixed)")
    return {k: v for k, v in opts.items() if k != "preallocation"}


def booleans(fmt: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The options `fmt` declares boolean must be one of qemu's words (force_size=maybe is an
    error, as in qemu-img, not "on")."""
    declared = create_option_help(fmt)
    out = dict(opts)
    for key, value in opts.items():
        if not declared.get(key, "").endswith(BOOL_MARK) or isinstance(value, bool):
            continue
        if not isinstance(value, str) or value not in BOOL_WORDS:
            raise DiskspecError(f"Parameter '{key}' expects 'on' or 'off'")
        out[key] = BOOL_WORDS[value]
    return out


@dataclass
class OpenRequest:
    """An image to open: path, format (None: probe) and engine open options."""

    path: str
    format: str | None
    options: dict[str, Any] = field(default_factory=dict)


def open_options(opts: dict[str, Any]) -> dict[str, Any]:
    """qemu's open-option names translated to ours."""
    return {OPEN_ALIASES.get(k, k): v for k, v in opts.items()}


def image_opts(text: str) -> OpenRequest:
    """`--image-opts` FILE: driver=FMT,file.filename=PATH[,file.driver=file][,engine opts]."""
    pairs = dict(split_options(text))
    path = pairs.pop("file.filename", None) or pairs.pop("filename", None)
    if not path:
        raise DiskspecError(f"--image-opts {text!r}: file.filename=PATH is missing")
    fmt = pairs.pop("driver", None) or None
    proto = pairs.pop("file.driver", "file")
    if proto != "file":
        raise UnsupportedFeatureError(f"protocol driver {proto!r} (only 'file')")
    for key in pairs:  # the file protocol's own options: none of qemu's is one we take
        if key.startswith("file."):
            raise DiskspecError(f"Block protocol 'file' doesn't support the option '{key[5:]}'")
    if fmt == "file":
        fmt = "raw"
    # open options stay text (size_rule=chs), except on/off flags
    extra: dict[str, Any] = {k: (v.lower() in _TRUE) if v.lower() in _TRUE | _FALSE else v
                             for k, v in pairs.items()}
    for key in ("offset", "size"):  # the raw driver's byte counts take qemu's size suffixes
        if fmt in (None, "raw") and isinstance(extra.get(key), str):
            extra[key] = parse_size(extra[key], key)
    return OpenRequest(os.fspath(path), fmt, open_options(extra))


def json_filename(text: str) -> OpenRequest:
    """qemu's `json:{...}` filename: the --image-opts keys as a JSON object, nested objects
    flattened with dots (`{"file": {"filename": "x"}}` -> file.filename=x)."""
    import json

    try:
        tree = json.loads(text[len("json:"):])
    except ValueError as exc:
        raise DiskspecError(f"Could not parse the JSON options: {exc}") from None
    if not isinstance(tree, dict):
        raise DiskspecError("Could not parse the JSON options: not an object")
    flat: list[str] = []

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(f"{name}.", value)
            elif isinstance(value, bool):
                flat.append(f"{name}={'on' if value else 'off'}")
            elif isinstance(value, int | float | str):
                flat.append(f"{name}={str(value).replace(',', ',,')}")
            else:
                raise DiskspecError(f"Could not parse the JSON options: {name} is a {type(value).__name__}")

    walk("", tree)
    return image_opts(",".join(flat))
