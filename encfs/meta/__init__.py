"""Metadata store: LMDB environment, key layout, transactions and indexes."""

from encfs.meta.store import MetaStore, ReadTxn, WriteTxn

__all__ = ["MetaStore", "ReadTxn", "WriteTxn"]
