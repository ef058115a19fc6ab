"""The content-addressed stage store (atomic commits, checksums, per-key locks), the per-row
cache a refresh uses, and cache maintenance (``curate cache ls|gc|verify`` logic). Imports
``core`` only."""
