"""The platform migrations package."""
