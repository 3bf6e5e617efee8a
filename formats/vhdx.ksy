meta:
  id: vhdx
  title: Microsoft Virtual Hard Disk v2 (VHDX) image
  application:
    - Microsoft Hyper-V
    - Microsoft Windows (virtual disk service)
    - QEMU (vhdx driver)
    - openvmm
  file-extension:
    - vhdx
    - avhdx
  xref:
    wikidata: Q1074097
  license: MIT
  endian: le
  bit-endian: le
doc: |
  A VHDX image is a fixed, dynamic or differencing virtual disk. The file starts
  with a 1 MiB header section made of five 64 KiB slots: the file type identifier
  (offset 0), two headers (64 KiB and 128 KiB; the valid one with the larger
  sequence number is current) and two identical copies of the region table
  (192 KiB and 256 KiB); the rest of the first MiB is reserved. Every other
  object - the log, the BAT region, the metadata region, payload blocks and
  sector bitmap blocks - is 1 MiB aligned, never overlaps another one and may sit
  anywhere after the header section, in any order, with free space in between.
  The current header locates the log; the region table locates the BAT and the
  metadata region by GUID; the metadata table locates the metadata items by GUID.

  All integers are little-endian, and bit 0 of a bit field is the least
  significant bit of the least significant byte (hence `bit-endian: le`).
  Signatures are raw ASCII bytes on disk (compare bytes, not the big-endian
  numbers the specification prints). Checksums are CRC-32C (Castagnoli, the
  standard "crc32c") over the structure with the 4-byte checksum field taken as
  zero, stored little-endian.

  GUIDs are 16-byte fields in the Microsoft mixed-endian layout: Data1 u4le,
  Data2 u2le, Data3 u2le, then Data4 as 8 raw bytes (Python:
  `uuid.UUID(bytes_le=raw)`). Kaitai cannot hold 128-bit enums, so the well-known
  GUIDs are listed in the docs of region_table_entry, metadata_table_entry and
  parent_locator_header, each with its textual form and its on-disk bytes.

  The subset has no switch-on: pick the current header from `header1` /
  `header2`, find the regions in a region table, then parse the metadata table,
  the metadata items, the BAT and the log structures at the offsets they give
  with the types below.
doc-ref:
  - vhdx.md (project fact sheet)
  - "[MS-VHDX]: Virtual Hard Disk v2 (VHDX) File Format, v8.0 (2024-04-23)"
  - https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-vhdx/
instances:
  file_identifier:
    pos: 0
    type: file_identifier
    doc: The file type identifier, the first 64 KiB slot; never rewritten after creation.
  header1:
    pos: 0x10000
    type: header
    doc: First header (64 KiB slot at offset 64 KiB; only its first 4 KiB are used).
  header2:
    pos: 0x20000
    type: header
    doc: Second header (64 KiB slot at offset 128 KiB; only its first 4 KiB are used).
  region_table1:
    pos: 0x30000
    type: region_table
    doc: Region table, 64 KiB at offset 192 KiB.
  region_table2:
    pos: 0x40000
    type: region_table
    doc: Copy of the region table, 64 KiB at offset 256 KiB; identical to region_table1.
