"""Media probing: what the bytes of a file are, never guessed from its name."""

from encfs.media.probe import probe

__all__ = ["probe"]
