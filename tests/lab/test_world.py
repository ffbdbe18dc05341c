"""The Shapes world: determinism, the caption grammar, the held-out split and the prompt files."""

import numpy as np
import pytest

from lab.captions import parse_caption
from lab.prompt_files import PROMPT_COUNTS, prompt_lists, read_prompts, seen_twin
from lab.world import (
    COLOURS,
    CONVERSE,
    HELDOUT_PAIRS,
    HELDOUT_TRIPLES,
    SHAPES,
    VOCABULARY,
    ObjectSpec,
    Scene,
    SceneObject,
    SceneSpec,
    WorldConfig,
    caption_is_true_of,
    sample_scenes,
    split_of,
)

ALL_SPLITS = ("train", "heldout", "heldout_pair", "heldout_relation", "heldout_both")


def holds_heldout_pair(scene: Scene) -> bool:
    return any((o.colour, o.shape) in HELDOUT_PAIRS for o in scene.objects)


def holds_heldout_triple(scene: Scene) -> bool:
    if scene.relation is None:
        return False
    first, second = scene.objects
    return (first.shape, scene.relation, second.shape) in HELDOUT_TRIPLES or (
        second.shape,
        CONVERSE[scene.relation],
        first.shape,
    ) in HELDOUT_TRIPLES


@pytest.fixture(scope="module")
def scenes_by_split() -> dict[str, list[Scene]]:
    return {split: sample_scenes(100, seed=11, split=split) for split in ALL_SPLITS}


# ----------------------------------------------------------------------------- determinism and rendering


def test_same_seed_same_scenes_and_images():
    first, again, other = sample_scenes(40, seed=5), sample_scenes(40, seed=5), sample_scenes(40, seed=6)
    assert first == again
    assert all(np.array_equal(a.render(), b.render()) for a, b in zip(first, again))
    assert [s.caption() for s in first] != [s.caption() for s in other]


