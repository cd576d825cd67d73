"""The `aitb` command line."""
