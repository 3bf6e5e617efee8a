"""The VHDX engine: headers, regions, metadata, BAT, sector bitmaps, the log."""
