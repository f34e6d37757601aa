"""The work: the worker pool, one file's way through its states, OneAll's callbacks."""
