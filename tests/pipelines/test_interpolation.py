"""Paths through the conditioning spaces (pipelines.interpolation) and the pipelines' entry points that decode
moved conditioning: UnCLIP.decode_embeddings and LatentDiffusion.generate_from_hidden_states. Given what text to
image itself computes, they must make text to image's very images: they reuse its stages and its noise."""

import math

import numpy as np
import pytest
import torch

from pipelines.interpolation import lerp, positions, slerp, text_diff, text_direction, unit
from pipelines.latent_diffusion import HiddenStateConditioning
from pipelines.unclip import uses_guidance

from helpers import LD_STEPS, UNCLIP_STEPS

PROMPT = "a red circle above a blue square"


def vectors(n: int, dim: int = 16, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.double(), b.double()
    return torch.arccos(((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).clamp(-1, 1))


# ----------------------------------------------------------------------------- the maths


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_slerp_and_lerp_start_and_end_at_their_inputs_bit_for_bit(dtype):
    a, b = vectors(4, dtype=dtype), vectors(4, seed=1, dtype=dtype)
    for path in (slerp, lerp):
        assert torch.equal(path(a, b, 0.0), a) and torch.equal(path(a, b, 1.0), b)
        assert path(a, b, 0.3).dtype == dtype


def test_slerp_keeps_unit_vectors_unit_and_turns_at_constant_speed():
    a, b = unit(vectors(4)).double(), unit(vectors(4, seed=1)).double()
    total = angle(a, b)
    for t in (0.1, 0.25, 0.5, 0.9):
        between = slerp(a, b, t)
        assert torch.allclose(between.norm(dim=-1), torch.ones(4, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(angle(a, between), t * total, atol=1e-9)
        assert torch.allclose(angle(between, b), (1 - t) * total, atol=1e-9)
    # lerp cuts the chord instead: shorter than unit in between
    assert (lerp(a, b, 0.5).norm(dim=-1) < 1 - 1e-3).all()


def test_slerp_falls_back_to_lerp_for_near_parallel_and_opposite_vectors():
    a = vectors(1)
    for b in (a * 2 + 1e-7, a.clone(), -a, torch.zeros_like(a)):
        between = slerp(a, b, 0.4)
        assert torch.isfinite(between).all()
        assert torch.allclose(between, lerp(a, b, 0.4), atol=1e-6)
    # just outside the fallback, the arc's own formula is used and is still finite
    b = a + 1e-2 * vectors(1, seed=3)
    assert torch.isfinite(slerp(a, b, 0.4)).all()


def test_a_text_diff_turns_the_image_embedding_towards_target_minus_source_keeping_its_norm():
    image, source, target = vectors(1, seed=4) * 5, vectors(1, seed=5), vectors(1, seed=6)
    direction = text_direction(source, target)
    assert torch.allclose(direction.norm(dim=-1), torch.ones(1))
    assert torch.allclose(direction, unit(unit(target) - unit(source)))
    assert torch.equal(text_diff(image, direction, 0.0), image)
    angles = [float(angle(text_diff(image, direction, theta), direction)) for theta in (0.0, 0.25, 0.5, 1.0)]
    assert angles == sorted(angles, reverse=True) and angles[-1] < 1e-3  # θ = 1 reaches the direction itself
    for theta in (0.25, 0.5, 1.0):
        assert torch.allclose(text_diff(image, direction, theta).norm(dim=-1), image.norm(dim=-1), rtol=1e-5)


def test_a_text_diff_of_one_caption_with_itself_is_refused():
    source = vectors(1)
    with pytest.raises(ValueError, match="same CLIP text embedding"):
        text_direction(source, source * 3)  # the same direction: CLIP compares by angle


def test_positions_are_evenly_spaced_and_include_both_ends():
    assert positions(2) == [0.0, 1.0]
    assert positions(5, 0.5) == [0.0, 0.125, 0.25, 0.375, 0.5]
    steps = np.diff(positions(12))
    assert math.isclose(steps.min(), steps.max()) and positions(12)[-1] == 1.0


@pytest.mark.parametrize("frames, end", [(1, 1.0), (0, 1.0), (2.5, 1.0), (True, 1.0), ("8", 1.0), (4, 0), (4, -1)])
def test_bad_walks_are_refused(frames, end):
    with pytest.raises(ValueError, match="walk"):
        positions(frames, end)


# ----------------------------------------------------------------------------- unCLIP: decode_embeddings


def test_decoding_the_priors_embedding_from_the_priors_generator_is_text_to_image(unclip):
    settings = dict(UNCLIP_STEPS, prior_guidance_scale=4.0, decoder_guidance_scale=8.0)
    plain = unclip(PROMPT, seed=3, **settings)
    generator = torch.Generator().manual_seed(3)  # the generator text to image makes for one image from seed 3
    text = unclip.encode_prompt([PROMPT], 1, with_uncond=uses_guidance(4.0, 8.0))
    embeds = unclip.run_prior(text, generator, 2, 4.0)
    out = unclip.decode_embeddings(
        embeds,
        text,
        decoder_num_inference_steps=2,
        super_res_num_inference_steps=2,
        decoder_guidance_scale=8.0,
        generator=generator,
    )
    assert np.array_equal(out.images, plain.images)
    assert torch.equal(out.image_embeds, plain.image_embeds)
    assert [s.name for s in out.stages] == ["decoder", "super_res"]


def test_decode_embeddings_decodes_the_embedding_it_is_given(unclip):
    text = unclip.encode_prompt([PROMPT], 1)
    embeds = unclip.run_prior(text, torch.Generator().manual_seed(0), 2)
    kwargs = dict(decoder_num_inference_steps=2, super_res_num_inference_steps=2, seed=5)
    same = unclip.decode_embeddings(embeds, text, **kwargs).images
    assert np.array_equal(same, unclip.decode_embeddings(embeds.clone(), text, **kwargs).images)
    moved = unclip.decode_embeddings(-embeds, text, **kwargs).images
    assert np.abs(moved - same).max() > 1e-3


def test_decode_embeddings_refuses_what_it_cannot_decode(unclip):
    text = unclip.encode_prompt([PROMPT], 1)
    dim = unclip.text_proj.embedding_proj.in_features
    good = torch.zeros(1, dim)
    for embeds, message in (
        (torch.zeros(dim), "tensor"),
        (torch.zeros(1, dim + 1), "tensor"),
        ([0.0] * dim, "tensor"),
    ):
        with pytest.raises(ValueError, match=message):
            unclip.decode_embeddings(embeds, text)
    with pytest.raises(ValueError, match="one row per image embedding"):
        unclip.decode_embeddings(torch.zeros(2, dim), text)
    with pytest.raises(ValueError, match="TextConditioning"):
        unclip.decode_embeddings(good, PROMPT)
    with pytest.raises(ValueError, match="with_uncond=True"):
        unclip.decode_embeddings(good, unclip.encode_prompt([PROMPT], 1, with_uncond=False))
    with pytest.raises(ValueError, match="decoder stage needs at least 2"):
        unclip.decode_embeddings(good, text, decoder_num_inference_steps=1)


# ----------------------------------------------------------------------- latent diffusion: generate_from_hidden_states


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_generating_from_the_prompts_hidden_states_is_text_to_image(latent_diffusion, guidance):
    plain = latent_diffusion(PROMPT, negative_prompt="blurry", guidance_scale=guidance, seed=4, **LD_STEPS)
    text = latent_diffusion.encode_prompt([PROMPT], ["blurry"] if guidance > 1 else None)
    out = latent_diffusion.generate_from_hidden_states(text, guidance_scale=guidance, seed=4, **LD_STEPS)
    assert np.array_equal(out.images, plain.images)
    assert [s.name for s in out.stages] == ["unet", "vae_decode"]


def test_generate_from_hidden_states_reads_the_states_it_is_given(latent_diffusion):
    a, b = (latent_diffusion.encode_prompt([p], [""]) for p in (PROMPT, "a green triangle"))
    made = [
        latent_diffusion.generate_from_hidden_states(
            HiddenStateConditioning(cond, a.uncond), seed=4, **LD_STEPS
        ).images
        for cond in (a.cond, lerp(a.cond, b.cond, 0.5), b.cond)
    ]
    assert np.abs(made[0] - made[1]).max() > 1e-3 and np.abs(made[1] - made[2]).max() > 1e-3


def test_generate_from_hidden_states_refuses_what_it_cannot_read(latent_diffusion):
    text = latent_diffusion.encode_prompt([PROMPT], [""])
    with pytest.raises(ValueError, match="HiddenStateConditioning"):
        latent_diffusion.generate_from_hidden_states(text.cond)
    with pytest.raises(ValueError, match="HiddenStateConditioning"):
        latent_diffusion.generate_from_hidden_states(HiddenStateConditioning(text.cond[..., :-1], None))
    with pytest.raises(ValueError, match="negative prompt's hidden states"):
        latent_diffusion.generate_from_hidden_states(HiddenStateConditioning(text.cond, None), guidance_scale=7.5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        latent_diffusion.generate_from_hidden_states(text, num_inference_steps=0)
    with pytest.raises(ValueError, match="height"):
        latent_diffusion.generate_from_hidden_states(text, height=7, **LD_STEPS)
