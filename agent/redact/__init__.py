"""Redaction: pure functions that decide what may leave the machine (P6)."""
