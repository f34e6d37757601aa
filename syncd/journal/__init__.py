"""The durable state: every file's row, its state and its upload's progress; the only SQL."""
