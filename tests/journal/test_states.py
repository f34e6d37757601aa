"""The transition table itself, and the README that describes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from syncd.journal.states import (
    CLAIMABLE,
    IN_FLIGHT,
    TRANSITIONS,
    IllegalTransition,
    State,
    check_move,
)

README = Path(__file__).parents[2] / "README.md"


def test_the_readme_lists_exactly_the_table():
    section = README.read_text().split("### How a file moves through the journal")[1]
    listed = {}
    for source, targets in re.findall(r"^- `(\w+)` -> (.+)$", section, re.MULTILINE):
        listed[State(source)] = frozenset(State(t) for t in re.findall(r"`(\w+)`", targets))
    assert listed == dict(TRANSITIONS)


def test_every_state_has_its_moves_and_any_changed_file_is_seen_again():
    assert set(TRANSITIONS) == set(State)
    assert all(State.SEEN in targets for targets in TRANSITIONS.values())
    assert not CLAIMABLE & IN_FLIGHT


def test_held_is_entered_from_and_released_to_the_queue():
    for state in CLAIMABLE:
        assert State.HELD in TRANSITIONS[state]
    assert TRANSITIONS[State.HELD] == CLAIMABLE


def test_check_move_raises_for_a_move_not_in_the_table():
    check_move(State.UPLOADED, State.DONE)
    with pytest.raises(IllegalTransition, match="failed -> done") as raised:
        check_move(State.FAILED, State.DONE)
    assert (raised.value.source, raised.value.target) == (State.FAILED, State.DONE)
