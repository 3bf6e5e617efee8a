meta:
  id: add_cow
  title: add-cow copy-on-write metadata file
  application:
    - QEMU add-cow driver by IBM (Dong Xu Wang, 2011-2013; posted v1..V20, never merged)
  file-extension: add-cow
  license: MIT
  endian: be
doc: |
  add-cow gives a plain image file (normally raw) a backing file and copy-on-write by
  keeping a separate `.add-cow` metadata file made of a header and an allocation
  bitmap. A bit of 0 means "read from the backing file", 1 means "read from the image
  file", which holds the data at the guest's own offsets; the virtual size is the
  image file's size and is not stored here. Once every bit is 1 the add-cow file and
  the backing file can be dropped.

  Two layouts are declared, told apart by the first bytes: the founding v7 layout
  (`header_v7`, "ADD_COW\xff", big-endian, one bit per 512-byte sector, bitmap at
  byte 2560) and the final V19/V20 layout (`header_v20`, "ACOW", little-endian, one
  bit per cluster, bitmap at header_size). The subset has no switch-on: read
  `signature` and pick the matching instance. The file-level endianness is that of
  the founding layout; `header_v20` overrides it.
doc-ref:
  - add-cow-v7.md ([PATCH 1/2 v7] block add-cow file format, docs/specs/add-cow.txt, March 2012)
  - add-cow.md (final V19 spec text / V20 driver, August 2013)
  - http://patchwork.ozlabs.org/patch/143883/
instances:
  signature:
    pos: 0
    type: u4be
    doc: |
      First four bytes as a big-endian u32: 0x4144445F ("ADD_") for v7,
      0x41434F57 ("ACOW") for V19/V20.
  is_v7:
    value: signature == 0x4144445f
    doc: True when `header_v7` is the one to read.
  is_v20:
    value: signature == 0x41434f57
    doc: True when `header_v20` is the one to read.
  header_v7:
    pos: 0
    type: header_v7
    doc: The founding header; fails on its magic unless is_v7.
  header_v20:
    pos: 0
    type: header_v20
    doc: The final header; fails on its magic unless is_v20.
