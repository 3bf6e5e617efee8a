"""diskspec runtime: engines, images, tools and the command line.

    import diskspec.runtime
    with diskspec.runtime.open("disk.vhd") as disk:
        first_sector = disk.read(512)
"""

from .errors import (
    CorruptError,
    DiskspecError,
    ImageInUseError,
    NotThisFormatError,
    ParentMissingError,
    ReadOnlyError,
    UnsupportedFeatureError,
)
from .extent import Extent, State
from .image import Image, create, open

__version__ = "0.1.0"  # the package's version (pyproject.toml reads it from here)

__all__ = [
    "CorruptError",
    "DiskspecError",
    "Extent",
    "ImageInUseError",
    "Image",
    "NotThisFormatError",
    "ParentMissingError",
    "ReadOnlyError",
    "State",
    "UnsupportedFeatureError",
    "__version__",
    "create",
    "open",
]
