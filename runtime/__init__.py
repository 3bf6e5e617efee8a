"""diskspec runtime: engines, images, tools and the command line.

    import diskspec.runtime
    with diskspec.runtime.open("disk.vhd") as disk:
        first_sector = disk.read(512)
"""

from __future__ import annotations

__version__ = "0.1.0"  # the package's version (pyproject.toml reads it from here)

#: public name -> the module that defines it, imported when the name is first used (PEP 562):
#: the command line's first module (entry) and its other submodules are then reached without
#: importing images and engines first
_EXPORTS = {
    "CorruptError": ".errors",
    "DiskspecError": ".errors",
    "ImageInUseError": ".errors",
    "NotThisFormatError": ".errors",
    "ParentMissingError": ".errors",
    "ReadOnlyError": ".errors",
    "UnsupportedFeatureError": ".errors",
    "Extent": ".extent",
    "State": ".extent",
    "Image": ".image",
    "create": ".image",
    "open": ".image",
}
#: subpackages that are public names too: `diskspec.runtime.dissect(path)` (a callable package)
_SUBPACKAGES = {"dissect"}

__all__ = sorted([*_EXPORTS, *_SUBPACKAGES, "__version__"])

TYPE_CHECKING = False  # mypy takes this branch; at run time `typing` is not imported for it
if TYPE_CHECKING:  # `X as X`: re-exported names, for type checkers
    from . import dissect as dissect
    from .errors import CorruptError as CorruptError
    from .errors import DiskspecError as DiskspecError
    from .errors import ImageInUseError as ImageInUseError
    from .errors import NotThisFormatError as NotThisFormatError
    from .errors import ParentMissingError as ParentMissingError
    from .errors import ReadOnlyError as ReadOnlyError
    from .errors import UnsupportedFeatureError as UnsupportedFeatureError
    from .extent import Extent as Extent
    from .extent import State as State
    from .image import Image as Image
    from .image import create as create
    from .image import open as open

def __getattr__(name: str) -> object:
    import importlib

    if name in _SUBPACKAGES:  # importing it makes it an attribute of this package
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
