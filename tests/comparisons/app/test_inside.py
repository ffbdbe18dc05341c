"""The "Inside the models" backend on the tiny pipelines: images, trajectories, attention maps, tables."""

import itertools

import numpy as np
import pytest
import torch

from comparisons.app.inside import GAP, TILE, Inside, explain, explain_unclip, latent_channels_image
from comparisons.app.recorders import (
    AttentionRecorder,
    cross_attention_layers,
    frame_steps,
    grid_size,
    recording_cross_attention,
)
from comparisons.app.session import AppConfig, Session
from comparisons.metrics import embedding_cosine
from comparisons.settings import Settings

from helpers import assert_images_close

PROMPT = "a red circle above a blue square"
TOKENS = ["a", "red", "circle", "above", "a", "blue", "square"]
# Three U-Net steps (four PNDM loop steps) against three frames: the latent-diffusion strip is a subsample.
SETTINGS = Settings(prior_steps=2, decoder_steps=2, super_res_steps=2, steps=3)
NUM_FRAMES = 3


@pytest.fixture(scope="module")
def report(unclip_variations, latent_diffusion):
    pipes = {"unclip": unclip_variations, "latent_diffusion": latent_diffusion}
    return explain(pipes, PROMPT, seed=0, settings=SETTINGS, num_frames=NUM_FRAMES)


def strip_size(frames: int, size: int) -> tuple[int, int]:
    return frames * size + (frames - 1) * GAP, size


def test_frame_steps_are_evenly_spaced_and_end_at_the_last_step():
    assert frame_steps(50, 8) == [0, 7, 14, 21, 28, 35, 42, 49]
    assert frame_steps(2, 8) == [0, 1]
    assert frame_steps(10, 1) == [9]


def test_unclip_strips_show_every_step_of_short_loops(report, unclip_variations):
    inside = report.unclip
    assert inside.frame_steps == {"decoder": [0, 1], "super_res": [0, 1]}
    assert inside.decoder_strip.size == strip_size(2, unclip_variations.decoder.config.sample_size)
    assert inside.super_res_strip.size == strip_size(2, unclip_variations.image_size)
    assert inside.image.size == (unclip_variations.image_size,) * 2


def test_last_super_res_frame_is_the_final_image(report):
    # At t = 0 the scheduler's x_0 is the sample it returns: the strip must end on the image itself.
    size = report.unclip.image.width
    last = np.asarray(report.unclip.super_res_strip)[:, -size:].astype(int)
    assert np.abs(last - np.asarray(report.unclip.image).astype(int)).max() <= 1


def test_latent_diffusion_strip_is_a_subsample_decoded_to_images(report, latent_diffusion):
    steps = report.latent_diffusion.frame_steps["unet"]
    assert len(steps) == NUM_FRAMES and steps[0] == 0 and steps == sorted(set(steps))
    assert report.latent_diffusion.unet_strip.size == strip_size(NUM_FRAMES, latent_diffusion.image_size)
    assert report.latent_diffusion.image.size == (latent_diffusion.image_size,) * 2


