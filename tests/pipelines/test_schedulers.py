"""UnCLIPVScheduler: Karlo's scheduler for a decoder that predicts v, and how a pipeline that uses it
is saved and loaded."""

import json
import shutil

import diffusers.pipelines
import diffusers.pipelines.deprecated.unclip
import pytest
import torch
from diffusers import UnCLIPScheduler
from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline

from pipelines import load_unclip
from pipelines.layout import MODEL_INDEX, ComponentLoadError
from pipelines.schedulers import UnCLIPVScheduler
from pipelines.tiny import build_tiny_unclip

VARIANCES = ["learned_range", "fixed_small_log"]


def one_step(scheduler, model_output, sample, i, seed=0):
    scheduler.set_timesteps(25)
    t, prev = scheduler.timesteps[i], scheduler.timesteps[i + 1]
    return scheduler.step(model_output, t, sample, prev_timestep=prev, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variance_type", VARIANCES)
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_noise_and_clean_image_steps_are_karlos(variance_type, prediction_type):
    sample, output = torch.randn(2, 3, 8, 8), torch.randn(2, 6 if variance_type == "learned_range" else 3, 8, 8)
    ours = one_step(UnCLIPVScheduler(variance_type=variance_type, prediction_type=prediction_type), output, sample, 3)
    karlo = one_step(UnCLIPScheduler(variance_type=variance_type, prediction_type=prediction_type), output, sample, 3)
    assert torch.equal(ours.prev_sample, karlo.prev_sample)
    assert torch.equal(ours.pred_original_sample, karlo.pred_original_sample)


@pytest.mark.parametrize("variance_type", VARIANCES)
@pytest.mark.parametrize("i", [0, 12, 23])
def test_a_v_step_is_the_clean_image_step_on_the_image_v_implies(variance_type, i):
    scheduler = UnCLIPVScheduler(variance_type=variance_type, prediction_type="v_prediction")
    x0, noise = torch.rand(2, 3, 8, 8) * 1.6 - 0.8, torch.randn(2, 3, 8, 8)
    scheduler.set_timesteps(25)
    a = scheduler.alphas_cumprod[scheduler.timesteps[i]]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    variance = torch.rand(2, 3, 8, 8) * 2 - 1
    extra = [variance] if variance_type == "learned_range" else []

    ours = one_step(scheduler, torch.cat([v, *extra], dim=1), x_t, i)
    # the true v gives back the clean image even at the first step, where a = 2.4e-9
    torch.testing.assert_close(ours.pred_original_sample, x0, atol=1e-4, rtol=0)
    clean = one_step(
        UnCLIPScheduler(variance_type=variance_type, prediction_type="sample"),
        torch.cat([ours.pred_original_sample, *extra], dim=1),
        x_t,
        i,
    )
    assert torch.equal(ours.prev_sample, clean.prev_sample)


def test_unknown_prediction_types_are_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        UnCLIPVScheduler(prediction_type="v")


@pytest.fixture(scope="module")
def saved_v(tmp_path_factory):
    """A tiny unCLIP whose decoder scheduler samples v, saved in diffusers' layout."""
    pipe = build_tiny_unclip(0)
    pipe.decoder_scheduler = UnCLIPVScheduler(variance_type="learned_range", prediction_type="v_prediction")
    return pipe.save_pretrained(tmp_path_factory.mktemp("v") / "unclip")


def test_a_v_pipeline_round_trips_through_our_loader_and_diffusers(saved_v, monkeypatch):
    directory = saved_v
    index = json.loads((directory / MODEL_INDEX).read_text())
    # the full module path, as diffusers' save_pretrained records a class outside its own libraries
    assert index["decoder_scheduler"] == ["pipelines.schedulers", "UnCLIPVScheduler"]

    loaded = load_unclip(directory)
    assert isinstance(loaded.decoder_scheduler, UnCLIPVScheduler)
    assert loaded.decoder_scheduler.config.prediction_type == "v_prediction"

    # see tests/pipelines/test_loading.py: Karlo's index names text_proj's library "unclip"
    monkeypatch.setattr(diffusers.pipelines, "unclip", diffusers.pipelines.deprecated.unclip, raising=False)
    oracle = UnCLIPPipeline.from_pretrained(directory)
    assert isinstance(oracle.decoder_scheduler, UnCLIPVScheduler)
    assert oracle.decoder_scheduler.config == loaded.decoder_scheduler.config
    # (that diffusers' pipeline then draws our images: tests/pipelines/test_parity.py, with the lab's schedulers)


def test_a_scheduler_from_a_library_we_do_not_know_is_refused(saved_v, tmp_path):
    directory = shutil.copytree(saved_v, tmp_path / "unclip")
    index = json.loads((directory / MODEL_INDEX).read_text())
    index["decoder_scheduler"] = ["os", "UnCLIPVScheduler"]
    (directory / MODEL_INDEX).write_text(json.dumps(index))
    with pytest.raises(ComponentLoadError, match="not a scheduler"):
        load_unclip(directory)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_callbacks_clean_image_without_the_schedulers_own_matches_ddims(prediction_type):
    from types import SimpleNamespace

    from diffusers import DDIMScheduler

    from pipelines.latent_diffusion import predicted_original

    ddim = DDIMScheduler(
        prediction_type=prediction_type, clip_sample=False
    )  # the raw estimate, as the callback gives it
    ddim.set_timesteps(10)
    t = ddim.timesteps[2]
    sample, model_output = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randn(2, 4, 8, 8)
    own = ddim.step(model_output, t, sample).pred_original_sample
    # A scheduler whose step output has no clean image (PNDM's, say): the callback works it out itself.
    derived = predicted_original(ddim, SimpleNamespace(prev_sample=None), sample, model_output, t)
    torch.testing.assert_close(derived, own)
