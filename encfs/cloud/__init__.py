"""Private cloud data: integrations with S3-compatible buckets, items that refer to
bucket objects (import by reference), and cloud-synced folders."""
