"""The store: operations, scans, versions, large values, the catalogue, metadata, change log."""
