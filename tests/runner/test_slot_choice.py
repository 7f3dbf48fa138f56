"""Which slot a prompt goes to, which slot's cells it may copy, and when a loop ends."""

from __future__ import annotations

from corral.runner.slots import MAX_TOKEN_REPEATS, MIN_PREFIX_COPY, Slot, pick_slot, prefix_donor

TOOLS = list(range(1000, 1000 + 2 * MIN_PREFIX_COPY))  # a long shared start: tools, system


def _slot(seq_id: int, cached: list[int], last_used: float = 0.0, prompt: int = 0) -> Slot:
    """A slot holding ``cached``: its last prompt (``prompt`` tokens of it) and answer."""
    return Slot(
        seq_id=seq_id, cached=list(cached), last_used=last_used, prompt=cached[: prompt or None]
    )


def test_the_next_turn_goes_to_its_conversation() -> None:
    chat = [*TOOLS, 1, 2, 3]
    slots = [_slot(0, [7, 8], 5.0), _slot(1, chat, 1.0), _slot(2, [], 0.0)]
    assert pick_slot(slots, [*chat, 4, 5]) is slots[1]


def test_the_same_request_again_goes_to_its_slot_whatever_the_answer_length() -> None:
    prompt = [1, 2, 3, 4]
    answered = _slot(1, [*prompt, *range(100, 200)], 1.0, prompt=len(prompt))
    slots = [_slot(0, [], 0.0), answered]
    assert pick_slot(slots, prompt) is answered


def test_a_short_shared_start_does_not_evict_a_long_conversation() -> None:
    # a title request shares the system prompt's first tokens with a long cached chat:
    # an empty slot takes it, the chat keeps its cells
    slots = [_slot(0, [*TOOLS, 1, 2, 3], 1.0), _slot(1, [], 0.0)]
    assert pick_slot(slots, [TOOLS[0], TOOLS[1], 99]) is slots[1]


def test_without_an_empty_slot_the_least_recently_used_is_taken() -> None:
    slots = [_slot(0, [*TOOLS, 1], 3.0), _slot(1, [5, 6, 7], 1.0), _slot(2, [8, 9], 2.0)]
    assert pick_slot(slots, [TOOLS[0], 42]) is slots[1]
    # one free slot: it is the one, whatever it holds
    assert pick_slot(slots[:1], [42]) is slots[0]


def test_a_prompt_sharing_a_long_prefix_with_another_slot_copies_it() -> None:
    busy = _slot(0, [*TOOLS, 1, 2, 3])  # the first chat, still answering
    target = _slot(1, [])
    assert prefix_donor([busy, target], target, [*TOOLS, 9, 9]) is busy


def test_no_copy_for_a_few_tokens_or_from_itself() -> None:
    short = _slot(0, [*TOOLS[: MIN_PREFIX_COPY // 2], 1])
    target = _slot(1, TOOLS[:10])
    assert prefix_donor([short, target], target, [*TOOLS, 9]) is None
    assert prefix_donor([target], target, [*TOOLS, 9]) is None
    # the longest of several candidates
    longer = _slot(2, [*TOOLS, 9, 1])
    shorter = _slot(3, TOOLS)
    assert prefix_donor([shorter, target, longer], target, [*TOOLS, 9, 2]) is longer


def test_a_token_repeated_past_the_limit_ends_the_generation() -> None:
    slot = _slot(0, [])
    slot.stuck_repeating("Hello")
    assert not any(slot.stuck_repeating(" the") for _ in range(MAX_TOKEN_REPEATS + 1))
    assert slot.stuck_repeating("the ")  # spaces aside, the same text once more


def test_a_character_of_several_tokens_counts_once_whole() -> None:
    slot = _slot(0, [])
    # an emoji's bytes come in pieces: only the whole character is fed (the engine feeds
    # the text each token completes), so a run of the same emoji is a run of one piece
    assert any(slot.stuck_repeating("\N{GLOWING STAR}") for _ in range(MAX_TOKEN_REPEATS + 2))


def test_varied_tokens_never_end_it() -> None:
    slot = _slot(0, [])
    pieces = ["1", ",", " 2", ",", " 3"] * 40
    assert not any(slot.stuck_repeating(piece) for piece in pieces)
