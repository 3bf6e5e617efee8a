meta:
  id: qed
  title: QEMU Enhanced Disk (QED) image
  application:
    - QEMU
    - qemu-img
  file-extension:
    - qed
  license: MIT
  endian: le
doc: |
  A QED image is a sequence of clusters. The first header_size clusters hold the 64-byte
  header, the backing file name and any extra data; then come the L1 table and, in
  allocation order, data clusters and L2 tables. L1 and L2 tables are each table_size
  contiguous clusters of 64-bit entries. L2 entries point straight at data clusters;
  the value 1 marks a zero cluster. There are no refcounts, snapshots, compression or
  encryption: space is only allocated by appending at the end of the file, and crash
  consistency relies on the need-check feature bit plus a check that finds bad
  pointers. All integers are little-endian.
doc-ref:
  - https://gitlab.com/qemu-project/qemu/-/blob/master/docs/interop/qed_spec.rst
  - specs/qed.md
seq:
  - id: header
    type: header
instances:
  backing_filename:
    pos: header.backing_filename_offset
    size: header.backing_filename_size
    type: str
    encoding: UTF-8
    if: header.has_backing_file
    doc: |
      Backing file name, not NUL terminated, absolute or relative to the image's
      directory; inside the first header_size clusters.
  l1_table:
    pos: header.l1_table_offset
    type: table(header.table_nelems)
    doc: The L1 table.
types:
  header:
    doc: |
      Image header at offset 0, 64 bytes. Unknown `features` bits: do not open;
      unknown `compat_features` bits: open and ignore; unknown `autoclear_features`
      bits: open, but clear them before writing.
    doc-ref:
      - QEMU docs/interop/qed_spec.rst, "Header"
      - specs/qed.md section 2
    seq:
      - id: magic
        contents: ["QED", 0]
      - id: cluster_size
        type: u4
        valid:
          expr: _ >= 4096 and _ <= 67108864 and (_ & (_ - 1)) == 0
        doc: Cluster size C in bytes; a power of two, 4 KiB .. 64 MiB (QEMU default 64 KiB).
      - id: table_size
        type: u4
        valid:
          any-of: [1, 2, 4, 8, 16]
        doc: Clusters per L1 or L2 table; a power of two, 1 .. 16 (QEMU default 4).
      - id: header_size
        type: u4
        valid:
          min: 1
        doc: |
          Clusters used by the header and any extra data before the regular clusters
          (QEMU writes 1 and requires header_size * cluster_size to fit in 32 bits).
      - id: features
        type: u8
        doc: |
          Incompatible feature bits (`feature_flag` masks): 0x1 backing file,
          0x2 need check, 0x4 backing format no probe. An image with an unknown bit set
          must not be opened (known mask 0x7).
      - id: compat_features
        type: u8
        doc: Compatible feature bits; none defined, unknown bits are ignored.
      - id: autoclear_features
        type: u8
        doc: |
          Auto-clear feature bits; none defined, unknown bits are cleared (QEMU rewrites
          the header on every writable open).
      - id: l1_table_offset
        type: u8
        valid:
          expr: _ % cluster_size == 0 and _ >= header_size * cluster_size
        doc: |
          File offset of the L1 table; cluster aligned and after the header clusters
          (QEMU also requires the table to end within the file).
      - id: image_size
        type: u8
        valid:
          expr: >-
            _ % 512 == 0
            and _ <= (cluster_size * table_size / 8) * (cluster_size * table_size / 8) * cluster_size
        doc: |
          Virtual disk size in bytes; a multiple of 512 and at most
          table_nelems^2 * cluster_size (computed without 64-bit wrap-around).
      - id: backing_filename_offset
        type: u4
        doc: |
          Byte offset of the backing file name from the start of the file; meaningful
          only with the backing file feature (QEMU writes 64, right after the header,
          and 0 when there is no backing file).
      - id: backing_filename_size
        type: u4
        valid:
          expr: >-
            (features & 0x1) == 0
            or backing_filename_offset + _ <= header_size * cluster_size
        doc: |
          Length of the backing file name in bytes, not NUL terminated. With the backing
          file feature the name must lie within the first header_size clusters.
    instances:
      has_backing_file:
        value: (features & 0x1) != 0
        -orig-id: QED_F_BACKING_FILE
        doc: The image has a backing file (name at backing_filename_offset).
      needs_check:
        value: (features & 0x2) != 0
        -orig-id: QED_F_NEED_CHECK
        doc: |
          The image may be inconsistent (dirty) and must be checked before use; a
          writable open runs the check with repair.
      backing_format_no_probe:
        value: (features & 0x4) != 0
        -orig-id: QED_F_BACKING_FORMAT_NO_PROBE
        doc: The backing file is raw; never probe its format.
      unknown_features:
        value: features & ~0x7
        doc: Incompatible bits this spec does not know; non-zero means "do not open".
      table_nelems:
        value: cluster_size * table_size / 8
        doc: Entries per L1 or L2 table.
      max_image_size:
        value: table_nelems * table_nelems * cluster_size
        doc: Largest virtual size the two-level table can map.
      header_bytes:
        value: header_size * cluster_size
        doc: Bytes before the first regular cluster.
  table:
    doc: |
      An L1 or L2 table: table_size contiguous clusters, table_nelems 64-bit entries.
      L1 entry: 0 = no L2 table, else the L2 table's file offset. L2 entry:
      0 = unallocated (read the backing file, zeros past its end or without one),
      1 = zero cluster (reads as zeros, hides the backing file), else the data
      cluster's file offset. Offsets are cluster aligned (bits below the cluster size,
      at least the low 12, are reserved and zero), >= header_size * cluster_size and
      below the end of the file.
    doc-ref:
      - QEMU docs/interop/qed_spec.rst, "Tables"
      - specs/qed.md section 3
    params:
      - id: num_entries
        type: u4
        doc: The header's table_nelems (cluster_size * table_size / 8).
    seq:
      - id: entries
        type: u8
        repeat: expr
        repeat-expr: num_entries
enums:
  feature_flag:
    0x1:
      id: backing_file
      -orig-id: QED_F_BACKING_FILE
      doc: The image has a backing file.
    0x2:
      id: need_check
      -orig-id: QED_F_NEED_CHECK
      doc: The image must be checked before use (dirty).
    0x4:
      id: backing_format_no_probe
      -orig-id: QED_F_BACKING_FORMAT_NO_PROBE
      doc: The backing file is raw; never probe its format.
  l2_entry_special:
    0:
      id: unallocated
      doc: Read the backing file (zeros past its end or without one).
    1:
      id: zero_cluster
      doc: Reads as zeros and hides the backing file; no space used.
