meta:
  id: qcow2
  title: QEMU Copy-On-Write version 2 (qcow2) image
  application:
    - QEMU
    - qemu-img
    - libvirt
  file-extension:
    - qcow2
    - qcow
  xref:
    justsolve: Qcow
    wikidata: Q1052000
  license: MIT
  endian: be
doc: |
  A qcow2 image is a sequence of host clusters of C = 2^cluster_bits bytes. Cluster 0
  holds the header, the header extensions and (optionally) the backing file name.
  Everything else - refcount table, refcount blocks, L1 table, L2 tables, guest data,
  compressed data, snapshot table, bitmap directory/tables/data, LUKS header - lives in
  reference-counted clusters. Guest data is found through a two-level table
  (L1 -> L2 -> data cluster); free space is tracked only by refcounts (0 = free).
  Version 2 headers are 72 bytes; version 3 adds feature bitmaps, the refcount order
  and the header length. All integers are big-endian.

  The header extensions start at the header length and are terminated by an extension
  of type `end`; walk them with `header_extension` (each one is `total_size` bytes
  long) - the extension area ends at backing_file_offset, or at the end of cluster 0
  when there is no backing file.
doc-ref:
  - https://gitlab.com/qemu-project/qemu/-/blob/master/docs/interop/qcow2.rst
  - specs/qcow2.md
seq:
  - id: header
    type: header
instances:
  backing_file_name:
    pos: header.backing_file_offset
    size: header.backing_file_size
    type: str
    encoding: UTF-8
    if: header.backing_file_offset != 0
    doc: |
      Backing file name, not NUL terminated, absolute or relative to the image's
      directory. Stored in cluster 0 after the header extensions.
  l1_table:
    pos: header.l1_table_offset
    type: table(header.l1_size)
    doc: The active L1 table (l1_size entries, decode each with `l1_entry`).
  refcount_table:
    pos: header.refcount_table_offset
    type: table(header.refcount_table_entries)
    doc: The refcount table (decode each entry with `refcount_table_entry`).
  snapshot_table:
    pos: header.snapshots_offset
    type: snapshot_table(header.nb_snapshots)
    if: header.nb_snapshots != 0
    doc: The internal snapshot table.