@pytest.mark.parametrize("size", [32, 64])
def test_render_paints_palette_objects_on_black(size):
    for scene in sample_scenes(20, seed=3):
        image = scene.render(size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        pixels = {tuple(p) for p in image.reshape(-1, 3)}
        for obj in scene.objects:  # each object's colour appears exactly, not only blended at edges
            assert tuple(round(255 * c) for c in COLOURS[obj.colour]) in pixels
        assert (0, 0, 0) in pixels


def test_render_rejects_bad_size():
    scene = sample_scenes(1, seed=0)[0]
    for size in (8, 32.0, 4096):
        with pytest.raises(ValueError, match="size"):
            scene.render(size)


def test_scene_rejects_a_false_relation_and_twin_objects():
    left = SceneObject("red", "circle", "small", (0.25, 0.5))
    right = SceneObject("blue", "square", "large", (0.75, 0.5))
    assert Scene((left, right), "left of").caption() == "a small red circle to the left of a large blue square"
    with pytest.raises(ValueError, match="false"):
        Scene((left, right), "right of")
    with pytest.raises(ValueError, match="differ"):
        Scene((left, SceneObject("red", "circle", "large", (0.75, 0.5))), "left of")


def test_bad_sampling_arguments_raise():
    with pytest.raises(ValueError, match="split"):
        sample_scenes(1, seed=0, split="test")
    with pytest.raises(ValueError, match="relation"):
        sample_scenes(1, seed=0, split="heldout_relation", n_objects=1)
    with pytest.raises(ValueError, match="probability"):
        WorldConfig(p_two_objects=1.5)


# ----------------------------------------------------------------------------- captions


@pytest.mark.parametrize(
    "config",
    [WorldConfig(), WorldConfig(p_says_size=1, p_says_position=1), WorldConfig(p_says_size=0, p_says_position=0)],
)
def test_parse_caption_inverts_caption(config, scenes_by_split):
    scenes = sample_scenes(300, seed=1, config=config) + [s for ss in scenes_by_split.values() for s in ss]
    for scene in scenes:
        caption = scene.caption()
        assert parse_caption(caption) == scene.spec(), caption
        assert parse_caption(caption).caption() == caption
        assert set(caption.split()) <= VOCABULARY


def test_vocabulary_is_exactly_the_words_captions_use():
    config = WorldConfig(p_says_size=0.7, p_says_position=0.7)
    used = {w for scene in sample_scenes(1500, seed=2, config=config) for w in scene.caption().split()}
    assert used == VOCABULARY


def test_parse_caption_accepts_a_user_spelling():
    spec = parse_caption("A Red circle above a blue square.")
    assert spec.caption() == "a red circle above a blue square"
    assert parse_caption("an orange cross on the left").position == "left"


@pytest.mark.parametrize(
    "short, long",
    [
        ("a red circle left of a blue square", "a red circle to the left of a blue square"),
        ("a small red circle right of a large blue square", "a small red circle to the right of a large blue square"),
        ("An orange cross left of a white diamond.", "an orange cross to the left of a white diamond"),
    ],
)
def test_left_of_and_right_of_read_as_the_grammars_phrases(short, long):
    spec = parse_caption(short)
    assert spec == parse_caption(long) and spec.relation in ("left of", "right of")
    assert spec.caption() == long  # written back in the grammar's own words


@pytest.mark.parametrize(
    "text",
    [
        "a red circle on the left of a blue square",
        "a red circle left a blue square",
        "a red circle to left of a blue square",
        "a red circle left of",
    ],
)
def test_other_wordings_of_a_relation_are_still_refused(text):
    with pytest.raises(ValueError, match="is not a Shapes caption"):
        parse_caption(text)


@pytest.mark.parametrize(
    "text, unknown", [("a purple circle", "purple"), ("a red hexagon", "hexagon"), ("two red circles", "circles, two")]
)
def test_parse_caption_names_unknown_words(text, unknown):
    with pytest.raises(ValueError, match=f"outside the Shapes vocabulary: {unknown}"):
        parse_caption(text)


@pytest.mark.parametrize(
    "text",
    [
        "red circle",
        "a circle",
        "a red circle above",
        "a red circle above a red circle",
        "a red circle on the left above a blue square",
        "a blue square above a red circle on the left",
        "a small large red circle",
        "",
    ],
)
def test_parse_caption_rejects_sentences_outside_the_grammar(text):
    with pytest.raises(ValueError):
        parse_caption(text)


# ----------------------------------------------------------------------------- held-out split


def test_train_scenes_never_hold_a_heldout_combination():
    scenes = sample_scenes(3000, seed=4, split="train")
    assert not any(holds_heldout_pair(s) or holds_heldout_triple(s) for s in scenes)
    # ... while every colour and shape, and both kinds of scene, still appear in training
    assert {o.colour for s in scenes for o in s.objects} == set(COLOURS)
    assert {o.shape for s in scenes for o in s.objects} == set(SHAPES)
    assert {len(s.objects) for s in scenes} == {1, 2}


def test_heldout_scenes_hold_what_their_split_says(scenes_by_split):
    expected = {
        "heldout": lambda p, t: p or t,
        "heldout_pair": lambda p, t: p and not t,
        "heldout_relation": lambda p, t: t and not p,
        "heldout_both": lambda p, t: p and t,
    }
    for split, wanted in expected.items():
        for scene in scenes_by_split[split]:
            assert wanted(holds_heldout_pair(scene), holds_heldout_triple(scene)), (split, scene.caption())
    assert {len(s.objects) for s in scenes_by_split["heldout_pair"]} == {1, 2}


def test_split_of_sees_a_heldout_triple_in_either_wording():
    assert not any(colour in ("white", "orange") for colour, _ in HELDOUT_PAIRS)  # so only the triple is held out
    for shape_a, relation, shape_b in sorted(HELDOUT_TRIPLES):
        direct = SceneSpec((ObjectSpec("white", shape_a), ObjectSpec("orange", shape_b)), relation)
        converse = SceneSpec((ObjectSpec("orange", shape_b), ObjectSpec("white", shape_a)), CONVERSE[relation])
        assert split_of(parse_caption(direct.caption())) == "heldout_relation", direct.caption()
        assert split_of(parse_caption(converse.caption())) == "heldout_relation", converse.caption()
        assert split_of(SceneSpec(direct.objects, CONVERSE[relation])) == "train"


# ----------------------------------------------------------------------------- prompt files


def test_prompt_files_are_complete_parse_and_are_current():
    generated = prompt_lists()  # what `python -m lab.prompt_files --write-prompts` writes
    files = {stem: read_prompts(stem) for stem in PROMPT_COUNTS}
    assert files == generated, "lab/prompts/ is stale: run python -m lab.prompt_files --write-prompts"
    for stem, count in PROMPT_COUNTS.items():
        assert len(files[stem]) == count, stem
    specs = {stem: [parse_caption(line) for line in lines] for stem, lines in files.items()}
    assert all(split_of(s) == "train" for s in specs["train"] + specs["validation"])
    assert all(len(s.objects) == 1 and split_of(s) == "heldout_pair" for s in specs["heldout_single"])
    assert all(len(s.objects) == 2 and split_of(s) != "train" for s in specs["heldout_two"])
    assert {split_of(s) for s in specs["heldout_two"]} == {"heldout_pair", "heldout_relation"}
    assert not set(files["validation"]) & set(files["train"])
    for stem in ("train", "validation", "heldout_two"):
        assert len(set(files[stem])) == len(files[stem]), f"{stem} repeats a prompt"
    single = files["heldout_single"]  # 180 distinct captions exist; the last 20 lines repeat the first 20
    assert len(set(single)) == 180 and single[180:] == single[:20]
    for held, seen in zip(specs["heldout_single"], specs["seen_single"]):  # the matched control, line by line
        (h,), (s,) = held.objects, seen.objects
        assert split_of(seen) == "train" and (s.shape, s.size, seen.position) == (h.shape, h.size, held.position)
        assert s.colour != h.colour
    # every shape's twins spread over the colours it trains with, not one stand-in colour
    for shape in SHAPES:
        twins = {s.objects[0].colour for s in specs["seen_single"] if s.objects[0].shape == shape}
        assert len(twins) >= 5, (shape, twins)


def test_seen_twin_refuses_two_objects():
    with pytest.raises(ValueError, match="one-object"):
        seen_twin(parse_caption("a red circle above a blue square"), 0)


# ----------------------------------------------------------------------------- truth of a caption


def test_every_caption_is_true_of_its_own_scene(scenes_by_split):
    for scenes in scenes_by_split.values():
        assert all(caption_is_true_of(scene.spec(), scene) for scene in scenes)


def test_a_caption_is_true_of_what_it_says_and_of_nothing_else():
    red, blue = SceneObject("red", "circle", "large", (0.2, 0.5)), SceneObject("blue", "square", "small", (0.8, 0.5))
    pair, lone = Scene((red, blue), "left of"), Scene((red,), says_size=True, says_position=True)
    assert caption_is_true_of(parse_caption("a red circle to the left of a blue square"), pair)
    assert caption_is_true_of(
        parse_caption("a blue square to the right of a large red circle"), pair
    )  # the other wording
    for false in (
        "a blue square to the left of a red circle",
        "a small red circle to the left of a blue square",
        "a red circle to the left of a blue circle",
        "a red circle",
    ):
        assert not caption_is_true_of(parse_caption(false), pair), false
    for true in ("a red circle", "a large red circle", "a red circle on the left"):
        assert caption_is_true_of(parse_caption(true), lone), true
    for false in ("a small red circle", "a red circle on the right", "a red square"):
        assert not caption_is_true_of(parse_caption(false), lone), false
