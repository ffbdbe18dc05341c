"""Rows, PNG infotext and the harness that ties generation, scoring and logging together."""

import numpy as np
import pytest
from PIL import Image

from comparisons.harness import Harness
from comparisons.metrics import clip_score, tiny_judge
from comparisons.records import infotext, parse_infotext, settings_from_png, weights_hash
from comparisons.settings import Settings
from pipelines import UnCLIP
from pipelines.tiny import build_tiny_latent_diffusion, build_tiny_unclip

FAST = Settings(prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return Harness(
        {"unclip": build_tiny_unclip(0, image_variations=True), "latent_diffusion": build_tiny_latent_diffusion(0)},
        tiny_judge(),
        tmp_path_factory.mktemp("results"),
        models={"unclip": "tiny-unclip", "latent_diffusion": "tiny-ld"},
    )


def test_infotext_round_trips_awkward_prompts():
    row = {
        "prompt": 'a "red", circle: über 🙂\nsecond line',
        "negative_prompt": "blurry, dark",
        "seed": 2**63 - 1,
        "steps": 50,
        "guidance": 7.5,
        "width": 64,
        "height": 48,
        "model_hash": "abc",
        "model": "a/b:c",
        "architecture": "latent_diffusion",
        "diffusers_version": "0.42.1",
    }
    parsed = parse_infotext(infotext(row))
    assert parsed["prompt"] == row["prompt"] and parsed["negative_prompt"] == "blurry, dark"
    assert parsed["Seed"] == str(2**63 - 1) and parsed["CFG scale"] == "7.5" and parsed["Model"] == "a/b:c"
    assert parsed["Size"] == "64x48" and parsed["Architecture"] == "latent_diffusion"


@pytest.mark.parametrize("architecture", ["unclip", "latent_diffusion"])
def test_png_regenerates_the_same_image(harness, architecture):
    settings = Settings(
        prior_steps=2,
        decoder_steps=3,
        super_res_steps=2,
        prior_guidance=3.0,
        steps=3,
        guidance=5.0,
        negative_prompt="a blue square",
    )
    output, rows = harness.generate(architecture, ["a red circle", "a green cross"], [5, 9], settings)
    arch, prompt, seed, read_back = settings_from_png(rows[1]["image_path"])
    assert (arch, prompt, seed) == (architecture, "a green cross", 9)
    again, _ = harness.generate(arch, [prompt], [seed], read_back)
    np.testing.assert_allclose(again.images[0], output.images[1], atol=1e-4)
    saved = np.asarray(Image.open(rows[1]["image_path"]).convert("RGB"))
    assert np.array_equal(saved, (output.images[1] * 255).round().astype(np.uint8))


def test_rows_carry_every_column_group(harness):
    output, rows = harness.generate("unclip", ["a red circle", "a blue square"], [1, 2], FAST)
    assert len(rows) == 2 and [r["seed"] for r in rows] == [1, 2]
    row = rows[0]
    for column in (
        "run_id",
        "created_at",
        "architecture",
        "model",
        "model_hash",
        "prompt",
        "seed",
        "prior_steps",
        "decoder_guidance",
        "height",
        "width",
        "dtype",
        "device",
        "device_name",
        "torch_version",
        "diffusers_version",
        "transformers_version",
        "seconds_prior",
        "seconds_total",
        "peak_memory_mb_decoder",
        "peak_memory_mb",
        "memory_kind",
        "peak_rss_mb",
        "clip_score",
        "clip_cosine",
        "prior_image_cosine",
        "image_path",
    ):
        assert column in row, column
    assert row["created_at"].tzinfo is not None and row["batch_size"] == 2
    assert row["memory_kind"] == "tensors + weights"
    assert row["peak_rss_mb"] > row["peak_memory_mb"] > 0  # the process holds far more than one stage
    assert row["seconds_total"] == pytest.approx(output.total_seconds / 2)
    assert row["clip_score"] == pytest.approx(clip_score(row["clip_cosine"]))
    assert -1 <= row["prior_image_cosine"] <= 1 and row["model"] == "tiny-unclip"
    assert "steps" not in row  # latent diffusion's settings stay out of unCLIP rows


def test_judge_scores_match_a_direct_computation(harness):
    output, rows = harness.generate("latent_diffusion", ["a red circle"], [3], FAST)
    judge = harness.judge
    direct = float(judge.embed_images(output.images)[0] @ judge.embed_texts(["a red circle"])[0])
    assert rows[0]["clip_cosine"] == pytest.approx(direct, abs=1e-6)
    assert rows[0]["prior_image_cosine"] is None  # unCLIP only


def test_infotext_carries_an_image_taken_in():
    row = {
        "prompt": "",
        "decoder_steps": 3,
        "seed": 1,
        "width": 64,
        "height": 64,
        "model_hash": "abc",
        "model": "m",
        "architecture": "unclip",
        "diffusers_version": "0.42.1",
        "mode": "variations",
        "source_hash": "f" * 64,
    }
    parsed = parse_infotext(infotext(row))
    assert (parsed["prompt"], parsed["Mode"], parsed["Source hash"]) == ("", "variations", "f" * 64)
    assert "Denoising strength" not in parsed and "Prior steps" not in parsed
    img2img = {**row, "architecture": "latent_diffusion", "mode": "img2img", "steps": 10, "strength": 0.35}
    assert parse_infotext(infotext(img2img))["Denoising strength"] == "0.35"
    assert "Mode" not in parse_infotext(infotext({**row, "mode": "text_to_image"}))  # as before modes


def test_a_borrowed_component_is_hashed_only_for_the_rows_that_use_it(tiny):
    own = tiny("unclip_variations")
    pipe = UnCLIP(**{k: v for k, v in tiny("unclip").components().items()})
    alone = weights_hash(pipe)
    pipe.attach_image_encoder(own.image_encoder, own.feature_extractor, "org/variations")
    assert weights_hash(pipe) == alone != weights_hash(pipe, with_borrowed=True)
    assert weights_hash(own) == weights_hash(own, with_borrowed=True)  # its own encoder counts everywhere


def test_weights_hash_is_stable_and_sees_a_change():
    pipe = build_tiny_latent_diffusion(0)
    first = weights_hash(pipe)
    assert weights_hash(build_tiny_latent_diffusion(0)) == first
    assert weights_hash(build_tiny_latent_diffusion(1)) != first


def test_checker_columns_in_the_lab(harness):
    harness.use_checker = True
    try:
        _, rows = harness.generate("latent_diffusion", ["a red circle"], [3], FAST)
    finally:
        harness.use_checker = False
    assert any(k.startswith("check_") for k in rows[0])


def test_bad_inputs(harness):
    with pytest.raises(ValueError, match="unknown architecture"):
        harness.generate("gan", ["a cat"], [0])
    with pytest.raises(ValueError, match="one seed per image"):
        harness.generate("unclip", ["a cat", "a dog"], [0])
    with pytest.raises(ValueError, match="unknown architecture"):
        Settings().for_architecture("vae")
    with pytest.raises(ValueError, match="parameters"):
        Image.new("RGB", (4, 4)).save(harness.out_dir / "plain.png")
        settings_from_png(harness.out_dir / "plain.png")
