"""A status-socket client's exchange, and the thread that answers them all in turn.

The selector's thread (control/status.py) reads each request and writes each reply without
ever blocking. It does not answer them: an answer reads the journal, whose disk or database
may not answer (a failing disk; a frozen database backend, whose kernel still acknowledges
every byte, so no TCP timeout ends the wait). `Answers` does it on a thread of its own, one
request at a time and in order; a request whose answer is not there within ANSWER_WAIT gets
a reply that says so, from the selector's thread, while the other clients go on being
served by the same rule.
"""

from __future__ import annotations

import json
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable

MAX_REQUEST = 64 * 1024
"""The longest request line: a retry of a few hundred paths fits, and parsing it is cheap."""
TIMEOUT = 5.0
"""Seconds a client has for its whole exchange, request and reply."""
ANSWER_WAIT = 4.0
"""Seconds a request waits for its answer before it is told that none came: within
`TIMEOUT`, and within `ask`'s own timeout, so the caller hears why."""
TOO_LONG = f"request refused: longer than {MAX_REQUEST} bytes"
STUCK = (
    f"syncd is running but has not answered within {ANSWER_WAIT:g} s: its journal is not"
    " answering (a stuck disk or database)"
)

Answer = Callable[[bytes], bytes]


def reply_line(reply: dict[str, object]) -> bytes:
    return json.dumps(reply).encode() + b"\n"


class Exchange:
    """One connection: its request so far (at most MAX_REQUEST bytes), the wait for its
    answer, then its reply."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.fd = conn.fileno()
        self.deadline = time.monotonic() + TIMEOUT
        self.request = bytearray()
        self.asked: bytes | None = None
        """The request line, from its arrival to its reply (the selector's thread's)."""
        self.answer_by = 0.0
        self.answering = False
        """Its answer has begun (and may yet take effect, however late)."""
        self.settled = False
        """Its reply is made, the answer or word that none came (under `Answers`' lock)."""
        self.reply = b""
        self.closed = False
        self.events = 0
        """What the selector watches the connection for; 0: not registered."""

    @property
    def wanted(self) -> int:
        """What the selector should watch it for now (0: nothing, while it is answered)."""
        if self.asked is not None:
            return 0
        return selectors.EVENT_WRITE if self.reply else selectors.EVENT_READ

    def step(self, answers: Answers) -> None:
        """Read what has come, or write what is due; never blocks."""
        try:
            if self.reply:
                self._write()
            else:
                self._read(answers)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()

    def _read(self, answers: Answers) -> None:
        piece = self.conn.recv(MAX_REQUEST + 1 - len(self.request))
        self.request += piece
        end = self.request.find(b"\n")
        if end >= 0 or not piece or _whole_object(self.request):
            answers.ask(self, bytes(self.request if end < 0 else self.request[:end]))
        elif len(self.request) > MAX_REQUEST:
            self.reply = reply_line({"error": TOO_LONG})
            self._write()
        else:
            return
        self.request = bytearray()

    def answered(self, reply: bytes, answers: Answers) -> None:
        """On the selector's thread: the reply is due, the answer or word that none came."""
        self.asked = None
        self.reply = reply
        self.step(answers)

    def _write(self) -> None:
        sent = self.conn.send(self.reply)
        self.reply = self.reply[sent:]
        if not self.reply:
            self.close()

    def close(self) -> None:
        """Done with; the server unregisters and closes the connection."""
        self.closed = True


class Answers:
    """Requests answered on the "status answers" thread, in order; `done()` hands the
    selector's thread what is due, the answers that came and word on the ones that did
    not in time. `wake` tells the selector's thread that an answer came."""

    def __init__(self, answer: Answer, wake: Callable[[], None]) -> None:
        self._answer = answer
        self._wake = wake
        self._lock = threading.Lock()
        self._asked: queue.SimpleQueue[Exchange | None] = queue.SimpleQueue()
        self._done: list[tuple[Exchange, bytes]] = []
        self._thread = threading.Thread(target=self._serve, name="status answers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """The thread ends after the answer it is on, if it ever ends: not waited for."""
        self._asked.put(None)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def ask(self, exchange: Exchange, line: bytes) -> None:
        exchange.asked = line
        exchange.answer_by = time.monotonic() + ANSWER_WAIT
        self._asked.put(exchange)

    def done(self, now: float, waiting: list[Exchange]) -> list[tuple[Exchange, bytes]]:
        """The replies due by `now`: the answers that came, and word to each of `waiting`
        whose answer is late. A late request not yet begun is dropped, never done behind
        its client's back."""
        with self._lock:
            due, self._done = self._done, []
            for exchange in waiting:
                if not exchange.settled and exchange.answer_by <= now:
                    exchange.settled = True
                    told = "; the request may still take effect" if exchange.answering else ""
                    due.append((exchange, reply_line({"error": STUCK + told})))
        return due

    def _serve(self) -> None:
        while (exchange := self._asked.get()) is not None:
            with self._lock:
                line = None if exchange.closed or exchange.settled else exchange.asked
                exchange.answering = line is not None
            if line is None:
                continue  # told it was late, or gone
            reply = self._answer(line)
            with self._lock:
                if exchange.settled:
                    continue  # told meanwhile that it was late
                exchange.settled = True
                self._done.append((exchange, reply))
            self._wake()


def _whole_object(request: bytearray) -> bool:
    """A JSON object sent without its newline (and the connection kept open) is a request
    too: a client waiting for the reply would otherwise wait for nothing."""
    if not request.rstrip().endswith(b"}"):
        return False
    try:
        return isinstance(json.loads(request), dict)
    except (ValueError, RecursionError):
        return False
