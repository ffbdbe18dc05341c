"""The "Latent space" backend on the Shapes lab's models: interpolations and text diffs whose end frames are text to
image's own images, strips of the right frames, and checker tables read from the frames themselves."""

import pickle

import numpy as np
import pytest
import torch

from comparisons.app.latent_space import LatentSpace, _report, checker_problem, verdict
from comparisons.app.session import AppConfig, Session
from comparisons.app.walks import GAP, LABEL_PX, Walk, frame_of, prior_of
from comparisons.settings import Settings
from lab.checker import check
from lab.world import region_of
from pipelines.outputs import to_uint8

from helpers import assert_images_close

FAST = Settings(
    prior_steps=2, decoder_steps=3, super_res_steps=2, steps=3, stable_unclip_prior_steps=2, stable_unclip_steps=3
)
START, END = "a red circle", "a blue square"
SEED, FRAMES = 5, 3


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return Session(AppConfig("lab", "cpu", tmp_path_factory.mktemp("latent")))


@pytest.fixture(scope="module")
def latent(session):
    return LatentSpace(session)


@pytest.fixture(scope="module")
def walked(latent):
    return latent.interpolate(START, END, str(SEED), FRAMES, "prompts", FAST)


def text_to_image(session, architecture: str, prompt: str) -> np.ndarray:
    pipe = session.harness().pipeline(architecture)
    return pipe(prompt, seed=SEED, **FAST.pipeline_kwargs(architecture)).images[0]


# ----------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize("architecture", ["unclip", "latent_diffusion", "stable_unclip"])
def test_the_ends_of_an_interpolation_are_the_text_to_image_images_of_its_prompts(session, walked, architecture):
    walk = walked.walks[architecture]
    assert walk.positions == (0.0, 0.5, 1.0) and walk.frames.shape[0] == FRAMES
    assert_images_close(walk.frames[0], text_to_image(session, architecture, START))
    assert_images_close(walk.frames[-1], text_to_image(session, architecture, END))
    middle = walk.frames[1]
    assert min(np.abs(middle - walk.frames[0]).max(), np.abs(middle - walk.frames[-1]).max()) > 0.05  # it moves


def test_the_prior_draws_the_same_noise_for_every_prompt(session):
    unclip = session.harness().pipeline("unclip")
    a, b = prior_of(unclip, START, SEED, FAST), prior_of(unclip, END, SEED, FAST)
    assert torch.equal(a.state, b.state)  # so every frame decodes from the state text to image's decoder starts from
    assert not torch.equal(a.state, prior_of(unclip, START, SEED + 1, FAST).state)
    assert not torch.equal(a.image_embeds, b.image_embeds)


def test_a_walk_from_a_prompt_to_itself_stays_put(latent):
    report = latent.interpolate(START, START, SEED, FRAMES, "prompts", FAST)
    for walk in report.walks.values():
        assert all(np.array_equal(frame, walk.frames[0]) for frame in walk.frames)  # one noise for every frame


def test_one_progress_bar_follows_every_walk(latent):
    seen = []
    latent.interpolate(START, END, SEED, 2, "prompts", FAST, lambda done, what: seen.append((done, what)))
    fractions = [done for done, _ in seen]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] < 1
    assert [what for _, what in seen] == [
        "unCLIP frame 1/2",
        "unCLIP frame 2/2",
        "latent diffusion frame 1/2",
        "latent diffusion frame 2/2",
        "Stable unCLIP frame 1/2",
        "Stable unCLIP frame 2/2",
    ]


def test_with_the_empty_decoder_text_unclip_decodes_the_embedding_alone(session, latent, walked):
    report = latent.interpolate(START, END, SEED, FRAMES, "empty", FAST)
    walk = report.walks["unclip"]
    assert walk.frames.shape == walked.walks["unclip"].frames.shape
    # text to image's decoder reads the prompt, this one reads the empty prompt: the ends are not its images
    assert np.abs(walk.frames[0] - text_to_image(session, "unclip", START)).max() > 0.05
    assert np.array_equal(report.walks["latent_diffusion"].frames, walked.walks["latent_diffusion"].frames)
    # Stable unCLIP's U-Net reads the empty prompt too: the embedding alone, every frame from one text
    stable = report.walks["stable_unclip"]
    assert np.abs(stable.frames[0] - text_to_image(session, "stable_unclip", START)).max() > 0.05
    assert np.abs(stable.frames[0] - stable.frames[-1]).max() > 0.05  # the embedding still moves it


# ----------------------------------------------------------------------------- text diffs


def test_a_text_diff_starts_at_the_captions_text_to_image_image(session, latent):
    report = latent.text_diff(START, START, "a red square", SEED, 4, 0.6, "prompts", FAST)
    walk = report.walks["unclip"]
    assert list(report.walks) == ["unclip"] and walk.variable == "θ"
    assert walk.positions == pytest.approx((0.0, 0.2, 0.4, 0.6)) and walk.labels()[-1] == "θ = 0.60"
    assert_images_close(walk.frames[0], text_to_image(session, "unclip", START))
    assert np.abs(walk.frames[-1] - walk.frames[0]).max() > 0.05
    assert (report.start, report.end) == (START, "a red square")


