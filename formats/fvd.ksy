meta:
  id: fvd
  title: FVD (Fast Virtual Disk) image
  application:
    - QEMU FVD driver by IBM (Chunqiang Tang, 2010-2011; proposed, never merged upstream)
  file-extension: fvd
  license: MIT
  endian: le
doc: |
  FVD keeps a copy-on-write image of a read-only base (backing) image. The metadata
  file holds a header, a bitmap (one bit per block of the base-image region: 0 = the
  block is still in the base image, 1 = it is in the FVD data region), an optional
  lookup table (compact images: virtual chunk -> physical chunk) and a journal of
  512-byte sectors that logs bitmap and table updates. Data lives in the same file
  or in a separate data file. Every metadata region starts on a 4096-byte boundary
  and is reached through the offset stored in the header.

  Two incompatible header layouts exist and are told apart by the first four bytes:
  the founding layout (`header`, bytes "FVD\0", this project's primary codec) and the
  IBM driver's layout (`ibm_header`, u32 0x5143F5A9 = bytes A9 F5 43 51). The
  subset has no switch-on: read `signature` and pick the matching instance.
  All integers are little-endian; all structures are packed.
doc-ref:
  - fvd-seed-layout.md (founding layout, block/fvd.h of the 2010 FVD skeleton)
  - fvd.md (semantics, IBM layout, journal)
  - https://wiki.qemu.org/Features/FVD/Specification
instances:
  signature:
    pos: 0
    type: u4
    doc: |
      First four bytes as a little-endian u32: 0x00445646 ("FVD\0") for the
      founding layout, 0x5143F5A9 for the IBM layout.
  is_founding_layout:
    value: signature == 0x00445646
    doc: True when `header` (founding layout) is the one to read.
  is_ibm_layout:
    value: signature == 0x5143f5a9
    doc: True when `ibm_header` (IBM driver layout) is the one to read.
  header:
    pos: 0
    type: header
    doc: The founding header; fails on its magic unless is_founding_layout.
  ibm_header:
    pos: 0
    type: ibm_header
    doc: The IBM-layout header; fails on its magic unless is_ibm_layout.
types:
  header:
    doc: |
      Founding FVD header, 7440 bytes, at offset 0; the header area is `header_size`
      bytes (the struct rounded up to 4096, i.e. 8192) and the bytes after the struct
      are zero. Regions follow in the order bitmap, journal, table, data, each at the
      offset named here. New fields are only ever appended; an old reader reads the
      prefix it knows. Journal records of this layout are `journal_record`.
    doc-ref: fvd-seed-layout.md, "Header (packed, little-endian, 7440 bytes before rounding)"
    seq:
      - id: magic
        contents: ["FVD", 0]
        doc: Bytes 46 56 44 00, u32 'F' | 'V' << 8 | 'D' << 16.
      - id: header_size
        type: u4
        doc: |
          Bytes of the header area, the struct size rounded up to 4096 (8192); a
          reader must not assume a fixed size.
      - id: create_version
        type: u4
        doc: Version of the software that created the image (1).
      - id: last_open_version
        type: u4
        doc: |
          Version of the software that opened the image read-write most recently; set
          on every read-write open.
      - id: virtual_disk_size
        type: u8
        doc: Size of the virtual disk seen by the guest, in bytes.
      - id: data_offset
        type: u8
        doc: |
          Absolute offset of the virtual disk data in this file, 4 KiB aligned (the
          data is in `data_file` instead when that is not empty).
      - id: data_file
        type: strz
        size: 1024
        encoding: UTF-8
        doc: Optional separate data file, NUL-padded; empty = data in this file.
      - id: data_file_fmt
        type: strz
        size: 16
        encoding: ASCII
        doc: Format of data_file, NUL-padded; empty = probe.
      - id: base_img
        type: strz
        size: 1024
        encoding: UTF-8
        doc: Base (backing) image file name, NUL-padded; empty = no base image.
      - id: base_img_fmt
        type: strz
        size: 16
        encoding: ASCII
        doc: Format of base_img, NUL-padded; empty = probe.
      - id: base_img_size
        type: u8
        doc: Bytes of the virtual disk covered by the base image (and by the bitmap).
      - id: bitmap_offset
        type: u8
        doc: Absolute offset of the bitmap, 4 KiB aligned.
      - id: bitmap_size
        type: u8
        doc: Bitmap bytes on disk, rounded up to 4096.
      - id: block_size
        type: u8
        doc: Bytes of the virtual disk covered by one bitmap bit.
      - id: journal_offset
        type: u8
        doc: Absolute offset of the journal.
      - id: journal_size
        type: u8
        doc: Journal bytes on disk (512-byte sectors); 0 = no journal.
      - id: clean_shutdown
        type: u4
        doc: 1 when the last close was clean; 0 means the journal must be replayed.
      - id: stable_journal_epoch
        type: u8
        doc: |
          Table journal records with an older epoch are ignored by replay; needed only
          once chunks can be relocated (see chunks_relocated).
      - id: journal_buf_size
        type: u8
        doc: Bytes of the in-memory journal buffer; no effect on the disk layout.
      - id: journal_clean_buf_period
        type: u8
        doc: Milliseconds after which a partly filled journal buffer is written.
      - id: table_offset
        type: u8
        doc: Absolute offset of the lookup table (compact images), 4 KiB aligned.
      - id: table_size
        type: u8
        doc: |
          Table bytes on disk, rounded up to 4096 (padding is 0xFF). This layout has no
          compact-image flag; reading table_size 0 as "no table" is our inference, the
          sheet does not say.
      - id: chunk_size
        type: u8
        doc: Bytes of the virtual disk per table entry.
      - id: storage_grow_unit
        type: u8
        doc: Bytes added when the data storage must grow.
      - id: add_storage_cmd
        type: strz
        size: 1024
        encoding: UTF-8
        doc: |
          Shell command run to grow the storage, NUL-padded. Data only: never execute
          it unless the caller explicitly enables that.
      - id: chunks_relocated
        type: u4
        doc: Nonzero once any chunk has moved; then replay applies epoch filtering.
      - id: copy_on_read
        type: u4
        doc: Boolean; copy data read from the base image into the FVD image.
      - id: max_outstanding_copy_on_read_data
        type: u8
        doc: Bytes of copy-on-read data allowed in flight.
      - id: prefetch_start_delay
        type: s8
        doc: Seconds after open before whole-image prefetch starts; -1 disables prefetch.
      - id: base_img_fully_prefetched
        type: u4
        doc: Boolean; when set every block is in the FVD image and the bitmap is ignored.
      - id: num_prefetch_slots
        type: u4
        doc: Maximum number of outstanding prefetch writes.
      - id: bytes_per_prefetch
        type: u8
        doc: Bytes read from the base image per prefetch step.
      - id: prefetch_read_throughput_measure_time
        type: u8
        doc: Milliseconds per read-throughput measurement window.
      - id: prefetch_write_throughput_measure_time
        type: u8
        doc: Milliseconds per write-throughput measurement window.
      - id: prefetch_min_read_throughput
        type: u8
        doc: KB/s; below it prefetch may pause.
      - id: prefetch_min_write_throughput
        type: u8
        doc: KB/s; below it prefetch may pause.
      - id: prefetch_max_read_throughput
        type: u8
        doc: KB/s.
      - id: prefetch_max_write_throughput
        type: u8
        doc: KB/s.
      - id: prefetch_throttle_time
        type: u8
        doc: Milliseconds; upper bound of a prefetch pause.
      - id: need_zero_init
        type: u4
        doc: |
          1 when the storage under the image must read zeros where never written (the
          "search holes" optimisation); `update` may clear it.
      - id: incompatible_features
        size: 4096
        doc: |
          Incompatible feature bytes/bits; a reader must refuse an image in which any
          bit it does not know is set (none are defined, so any nonzero byte).
    instances:
      num_table_entries:
        value: 'chunk_size == 0 ? 0 : (virtual_disk_size + chunk_size - 1) / chunk_size'
        doc: Meaningful table entries, ceil(virtual_disk_size / chunk_size).
      bitmap:
        pos: bitmap_offset
        type: bitmap(bitmap_size)
        doc: The bitmap region (needs the whole file as the parse buffer).
      journal:
        pos: journal_offset
        type: journal(journal_size / 512)
        doc: The journal region (needs the whole file as the parse buffer).
      table:
        pos: table_offset
        type: table(num_table_entries)
        doc: The lookup table, padding excluded (needs the whole file as the parse buffer).
  ibm_header:
    -orig-id: FvdHeader
    doc: |
      Header of the IBM FVD driver (variant A), 4336 bytes, at offset 0; the header
      area is 8192 bytes (header_size is not stored) and bytes 4336..8191 are zero.
      Regions follow in the order bitmap, table, journal, data. Booleans are 0/1 in an
      s4. Journal records of this layout are `ibm_journal_record`.
    doc-ref: fvd.md §2.1 "Variant A header (FvdHeader, packed, little-endian, 4336 bytes)"
    seq:
      - id: magic
        contents: [0xa9, 0xf5, 0x43, 0x51]
        doc: u32 0x5143F5A9 ("Q"<<24 | "C"<<16 | 0xF5<<8 | 0xA9), little-endian.
      - id: version
        type: u4
        doc: Must be 1; probing needs magic and version, and open fails otherwise.
      - id: all_data_in_fvd_img
        type: s4
        doc: |
          1 when there is no base image or whole-image prefetch has finished; then the
          bitmap is ignored and the base image is never opened.
      - id: virtual_disk_size
        type: s8
        doc: Size of the virtual disk in bytes; a multiple of 512.
      - id: metadata_size
        type: s8
        doc: Bytes of metadata; start of the data region when data_file is empty.
      - id: base_img
        type: strz
        size: 1024
        encoding: UTF-8
        doc: Base image file name (at most 1023 bytes), NUL-padded; empty = no base.
      - id: base_img_fmt
        type: strz
        size: 16
        encoding: ASCII
        doc: Format of base_img; empty = probe.
      - id: base_img_size
        type: s8
        doc: |
          Bytes covered by the bitmap, round_up(min(virtual_disk_size, base length),
          512).
      - id: bitmap_offset
        type: s8
        doc: Absolute offset of the bitmap, 4096-aligned (8192 in practice).
      - id: bitmap_size
        type: s8
        doc: Bitmap bytes on disk, a multiple of 4096.
      - id: block_size
        type: s4
        doc: Bytes per bitmap bit, a multiple of 512 (not necessarily a power of two).
      - id: copy_on_read
        type: s4
        doc: Boolean.
      - id: max_outstanding_copy_on_read_data
        type: s8
        doc: Bytes; default 2,000,000.
      - id: data_file
        type: strz
        size: 1024
        encoding: UTF-8
        doc: Separate data file name, NUL-padded; empty = data in this file.
      - id: data_file_fmt
        type: strz
        size: 16
        encoding: ASCII
        doc: Format of data_file; empty = probe.
      - id: prefetch_start_delay
        type: s4
        doc: Seconds; stored as -1 when whole-image prefetch is disabled.
      - id: prefetch_profile_offset
        type: s8
        doc: Unused (0).
      - id: prefetch_profile_entries
        type: s8
        doc: Unused (0).
      - id: num_prefetch_slots
        type: s4
        doc: Prefetch pipeline depth; default 2, below 1 treated as 1.
      - id: bytes_per_prefetch
        type: s4
        doc: Default round_up(1 MiB, block_size).
      - id: prefetch_read_throughput_measure_time
        type: s4
        doc: Milliseconds; default 100.
      - id: prefetch_write_throughput_measure_time
        type: s4
        doc: Milliseconds; default 100.
      - id: prefetch_perf_calc_alpha
        type: s4
        doc: 0..100; moving-average weight = value / 100; default 80.
      - id: prefetch_min_read_throughput
        type: s4
        doc: KB/s; default 5120.
      - id: prefetch_min_write_throughput
        type: s4
        doc: KB/s; default 5120.
      - id: prefetch_max_read_throughput
        type: s4
        doc: KB/s; default 1,000,000,000; not enforced.
      - id: prefetch_max_write_throughput
        type: s4
        doc: KB/s; default 1,000,000,000; not enforced.
      - id: prefetch_throttle_time
        type: s4
        doc: Milliseconds; default 30,000; a pause lasts 1..this ms; <= 0 = never throttle.
      - id: compact_image
        type: s4
        doc: Boolean; 1 = the lookup table is in use.
      - id: table_offset
        type: s8
        doc: Absolute offset of the lookup table, 4096-aligned.
      - id: chunk_size
        type: s8
        doc: Bytes per table entry, a multiple of 4096; default 1 MiB.
      - id: storage_grow_unit
        type: s8
        doc: Bytes added when storage must grow; default 100 MiB, at least chunk_size.
      - id: add_storage_cmd
        type: strz
        size: 2048
        encoding: UTF-8
        doc: |
          Shell command that grows a block device ("builtin:lvextend" is special).
          Data only: never execute it unless the caller explicitly enables that.
      - id: journal_offset
        type: s8
        doc: Absolute offset of the journal, 4096-aligned.
      - id: journal_size
        type: s8
        doc: Journal bytes, a multiple of 4096; 0 = no journal.
      - id: clean_shutdown
        type: s4
        doc: 1 when the last close was graceful; 0 means replay the journal.
      - id: need_zero_init
        type: s4
        doc: 1 when never-written data storage must read as zeros.
      - id: generate_prefetch_profile
        type: s4
        doc: Unused (0).
      - id: unit_of_prefetch_profile_entry_len
        type: s4
        -orig-id: unit_of_PrefetchProfileEntry_len
        doc: Unused; 4096 when a base image exists.
      - id: profile_directed_prefetch_start_delay
        type: s4
        doc: Unused; -1.
      - id: write_updates_base_img
        type: strz
        size: 16
        encoding: ASCII
        doc: Unused; zero.
    instances:
      num_table_entries:
        value: 'chunk_size == 0 ? 0 : (virtual_disk_size + chunk_size - 1) / chunk_size'
        doc: Table entries N = ceil(virtual_disk_size / chunk_size).
      table_size:
        value: (4 * num_table_entries + 4095) / 4096 * 4096
        doc: Table bytes on disk; not stored in this layout, round_up(4 * N, 4096).
      bitmap:
        pos: bitmap_offset
        type: bitmap(bitmap_size)
        doc: The bitmap region (needs the whole file as the parse buffer).
      table:
        pos: table_offset
        type: table(num_table_entries)
        doc: The lookup table, padding excluded (needs the whole file as the parse buffer).
      journal:
        pos: journal_offset
        type: ibm_journal(journal_size / 512)
        doc: The journal region (needs the whole file as the parse buffer).
  ibm_prefetch_profile_entry:
    -orig-id: PrefetchProfileEntry
    doc: |
      Prefetch profile entry of the IBM layout, 12 bytes. Declared by the driver but
      never written (the profile region always has size 0).
    doc-ref: fvd.md §2.1
    seq:
      - id: offset_bytes
        type: s8
      - id: len_in_units
        type: u4
        doc: Length in units of unit_of_prefetch_profile_entry_len bytes.
  bitmap:
    doc: |
      Copy-on-write bitmap of the base-image region [0, base_img_size): one bit per
      block_size bytes, LSB first (block b is bit b % 8 of byte b / 8). 0 = the block
      is in the base image, 1 = it is in the FVD data region. Bits only go 0 -> 1.
      Meaningful bits: ceil(base_img_size / block_size); the rest, up to bitmap_size
      (a multiple of 4096), is zero padding. Ignored when all data is in the image.
    doc-ref: fvd.md §3 "Bitmap"
    params:
      - id: num_bytes
        type: u8
        doc: bitmap_size from the header.
    seq:
      - id: data
        size: num_bytes
  table:
    doc: |
      Lookup table of a compact image: entry i maps virtual chunk i (bytes
      [i * chunk_size, (i + 1) * chunk_size)). 0xFFFFFFFF = EMPTY, no storage (reads
      as zeros); otherwise bits 0..30 are the physical chunk index, at data base +
      index * chunk_size. Bit 31 is the in-memory DIRTY flag: on-disk tables have it
      clear, journal records may carry it, so test for EMPTY first and then mask it
      off. The region is padded with 0xFF bytes to a multiple of 4096.
    doc-ref: fvd.md §4 "Lookup table"
    params:
      - id: num_entries
        type: u4
        doc: ceil(virtual_disk_size / chunk_size).
    seq:
      - id: entries
        type: u4
        repeat: expr
        repeat-expr: num_entries
  journal:
    doc: |
      Journal of the founding layout: journal_size / 512 independent sectors, each
      written atomically. Replay (when clean_shutdown is 0) applies every record of
      every sector in order.
    doc-ref: fvd.md §5 "Journal", §18, §19
    params:
      - id: num_sectors
        type: u8
    seq:
      - id: sectors
        type: journal_sector
        repeat: expr
        repeat-expr: num_sectors
  journal_sector:
    doc: |
      One 512-byte journal sector of the founding layout: records packed from byte 0,
      ended by an `empty` record (u32 0) when at least 4 bytes remain.
    doc-ref: fvd.md §5.1 "Structure"
    seq:
      - id: body
        type: journal_record_list
        size: 512
  journal_record_list:
    doc: The records of one journal sector, up to the end of the 512 bytes.
    seq:
      - id: records
        type: journal_record
        repeat: eos
  journal_record:
    doc: |
      A journal record of the founding layout. The sheet gives no record format for
      this layout; as fvd.md §19 recommends, the wiki-specification (variant B)
      records are assumed (UNCONFIRMED): a table record carries an 8-byte epoch and
      puts the count before the first index. Replay ignores table records whose
      epoch is below stable_journal_epoch. Capacity (our derivation, UNCONFIRMED):
      123 entries in a table-only sector, 119 in a mixed sector. After an `empty`
      record (or an unknown type) the rest of the sector is garbage.
    doc-ref: fvd.md §18 "Variant B journal records", §19
    seq:
      - id: record_type
        type: u4
        enum: journal_record_type
        -orig-id: type
      - id: num_dirty_sectors
        type: u4
        if: record_type == journal_record_type::bitmap
        doc: Bitmap record - length of the guest range, in 512-byte sectors.
      - id: dirty_sector_begin
        type: u8
        if: record_type == journal_record_type::bitmap
        doc: Bitmap record - first virtual sector of the range; its blocks now have bit 1.
      - id: journal_epoch
        type: u8
        if: record_type == journal_record_type::table
        doc: Table record - epoch the record was written in.
      - id: num_dirty_table_entries
        type: u4
        if: record_type == journal_record_type::table
        doc: Table record - number of entries that follow.
      - id: dirty_table_begin
        type: u4
        if: record_type == journal_record_type::table
        doc: Table record - index of the first table entry covered.
      - id: entries
        type: u4
        repeat: expr
        repeat-expr: num_dirty_table_entries
        if: record_type == journal_record_type::table
        doc: Table record - new values of the entries (bit 31 may be set; mask it off).
      - id: rest
        size-eos: true
        if: >-
          record_type != journal_record_type::bitmap and
          record_type != journal_record_type::table
        doc: After the terminator (or an unknown type) - garbage, ignored.
  ibm_journal:
    doc: |
      Journal of the IBM layout: journal_size / 512 independent sectors. No header,
      checksum, sequence number or epoch. Replay (when clean_shutdown is 0) applies
      every record of every sector, stale ones included.
    doc-ref: fvd.md §5 "Journal (variant A)"
    params:
      - id: num_sectors
        type: u8
    seq:
      - id: sectors
        type: ibm_journal_sector
        repeat: expr
        repeat-expr: num_sectors
  ibm_journal_sector:
    doc: |
      One 512-byte journal sector of the IBM layout: records packed from byte 0,
      ended by an `empty` record (u32 0) when at least 4 bytes remain. A commit is a
      bitmap record, or a table record of up to 125 entries, or a mixed sector (a
      table record of up to 121 entries followed by a bitmap record).
    doc-ref: fvd.md §5.1 "Structure", §5.2
    seq:
      - id: body
        type: ibm_journal_record_list
        size: 512
  ibm_journal_record_list:
    doc: The records of one journal sector, up to the end of the 512 bytes.
    seq:
      - id: records
        type: ibm_journal_record
        repeat: eos
  ibm_journal_record:
    doc: |
      A journal record of the IBM layout: bitmap record 16 bytes, table record
      12 + 4 * count bytes, terminator 4 bytes. After the terminator (or an unknown
      type) the rest of the sector is garbage the writer did not clear.
    doc-ref: fvd.md §5.1 "Structure"
    seq:
      - id: record_type
        type: u4
        enum: journal_record_type
        -orig-id: type
      - id: nb_sectors
        type: u4
        if: record_type == journal_record_type::bitmap
        doc: Bitmap record - length of the guest range, in 512-byte sectors.
      - id: sector_num
        type: s8
        if: record_type == journal_record_type::bitmap
        doc: |
          Bitmap record - first virtual sector of the range; every block overlapping
          the range (clipped to the base region) now has bit 1.
      - id: first_chunk
        type: u4
        if: record_type == journal_record_type::table
        doc: Table record - index of the first table entry covered.
      - id: count
        type: u4
        if: record_type == journal_record_type::table
        doc: Table record - number of entries that follow (at most 125).
      - id: entries
        type: u4
        repeat: expr
        repeat-expr: count
        if: record_type == journal_record_type::table
        doc: Table record - new values of the entries (bit 31 may be set; mask it off).
      - id: rest
        size-eos: true
        if: >-
          record_type != journal_record_type::bitmap and
          record_type != journal_record_type::table
        doc: After the terminator (or an unknown type) - garbage, ignored.
enums:
  journal_record_type:
    0: empty
    0x3f2ab8ed: bitmap
    0xb4e6f7ac: table
