"""The error hierarchy users catch (defined next to the codecs, which raise it too)."""

from diskspec.formats.errors import (
    BuildError,
    ChecksumError,
    CorruptError,
    DiskspecError,
    ImageInUseError,
    NotThisFormatError,
    ParentMissingError,
    ReadOnlyError,
    TruncatedError,
    UnsupportedFeatureError,
    ValidationError,
)

__all__ = [
    "BuildError",
    "ChecksumError",
    "CorruptError",
    "DiskspecError",
    "ImageInUseError",
    "NotThisFormatError",
    "ParentMissingError",
    "ReadOnlyError",
    "TruncatedError",
    "UnsupportedFeatureError",
    "ValidationError",
]