def test_a_text_diff_needs_two_different_captions(latent):
    with pytest.raises(ValueError, match="same CLIP text embedding"):
        latent.text_diff(START, END, END, SEED, 3, 0.5, "prompts", FAST)


# ----------------------------------------------------------------------------- strips and the checker


def test_a_strip_holds_every_frame_upscaled_with_crisp_pixels(walked):
    walk = walked.walks["unclip"]
    size = walk.frames.shape[1]  # 32 px in the lab: upscaled by a whole factor
    factor = 128 // size
    strip = walk.strip()
    assert factor == 4 and strip.size == (FRAMES * size * factor + (FRAMES - 1) * GAP, size * factor + LABEL_PX)
    for i, frame in enumerate(to_uint8(walk.frames)):
        upscaled = frame.repeat(factor, axis=0).repeat(factor, axis=1)
        assert np.array_equal(frame_of(strip, i, size * factor), upscaled)
    gaps = np.asarray(strip)[: size * factor, size * factor : size * factor + GAP]
    assert (gaps == 255).all()


def test_the_checker_table_is_what_the_checker_reads_in_each_frame(walked):
    table = walked.readings["unclip"]
    walk = walked.walks["unclip"]
    assert list(table.columns) == ["read", *walk.labels()]
    assert list(table["read"]) == ["colour", "shape", "size", "position", f"start: {START}", f"end: {END}"]
    for label, image in zip(walk.labels(), to_uint8(walk.frames)):
        first, last = check(image, START), check(image, END)
        column = dict(zip(table["read"], table[label]))
        for name, read in (("colour", "colour"), ("shape", "shape"), ("size", "size")):
            assert column[name] == (" / ".join(getattr(o, read) for o in first.detected) or "nothing")
        assert column["position"] == (" / ".join(region_of(o.centre) for o in first.detected) or "nothing")
        assert column[f"start: {START}"] == verdict(first) and column[f"end: {END}"] == verdict(last)
    assert walked.note.startswith("The Shapes checker read every frame")


def test_verdicts_say_what_holds():
    from lab.world import Scene, SceneObject

    scene = Scene((SceneObject("red", "circle", "small", (0.5, 0.5)),), says_position=True)
    image = scene.render()
    assert verdict(check(image, "a red circle")) == "all ✓"
    assert verdict(check(image, "a small red square in the middle")) == "colour ✓ shape ✗ size ✓ position ✓"
    two = verdict(check(image, "a red circle left of a blue square"))
    assert two == "colour 1 ✓ shape 1 ✓ colour 2 ✗ shape 2 ✗ relation ✗ count ✗ (1)"


def test_outside_the_lab_the_checker_says_it_cannot_read(walked):
    frames = walked.walks["unclip"]
    assert checker_problem("lab", ["a red circle left of a blue square", END]) is None  # the lab's words
    assert "Shapes lab's images only" in checker_problem("tiny", [START, END])
    report = _report("tiny", START, END, {"unclip": frames})
    assert report.readings is None and report.note.startswith("The Shapes checker cannot read these frames")
    report = _report("lab", "a cat on a sofa", END, {"unclip": frames})
    assert report.readings is None and "outside the Shapes vocabulary: cat, sofa" in report.note


def test_a_report_is_portable(walked):
    again = pickle.loads(pickle.dumps(walked))  # what a forked ZeroGPU worker hands back
    assert np.array_equal(again.walks["unclip"].frames, walked.walks["unclip"].frames)
    assert again.readings["latent_diffusion"].equals(walked.readings["latent_diffusion"])
    assert isinstance(again.walks["unclip"], Walk)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "start, end, seed, frames, text, error",
    [
        ("", END, 0, 3, "prompts", "start prompt is empty"),
        (START, "  ", 0, 3, "prompts", "end prompt is empty"),
        (START, END, "-2", 3, "prompts", "Seed: “-2” is out of range"),
        (START, END, 0, 1, "prompts", "Frames must be a whole number from 2 to 12, got “1”"),
        (START, END, 0, 13, "prompts", "Frames must be a whole number from 2 to 12, got “13”"),
        (START, END, 0, 2.5, "prompts", "Frames must be a whole number from 2 to 12, got “2.5”"),
        (START, END, 0, "many", "prompts", "Frames must be a whole number from 2 to 12, got “many”"),
        (START, END, 0, None, "prompts", "Frames must be a whole number from 2 to 12, got nothing"),
        (START, END, 0, 3, "nothing", "decoder text must be one of prompts, empty"),
    ],
)
def test_bad_interpolations_are_refused(latent, start, end, seed, frames, text, error):
    with pytest.raises(ValueError, match=error):
        latent.interpolate(start, end, seed, frames, text, FAST)


@pytest.mark.parametrize("theta", [0, -0.5, 1.5, float("nan"), "far", None])
def test_bad_thetas_are_refused(latent, theta):
    with pytest.raises(ValueError, match="Largest θ must be a number above 0, at most 1, got "):
        latent.text_diff(START, START, END, 0, 3, theta, "prompts", FAST)


def test_bad_settings_are_refused(latent):
    with pytest.raises(ValueError, match="prior stage needs at least 2"):
        latent.interpolate(START, END, 0, 3, "prompts", FAST.replace(prior_steps=1))
