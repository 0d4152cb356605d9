"""The FUSE mount: a thin adapter over the Files service."""
