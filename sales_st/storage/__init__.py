"""Storage: versioned Parquet datasets and JSON artifacts, catalog tables and the run manifest."""
