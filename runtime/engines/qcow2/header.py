"""Opening a qcow2 image: the header, its feature bits and its extensions (qcow2.md §2, §15).

Everything a header field sizes or places is checked here against the file and against
qemu's limits before anything is read or allocated for it; what qemu refuses to open is
refused with the error class that says why (unsupported feature, corrupt structure).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from diskspec.formats import qcow2

from ...backend import Backend
from ...errors import CorruptError, NotThisFormatError, UnsupportedFeatureError

MAGIC = b"QFI\xfb"
MIN_CLUSTER_BITS, MAX_CLUSTER_BITS = 9, 21
MAX_L1_BYTES = 32 << 20  # QCOW_MAX_L1_SIZE
MAX_REFTABLE_BYTES = 8 << 20  # QCOW_MAX_REFTABLE_SIZE
MAX_SNAPSHOTS = 65536
MAX_BITMAPS = 65535
MAX_HOST_OFFSET = (1 << 56) - 1
KNOWN_INCOMPATIBLE = 0x1F
#: incompatible bits by number, in qemu's feature table names
INCOMPATIBLE_NAMES = {0: "dirty bit", 1: "corrupt bit", 2: "external data file",
                      3: "compression type", 4: "extended L2 entries"}
EXT = qcow2.HeaderExtensionType
KNOWN_EXTENSIONS = frozenset(int(t) for t in EXT)


@dataclass
class Layout:
    """What the header and its extensions say, checked."""

    header: qcow2.Header
    cluster_bits: int
    cluster_size: int
    version: int
    incompatible: int
    compatible: int
    autoclear: int
    refcount_order: int
    compression: int  # 0 deflate, 1 zstd
    extended_l2: bool
    l2_entries: int
    backing_name: str | None = None
    backing_format: str | None = None
    data_file_name: str | None = None
    #: (bit type name, bit, name) from the feature name table
    feature_names: list[tuple[int, int, str]] = field(default_factory=list)
    bitmaps_ext: qcow2.BitmapsExtension | None = None
    #: extensions this engine does not know: (type, offset of the data, length)
    unknown_extensions: list[tuple[int, int, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def has_data_file(self) -> bool:
        return bool(self.incompatible & 4)

    @property
    def data_file_raw(self) -> bool:
        return bool(self.autoclear & 2)

    @property
    def dirty(self) -> bool:
        return bool(self.incompatible & 1)

    @property
    def corrupt(self) -> bool:
        return bool(self.incompatible & 2)

    @property
    def lazy_refcounts(self) -> bool:
        return bool(self.compatible & 1)

    def feature_name(self, kind: int, bit: int) -> str | None:
        return next((n for k, b, n in self.feature_names if k == kind and b == bit), None)


def read_layout(backend: Backend) -> Layout:
    """Parse and check cluster 0 (header, extensions, backing file name)."""
    path = backend.path
    size = backend.size()
    head = backend.pread(0, min(size, 4096))
    if head[:4] != MAGIC:
        raise NotThisFormatError(f"{path}: no qcow2 magic")
    if len(head) < 72:
        raise CorruptError(f"{path}: truncated qcow2 header ({size} bytes)", offset=0, path="header")
    bits = int.from_bytes(head[20:24], "big")
    if not MIN_CLUSTER_BITS <= bits <= MAX_CLUSTER_BITS:
        raise UnsupportedFeatureError(f"{path}: qcow2 cluster size 2^{bits} (qemu supports "
                                      f"2^{MIN_CLUSTER_BITS} to 2^{MAX_CLUSTER_BITS})")
    c = 1 << bits
    cluster0 = backend.pread(0, min(size, c))
    try:
        header = qcow2.Header.parse(cluster0)
    except CorruptError as exc:
        raise CorruptError(f"{path}: qcow2 header: {exc}", offset=exc.offset, path="header") from None
    v3 = header.version >= 3
    incompatible = header.incompatible_features or 0
    compression = int(header.compression_type or 0) if v3 else 0
    extended = bool(incompatible & 0x10)
    layout = Layout(
        header=header, cluster_bits=bits, cluster_size=c, version=header.version,
        incompatible=incompatible, compatible=header.compatible_features or 0,
        autoclear=header.autoclear_features or 0,
        refcount_order=header.refcount_order_effective, compression=compression,
        extended_l2=extended, l2_entries=c // (16 if extended else 8))
    _read_extensions(backend, cluster0, layout)
    _check_features(path, layout)
    if header.crypt_method:
        kind = {1: "AES", 2: "LUKS"}.get(int(header.crypt_method), f"method {int(header.crypt_method)}")
        raise UnsupportedFeatureError(f"{path}: encrypted qcow2 images ({kind} encryption) are not "
                                      "supported")
    _read_backing_name(path, cluster0, layout)
    _check_tables(path, size, layout)
    return layout


def _read_extensions(backend: Backend, cluster0: bytes, layout: Layout) -> None:
    header, c = layout.header, layout.cluster_size
    path = backend.path
    offset = header.header_length_effective
    end = header.backing_file_offset if header.backing_file_offset else c
    end = min(end, c, len(cluster0))
    seen: set[int] = set()
    while offset < end:
        if offset + 8 > end:
            raise CorruptError(f"{path}: header extension at {offset:#x} is cut short",
                               offset=offset, path="header_extension")
        ext_type = int.from_bytes(cluster0[offset : offset + 4], "big")
        length = int.from_bytes(cluster0[offset + 4 : offset + 8], "big")
        data_at = offset + 8
        if length > end - data_at:
            raise CorruptError(f"{path}: header extension {ext_type:#x} at {offset:#x} is too large "
                               f"({length} bytes)", offset=offset, path="header_extension.len_data")
        data = cluster0[data_at : data_at + length]
        if ext_type == EXT.END:
            return
        if ext_type in seen and ext_type in KNOWN_EXTENSIONS:
            layout.warnings.append(f"header extension {ext_type:#010x} appears twice (the last "
                                   "one counts, as in qemu)")
        seen.add(ext_type)
        if ext_type == EXT.BACKING_FILE_FORMAT:
            if length >= 16:  # qemu's limit (its backing_format buffer)
                raise CorruptError(f"{path}: backing format extension of {length} bytes (too long)",
                                   offset=offset, path="header_extension")
            layout.backing_format = _text(data)
        elif ext_type == EXT.FEATURE_NAME_TABLE:
            table = qcow2.FeatureNameTable.parse(data, num_entries=length // 48)
            layout.feature_names = [(int(e.feature_type), e.bit_number, e.name) for e in table.entries]
        elif ext_type == EXT.BITMAPS:
            _bitmaps_ext(path, data, offset, layout)
        elif ext_type == EXT.FULL_DISK_ENCRYPTION:
            if int(layout.header.crypt_method) != 2:
                raise CorruptError(f"{path}: a full disk encryption header extension without LUKS "
                                   "encryption", offset=offset, path="header_extension")
        elif ext_type == EXT.EXTERNAL_DATA_FILE:
            layout.data_file_name = _text(data)
        else:
            layout.unknown_extensions.append((ext_type, data_at, length))
            layout.warnings.append(f"unknown header extension {ext_type:#010x} ({length} bytes at "
                                   f"{data_at:#x}) kept")
        offset = data_at + ((length + 7) & ~7)


def _bitmaps_ext(path: object, data: bytes, offset: int, layout: Layout) -> None:
    if len(data) != 24:
        raise CorruptError(f"{path}: bitmaps extension of {len(data)} bytes (24 expected)",
                           offset=offset, path="header_extension")
    ext = qcow2.BitmapsExtension.parse(data)
    if not layout.autoclear & 1:
        layout.warnings.append("a program lacking bitmap support modified this file, so all "
                               "bitmaps are now considered inconsistent")
        return
    if ext.nb_bitmaps > MAX_BITMAPS or ext.reserved:
        raise CorruptError(f"{path}: bitmaps extension: {ext.nb_bitmaps} bitmaps, reserved "
                           f"{ext.reserved}", offset=offset, path="header_extension")
    if ext.bitmap_directory_offset % layout.cluster_size:
        raise CorruptError(f"{path}: bitmap directory offset {ext.bitmap_directory_offset:#x} is "
                           "not cluster aligned", offset=offset, path="header_extension")
    layout.bitmaps_ext = ext


def _check_features(path: object, layout: Layout) -> None:
    unknown = layout.incompatible & ~KNOWN_INCOMPATIBLE
    if unknown:
        names = []
        for bit in range(64):
            if unknown >> bit & 1:
                names.append(layout.feature_name(0, bit) or f"unknown incompatible feature bit {bit}")
        raise UnsupportedFeatureError(f"{path}: unsupported qcow2 feature(s): {', '.join(names)}")
    if layout.compression not in (0, 1):
        raise UnsupportedFeatureError(f"{path}: unknown qcow2 compression type {layout.compression}")
    if layout.compression == 0 and layout.incompatible & 8:
        raise CorruptError(f"{path}: the compression type bit is set with zlib compression",
                           offset=72, path="header.incompatible_features")
    if layout.extended_l2 and layout.cluster_bits < 14:
        raise CorruptError(f"{path}: extended L2 entries need clusters of at least 16 KiB",
                           offset=20, path="header.cluster_bits")
    if layout.data_file_raw and not layout.has_data_file:
        raise CorruptError(f"{path}: data-file-raw is set without an external data file",
                           offset=88, path="header.autoclear_features")
    if layout.corrupt:
        layout.warnings.append("the image is marked corrupt (qemu opens it read-only only)")
    if layout.dirty:
        layout.warnings.append("the image is dirty: its refcounts may be out of date")


def _read_backing_name(path: object, cluster0: bytes, layout: Layout) -> None:
    h = layout.header
    if not h.backing_file_offset:
        return
    if h.backing_file_offset > layout.cluster_size or \
            h.backing_file_size > layout.cluster_size - h.backing_file_offset:
        raise CorruptError(f"{path}: invalid backing file offset {h.backing_file_offset:#x} "
                           f"(+{h.backing_file_size})", offset=8, path="header.backing_file_offset")
    raw = cluster0[h.backing_file_offset : h.backing_file_offset + h.backing_file_size]
    if len(raw) != h.backing_file_size:
        raise CorruptError(f"{path}: the backing file name runs past the end of the file",
                           offset=h.backing_file_offset, path="backing_file_name")
    layout.backing_name = _text(raw)


def _check_tables(path: object, file_size: int, layout: Layout) -> None:
    """The L1, refcount and snapshot tables fit qemu's limits and the file."""
    h, c = layout.header, layout.cluster_size
    if h.l1_size > MAX_L1_BYTES // 8:
        raise CorruptError(f"{path}: active L1 table too large ({h.l1_size} entries)",
                           offset=36, path="header.l1_size")
    per_l1 = c * layout.l2_entries
    needed = -(-h.virtual_size // per_l1)
    if needed > h.l1_size:
        raise CorruptError(f"{path}: L1 table is too small ({h.l1_size} entries for a disk of "
                           f"{h.virtual_size} bytes, which needs {needed})", offset=36,
                           path="header.l1_size")
    check_table(path, file_size, h.l1_table_offset, h.l1_size * 8, c, "active L1 table",
                "header.l1_table_offset")
    if h.refcount_table_clusters > MAX_REFTABLE_BYTES // c:
        raise CorruptError(f"{path}: reference count table too large "
                           f"({h.refcount_table_clusters} clusters)", offset=56,
                           path="header.refcount_table_clusters")
    check_table(path, file_size, h.refcount_table_offset, h.refcount_table_clusters * c, c,
                "reference count table", "header.refcount_table_offset")
    if h.nb_snapshots > MAX_SNAPSHOTS:
        raise CorruptError(f"{path}: too many snapshots ({h.nb_snapshots})", offset=60,
                           path="header.nb_snapshots")
    check_table(path, file_size, h.snapshots_offset, h.nb_snapshots * 40, c, "snapshot table",
                "header.snapshots_offset")


def check_table(path: object, file_size: int, offset: int, length: int, cluster: int, what: str,
                field_path: str) -> None:
    """A table of `length` bytes at `offset` is cluster aligned and lies inside the file."""
    if not length:
        return
    if offset % cluster:
        raise CorruptError(f"{path}: the {what} at {offset:#x} is not cluster aligned",
                           offset=offset, path=field_path)
    if offset + length > file_size:
        raise CorruptError(f"{path}: the {what} at {offset:#x} (+{length} bytes) runs past the end "
                           f"of the file ({file_size} bytes)", offset=offset, path=field_path)


def _text(raw: bytes) -> str:
    """A name stored in the image: bytes as the OS takes them (undecodable ones kept)."""
    return os.fsdecode(raw)