types:
  file_identifier:
    -orig-id: File Type Identifier
    doc: |
      File type identifier, the whole first 64 KiB slot at offset 0. It must be
      written at creation and must never be overwritten afterwards; the signature
      must be validated on load.
    doc-ref: "[MS-VHDX] 2.2.1 File Type Identifier"
    seq:
      - id: signature
        contents: vhdxfile
        doc: Bytes 76 68 64 78 66 69 6C 65, u8le 0x656C696678646876.
      - id: creator
        type: str
        size: 512
        encoding: UTF-16LE
        doc: |
          Optional name of the creating application, UTF-16LE, NUL-terminated and
          NUL-padded (strip from the first U+0000). Diagnostic only: it must not
          influence behaviour. QEMU writes "QEMU v<version>", openvmm leaves it zero.
      - id: reserved
        size: 0x10000 - 520
        doc: Rest of the 64 KiB slot, reserved.
  header:
    doc: |
      Header, a 4 KiB structure at the start of the 64 KiB slots at 64 KiB and
      128 KiB (the rest of each slot is reserved). A header is valid when its
      signature and checksum are correct; the current header is the only valid one
      or the valid one with the larger sequence_number (equal numbers: use header 1).
      No valid header means the file is corrupt. Headers are updated by writing the
      non-current slot with sequence_number + 1, flushing, and (should) repeating
      into the other slot; they never go through the log.
    doc-ref: "[MS-VHDX] 2.2.2 Headers"
    -checksum: {algorithm: crc32c, field: checksum, covers: whole}
    seq:
      - id: signature
        contents: head
        doc: Bytes 68 65 61 64, u4le 0x64616568.
      - id: checksum
        type: u4
        doc: CRC-32C over the entire 4096 bytes (reserved area included), this field taken as zero.
      - id: sequence_number
        type: u8
        doc: The valid header with the larger value is the current one.
      - id: file_write_guid
        size: 16
        doc: |
          GUID (Microsoft mixed-endian layout) identifying the file's contents; must
          be set to a new random value before the first modification of the file in
          each open session (metadata and log replay included).
      - id: data_write_guid
        size: 16
        doc: |
          GUID (Microsoft mixed-endian layout) identifying the user-visible data;
          must be changed before the first change a virtual-disk reader could observe
          (data, size, metadata, read-altering block states), not for block moves.
          A differencing child stores its parent's value in the `parent_linkage`
          locator key.
      - id: log_guid
        size: 16
        doc: |
          GUID (Microsoft mixed-endian layout). All zero: the log is empty and must
          not be replayed. Otherwise only log entries carrying this GUID are valid;
          it must be set to a new non-zero value before log space is overwritten.
      - id: log_version
        type: u2
        doc: |
          Log format version, must be 0. A non-zero value forbids processing the
          file unless log_guid is all zero (no log to replay); the `valid` rule
          encodes exactly that. QEMU is stricter and rejects any non-zero value.
        valid:
          expr: '_ == 0 or log_guid == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]'
      - id: version
        type: u2
        doc: VHDX format version; must be 1 ("VHDX version 2"), otherwise the file must not be processed.
        valid: 1
      - id: log_length
        type: u4
        doc: Size of the log in bytes, a multiple of 1 MiB (0 or a zero log_guid = nothing to replay).
        valid:
          expr: _ % 0x100000 == 0
      - id: log_offset
        type: u8
        doc: |
          File offset of the log, a multiple of 1 MiB; the log must not overlap any
          other structure (so it is at least 1 MiB in practice).
        valid:
          expr: _ % 0x100000 == 0
      - id: reserved
        size: 4016
        doc: Must be zero and ignored; included in the checksum.
    instances:
      is_log_guid_zero:
        value: >-
          (log_guid[0] | log_guid[1] | log_guid[2] | log_guid[3] | log_guid[4] |
          log_guid[5] | log_guid[6] | log_guid[7] | log_guid[8] | log_guid[9] |
          log_guid[10] | log_guid[11] | log_guid[12] | log_guid[13] |
          log_guid[14] | log_guid[15]) == 0
        doc: True when log_guid is all zero, i.e. the log is empty and must not be replayed.
  region_table:
    doc: |
      Region table, 64 KiB at 192 KiB with an identical copy at 256 KiB: a 16-byte
      header, entry_count entries of 32 bytes, then reserved space up to 64 KiB.
      Updates go through the log. Entries marked required whose GUID is not
      understood make the file unloadable; unknown regions must be preserved.
      QEMU reads only the first copy; openvmm reads both and repairs a differing one.
    doc-ref:
      - "[MS-VHDX] 2.2.3 Region Table"
      - "[MS-VHDX] 2.2.3.1 Region Table Header"
    -checksum: {algorithm: crc32c, field: checksum, covers: 65536}
    seq:
      - id: signature
        contents: regi
        doc: Bytes 72 65 67 69, u4le 0x69676572.
      - id: checksum
        type: u4
        doc: CRC-32C over the full 64 KiB table, this field taken as zero.
      - id: entry_count
        type: u4
        doc: Number of valid entries that follow, at most 2047.
        valid:
          max: 2047
      - id: reserved
        type: u4
        doc: Must be zero and ignored.
      - id: entries
        type: region_table_entry
        repeat: expr
        repeat-expr: entry_count
      - id: reserved_tail
        size: 0x10000 - 16 - 32 * entry_count
        doc: Space after the last entry up to the 64 KiB boundary; reserved (may be zero), covered by the checksum.
  region_table_entry:
    doc: |
      Region table entry, 32 bytes: the identity and location of one region. The
      GUID must be unique within the table; regions must not overlap each other,
      the log, or any payload / sector bitmap block.

      Known regions (both required), GUID text form / on-disk bytes:
      - BAT: 2DC27766-F623-4200-9D64-115E9BFD4A08 /
        66 77 C2 2D 23 F6 00 42 9D 64 11 5E 9B FD 4A 08
      - Metadata region: 8B7CA206-4790-4B9A-B8FE-575F050F886E /
        06 A2 7C 8B 90 47 9A 4B B8 FE 57 5F 05 0F 88 6E
    doc-ref: "[MS-VHDX] 2.2.3.2 Region Table Entry"
    seq:
      - id: guid
        size: 16
        doc: Region type, a GUID in Microsoft mixed-endian layout (see the type doc for the known ones).
      - id: file_offset
        type: u8
        doc: File offset of the region; a multiple of 1 MiB and at least 1 MiB.
        valid:
          expr: _ >= 0x100000 and _ % 0x100000 == 0
      - id: length
        type: u4
        doc: Length of the region in bytes, a multiple of 1 MiB.
        valid:
          expr: _ % 0x100000 == 0
      - id: required
        type: b1
        doc: |
          Bit 0 of the 4-byte Required field: 1 = an implementation that does not
          recognise this region must refuse to load the file. The specification
          marks both known regions required, but QEMU 7.2 (observed) writes 0 for
          them, so do not insist on 1 for BAT / metadata.
      - id: reserved
        type: b31
        doc: Bits 1-31 of the Required field, reserved (0).
  metadata_table:
    doc: |
      Metadata table, the first 64 KiB of the metadata region: a 32-byte header,
      entry_count entries of 32 bytes, then free space up to 64 KiB. Metadata items
      follow in the region at offsets >= 64 KiB, unordered, unaligned, of variable
      size. There is no checksum; updates go through the log.
    doc-ref: "[MS-VHDX] 2.6.1 Metadata Table"
    seq:
      - id: header
        type: metadata_table_header
      - id: entries
        type: metadata_table_entry
        repeat: expr
        repeat-expr: header.entry_count
      - id: reserved_tail
        size: 0x10000 - 32 - 32 * header.entry_count
        doc: Free space after the last entry up to 64 KiB; may hold data that is disregarded.
  metadata_table_header:
    doc: Metadata table header, 32 bytes at the start of the metadata region.
    doc-ref: "[MS-VHDX] 2.6.1.1 Metadata Table Header"
    seq:
      - id: signature
        contents: metadata
        doc: Bytes 6D 65 74 61 64 61 74 61 ("metadata", not "metadataheader"), u8le 0x617461646174656D.
      - id: reserved
        type: u2
        doc: Must be zero.
      - id: entry_count
        type: u2
        doc: Number of entries in the table, at most 2047 (at most 1024 of them with is_user).
        valid:
          max: 2047
      - id: reserved2
        size: 20
        doc: Must be zero.
  metadata_table_entry:
    doc: |
      Metadata table entry, 32 bytes; the (item_id, is_user) pair is unique. An
      unknown item with is_required makes the file unloadable; unknown items must
      be preserved byte for byte.

      System items (all is_user = 0), GUID text form / on-disk bytes / flags byte:
      - File Parameters (file_parameters): CAA16737-FA36-4D43-B3B6-33F0AA44E76B /
        37 67 A1 CA 36 FA 43 4D B3 B6 33 F0 AA 44 E7 6B / 0x4 (required)
      - Virtual Disk Size (virtual_disk_size): 2FA54224-CD1B-4876-B211-5DBED83BF4B8 /
        24 42 A5 2F 1B CD 76 48 B2 11 5D BE D8 3B F4 B8 / 0x6 (virtual disk, required)
      - Virtual Disk ID, a.k.a. Page 83 data (virtual_disk_id):
        BECA12AB-B2E6-4523-93EF-C309E000C746 /
        AB 12 CA BE E6 B2 23 45 93 EF C3 09 E0 00 C7 46 / 0x6
      - Logical Sector Size (logical_sector_size): 8141BF1D-A96F-4709-BA47-F233A8FAAB5F /
        1D BF 41 81 6F A9 09 47 BA 47 F2 33 A8 FA AB 5F / 0x6
      - Physical Sector Size (physical_sector_size): CDA348C7-445D-4471-9CC9-E9885251C556 /
        C7 48 A3 CD 5D 44 71 44 9C C9 E9 88 52 51 C5 56 / 0x6
      - Parent Locator (parent_locator): A8D35F2D-B30B-454D-ABF7-D3D84834AB0C /
        2D 5F D3 A8 0B B3 4D 45 AB F7 D3 D8 48 34 AB 0C / 0x4

      Defined by Microsoft's own implementation (openvmm) but not by [MS-VHDX];
      treat as unknown unless implemented (refuse when flagged required):
      - CHS parameters (chs_parameters): DA02D7BC-3D3A-423C-AC88-2A36AB21479B
      - Incomplete file: 71CC85F0-1B69-4E28-9558-C3BF83AE75D3 (present, required and
        empty while a file is being created, so that it cannot be opened)
      - PMEM label storage area: 10E1AE8A-4B7E-4169-A40F-CD70DE928393
    doc-ref:
      - "[MS-VHDX] 2.6.1.2 Metadata Table Entry"
      - "[MS-VHDX] 2.6.2 Known Metadata Items"
    seq:
      - id: item_id
        size: 16
        doc: Item GUID in Microsoft mixed-endian layout (see the type doc for the known ones).
      - id: offset
        type: u4
        doc: |
          Offset of the item relative to the start of the metadata region; at least
          64 KiB, or 0 when length is 0. The item lies entirely inside the region and
          overlaps no other item.
      - id: length
        type: u4
        doc: Item length in bytes, at most 1 MiB; 0 (with offset 0) = present but empty.
        valid:
          expr: '_ <= 0x100000 and (_ == 0 ? offset == 0 : offset >= 0x10000)'
      - id: is_user
        type: b1
        doc: Bit 0 (flag 0x1) - user metadata rather than system metadata.
      - id: is_virtual_disk
        type: b1
        doc: |
          Bit 1 (flag 0x2) - virtual disk metadata: copied to a new child on fork; on
          merge the parent's are destroyed and the child's copied to the parent.
      - id: is_required
        type: b1
        doc: Bit 2 (flag 0x4) - an implementation that does not know the item must fail to load the file.
      - id: reserved
        type: b29
        doc: Bits 3-31 of the flags word, must be zero.
      - id: reserved2
        type: u4
        doc: Must be zero.
  file_parameters:
    doc: File Parameters metadata item, 8 bytes (CAA16737-FA36-4D43-B3B6-33F0AA44E76B).
    doc-ref: "[MS-VHDX] 2.6.2.1 File Parameters"
    seq:
      - id: block_size
        type: u4
        doc: Payload block size in bytes; a power of two from 1 MiB to 256 MiB.
        valid:
          expr: _ >= 0x100000 and _ <= 0x10000000 and (_ & (_ - 1)) == 0
      - id: leave_blocks_allocated
        type: b1
        -orig-id: LeaveBlockAllocated
        doc: |
          Bit 0 - fully provisioned (fixed) file: blocks should not be moved to
          NOT_PRESENT and the file must not shrink below what every block needs.
          Ignored when has_parent is set.
      - id: has_parent
        type: b1
        doc: Bit 1 - differencing file; a parent locator item must exist.
      - id: reserved
        type: b30
        doc: Bits 2-31, must be zero.
  virtual_disk_size:
    doc: Virtual Disk Size metadata item, 8 bytes (2FA54224-CD1B-4876-B211-5DBED83BF4B8).
    doc-ref: "[MS-VHDX] 2.6.2.2 Virtual Disk Size"
    seq:
      - id: virtual_disk_size
        type: u8
        doc: |
          Virtual disk size in bytes; at most 64 TiB and a multiple of the logical
          sector size (that second rule needs the other item and is not checked here).
        valid:
          max: 0x400000000000
  virtual_disk_id:
    doc: |
      Virtual Disk ID metadata item, 16 bytes (BECA12AB-B2E6-4523-93EF-C309E000C746),
      also called "Page 83 data".
    doc-ref: "[MS-VHDX] 2.6.2.3 Virtual Disk ID"
    seq:
      - id: virtual_disk_id
        size: 16
        doc: |
          GUID (Microsoft mixed-endian layout) identifying the disk, reported as the
          SCSI page 0x83 identifier. Unlike VHD it is the same in a child and its
          parent; parent linkage uses the header's data_write_guid instead.
  logical_sector_size:
    doc: Logical Sector Size metadata item, 4 bytes (8141BF1D-A96F-4709-BA47-F233A8FAAB5F).
    doc-ref: "[MS-VHDX] 2.6.2.4 Logical Sector Size"
    seq:
      - id: logical_sector_size
        type: u4
        doc: |
          Sector size the virtual disk is exposed with, 512 or 4096; parent and child
          must match. It also fixes the chunk ratio (sectors covered by one 1 MiB
          sector bitmap block = 2^23).
        valid:
          any-of: [512, 4096]
  physical_sector_size:
    doc: Physical Sector Size metadata item, 4 bytes (CDA348C7-445D-4471-9CC9-E9885251C556).
    doc-ref: "[MS-VHDX] 2.6.2.5 Physical Sector Size"
    seq:
      - id: physical_sector_size
        type: u4
        doc: Physical sector size reported for the virtual disk, 512 or 4096.
        valid:
          any-of: [512, 4096]
  chs_parameters:
    doc: |
      CHS parameters metadata item, 8 bytes (DA02D7BC-3D3A-423C-AC88-2A36AB21479B).
      Defined by Microsoft's open-source implementation (openvmm), not by [MS-VHDX].
    doc-ref: vhdx.md, 3.1 System metadata items
    seq:
      - id: heads_per_cylinder
        type: u4
      - id: sectors_per_track
        type: u4
  parent_locator:
    doc: |
      Parent Locator metadata item (A8D35F2D-B30B-454D-ABF7-D3D84834AB0C), variable
      size: a 20-byte header and key_value_count entries of 12 bytes; the UTF-16LE
      keys and values live elsewhere inside the item. Parse it from a stream that
      starts at the item so that the entries' key/value instances resolve. Required
      when file_parameters.has_parent is set.
    doc-ref: "[MS-VHDX] 2.6.2.6 Parent Locator"
    seq:
      - id: header
        type: parent_locator_header
      - id: entries
        type: parent_locator_entry
        repeat: expr
        repeat-expr: header.key_value_count
  parent_locator_header:
    doc: |
      Parent locator header, 20 bytes. The only locator type defined by the
      specification is the VHDX parent locator,
      B04AEFB7-D19E-4A81-B789-25B8E9445913 (on-disk bytes
      B7 EF 4A B0 9E D1 81 4A B7 89 25 B8 E9 44 59 13); an implementation must
      check that it understands the type. Its keys: parent_linkage (required; the
      parent's header data_write_guid as "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}",
      compare case-insensitively), parent_linkage2, relative_path, volume_path,
      absolute_win32_path (at least one path key; try them in that order).
    doc-ref: "[MS-VHDX] 2.6.2.6.1 Parent Locator Header"
    seq:
      - id: locator_type
        size: 16
        doc: Locator type GUID in Microsoft mixed-endian layout.
      - id: reserved
        type: u2
        doc: Must be zero.
      - id: key_value_count
        type: u2
        doc: Number of key/value entries that follow (openvmm accepts at most 256).
  parent_locator_entry:
    doc: |
      Parent locator key/value entry, 12 bytes. Offsets are relative to the start of
      the parent locator item; keys and values are UTF-16LE without embedded or
      terminating NULs (lengths are in bytes). Keys are case-sensitive and unique.
    doc-ref: "[MS-VHDX] 2.6.2.6.2 Parent Locator Entry"
    seq:
      - id: key_offset
        type: u4
        doc: Offset of the key from the start of the parent locator item; must be > 0.
        valid:
          min: 1
      - id: value_offset
        type: u4
        doc: Offset of the value from the start of the parent locator item; must be > 0.
        valid:
          min: 1
      - id: key_length
        type: u2
        doc: Key length in bytes; must be > 0.
        valid:
          min: 1
      - id: value_length
        type: u2
        doc: Value length in bytes; must be > 0.
        valid:
          min: 1
    instances:
      key:
        pos: key_offset
        type: str
        size: key_length
        encoding: UTF-16LE
        doc: The key, read from the stream the entry was parsed from (valid when that stream starts at the locator item).
      value:
        pos: value_offset
        type: str
        size: value_length
        encoding: UTF-16LE
        doc: The value, read like `key`.
  bat:
    doc: |
      Block allocation table, the BAT region (region GUID
      2DC27766-F623-4200-9D64-115E9BFD4A08). Entries are raw u8 values for bulk
      decoding; each one is laid out as `bat_entry`: state = entry & 7,
      file offset = entry & 0xFFFFFFFFFFF00000.

      Payload and sector bitmap entries are interleaved: after every chunk_ratio
      payload entries comes the sector bitmap entry of that chunk, where
      chunk_ratio = 2^23 * logical_sector_size / block_size. Payload block b is
      entry b + b / chunk_ratio; the bitmap of chunk k is entry
      k * (chunk_ratio + 1) + chunk_ratio. With
      data_blocks = ceil(virtual_disk_size / block_size), the entry count is
      data_blocks + (data_blocks - 1) / chunk_ratio for fixed and dynamic files
      and ceil(data_blocks / chunk_ratio) * (chunk_ratio + 1) for differencing files.
      The BAT region is a multiple of 1 MiB and holds at least that many entries.
    doc-ref:
      - "[MS-VHDX] 2.5 BAT"
      - "[MS-VHDX] 2.5.1 BAT Entry"
    params:
      - id: num_entries
        type: u4
        doc: Total BAT entries (payload and sector bitmap), from the formulas above.
    seq:
      - id: entries
        type: u8
        repeat: expr
        repeat-expr: num_entries
        doc: Raw 64-bit BAT entries, each laid out as `bat_entry`.
  bat_entry:
    doc: |
      One BAT entry, a u8le read as bit fields from bit 0 (bit-endian le). For
      payload entries the state is a payload_block_state; for sector bitmap entries
      the same bits hold a sector_bitmap_block_state (0 not present, 6 present -
      numerically equal to the payload names not_present / fully_present).
      A non-zero file_offset_mb must be unique across the BAT, past the 1 MiB
      header section, and must not overlap any other structure.
    doc-ref: "[MS-VHDX] 2.5.1 BAT Entry"
    seq:
      - id: state
        type: b3
        enum: payload_block_state
        doc: |
          Bits 0-2, the block state. Payload entries (payload_block_state, spec names
          PAYLOAD_BLOCK_*): 0 NOT_PRESENT, 1 UNDEFINED, 2 ZERO, 3 UNMAPPED,
          6 FULLY_PRESENT, 7 PARTIALLY_PRESENT (differencing only); 4 and 5 are
          reserved, 5 being UNMAPPED in the pre-1.0 v0.95 draft (QEMU treats it as 3).
          Sector bitmap entries (sector_bitmap_block_state, SB_BLOCK_*): 0 NOT_PRESENT
          (the only state in fixed/dynamic files), 6 PRESENT (differencing only);
          1-5 and 7 reserved.
      - id: reserved
        type: b17
        doc: Bits 3-19, must be zero.
      - id: file_offset_mb
        type: b44
        doc: |
          Bits 20-63, file offset of the block in MiB. Reserved (keep 0) for
          NOT_PRESENT and ZERO; may be a "soft anchor" for UNDEFINED and UNMAPPED
          (old contents kept for reuse; not an allocated block).
    instances:
      file_offset:
        value: file_offset_mb << 20
        doc: File offset of the block in bytes (entry & 0xFFFFFFFFFFF00000).
  log_entry_header:
    -orig-id: Entry Header
    doc: |
      Log entry header, the first 64 bytes of a log entry. A log entry is a run of
      4 KiB sectors in the circular log (it may wrap around the end of the log
      region): descriptor sectors (the first holds this header and up to 126
      descriptors, each further one up to 128; ceil((descriptor_count + 2) / 128)
      sectors), then one 4 KiB data_sector per data descriptor, in descriptor order.
      Descriptors are zero_descriptor or data_descriptor, told apart by their
      signature. An entry is only valid if, besides the field rules, its log_guid
      equals the header's log_guid, entry_length is smaller than the log, tail is
      below the log length, every descriptor and data sector carries this
      sequence_number, and entry_length = descriptor sectors + 4 KiB per data
      descriptor (openvmm; QEMU only checks 32 * descriptor_count <= entry_length).
    doc-ref: "[MS-VHDX] 2.3.1.1 Entry Header"
    -checksum: {algorithm: crc32c, field: checksum, covers: entry_length}
    seq:
      - id: signature
        contents: loge
        doc: Bytes 6C 6F 67 65, u4le 0x65676F6C.
      - id: checksum
        type: u4
        doc: |
          CRC-32C over the whole entry (entry_length bytes: header, descriptor
          sectors and data sectors in log order, wrapping at the end of the log),
          this field taken as zero.
      - id: entry_length
        type: u4
        doc: Total length of the entry in bytes, a non-zero multiple of 4 KiB.
        valid:
          expr: _ != 0 and _ % 4096 == 0
      - id: tail
        type: u4
        doc: |
          Log offset of the first entry of the sequence that ends with this entry, a
          multiple of 4 KiB; may point to this entry itself.
        valid:
          expr: _ % 4096 == 0
      - id: sequence_number
        type: u8
        doc: Greater than zero; each entry is the previous one's + 1.
        valid:
          min: 1
      - id: descriptor_count
        type: u4
        doc: Number of descriptors in the entry; may be 0.
      - id: reserved
        type: u4
        doc: Must be zero.
      - id: log_guid
        size: 16
        doc: GUID (Microsoft mixed-endian layout); must equal the current header's log_guid.
      - id: flushed_file_offset
        type: u8
        doc: |
          File size that was already stable on disk when the entry was written (the
          largest true value); a file shorter than the head entry's value is
          truncated. The specification requires a multiple of 1 MiB, but QEMU
          writes the current file length, so it is not checked here.
      - id: last_file_offset
        type: u8
        doc: |
          Smallest file size holding every allocated structure at the time of the
          entry; replay extends the file to at least this size. Multiple of 1 MiB
          per the specification (not checked, as flushed_file_offset).
  zero_descriptor:
    doc: Zero descriptor, 32 bytes - write zero_length zero bytes at file_offset; has no data sector.
    doc-ref: "[MS-VHDX] 2.3.1.2 Zero Descriptor"
    seq:
      - id: signature
        contents: zero
        -orig-id: ZeroSignature
        doc: Bytes 7A 65 72 6F, u4le 0x6F72657A.
      - id: reserved
        type: u4
        doc: Must be zero.
      - id: zero_length
        type: u8
        doc: Bytes to zero, a multiple of 4 KiB.
        valid:
          expr: _ % 4096 == 0
      - id: file_offset
        type: u8
        doc: File offset to zero from, a multiple of 4 KiB.
        valid:
          expr: _ % 4096 == 0
      - id: sequence_number
        type: u8
        doc: Must equal the entry header's sequence_number.
  data_descriptor:
    doc: |
      Data descriptor, 32 bytes - one 4 KiB sector update. The 4096 bytes written at
      file_offset are leading_bytes + the matching data_sector's data + trailing_bytes.
    doc-ref: "[MS-VHDX] 2.3.1.3 Data Descriptor"
    seq:
      - id: signature
        contents: desc
        -orig-id: DataSignature
        doc: Bytes 64 65 73 63, u4le 0x63736564.
      - id: trailing_bytes
        size: 4
        doc: Bytes 4092-4095 of the update, raw (copy verbatim).
      - id: leading_bytes
        size: 8
        doc: Bytes 0-7 of the update, raw (copy verbatim).
      - id: file_offset
        type: u8
        doc: File offset to write the 4 KiB update to, a multiple of 4 KiB.
        valid:
          expr: _ % 4096 == 0
      - id: sequence_number
        type: u8
        doc: Must equal the entry header's sequence_number.
  data_sector:
    doc: |
      Data sector, 4096 bytes - the middle of one data descriptor's update. Data
      sectors follow the descriptor sectors in the order of the data descriptors.
    doc-ref: "[MS-VHDX] 2.3.1.4 Data Sector"
    seq:
      - id: signature
        contents: data
        -orig-id: DataSignature
        doc: Bytes 64 61 74 61, u4le 0x61746164.
      - id: sequence_high
        type: u4
        doc: Upper 32 bits of the entry's sequence_number.
      - id: data
        size: 4084
        doc: Bytes 8-4091 of the update.
      - id: sequence_low
        type: u4
        doc: Lower 32 bits of the entry's sequence_number.
    instances:
      sequence_number:
        value: (sequence_high << 32) | sequence_low
        doc: The 64-bit sequence number reassembled; must equal the entry header's.
enums:
  payload_block_state:
    0: not_present
    1: undefined
    2: zero
    3: unmapped
    5: unmapped_v095
    6: fully_present
    7: partially_present
  sector_bitmap_block_state:
    0: not_present
    6: present
