"""The registry every app registers into from its AppConfig.ready()."""

import pytest

from queueing.registry import Registry


def test_entries_are_kept_in_registration_order_and_a_name_is_replaced_in_place():
    panels = Registry("dashboard panel")
    panels.register("queues", 1)
    panels.register("broadcasts", 2)
    panels.register("queues", 3)
    assert panels.items() == [("queues", 3), ("broadcasts", 2)]
    assert len(panels) == 2 and "queues" in panels and "downloads" not in panels


def test_an_unknown_name_says_what_is_registered():
    commands = Registry("bot command")
    commands.register("start", print)
    with pytest.raises(KeyError, match="no bot command named 'pledge'; registered: start"):
        commands["pledge"]
    assert commands.get("pledge") is None


def test_register_returns_the_entry_so_it_can_decorate():
    duties = Registry("duty")

    def sweep():
        return "swept"

    assert duties.register("sweep", sweep) is sweep
    assert duties["sweep"]() == "swept"


def test_replaced_stands_in_for_an_entry_within_the_block_only():
    answers = Registry("answer")
    answers.register("/help", "help")

    with answers.replaced("/help", "stand-in"), answers.replaced("/new", "new"):
        assert answers["/help"] == "stand-in" and answers["/new"] == "new"

    assert answers.items() == [("/help", "help")]


def test_replaced_restores_the_entry_when_the_block_raises():
    answers = Registry("answer")
    answers.register("/help", "help")

    with pytest.raises(RuntimeError), answers.replaced("/help", "stand-in"):
        raise RuntimeError

    assert answers["/help"] == "help"
