"""The conformance kit: one suite every registered engine passes (see kit.py)."""
