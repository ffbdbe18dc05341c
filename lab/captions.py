"""Reading a caption back into what it says: the inverse of `lab.world.SceneSpec.caption`, for the grammar of
lab.world's docstring. The checker, the app's vocabulary notice and the evaluation read prompts through it.
Users also write "left of" and "right of" ("a red circle left of a blue square"): read as the grammar's "to the left
of" and "to the right of"; any other wording outside the grammar is refused, saying what was expected."""

from __future__ import annotations

import re

from lab.world import COLOURS, POSITIONS, RELATIONS, SHAPES, SIZES, VOCABULARY, ObjectSpec, SceneSpec

# Shorter wordings of a relation, read as its own phrase (RELATIONS): relation -> the wording.
RELATION_SHORTHANDS = {"left of": "left of", "right of": "right of"}
_RELATION_WORDS = ", ".join([*RELATIONS.values(), *RELATION_SHORTHANDS.values()])


def _match(tokens: list[str], i: int, phrases: dict[str, str]) -> tuple[str | None, int]:
    """The key whose phrase starts at tokens[i], and the index after it; (None, i) when none does.
    The longest phrase wins, so "at the top" does not cut "at the top left" short."""
    for key, phrase in sorted(phrases.items(), key=lambda item: -len(item[1].split())):
        words = phrase.split()
        if tokens[i : i + len(words)] == words:
            return key, i + len(words)
    return None, i


def _parse_object(tokens: list[str], i: int, text: str) -> tuple[ObjectSpec, int]:
    size, j = _match(tokens, i + 1, {s: s for s in SIZES})
    colour, shape = (tokens[j : j + 2] + ["", ""])[:2]
    if tokens[i : i + 1] not in (["a"], ["an"]) or colour not in COLOURS or shape not in SHAPES:
        raise ValueError(
            f"“{text}” is not a Shapes caption: at word {i + 1} an object is expected, “a” or “an”, perhaps “small” "
            f"or “large”, then a colour and a shape; colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)}"
        )
    return ObjectSpec(colour, shape, size), j + 2


def parse_caption(text: str) -> SceneSpec:
    """What a caption says; inverts `SceneSpec.caption`. Raises ValueError naming any word outside
    VOCABULARY (a model trained on the world has never seen it) or a sentence outside the grammar."""
    if not isinstance(text, str):
        raise ValueError(f"a caption is a string, got {type(text).__name__}")
    tokens = re.findall(r"[^\s.,;:!?]+", text.lower())
    unknown = sorted({t for t in tokens if t not in VOCABULARY})
    if unknown:
        raise ValueError(
            f"words outside the Shapes vocabulary: {', '.join(unknown)}; known: {', '.join(sorted(VOCABULARY))}"
        )
    first, i = _parse_object(tokens, 0, text)
    relation, j = _match(tokens, i, RELATIONS)
    if relation is None:
        relation, j = _match(tokens, i, RELATION_SHORTHANDS)
    if relation is not None:
        second, end = _parse_object(tokens, j, text)
        objects, position = (first, second), None
    else:
        objects = (first,)
        position, end = _match(tokens, i, {name: phrase for name, (phrase, _) in POSITIONS.items()})
    if end != len(tokens):
        raise ValueError(
            f"“{text}” is not a Shapes caption: “{' '.join(tokens[end:])}” was not expected after "
            f"“{' '.join(tokens[:end])}”; a relation ({_RELATION_WORDS}) and a second object, or a position "
            f"({', '.join(p for p, _ in POSITIONS.values())}) may follow an object"
        )
    return SceneSpec(objects, relation, position)
