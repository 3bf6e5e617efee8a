"""`--object TYPE,id=ID,...`: qemu-img's user-creatable objects, accepted by every command.

Only `secret` objects are known (the passphrases of encrypted images, e.g. qcow2's
`encrypt.key-secret=ID`); they are kept, by id, for the engines that will look them up, and
ignored otherwise, as qemu-img ignores unused objects. Every other type is refused naming
it. Messages are qemu-img 7.2's.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from ..errors import DiskspecError, UnsupportedFeatureError
from .options import split_options

SECRET_KEYS = {"qom-type", "id", "data", "file", "format", "keyid", "iv", "loaded"}


@dataclass(frozen=True)
class Secret:
    """A secret's id and its bytes (decoded from format=base64 when given so)."""

    id: str
    value: bytes


def parse_object(text: str) -> Secret:
    """One --object value, checked as qemu checks it."""
    pairs = split_options(text)
    if not pairs:
        raise DiskspecError("Parameter 'qom-type' is missing")
    first, rest = pairs[0], pairs[1:]
    kind = first[0] if first[1] == "" else None
    if kind is None:  # qom-type=secret,...
        found = dict(pairs).get("qom-type")
        if found is None:
            raise DiskspecError("Parameter 'qom-type' is missing")
        kind, rest = found, [p for p in pairs if p[0] != "qom-type"]
    if kind != "secret":
        raise UnsupportedFeatureError(f"--object type '{kind}' (only secret objects)")
    opts: dict[str, str] = {}
    for key, value in rest:
        if key not in SECRET_KEYS:
            raise DiskspecError(f"Parameter '{key}' is unexpected")
        opts[key] = value
    if not opts.get("id"):
        raise DiskspecError("Parameter 'id' is missing")
    if "keyid" in opts or "iv" in opts:
        raise UnsupportedFeatureError("secret objects encrypted with keyid=/iv=")
    if ("data" in opts) == ("file" in opts):
        raise DiskspecError("'file' and 'data' are mutually exclusive" if "data" in opts
                            else "Either 'file' or 'data' must be provided")
    if "data" in opts:
        raw = opts["data"].encode("utf-8")
    else:
        try:
            with open(opts["file"], "rb") as f:
                raw = f.read(1 << 20)  # a passphrase, not a file to slurp whole
        except OSError as exc:
            raise DiskspecError(f"Unable to read {opts['file']}: {exc.strerror}") from None
    fmt = opts.get("format", "raw")
    if fmt == "base64":
        try:
            raw = base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise DiskspecError("Unable to decode base64 secret data") from None
    elif fmt != "raw":
        raise DiskspecError(f"Parameter 'format' does not accept value '{fmt}'")
    return Secret(opts["id"], raw)


class Objects:
    """The objects of one command line, by id."""

    def __init__(self) -> None:
        self.secrets: dict[str, Secret] = {}

    def add(self, text: str) -> None:
        secret = parse_object(text)
        if secret.id in self.secrets:
            raise DiskspecError(f"attempt to add duplicate property '{secret.id}' to object "
                                "(type 'container')")
        self.secrets[secret.id] = secret

    def secret(self, ident: str) -> bytes:
        """The bytes of secret `ident` (for an engine that needs a passphrase)."""
        found = self.secrets.get(ident)
        if found is None:
            raise DiskspecError(f"No secret with id '{ident}'")
        return found.value


def take_objects(args: list[str]) -> tuple[list[str], Objects]:
    """The arguments without their `--object X` / `--object=X` options (before a `--`),
    and the objects those named."""
    objects, out = Objects(), []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out += args[i:]
            break
        if arg == "--object":
            if i + 1 >= len(args):
                raise DiskspecError("option '--object' requires an argument")
            objects.add(args[i + 1])
            i += 2
            continue
        if arg.startswith("--object="):
            objects.add(arg[len("--object="):])
        else:
            out.append(arg)
        i += 1
    return out, objects


#: the objects of the command being run (the CLI runs one command per process)
CURRENT = Objects()