def test_latent_channels_grid(report, latent_diffusion):
    latent = latent_diffusion.image_size // latent_diffusion.vae_scale_factor
    tile = latent * (TILE // latent)
    assert latent_diffusion.unet.config.in_channels == 4  # a 2 x 2 grid
    assert report.latent_diffusion.latent_channels.size == (2 * tile + GAP, 2 * tile + GAP)


def test_latent_channels_are_each_normalised_to_grey():
    ramp = torch.linspace(-1, 1, 16).reshape(4, 4)
    latent = torch.stack([ramp, 5 * ramp + 3, -ramp, torch.zeros(4, 4)])  # the last channel is flat
    pixels = np.asarray(latent_channels_image(latent, tile=8))
    tiles = [pixels[r * 10 : r * 10 + 8, c * 10 : c * 10 + 8] for r in range(2) for c in range(2)]
    for t in tiles[:3]:
        assert t.min() == 0 and t.max() == 255 and (t[..., 0] == t[..., 2]).all()
    assert np.array_equal(tiles[0], tiles[1]) and np.array_equal(tiles[0], 255 - tiles[2])
    assert (tiles[3] == 0).all()
    assert (tiles[0][:2, :2] == tiles[0][0, 0]).all()  # nearest: each latent cell a 2 x 2 block


def test_one_attention_map_per_prompt_token(report, latent_diffusion):
    maps = report.latent_diffusion.token_maps
    assert [t for t, _ in maps] == TOKENS
    latent = latent_diffusion.image_size // latent_diffusion.vae_scale_factor
    for _, m in maps:
        assert m.shape == (latent, latent) and np.isfinite(m).all()
        assert m.min() == 0 and m.max() == 1
    overlays = report.latent_diffusion.token_overlays
    assert [t for t, _ in overlays] == TOKENS
    assert all(im.size == report.latent_diffusion.image.size and im.mode == "RGB" for _, im in overlays)


def test_attention_maps_differ_between_tokens(report):
    maps = [m for _, m in report.latent_diffusion.token_maps]
    for a, b in itertools.combinations(maps, 2):
        assert np.abs(a - b).max() > 1e-3


def test_recording_processor_leaves_the_image_unchanged(latent_diffusion):
    plain = latent_diffusion(PROMPT, seed=0, num_inference_steps=2)
    steps = []
    recorder = AttentionRecorder((latent_diffusion.image_size // latent_diffusion.vae_scale_factor,) * 2)
    with recording_cross_attention(latent_diffusion.unet, recorder):
        recorded = latent_diffusion(PROMPT, seed=0, num_inference_steps=2, callback=steps.append)
    assert recorder.count == len(steps) * len(cross_attention_layers(latent_diffusion.unet)) > 0
    assert_images_close(recorded.images, plain.images)  # within 1e-4: the same attention, another kernel


def test_original_processors_are_restored_even_after_an_error(latent_diffusion):
    layers = cross_attention_layers(latent_diffusion.unet)
    originals = {name: m.processor for name, m in layers.items()}
    recorder = AttentionRecorder((32, 32))
    with recording_cross_attention(latent_diffusion.unet, recorder):
        assert all(m.processor is not originals[n] for n, m in layers.items())
    assert all(m.processor is originals[n] for n, m in layers.items())
    with pytest.raises(RuntimeError, match="boom"):
        with recording_cross_attention(latent_diffusion.unet, recorder):
            raise RuntimeError("boom")
    assert all(m.processor is originals[n] for n, m in layers.items())


def test_parameter_counts_are_the_modules_own(report, unclip_variations, latent_diffusion):
    pipes = {"unclip": unclip_variations, "latent_diffusion": latent_diffusion}
    for arch, pipe in pipes.items():
        rows = report.components[report.components.architecture == arch]
        assert list(rows.component) == list(pipe.components())
        for _, row in rows.iterrows():
            component = getattr(pipe, row["component"])
            expected = sum(p.numel() for p in component.parameters()) if isinstance(component, torch.nn.Module) else 0
            assert row["parameters"] == expected and row["class"] == type(component).__name__
    assert (report.components[report.components.component.isin(["unet", "prior", "decoder"])].parameters > 0).all()


def test_shapes_come_from_the_run(report, unclip_variations, latent_diffusion):
    shapes = {(r.architecture, r.stage, r.tensor): r.shape for r in report.shapes.itertuples()}
    width = unclip_variations.text_encoder.config.hidden_size
    decoder = unclip_variations.decoder.config
    assert shapes["unclip", "text_encoder", "last_hidden_state"] == str((1, 77, width))
    assert shapes["unclip", "prior", "image_embeds"] == str((1, unclip_variations.prior.config.embedding_dim))
    assert shapes["unclip", "decoder", "sample"] == str(
        (1, decoder.in_channels, decoder.sample_size, decoder.sample_size)
    )
    assert shapes["unclip", "super_res", "sample"] == str(
        (1, 3, unclip_variations.image_size, unclip_variations.image_size)
    )
    latent = latent_diffusion.image_size // latent_diffusion.vae_scale_factor
    assert shapes["latent_diffusion", "text_encoder", "last_hidden_state"] == str(
        (1, 77, latent_diffusion.text_encoder.config.hidden_size)
    )
    assert shapes["latent_diffusion", "unet", "latent"] == str(
        (1, latent_diffusion.unet.config.in_channels, latent, latent)
    )
    assert shapes["latent_diffusion", "vae_decode", "images"] == str(
        (1, latent_diffusion.image_size, latent_diffusion.image_size, 3)
    )


def test_prior_cosines(report, unclip):
    for cosine in (report.unclip.prior_text_cosine, report.unclip.prior_image_cosine):
        assert cosine is not None and -1 <= cosine <= 1
    # Without an image encoder there is no image cosine; the text cosine compares the prior's output to its input.
    inside = explain_unclip(unclip, PROMPT, seed=0, settings=SETTINGS, num_frames=NUM_FRAMES)
    out = unclip(PROMPT, seed=0, **SETTINGS.pipeline_kwargs("unclip"))
    assert inside.prior_image_cosine is None
    assert inside.prior_text_cosine == pytest.approx(
        float(embedding_cosine(out.image_embeds, out.text_embeds)[0]), abs=1e-6
    )


def test_grid_size_follows_the_unet_downsampling():
    assert grid_size(32 * 32, (32, 32)) == (32, 32)
    assert grid_size(8 * 12, (15, 23)) == (8, 12)
    with pytest.raises(ValueError, match="attention positions"):
        grid_size(50, (32, 32))


@pytest.mark.parametrize("prompt, num_frames", [("", 8), (["two", "prompts"], 8), (PROMPT, 0)])
def test_bad_input_is_refused(unclip, latent_diffusion, prompt, num_frames):
    with pytest.raises(ValueError):
        explain(
            {"unclip": unclip, "latent_diffusion": latent_diffusion},
            prompt,
            seed=0,
            settings=SETTINGS,
            num_frames=num_frames,
        )


def test_recorder_averages_the_conditional_half_over_heads_and_calls():
    heads, size = 2, (2, 2)
    uncond = torch.full((heads, 4, 3), 100.0)  # must be ignored: guidance batches [uncond, cond]
    cond = torch.arange(heads * 4 * 3, dtype=torch.float32).reshape(heads, 4, 3)  # (heads, N, T)
    recorder = AttentionRecorder(size)
    recorder.add(torch.cat([uncond, cond]), heads)
    recorder.add(torch.cat([uncond, 3 * cond]), heads)
    expected = (2 * cond.mean(0)).T.reshape(3, *size)  # mean of cond and 3 * cond, per token (T, h, w)
    assert torch.allclose(recorder.mean(), expected)


def test_the_tabs_backend_checks_its_input_and_logs_nothing(tmp_path):
    inside = Inside(Session(AppConfig("tiny", "cpu", tmp_path)))
    with pytest.raises(ValueError, match="the prompt is empty"):
        inside.explain(" ", "0", SETTINGS)
    with pytest.raises(ValueError, match="Seed: "):
        inside.explain(PROMPT, "-5", SETTINGS)
    report = inside.explain(PROMPT, "3", SETTINGS.replace(stable_unclip_prior_steps=2, stable_unclip_steps=2))
    assert (report.prompt, report.seed) == (PROMPT, 3) and report.stable_unclip is not None
    assert set(report.components["architecture"]) == set(inside.session.architectures)
    assert inside.session.runs().empty  # instrumented runs are not logged
