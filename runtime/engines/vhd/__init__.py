"""The VHD engine (QEMU's "vpc"): fixed, dynamic, differencing and split images."""
