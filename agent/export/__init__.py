"""Export bundles (volunteer side) and their checks (collector side)."""
