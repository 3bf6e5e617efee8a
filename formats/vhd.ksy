meta:
  id: vhd
  title: Microsoft Virtual Hard Disk (VHD) image
  application:
    - Microsoft Virtual PC
    - Hyper-V
    - QEMU (vpc driver)
  file-extension:
    - vhd
    - avhd
  xref:
    wikidata: Q1074097
  license: MIT
  endian: be
doc: |
  A VHD image is a fixed, dynamic or differencing virtual disk. Every image ends
  with a 512-byte footer; dynamic and differencing images also keep a copy of the
  footer at offset 0, followed by the dynamic disk header, the block allocation
  table (BAT) and data blocks, each block made of a sector bitmap and the data.
  All integers are big-endian.
doc-ref: https://www.microsoft.com/en-us/download/details.aspx?id=23850
instances:
  footer:
    pos: _io.size - 512
    type: footer
    doc: The footer at the end of the file (every image type).
types:
  footer:
    doc: Hard disk footer, 512 bytes; a copy sits at offset 0 of dynamic images.
    doc-ref: VHD specification 1.0, "Hard Disk Footer Format"
    -checksum: {algorithm: ones-complement-sum, field: checksum}
    seq:
      - id: cookie
        contents: conectix
      - id: features
        type: u4
        -default: 2
        doc: Bit 0 temporary, bit 1 reserved and always set.
      - id: format_version
        type: u4
        -orig-id: File Format Version
        -default: 0x00010000
        doc: Major version in the high 16 bits; always 0x00010000.
      - id: data_offset
        type: u8
        doc: |
          Absolute offset of the dynamic disk header; all ones (or 0xFFFFFFFF)
          for fixed disks.
      - id: timestamp
        type: u4
        -orig-id: Time Stamp
        doc: Creation time, seconds since 2000-01-01 00:00:00 UTC.
      - id: creator_application
        type: u4
        enum: creator_application
        doc: Four-character tag of the application that created the image.
      - id: creator_version
        type: u4
        doc: Major version in the high 16 bits, minor in the low 16 bits.
      - id: creator_host_os
        type: u4
        enum: creator_host_os
      - id: original_size
        type: u8
        doc: Virtual size in bytes at creation, informational.
      - id: current_size
        type: u8
        doc: Current virtual size in bytes.
      - id: disk_geometry
        type: disk_geometry
      - id: disk_type
        type: u4
        enum: disk_type
      - id: checksum
        type: u4
        doc: One's complement of the byte sum of the footer, this field taken as zero.
      - id: unique_id
        size: 16
        doc: Identifies the disk; a differencing child stores its parent's value.
      - id: saved_state
        type: u1
        doc: 1 when the virtual machine is in saved state.
      - id: reserved
        size: 427
    instances:
      is_fixed_data_offset:
        value: data_offset == 0xffffffffffffffff or data_offset == 0xffffffff
        doc: True when the data offset says "no next structure" (fixed disks).
  disk_geometry:
    doc: CHS geometry reported to the guest's BIOS.
    seq:
      - id: cylinders
        type: u2
      - id: heads
        type: u1
      - id: sectors_per_track
        type: u1
  dynamic_header:
    doc: Dynamic disk header, 1024 bytes, at footer.data_offset.
    doc-ref: VHD specification 1.0, "Dynamic Disk Header Format"
    -checksum: {algorithm: ones-complement-sum, field: checksum}
    seq:
      - id: cookie
        contents: cxsparse
      - id: data_offset
        type: u8
        -default: 0xffffffffffffffff
        doc: Unused; all ones.
      - id: table_offset
        type: u8
        doc: Absolute offset of the block allocation table.
      - id: header_version
        type: u4
        -default: 0x00010000
        doc: Always 0x00010000.
      - id: max_table_entries
        type: u4
        doc: Number of valid BAT entries, ceil(virtual size / block size).
      - id: block_size
        type: u4
        doc: Bytes of data per block, sector bitmap excluded; a power of two.
      - id: checksum
        type: u4
        doc: One's complement of the byte sum of the header, this field taken as zero.
      - id: parent_unique_id
        size: 16
        doc: Differencing disks - the parent footer's unique id.
      - id: parent_timestamp
        type: u4
        -orig-id: Parent Time Stamp
        doc: Differencing disks - the parent's modification time (VHD epoch).
      - id: reserved1
        size: 4
      - id: parent_unicode_name
        type: str
        size: 512
        encoding: UTF-16BE
        doc: Differencing disks - parent file name, UTF-16BE, NUL padded.
      - id: parent_locators
        type: parent_locator
        repeat: expr
        repeat-expr: 8
      - id: reserved2
        size: 256
  parent_locator:
    doc: Parent locator entry, 24 bytes; platform code 0 marks an unused entry.
    doc-ref: VHD specification 1.0, "Parent Locator Entry"
    seq:
      - id: platform_code
        type: u4
        enum: platform_code
      - id: platform_data_space
        type: u4
        doc: Space reserved for the locator; sectors per the specification, bytes in practice.
      - id: platform_data_length
        type: u4
        doc: Length of the locator data in bytes.
      - id: reserved
        type: u4
      - id: platform_data_offset
        type: u8
        doc: Absolute file offset of the locator data.
  bat:
    doc: |
      Block allocation table; entry i is the absolute sector number of block i
      (its sector bitmap), or 0xFFFFFFFF when the block is not allocated.
    params:
      - id: num_entries
        type: u4
    seq:
      - id: entries
        type: u4
        repeat: expr
        repeat-expr: num_entries
enums:
  disk_type:
    0: none
    1: reserved1
    2: fixed
    3: dynamic
    4: differencing
    5: reserved5
    6: reserved6
  creator_host_os:
    0x5769326b: windows
    0x4d616320: macintosh
  creator_application:
    0x76706320: virtual_pc
    0x76732020: virtual_server
    0x77696e20: windows
    0x71656d75: qemu
    0x71656d32: qemu_force_size
    0x64327600: disk2vhd
    0x64327620: disk2vhd_space
    0x74617000: xen_blktap
    0x43545853: citrix_xenconverter
    0x77610000: azure
    0x76626f78: virtualbox
  platform_code:
    0: none
    0x57693272: wi2r
    0x5769326b: wi2k
    0x57327275: w2ru
    0x57326b75: w2ku
    0x4d616320: mac
    0x4d616358: macx
