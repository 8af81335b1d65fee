"""The built-in corpus's sentences: a small English grammar, and the split each sentence belongs to.

A sentence is assigned to one split by a hash of its text (``split_of_sentence``), so no sentence
is ever in two splits; ``sentence(rng, split)`` redraws until the hash says ``split``.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

_DETERMINERS = (
    "the",
    "a",
    "this",
    "that",
    "every",
    "one",
    "some",
    "my",
    "your",
    "our",
    "her",
    "his",
    "their",
    "no",
    "each",
)
_ADJECTIVES = (
    "old",
    "young",
    "small",
    "large",
    "quiet",
    "noisy",
    "bright",
    "dark",
    "cold",
    "warm",
    "green",
    "red",
    "blue",
    "yellow",
    "heavy",
    "light",
    "clever",
    "gentle",
    "busy",
    "lazy",
    "tired",
    "happy",
    "sudden",
    "rough",
    "smooth",
    "wooden",
    "silver",
    "golden",
    "narrow",
    "wide",
    "early",
    "late",
    "hidden",
    "broken",
    "distant",
    "friendly",
    "strange",
    "simple",
    "careful",
    "curious",
)
_NOUNS = (
    "dog",
    "cat",
    "teacher",
    "farmer",
    "doctor",
    "river",
    "mountain",
    "window",
    "garden",
    "letter",
    "train",
    "market",
    "kitchen",
    "bridge",
    "forest",
    "island",
    "engine",
    "pencil",
    "village",
    "student",
    "captain",
    "painter",
    "basket",
    "candle",
    "station",
    "harbour",
    "meadow",
    "ladder",
    "blanket",
    "orange",
    "morning",
    "evening",
    "castle",
    "pocket",
    "bottle",
    "machine",
    "neighbour",
    "stranger",
    "bicycle",
    "library",
    "journey",
    "picture",
    "shadow",
    "singer",
    "baker",
    "sailor",
)
_VERBS = (
    "found",
    "carried",
    "watched",
    "painted",
    "followed",
    "opened",
    "closed",
    "cleaned",
    "moved",
    "visited",
    "repaired",
    "noticed",
    "borrowed",
    "described",
    "remembered",
    "collected",
    "lifted",
    "pushed",
    "pulled",
    "crossed",
    "reached",
    "showed",
    "wanted",
    "needed",
    "touched",
    "counted",
    "measured",
    "protected",
    "covered",
    "dropped",
)
_ADVERBS = (
    "slowly",
    "quickly",
    "again",
    "yesterday",
    "today",
    "tonight",
    "carefully",
    "quietly",
    "at noon",
    "before dinner",
    "after the rain",
    "in the morning",
    "near the door",
    "on the hill",
    "by the sea",
    "without a word",
    "with great care",
    "once more",
    "last winter",
    "every day",
)
_CLAUSES = (
    "because it was late",
    "while the bell rang",
    "when the wind stopped",
    "although nobody asked",
    "before anyone noticed",
    "as the sun went down",
    "until the lights came on",
    "so that we could rest",
)
_QUESTION_STARTS = ("did", "will", "could", "should", "would")
_BASE_VERBS = (
    "find",
    "carry",
    "watch",
    "paint",
    "follow",
    "open",
    "close",
    "clean",
    "move",
    "visit",
    "repair",
    "notice",
    "borrow",
    "describe",
    "remember",
    "collect",
)
_SPLIT_BUCKETS = {"train": range(0, 8), "valid": range(8, 9), "test": range(9, 10)}


def _noun_phrase(rng: np.random.Generator) -> str:
    words = [_DETERMINERS[rng.integers(len(_DETERMINERS))]]
    if rng.random() < 0.6:
        words.append(_ADJECTIVES[rng.integers(len(_ADJECTIVES))])
    words.append(_NOUNS[rng.integers(len(_NOUNS))])
    return " ".join(words)


def _sentence(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < 0.15:  # a question
        s = (
            f"{_QUESTION_STARTS[rng.integers(len(_QUESTION_STARTS))]} {_noun_phrase(rng)} "
            f"{_BASE_VERBS[rng.integers(len(_BASE_VERBS))]} {_noun_phrase(rng)}?"
        )
    else:
        s = f"{_noun_phrase(rng)} {_VERBS[rng.integers(len(_VERBS))]} {_noun_phrase(rng)}"
        if rng.random() < 0.6:
            s += " " + _ADVERBS[rng.integers(len(_ADVERBS))]
        if rng.random() < 0.3:
            s += ", " + _CLAUSES[rng.integers(len(_CLAUSES))]
        s += "."
    return s[0].upper() + s[1:]


def split_of_sentence(text: str) -> str:
    """The one split a sentence may appear in (a stable hash of its text)."""
    bucket = zlib.crc32(text.encode()) % 10
    return next(split for split, buckets in _SPLIT_BUCKETS.items() if bucket in buckets)


def sentences_of(text: str) -> list[str]:
    """The sentences of a metadata ``text`` field (sentences end in '.' or '?')."""
    return re.findall(r"[^.?]+[.?]", text.strip()) if text else []


def sentence(rng: np.random.Generator, split: str) -> str:
    """A grammatical sentence that belongs to ``split`` (redrawn until its hash says so)."""
    while True:
        text = _sentence(rng)
        if split_of_sentence(text) == split:
            return text
