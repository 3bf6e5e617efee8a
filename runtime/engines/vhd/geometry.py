"""VHD sizes: CHS geometry (the specification's algorithm) and which size field to trust."""

from __future__ import annotations

from diskspec.formats import vhd

from ...errors import DiskspecError

SECTOR = 512
MAX_CHS_SECTORS = 65535 * 16 * 255
#: QEMU's limit (and the specification's 2040 GB): 0xFF000000 sectors
MAX_SECTORS = 0xFF000000

#: creators whose images Virtual PC sizes by geometry (QEMU >= 10.0 rule; vhd.md 4.1)
CHS_CREATORS = {vhd.CreatorApplication.VIRTUAL_PC, vhd.CreatorApplication.QEMU}

SIZE_RULES = ("auto", "chs", "current_size")


def chs(total_sectors: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) for a disk of `total_sectors` (vhd.md 3)."""
    total = min(total_sectors, MAX_CHS_SECTORS)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max(4, (cth + 1023) // 1024)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def creation_size(size: int, force_size: bool) -> tuple[int, tuple[int, int, int]]:
    """The size and geometry a new image gets: QEMU's rounding up to a CHS-representable size
    (vhd.md 4.3), or the exact size with the maximum geometry when `force_size`."""
    size = -(-size // SECTOR) * SECTOR
    if size // SECTOR > MAX_SECTORS:
        # qemu-img's words (scripts match them), then the limit
        raise DiskspecError("The image size is too large for file format 'vpc' "
                            f"(at most {MAX_SECTORS * SECTOR} bytes)")
    if force_size:
        return size, (65535, 16, 255)
    wanted = min(MAX_CHS_SECTORS, size // SECTOR)
    c = h = s = 0
    i = 0
    while wanted > c * h * s:
        c, h, s = chs(wanted + i)
        i += 1
    if c * h * s == MAX_CHS_SECTORS:
        return size, (c, h, s)
    return c * h * s * SECTOR, (c, h, s)


def virtual_size(footer: vhd.Footer, rule: str = "auto") -> int:
    """The guest size in bytes: geometry for Virtual PC / QEMU creators, else current_size."""
    if rule not in SIZE_RULES:
        raise DiskspecError(f"size_rule must be one of {', '.join(SIZE_RULES)}, not {rule!r}")
    g = footer.disk_geometry
    chs_sectors = g.cylinders * g.heads * g.sectors_per_track
    use_chs = rule == "chs" or (rule == "auto" and footer.creator_application in CHS_CREATORS)
    if not use_chs or chs_sectors == MAX_CHS_SECTORS:
        return footer.current_size // SECTOR * SECTOR
    return chs_sectors * SECTOR