types:
  header:
    doc: |
      Image header at offset 0. Version 2 headers end at byte 72 (implicit header length
      72, refcount order 4, all feature bitmaps 0). Version 3 headers continue up to
      header_length (QEMU writes 112: 104 fixed bytes, the compression type byte and 7
      bytes of padding). Additional fields beyond byte 104 are present only when
      header_length exceeds their offset; an explicit 0 means the same as absent.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Header"
      - specs/qcow2.md section 2
    seq:
      - id: magic
        contents: ["QFI", 0xfb]
      - id: version
        type: u4
        valid:
          any-of: [2, 3]
        doc: Format version; QEMU refuses anything but 2 and 3.
      - id: backing_file_offset
        type: u8
        doc: |
          File offset of the backing file name, 0 when there is no backing file. QEMU
          refuses values greater than the cluster size.
      - id: backing_file_size
        type: u4
        valid:
          max: 1023
        doc: |
          Length of the backing file name in bytes (no NUL); undefined when there is no
          backing file. QEMU also requires backing_file_offset + this <= cluster size.
      - id: cluster_bits
        type: u4
        valid:
          min: 9
          max: 63
        doc: |
          log2 of the cluster size. The specification requires >= 9; QEMU supports 9..21
          (512 B .. 2 MiB); extended L2 entries require >= 14. The upper bound 63 only
          keeps cluster sizes within 64-bit offsets (and shifts by it cheap).
      - id: virtual_size
        type: u8
        -orig-id: size
        doc: Virtual disk size in bytes (QEMU requires a multiple of 512 on create/resize).
      - id: crypt_method
        type: u4
        enum: crypt_method
        doc: Encryption of data clusters; metadata is never encrypted.
      - id: l1_size
        type: u4
        doc: |
          Number of 8-byte entries in the active L1 table. QEMU requires
          l1_size >= ceil(virtual_size / (cluster_size * l2_entries)) and at most
          32 MiB of table.
      - id: l1_table_offset
        type: u8
        valid:
          expr: _ % (1 << cluster_bits) == 0
        doc: File offset of the active L1 table; cluster aligned.
      - id: refcount_table_offset
        type: u8
        valid:
          expr: _ % (1 << cluster_bits) == 0
        doc: File offset of the refcount table; cluster aligned.
      - id: refcount_table_clusters
        type: u4
        doc: Size of the refcount table in clusters (QEMU limit 8 MiB of table).
      - id: nb_snapshots
        type: u4
        doc: Number of internal snapshots (QEMU limit 65536).
      - id: snapshots_offset
        type: u8
        valid:
          expr: _ % (1 << cluster_bits) == 0
        doc: File offset of the snapshot table; cluster aligned.
      - id: incompatible_features
        type: u8
        if: version >= 3
        doc: |
          Version 3 only. Bit numbers are the `incompatible_feature_bit` enum:
          bit 0 dirty (refcounts may be wrong), bit 1 corrupt, bit 2 external data file,
          bit 3 compression type field present and non-zero, bit 4 extended L2 entries;
          bits 5-63 reserved. A reader must refuse an image with an unknown bit set
          (QEMU's known mask 0x1F).
      - id: compatible_features
        type: u8
        if: version >= 3
        doc: |
          Version 3 only. Bit numbers are the `compatible_feature_bit` enum: bit 0 lazy
          refcounts. Unknown bits may be ignored (QEMU's known mask 0x1).
      - id: autoclear_features
        type: u8
        if: version >= 3
        doc: |
          Version 3 only. Bit numbers are the `autoclear_feature_bit` enum: bit 0 bitmaps
          extension is consistent, bit 1 raw external data (only with incompatible bit 2,
          never with a backing file). Unknown bits must be cleared before the first write
          (QEMU's known mask 0x3).
      - id: refcount_order
        type: u4
        if: version >= 3
        valid:
          max: 6
        doc: |
          Version 3 only. refcount_bits = 1 << refcount_order (1 to 64 bits); version 2
          implies 4 (16-bit refcounts).
      - id: header_length
        type: u4
        if: version >= 3
        valid:
          min: 104
          max: 1 << cluster_bits
        doc: |
          Version 3 only. Length of the header in bytes, header extensions excluded;
          >= 104 and a multiple of 8 per the specification (QEMU checks only >= 104 and
          <= cluster size on open). QEMU writes 112.
      - id: compression_type
        type: u1
        enum: compression_type
        if: version >= 3 and header_length > 104
        valid:
          expr: (_ != compression_type::deflate) == ((incompatible_features & 0x8) != 0)
        doc: |
          Additional field at byte 104, present only when header_length > 104;
          0 (or absent) = deflate. A non-zero value must come with incompatible bit 3 and
          incompatible bit 3 requires a non-zero value (QEMU refuses the image otherwise;
          the rule cannot be checked here when the field is absent).
      - id: additional_fields
        size: header_length - 105
        if: version >= 3 and header_length > 104
        doc: |
          Bytes 105 .. header_length-1: 7 bytes of zero padding in QEMU's 112-byte
          header, then any additional fields unknown to this spec. Must be preserved
          verbatim when the header is rewritten.
    instances:
      cluster_size:
        value: 1 << cluster_bits
        doc: Cluster size C in bytes.
      header_length_effective:
        value: 'version >= 3 ? header_length : 72'
        doc: Header length in bytes (72 for version 2); the header extensions start here.
      refcount_order_effective:
        value: 'version >= 3 ? refcount_order : 4'
        doc: refcount_order, with the implicit 4 of version 2.
      refcount_bits:
        value: 1 << refcount_order_effective
        doc: Width of one refcount in bits.
      compression_type_effective:
        value: 'version >= 3 and header_length > 104 ? compression_type : compression_type::deflate'
        enum: compression_type
        doc: Compression type of compressed clusters, deflate when the field is absent.
      is_dirty:
        value: version >= 3 and (incompatible_features & 0x1) != 0
        doc: Incompatible bit 0 - refcounts may be wrong; a writer must rebuild them first.
      is_corrupt:
        value: version >= 3 and (incompatible_features & 0x2) != 0
        doc: Incompatible bit 1 - the image must not be written except to repair it.
      has_external_data_file:
        value: version >= 3 and (incompatible_features & 0x4) != 0
        doc: |
          Incompatible bit 2 - guest data lives in a separate file; data clusters are not
          refcounted, the L2 host offset equals the guest offset, no compressed clusters,
          no internal snapshots.
      has_compression_type:
        value: version >= 3 and (incompatible_features & 0x8) != 0
        doc: Incompatible bit 3 - the compression_type field is present and non-zero.
      has_extended_l2:
        value: version >= 3 and (incompatible_features & 0x10) != 0
        doc: Incompatible bit 4 - L2 entries are 128 bits with a subcluster bitmap.
      unknown_incompatible_features:
        value: 'version >= 3 ? incompatible_features & ~0x1f : 0'
        doc: Incompatible bits this spec does not know; non-zero means "do not open".
      has_lazy_refcounts:
        value: version >= 3 and (compatible_features & 0x1) != 0
        doc: Compatible bit 0 - refcount updates may be postponed after setting the dirty bit.
      bitmaps_consistent:
        value: version >= 3 and (autoclear_features & 0x1) != 0
        doc: Autoclear bit 0 - the bitmaps extension data is consistent.
      has_raw_external_data:
        value: version >= 3 and (autoclear_features & 0x2) != 0
        doc: Autoclear bit 1 - the external data file is a valid raw image by itself.
      unknown_autoclear_features:
        value: 'version >= 3 ? autoclear_features & ~0x3 : 0'
        doc: Autoclear bits this spec does not know; clear them before the first write.
      l2_entry_size:
        value: 'has_extended_l2 ? 16 : 8'
        doc: Bytes per L2 entry.
      l2_bits:
        value: 'cluster_bits - (has_extended_l2 ? 4 : 3)'
        doc: log2 of the number of entries per L2 table.
      l2_entries:
        value: 1 << l2_bits
        doc: Entries per L2 table (an L2 table is exactly one cluster).
      refcount_table_entries:
        value: refcount_table_clusters * cluster_size / 8
        doc: Number of 8-byte entries in the refcount table.
      refcount_block_entries:
        value: cluster_size * 8 / refcount_bits
        doc: Refcounts per refcount block (a refcount block is exactly one cluster).
      has_backing_file:
        value: backing_file_offset != 0
        doc: True when the image has a backing file.
  header_extension:
    doc: |
      One header extension: type, data length, data, zero padding to a multiple of 8.
      Extensions follow each other from the header length until one of type `end`; each
      known type appears at most once. Unknown types must be skipped, and preserved when
      the header is rewritten. Decode `data` by type: backing_file_format and
      external_data_file are strings (no NUL); feature_name_table is
      `feature_name_table(len_data / 48)`; bitmaps is `bitmaps_extension`;
      full_disk_encryption is `full_disk_encryption_header_pointer`.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Header extensions"
      - specs/qcow2.md section 2.2
    seq:
      - id: ext_type
        type: u4
        enum: header_extension_type
        -orig-id: Header extension type
      - id: len_data
        type: u4
        -orig-id: Length of the header extension data
      - id: data
        size: len_data
        -orig-id: Header extension data
      - id: padding
        size: (8 - len_data % 8) % 8
        doc: Padding to the next multiple of 8 bytes; normally zero.
    instances:
      total_size:
        value: 8 + len_data + (8 - len_data % 8) % 8
        doc: Bytes taken by this extension, padding included; the next one starts there.
  feature_name_table:
    doc: Payload of the feature name table extension (0x6803F857), 48-byte entries.
    doc-ref: QEMU docs/interop/qcow2.rst, "Feature name table"
    params:
      - id: num_entries
        type: u4
        doc: The extension's data length / 48.
    seq:
      - id: entries
        type: feature_name_entry
        repeat: expr
        repeat-expr: num_entries
  feature_name_entry:
    doc: |
      Names one feature bit, for error messages about unknown features. QEMU writes the
      table only for version 3 images with clusters larger than 4 KiB.
    doc-ref: QEMU docs/interop/qcow2.rst, "Feature name table"
    seq:
      - id: feature_type
        type: u1
        enum: feature_type
        -orig-id: Type of feature
      - id: bit_number
        type: u1
        valid:
          max: 63
        -orig-id: Bit number within the selected feature bitmap
      - id: name
        type: strz
        size: 46
        encoding: UTF-8
        -orig-id: Feature name
        doc: Zero padded to 46 bytes, not necessarily NUL terminated.
  bitmaps_extension:
    doc: Payload of the bitmaps extension (0x23852875), exactly 24 bytes.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Bitmaps extension"
      - specs/qcow2.md section 12
    seq:
      - id: nb_bitmaps
        type: u4
        valid:
          min: 1
        doc: Number of bitmaps in the directory (QEMU max 65535).
      - id: reserved
        type: u4
        -orig-id: reserved32
        doc: Must be zero.
      - id: bitmap_directory_size
        type: u8
        doc: Size of the bitmap directory in bytes.
      - id: bitmap_directory_offset
        type: u8
        doc: File offset of the bitmap directory; cluster aligned.
  full_disk_encryption_header_pointer:
    doc: |
      Payload of the full disk encryption header pointer extension (0x0537BE77),
      16 bytes; only with crypt_method luks. The clusters hold the LUKS header.
    doc-ref: QEMU docs/interop/qcow2.rst, "Full disk encryption header pointer"
    seq:
      - id: encryption_header_offset
        type: u8
        -orig-id: offset
        doc: File offset of the LUKS header; cluster aligned.
      - id: encryption_header_length
        type: u8
        -orig-id: length
        doc: Length of the LUKS header (and key material) in bytes.
  table:
    doc: |
      A run of 64-bit entries: the L1 table (l1_size entries), an L2 table
      (cluster_size / 8 entries; with extended L2 entries, pairs of words, so
      2 * l2_entries), the refcount table (refcount_table_clusters * cluster_size / 8)
      or a bitmap table. Decode one entry with `l1_entry`, `l2_entry`,
      `compressed_cluster_descriptor`, `refcount_table_entry` or `bitmap_table_entry`.
    params:
      - id: num_entries
        type: u4
    seq:
      - id: entries
        type: u8
        repeat: expr
        repeat-expr: num_entries
  l1_entry:
    doc: |
      L1 table entry (8 bytes). Entry 0 in the offset bits means no L2 table: everything
      under it is unallocated. QEMU's reserved mask is 0x7F000000000001FF.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Cluster mapping"
      - specs/qcow2.md section 4
    seq:
      - id: copied
        type: b1
        doc: |
          Bit 63 - the L2 table's refcount is exactly 1 (may be written in place); only
          meaningful in the active L1 table.
      - id: reserved_high
        type: b7
        doc: Bits 56-62, must be zero.
      - id: l2_table_sector
        type: b47
        doc: Bits 9-55 - the L2 table's file offset / 512 (the offset is cluster aligned).
      - id: reserved_low
        type: b9
        doc: Bits 0-8, must be zero.
    instances:
      l2_table_offset:
        value: l2_table_sector << 9
        doc: File offset of the L2 table, 0 when none.
  l2_entry:
    doc: |
      Standard L2 table entry (8 bytes), for entries whose compressed bit is clear; a
      compressed entry is decoded with `compressed_cluster_descriptor`. Cluster types:
      unallocated (offset 0, zero flag clear; read the backing file or zeros), zero
      plain (zero flag, offset 0), zero alloc (zero flag, offset != 0), normal
      (offset != 0). Offset 0 with the copied bit set is legal only with an external
      data file. QEMU's reserved mask for standard entries is 0x3F000000000001FE.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Cluster mapping"
      - specs/qcow2.md section 4
    seq:
      - id: copied
        type: b1
        doc: |
          Bit 63 - the data cluster's refcount is exactly 1; never set for compressed
          clusters; only accurate in tables reachable from the active L1. With an
          external data file every allocated entry has it.
      - id: compressed
        type: b1
        doc: Bit 62 - a compressed cluster; bits 0-61 are then a compressed descriptor.
      - id: reserved_high
        type: b6
        doc: Bits 56-61, must be zero.
      - id: host_cluster_sector
        type: b47
        doc: |
          Bits 9-55 - the data cluster's host offset / 512 (cluster aligned; an offset in
          the external data file when there is one).
      - id: reserved_low
        type: b8
        doc: Bits 1-8, must be zero.
      - id: all_zeros
        type: b1
        doc: |
          Bit 0 - the cluster reads as zeros (version 3 only, not with extended L2);
          the offset may still describe preallocated space and the backing file is not
          consulted. Set in a version 2 image it is corruption.
    instances:
      host_cluster_offset:
        value: host_cluster_sector << 9
        doc: Host offset of the data cluster, 0 when unallocated.
  l2_entry_extended:
    doc: |
      Extended L2 table entry (16 bytes, incompatible bit 4): a standard entry whose
      zero flag must be 0, then a subcluster bitmap. A cluster has 32 subclusters of
      C/32 bytes. For subcluster x: allocation bit x set = data at
      host_cluster_offset + x * C / 32; zero bit x set = reads as zeros; both set is
      invalid; neither = unallocated (backing file or zeros). With host offset 0 no
      allocation bit may be set. Compressed entries have a zero bitmap.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Extended L2 Entries"
      - specs/qcow2.md section 6
    seq:
      - id: entry
        type: l2_entry
      - id: zero_bitmap
        type: b32
        doc: Bitmap bits 32-63 - bit x set means subcluster x reads as zeros.
      - id: alloc_bitmap
        type: b32
        doc: Bitmap bits 0-31 - bit x set means subcluster x is allocated.
  compressed_cluster_descriptor:
    doc: |
      An L2 entry with the compressed bit (62) set. The split between host offset and
      sector count depends on the cluster size, so cluster_bits is a parameter:
      x = 62 - (cluster_bits - 8); bits 0..x-1 are the host byte offset of the
      compressed data (not aligned; bits above 55 must be 0); bits x..61 are the number
      of additional 512-byte sectors beyond the one holding the start offset. Read
      compressed_size_max bytes at host_offset (they may cross into the next host
      cluster and may be shared with another compressed cluster), decompress until
      exactly C bytes are produced: raw deflate (no zlib header, window 4 KiB) or one
      or more zstd frames, per the header's compression type.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Compressed Clusters Descriptor"
      - specs/qcow2.md section 5
    params:
      - id: cluster_bits
        type: u4
        doc: The header's cluster_bits.
    seq:
      - id: entry
        type: u8
        doc: The whole 64-bit L2 entry.
    instances:
      offset_bits:
        value: 62 - (cluster_bits - 8)
        -orig-id: csize_shift
        doc: x, the width of the host offset field and the position of the sector count.
      host_offset:
        value: entry & ((1 << offset_bits) - 1)
        -orig-id: coffset
        doc: Host byte offset of the compressed data.
      additional_sectors:
        value: (entry >> offset_bits) & ((1 << (cluster_bits - 8)) - 1)
        doc: Sectors beyond the one holding host_offset.
      num_sectors:
        value: additional_sectors + 1
        -orig-id: nb_csectors
        doc: 512-byte sectors the compressed data touches.
      compressed_size_max:
        value: num_sectors * 512 - host_offset % 512
        -orig-id: csize
        doc: Upper bound of the compressed data length in bytes.
      is_compressed:
        value: ((entry >> 62) & 1) == 1
        doc: Bit 62, must be 1 for this type to apply.
      is_copied:
        value: (entry >> 63) == 1
        doc: Bit 63, must be 0 for compressed clusters.
  refcount_table_entry:
    doc: |
      Refcount table entry (8 bytes): the offset of a refcount block, 0 when the block
      is not allocated (every refcount it would hold is 0). QEMU's reserved mask 0x1FF.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Host cluster management"
      - specs/qcow2.md section 3
    seq:
      - id: refcount_block_sector
        type: b55
        doc: Bits 9-63 - the refcount block's file offset / 512 (cluster aligned).
      - id: reserved
        type: b9
        doc: Bits 0-8, must be zero.
    instances:
      refcount_block_offset:
        value: refcount_block_sector << 9
        doc: File offset of the refcount block, 0 when not allocated.
  refcount_block:
    doc: |
      One refcount block: exactly one cluster of cluster_size * 8 / refcount_bits
      refcounts; refcount i describes host cluster
      (table_index * entries_per_block + i). Widths of 8 bits and more are big-endian
      unsigned integers (only the matching entries_* field is present); widths 1, 2
      and 4 are packed LSB first: refcount i is in byte i * w / 8 at bit
      (i * w) % 8 of `packed`. 0 = free, 1 = used once, >= 2 = shared.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Host cluster management"
      - specs/qcow2.md section 3
    params:
      - id: refcount_order
        type: u4
        doc: The header's refcount order (4 for version 2).
      - id: cluster_size
        type: u4
        doc: The cluster size in bytes.
    seq:
      - id: packed
        size: cluster_size
        if: refcount_order < 3
        doc: Refcounts of 1, 2 or 4 bits, packed LSB first.
      - id: entries_8
        type: u1
        repeat: expr
        repeat-expr: cluster_size
        if: refcount_order == 3
      - id: entries_16
        type: u2
        repeat: expr
        repeat-expr: cluster_size / 2
        if: refcount_order == 4
        doc: The default (and version 2) width.
      - id: entries_32
        type: u4
        repeat: expr
        repeat-expr: cluster_size / 4
        if: refcount_order == 5
      - id: entries_64
        type: u8
        repeat: expr
        repeat-expr: cluster_size / 8
        if: refcount_order == 6
  snapshot_table:
    doc: The snapshot table, nb_snapshots variable-length entries at snapshots_offset.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Snapshots"
      - specs/qcow2.md section 11
    params:
      - id: num_entries
        type: u4
    seq:
      - id: entries
        type: snapshot_entry
        repeat: expr
        repeat-expr: num_entries
  snapshot_entry:
    doc: |
      Snapshot table entry: 40 fixed bytes, extra data, ID string, name, padding to a
      multiple of 8 (the entry starts 8-aligned). Creating a snapshot copies the active
      L1 and increments the refcount of every L2 table and data cluster reachable from
      it; VM state is stored as guest data beyond the end of the virtual disk.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Snapshots"
      - specs/qcow2.md section 11
    seq:
      - id: l1_table_offset
        type: u8
        doc: File offset of the snapshot's L1 table; cluster aligned.
      - id: l1_size
        type: u4
        doc: Number of entries in the snapshot's L1 table.
      - id: id_str_size
        type: u2
        doc: Length of the unique ID string.
      - id: name_size
        type: u2
        doc: Length of the name.
      - id: date_sec
        type: u4
        doc: Creation time, seconds since the Unix epoch.
      - id: date_nsec
        type: u4
        doc: Nanoseconds part of the creation time.
      - id: vm_clock_nsec
        type: u8
        doc: Guest run time (VM clock) at creation, in ns.
      - id: vm_state_size
        type: u4
        doc: VM state size in bytes; ignored when extra data has vm_state_size_large.
      - id: extra_data_size
        type: u4
        doc: Size of the extra data (QEMU limit 1 KiB; version 3 requires >= 16).
      - id: extra_data
        type: snapshot_extra_data(extra_data_size)
        size: extra_data_size
      - id: id_str
        type: str
        size: id_str_size
        encoding: UTF-8
        doc: Unique ID string, not NUL terminated.
      - id: name
        type: str
        size: name_size
        encoding: UTF-8
        doc: Snapshot name, not NUL terminated.
      - id: padding
        size: (8 - (40 + extra_data_size + id_str_size + name_size) % 8) % 8
        doc: Padding to a multiple of 8 bytes.
    instances:
      total_size:
        value: >-
          40 + extra_data_size + id_str_size + name_size
          + (8 - (40 + extra_data_size + id_str_size + name_size) % 8) % 8
        doc: Bytes taken by this entry, padding included; the next one starts there.
  snapshot_extra_data:
    doc: |
      Snapshot extra data; each field is present only if the extra data is long enough.
      Bytes beyond the known fields must be preserved.
    doc-ref: QEMU docs/interop/qcow2.rst, "Snapshots"
    params:
      - id: len_extra_data
        type: u4
        doc: The entry's extra_data_size.
    seq:
      - id: vm_state_size_large
        type: u8
        if: len_extra_data >= 8
        doc: 64-bit VM state size in bytes.
      - id: disk_size
        type: u8
        if: len_extra_data >= 16
        doc: Virtual disk size at snapshot time.
      - id: icount
        type: s8
        if: len_extra_data >= 24
        doc: Record/replay instruction count at snapshot time, -1 when disabled.
      - id: unknown
        size: len_extra_data - 24
        if: len_extra_data > 24
        doc: Extra data unknown to this spec.
  bitmap_directory:
    doc: The bitmap directory, nb_bitmaps variable-length entries.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Bitmap directory"
      - specs/qcow2.md section 12
    params:
      - id: num_entries
        type: u4
    seq:
      - id: entries
        type: bitmap_directory_entry
        repeat: expr
        repeat-expr: num_entries
  bitmap_directory_entry:
    doc: |
      Bitmap directory entry: 24 fixed bytes, extra data, name, zero padding to a
      multiple of 8. Bit for guest byte b: bit (b >> granularity_bits) of the bitmap
      data, LSB first within bytes.
    doc-ref:
      - QEMU docs/interop/qcow2.rst, "Bitmap directory"
      - specs/qcow2.md section 12
    seq:
      - id: bitmap_table_offset
        type: u8
        doc: File offset of the bitmap table; cluster aligned.
      - id: bitmap_table_size
        type: u4
        doc: Number of entries in the bitmap table.
      - id: reserved_flags
        type: b29
        doc: Flags bits 3-31, must be zero.
      - id: extra_data_compatible
        type: b1
        doc: Flags bit 2 - the extra data may be ignored if not understood.
      - id: auto
        type: b1
        doc: Flags bit 1 - the bitmap tracks writes to the image.
      - id: in_use
        type: b1
        doc: Flags bit 0 - the bitmap was not saved correctly and may be inconsistent.
      - id: bitmap_type
        type: u1
        enum: bitmap_type
        -orig-id: type
      - id: granularity_bits
        type: u1
        valid:
          max: 63
        doc: log2 of the bytes per bitmap bit (QEMU 9..31).
      - id: name_size
        type: u2
        valid:
          min: 1
        doc: Length of the name (QEMU <= 1023).
      - id: extra_data_size
        type: u4
      - id: extra_data
        size: extra_data_size
      - id: name
        type: str
        size: name_size
        encoding: UTF-8
        doc: Bitmap name, unique in the image, not NUL terminated.
      - id: padding
        size: (8 - (24 + extra_data_size + name_size) % 8) % 8
        doc: Zero padding to a multiple of 8 bytes.
    instances:
      total_size:
        value: >-
          24 + extra_data_size + name_size
          + (8 - (24 + extra_data_size + name_size) % 8) % 8
        doc: Bytes taken by this entry, padding included.
  bitmap_table_entry:
    doc: |
      Bitmap table entry (8 bytes): one cluster of bitmap data, or - with offset 0 -
      a whole cluster of all-zero or all-one bits.
    doc-ref: QEMU docs/interop/qcow2.rst, "Bitmap table"
    seq:
      - id: reserved_high
        type: b8
        doc: Bits 56-63, must be zero.
      - id: data_cluster_sector
        type: b47
        doc: Bits 9-55 - the bitmap data cluster's file offset / 512 (cluster aligned).
      - id: reserved_low
        type: b8
        doc: Bits 1-8, must be zero.
      - id: all_ones
        type: b1
        doc: Bit 0 - with offset 0, the cluster's bits are all ones (else all zeros).
    instances:
      data_cluster_offset:
        value: data_cluster_sector << 9
        doc: File offset of the bitmap data cluster, 0 when none.
enums:
  crypt_method:
    0: none
    1:
      id: aes
      doc: Legacy AES-CBC, IV = plain64 of the guest sector; deprecated.
    2:
      id: luks
      doc: LUKS; header referenced by the full disk encryption extension, IV from the host sector.
  compression_type:
    0:
      id: deflate
      doc: Raw deflate stream (RFC 1951), "zlib" in QEMU's UI.
    1: zstd
  header_extension_type:
    0x00000000: end
    0xe2792aca: backing_file_format
    0x6803f857: feature_name_table
    0x23852875: bitmaps
    0x0537be77: full_disk_encryption
    0x44415441: external_data_file
  feature_type:
    0: incompatible
    1: compatible
    2: autoclear
  incompatible_feature_bit:
    0: dirty
    1: corrupt
    2: external_data_file
    3: compression_type
    4: extended_l2
  compatible_feature_bit:
    0: lazy_refcounts
  autoclear_feature_bit:
    0: bitmaps
    1: raw_external_data
  bitmap_type:
    1: dirty_tracking
