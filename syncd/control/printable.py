"""Names as people read them: on one line, and unable to move a terminal's cursor.

File names are data chosen by whoever can write into a watched folder. A newline in one
would forge a log line (`ERROR ...`) or a journald priority (`<0>`); an escape sequence
would repaint the operator's terminal. Wherever a person reads a name (stderr, journald's
MESSAGE, `syncd status`) it goes through `printable`; the JSON reply and journald's fields
keep names exact.
"""

from __future__ import annotations

import re

_UNPRINTABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\udc80-\udcff]"
)
"""C0 and C1 controls (newlines, ESC, CSI), DEL, the backslash that starts our escapes,
Unicode line and paragraph separators, bidirectional overrides (which reorder what a
terminal shows), and the lone surrogates that stand for bytes that are not UTF-8."""
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # a byte that is not UTF-8 (surrogateescape)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` on one line with every control character, backslash and odd byte escaped."""
    return _UNPRINTABLE.sub(_escape, text)
