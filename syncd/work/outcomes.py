"""What the pipeline tells the outside as files finish: the seam metrics hang on.

The pipeline knows nothing of Prometheus; the daemon hands it something that satisfies
`Outcomes` (the metrics), and every way a file can end goes through it.
"""

from __future__ import annotations

from typing import Protocol

DONE = "done"
"""Uploaded and recorded in its sidecar."""
DUPLICATE = "duplicate"
"""Recorded from an earlier upload of the same content: no bytes sent."""
FAILED = "failed"
"""Failed for good, until `syncd retry`."""


class Outcomes(Protocol):
    def finished(self, service: str, outcome: str, size: int, seconds: float | None) -> None:
        """A file reached `outcome`; `seconds` since it was queued, when known."""

    def retrying(self, service: str) -> None:
        """An attempt failed in a way that is tried again."""
