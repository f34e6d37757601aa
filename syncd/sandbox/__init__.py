"""Local emulators of every service syncd talks to, on one loopback port.

The other side of the wire: written from protocols.md, importing nothing from syncd's
client code, so a misreading on one side is caught by the other (DESIGN.md, "The sandbox").
Tests, demos and benchmarks drive it over real HTTP; `/_sandbox/...` is its control API.

    with Sandbox() as sandbox:
        requests.get(sandbox.url + "/_sandbox/requests")
"""

from syncd.sandbox.server import Sandbox, main

__all__ = ["Sandbox", "main"]
