"""The backing-file policy: which files an image may make diskspec open.

A differencing VHD or VHDX names its parent, a qcow2 its backing and data files: names an
image carries are data from whoever made the image, not instructions. An image received
from elsewhere could otherwise name `/etc/shadow` or `..\\..\\home\\x\\.ssh\\id_rsa` as its
parent and have `convert` copy that file into its output. So, by default ("confined"):

- a referenced file is looked for only under the referring image's directory: relative
  names that stay inside it after `..` and symlinks are resolved; absolute names are refused
  (and reported, so that the user can pass the file explicitly);
- it must be a regular file (never a FIFO, socket or device: opening one can block forever);
- a raw file is accepted as a parent only when the user names it (`parent=`, `-b`): raw has
  no identity to check, so nearly any file would pass for a parent.

"any" (`backing_policy="any"`, `--parents=any`) trusts the image's names as qemu does. A file
the user names explicitly is always allowed (it is the user's choice, not the image's).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from .errors import DiskspecError, ParentMissingError

Policy = Literal["confined", "any"]
POLICIES: tuple[Policy, ...] = ("confined", "any")
DEFAULT: Policy = "confined"


def check_policy(value: object) -> Policy:
    for policy in POLICIES:
        if value == policy:
            return policy
    raise DiskspecError(f"backing policy must be one of {', '.join(POLICIES)}, not {value!r}")


def named_file(referrer: Path, name: str | os.PathLike[str]) -> Path:
    """A file the user names for an image (`-b`, `parent=`), as qemu-img finds it: as given
    when it exists from here (or is absolute), else relative to the image's directory."""
    path = Path(name)
    if path.is_absolute() or path.exists():
        return path
    return referrer.parent / path


def referenced_file(referrer: Path, name: str, policy: Policy, what: str) -> Path:
    """The file an image names besides its parent (qcow2's external data file): `name`
    relative to the image's directory unless absolute, admitted by the policy; else a
    ParentMissingError that names the file, and why."""
    path = Path(name)
    candidate = path if path.is_absolute() else referrer.parent / path
    why = refusal(referrer, candidate, policy)
    if why is not None:
        raise ParentMissingError(f"{referrer}: {what} {candidate}: {why}")
    return candidate


def refusal(referrer: Path, candidate: Path, policy: Policy) -> str | None:
    """Why the policy refuses to open `candidate`, named inside the image `referrer`; None
    when it may be opened."""
    if "\0" in str(candidate):  # no file has such a name; the OS calls would raise
        return "a name with a NUL byte"
    try:
        os.fsencode(candidate)
    except UnicodeError:  # e.g. a lone surrogate from a UTF-16 name
        return "a name the file system cannot encode"
    if policy == "confined":
        home = referrer.resolve().parent
        real = candidate.resolve() if candidate.is_absolute() else (referrer.parent / candidate).resolve()
        if not real.is_relative_to(home):
            return (f"outside {home} (refused by the backing policy: pass the file explicitly, "
                    f"or allow any path with backing_policy='any' / --parents=any)")
    return file_kind_refusal(candidate)


def file_kind_refusal(path: Path, devices: bool = False) -> str | None:
    """Why `path` is not a file an image can live in (missing, a directory, a FIFO, ...)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return exc.strerror or str(exc)
    except ValueError:  # a NUL byte in the name
        return "not a valid file name"
    return kind_refusal(mode, devices)


def kind_refusal(mode: int, devices: bool = False) -> str | None:
    """Why a file of this `st_mode` cannot hold an image: only regular files can (and block
    devices where `devices`, for raw images)."""
    if stat.S_ISREG(mode) or (devices and stat.S_ISBLK(mode)):
        return None
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket",
             stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    kind = next((name for test, name in kinds.items() if test(mode)), "not a regular file")
    return f"{kind}, not a regular file"
