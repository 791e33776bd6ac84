"""Report builders: single-file HTML with plots, CSV/Parquet exports."""
