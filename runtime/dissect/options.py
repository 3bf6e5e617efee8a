"""What a dissection is asked to do."""

from __future__ import annotations

from dataclasses import dataclass

from .common import MiB


@dataclass
class Options:
    """What dissect shows and how much it may read."""

    #: list every BAT entry (a lazily computed table on the BAT node)
    bat: bool = False
    #: read the gaps between structures looking for non-zero bytes
    scan_gaps: bool = True
    #: bytes of gap data read at most; beyond it the gaps are sampled evenly
    gap_budget: int = 256 * MiB
    #: log entries listed (each with its descriptors); the rest are counted
    max_log_entries: int = 1024
