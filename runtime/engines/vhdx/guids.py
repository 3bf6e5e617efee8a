"""Well-known VHDX GUIDs (values of [MS-VHDX], in the on-disk mixed-endian byte order)."""

from __future__ import annotations

import uuid


def guid(text: str) -> bytes:
    """The 16 on-disk bytes of a GUID written as text."""
    return uuid.UUID(text).bytes_le


def text(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=bytes(raw)))


BAT_REGION = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")

FILE_PARAMETERS = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
VIRTUAL_DISK_ID = guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_SIZE = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE = guid("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")

VHDX_LOCATOR_TYPE = guid("B04AEFB7-D19E-4A81-B789-25B8E9445913")

KNOWN_REGIONS = {BAT_REGION: "BAT", METADATA_REGION: "metadata"}
KNOWN_ITEMS = {
    FILE_PARAMETERS: "file parameters",
    VIRTUAL_DISK_SIZE: "virtual disk size",
    VIRTUAL_DISK_ID: "virtual disk id",
    LOGICAL_SECTOR_SIZE: "logical sector size",
    PHYSICAL_SECTOR_SIZE: "physical sector size",
    PARENT_LOCATOR: "parent locator",
}
