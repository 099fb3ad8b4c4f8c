"""What users import: the synchronous client SDK and the `maze` CLI."""