types:
  header_v7:
    doc: |
      Founding (v7) header, 2560 bytes, big-endian; the sector bitmap follows at byte
      2560 and runs to the end of the file. add-cow.md calls this layout UNCONFIRMED;
      add-cow-v7.md (the project's founding document) wins, so it is confirmed here.
    doc-ref: add-cow-v7.md, "Header — all numbers big-endian"
    seq:
      - id: magic
        contents: ["ADD_COW", 0xff]
        doc: Bytes 41 44 44 5F 43 4F 57 FF.
      - id: version
        type: u4
        doc: |
          Only 1 is valid; any other value must be refused with "unsupported feature:
          ADD-COW version N". Probing needs magic and version.
      - id: backing_file
        type: strz
        size: 1024
        encoding: UTF-8
        doc: |
          Backing file name, NUL-padded, at most 1023 bytes; relative names are
          relative to the add-cow file's directory, names with a protocol prefix are
          used as they are.
      - id: image_file
        type: strz
        size: 1024
        encoding: UTF-8
        doc: |
          Name of the raw image file, NUL-padded, at most 1023 bytes, never empty;
          relative to the add-cow file's directory like backing_file.
      - id: reserved
        size: 500
        doc: Zero; makes the bitmap start at a multiple of 512 (byte 2560).
    instances:
      bitmap:
        pos: 2560
        type: bitmap(_io.size - 2560)
        doc: |
          The sector bitmap, from byte 2560 to the end of the file (the file is
          truncated to 2560 + ceil(sectors / 8)); needs the whole file as the parse
          buffer.
  header_v20:
    meta:
      endian: le
    doc: |
      Final (V19 spec / V20 driver) header: a 76-byte fixed part, little-endian, then
      the name area up to header_size, which holds the backing and image file names at
      the offsets given here (every other byte of it is zero). The cluster bitmap
      starts at header_size.
    doc-ref: add-cow.md §2.1 "Header fixed part (76 bytes)"
    seq:
      - id: magic
        contents: ACOW
        doc: Bytes 41 43 4F 57, u32 0x574F4341 little-endian.
      - id: backing_offset
        type: u4
        doc: |
          Offset of the backing file name in this file; 0 = no backing file, else in
          [76, header_size - 2].
      - id: backing_size
        type: u4
        doc: |
          Length of the backing file name, not NUL-terminated; 0 if and only if
          backing_offset is 0; backing_offset + backing_size <= header_size.
      - id: image_offset
        type: u4
        doc: Offset of the image file name; mandatory, in [76, header_size - 2].
      - id: image_size
        type: u4
        doc: |
          Length of the image file name, not NUL-terminated;
          image_offset + image_size <= header_size.
      - id: cluster_bits
        type: u4
        doc: |
          Cluster size = 1 << cluster_bits. The spec requires >= 12; the driver
          accepts 12..21 (2 MiB, QEMU's limit) and refuses anything else. Default 16.
      - id: features
        type: u8
        doc: Incompatible feature bits; none are defined, so any set bit refuses the open.
      - id: compat_features
        type: u8
        doc: |
          Compatible feature bits, unknown ones ignored. Bit 0 = ALL_ALLOCATED (every
          cluster is in the image file; set by create when there is no backing file).
      - id: header_size
        type: u4
        doc: |
          Total header bytes = offset of the bitmap. Writers store
          max(4096, cluster_size); the driver requires exactly that, we read any value
          >= 76 (the sheet's recommendation).
      - id: backing_fmt
        type: strz
        size: 16
        encoding: ASCII
        doc: |
          Format of the backing file, NUL-terminated, zero-padded; all zero without a
          backing file, non-empty with one (probed at create when not given).
      - id: image_fmt
        type: strz
        size: 16
        encoding: ASCII
        doc: Format of the image file, NUL-terminated, zero-padded, never empty ("raw").
    instances:
      cluster_size:
        value: 1 << cluster_bits
        doc: Bytes per cluster (one bitmap bit).
      all_allocated:
        value: (compat_features & 1) != 0
        doc: Compatible feature ALL_ALLOCATED; the backing file and bitmap are then unused.
      backing_file:
        pos: backing_offset
        size: backing_size
        type: str
        encoding: UTF-8
        doc: |
          Backing file name (empty when there is none); relative names are relative
          to the add-cow file's directory. Needs at least header_size bytes as the
          parse buffer.
      image_file:
        pos: image_offset
        size: image_size
        type: str
        encoding: UTF-8
        doc: |
          Image file name, relative like backing_file; must differ from it. Needs at
          least header_size bytes as the parse buffer.
      name_area:
        pos: 76
        size: header_size - 76
        doc: The whole name area, bytes 76 .. header_size.
      bitmap:
        pos: header_size
        type: bitmap(_io.size - header_size)
        doc: |
          The cluster bitmap, from header_size to the end of the file; needs the whole
          file as the parse buffer.
  bitmap:
    doc: |
      Allocation bitmap, LSB first: unit u is bit u % 8 of byte u / 8 (bit value
      1 << (u % 8)). 0 = read the backing file (zeros past its end or without one),
      1 = read the image file. Bits are set only after the data they cover is stable
      in the image file. Unit: v7 - one 512-byte sector, ceil(sectors / 8) bytes at
      byte 2560; V20 - one cluster, ceil(clusters / 8) bytes rounded up to a multiple
      of cluster_size at header_size, trailing bits zero and ignored.
    doc-ref:
      - add-cow-v7.md, "Bitmap"
      - add-cow.md §2.2 "COW bitmap"
    params:
      - id: num_bytes
        type: u8
    seq:
      - id: data
        size: num_bytes
