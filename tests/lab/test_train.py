"""Training code of the Shapes lab: every part trains (2 steps, tiny configs, CPU), a resumed run equals
an uninterrupted one, `package` writes pipelines the loaders load and run, and each part records its budget."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lab.captions import parse_caption
from lab.data import DataConfig, sample_batch, swapped
from lab.judge import load_judge
from lab.losses import (
    denoising_loss,
    foreground_weights,
    hybrid_vlb_term,
    q_sample,
    reconstruction_loss,
    snr,
    truncated_snr_weight,
)
from lab.models import (
    DecoderConfig,
    LdUnetConfig,
    SuperResConfig,
    VaeConfig,
    build_vae,
    decoder_scheduler,
)
from lab.runs import RunOptions
from lab.train import ORDER, main, run
from lab.trainer import BUDGET, CHECKPOINT, LOSS_LOG, Budget
from lab.world import split_of
from pipelines import load_latent_diffusion, load_unclip, registry
from pipelines.tokenizer import offline_clip_tokenizer

from helpers import LD_STEPS, TINY, UNCLIP_STEPS, tiny_train

PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> RunOptions:
    """All parts trained for 2 steps and packaged, once for this module."""
    root = tmp_path_factory.mktemp("lab")
    opts = RunOptions(out=root / "weights", checkpoints=root / "checkpoints", progress=False)
    run("all", TINY, opts)
    return opts


def read_log(directory) -> list[dict]:
    return [json.loads(line) for line in (directory / LOSS_LOG).read_text().splitlines()]


# ----------------------------------------------------------------------------- each part


@pytest.mark.parametrize("part", ORDER)
def test_each_part_trains_two_steps_with_a_finite_loss(trained, part):
    log = read_log(trained.part_dir(part))
    assert [line["step"] for line in log] == [1, 2]
    assert all(math.isfinite(line["loss"]) for line in log)


@pytest.mark.parametrize("part", ORDER)
def test_each_part_records_its_budget(trained, part):
    budget = json.loads((trained.part_dir(part) / BUDGET).read_text())
    assert set(budget) == {f.name for f in dataclasses.fields(Budget)}
    batch_size = getattr(TINY, part).train.batch_size
    assert (budget["part"], budget["steps"], budget["batch_size"], budget["samples_seen"]) == (
        part,
        2,
        batch_size,
        2 * batch_size,
    )
    assert budget["device"] == "cpu" and budget["wall_seconds"] > 0 and budget["parameters"] > 0
    assert budget["flops_per_step"] > 0 and budget["training_flops"] == 2 * budget["flops_per_step"]


def test_resume_continues_the_step_count_and_equals_an_uninterrupted_run(tmp_path):
    # super_res: the cheapest part with no dependency, and it has an EMA to restore too
    lab = dataclasses.replace(
        TINY, super_res=dataclasses.replace(TINY.super_res, train=tiny_train(steps=4, checkpoint_every=2))
    )
    whole = RunOptions(out=tmp_path / "w", checkpoints=tmp_path / "whole", progress=False)
    run("super_res", lab, whole)
    halves = RunOptions(out=tmp_path / "w", checkpoints=tmp_path / "halves", progress=False, stop_at=2)
    run("super_res", lab, halves)
    assert torch.load(halves.part_dir("super_res") / CHECKPOINT, weights_only=True)["step"] == 2
    run("super_res", lab, dataclasses.replace(halves, stop_at=None, resume=True))

    a = torch.load(whole.part_dir("super_res") / CHECKPOINT, weights_only=True)
    b = torch.load(halves.part_dir("super_res") / CHECKPOINT, weights_only=True)
    assert a["step"] == b["step"] == 4
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), f"{key} weights differ after resuming"

    def losses(opts):
        return [(line["step"], line["loss"]) for line in read_log(opts.part_dir("super_res"))]

    assert losses(whole) == losses(halves)
    assert json.loads((halves.part_dir("super_res") / BUDGET).read_text())["steps"] == 4


# ----------------------------------------------------------------------------- packaged pipelines


def test_package_writes_pipelines_the_loaders_load_and_run(trained):
    unclip = load_unclip(trained.out / "unclip")
    latent_diffusion = load_latent_diffusion(trained.out / "latent_diffusion")
    for out in (unclip(PROMPT, seed=0, **UNCLIP_STEPS), latent_diffusion(PROMPT, seed=0, **LD_STEPS)):
        assert out.images.shape == (1, 32, 32, 3) and np.isfinite(out.images).all()
    variation = unclip.variations(
        Image.new("RGB", (32, 32)), seed=0, decoder_num_inference_steps=2, super_res_num_inference_steps=2
    )
    assert variation.images.shape == (1, 32, 32, 3)
    assert unclip.dtype == latent_diffusion.dtype == torch.float32  # fp16 files, upcast on load
    offline = offline_clip_tokenizer()
    for pipe in (unclip, latent_diffusion):  # no tokenizer folder shipped: the offline BPE, the same ids
        assert pipe.tokenizer(PROMPT).input_ids == offline(PROMPT).input_ids
    for pipe in ("unclip", "latent_diffusion"):
        assert not (trained.out / pipe / "tokenizer").exists()
        assert json.loads((trained.out / pipe / "model_index.json").read_text())["tokenizer"] == [
            "transformers",
            "CLIPTokenizer",
        ]


def test_package_shares_weights_where_it_should(trained):
    def weights(pipe: str, component: str, stem: str = "diffusion_pytorch_model") -> dict:
        return load_file(str(trained.out / pipe / component / f"{stem}.safetensors"))

    first, last = weights("unclip", "super_res_first"), weights("unclip", "super_res_last")
    assert all(torch.equal(first[k], last[k]) for k in first)
    assert next(iter(first.values())).dtype == torch.float16
    unclip_text, ld_text = (
        weights("unclip", "text_encoder", "model"),
        weights("latent_diffusion", "text_encoder", "model"),
    )
    shared = [k for k in unclip_text if k.removeprefix("text_model.") in ld_text or k in ld_text]
    assert shared and all(
        torch.equal(unclip_text[k], ld_text.get(k, ld_text.get(k.removeprefix("text_model.")))) for k in shared
    )


def test_package_puts_each_budget_beside_its_component(trained):
    summary = json.loads((trained.out / "unclip" / BUDGET).read_text())
    assert set(summary["parts"]) == {"clip", "prior", "decoder", "super_res"}
    assert summary["total"]["training_flops"] == sum(b["training_flops"] for b in summary["parts"].values())
    assert json.loads((trained.out / "latent_diffusion" / "unet" / BUDGET).read_text())["part"] == "ld_unet"
    assert json.loads((trained.out / "unclip" / "prior" / BUDGET).read_text())["part"] == "prior"


def test_package_writes_the_third_model_which_runs_on_unclips_prior_and_latent_diffusions_clip_and_vae(trained):
    pipes = registry.load_all({a: str(trained.out / a) for a in ("unclip", "latent_diffusion", "stable_unclip")})
    third, unclip, ld = pipes["stable_unclip"], pipes["unclip"], pipes["latent_diffusion"]
    assert third.prior is unclip.prior and third.prior_text_encoder is unclip.text_encoder  # shared, not loaded twice
    assert third.vae is ld.vae and third.text_encoder is ld.text_encoder
    out = third([PROMPT, "a blue square"], seed=[0, 1], prior_num_inference_steps=2, num_inference_steps=2)
    assert out.images.shape == (2, 32, 32, 3) and np.isfinite(out.images).all()
    again = third([PROMPT, "a blue square"], seed=[0, 1], prior_num_inference_steps=2, num_inference_steps=2)
    assert np.array_equal(out.images, again.images), "the same seeds, other images"
    index = json.loads((trained.out / "stable_unclip" / "model_index.json").read_text())
    assert (
        index["_class_name"] == "StableUnCLIPImg2ImgPipeline" and index["vae"] == [None, None] and "prior" not in index
    )
    assert (
        not (trained.out / "stable_unclip" / "prior").exists() and not (trained.out / "stable_unclip" / "vae").exists()
    )
    budget = json.loads((trained.out / "stable_unclip" / BUDGET).read_text())
    assert set(budget["parts"]) == {"prior", "vae", "stable_unclip"}  # the compute it took, its shared parts too
    assert third.unet.config.class_embed_type == "projection"
    assert third.unet.config.projection_class_embeddings_input_dim == 2 * unclip.prior.config.embedding_dim
    assert tuple(third.unet.config.block_out_channels) == TINY.ld_unet.block_out_channels  # latent diffusion's widths


def test_judge_loads_and_scores(trained):
    model, preprocess, tokenizer = load_judge(trained.out / "judge")
    images = torch.stack([preprocess(Image.new("RGB", (32, 32), (255, 0, 0)))])
    with torch.no_grad():
        image, text = model.encode_image(images), model.encode_text(tokenizer([PROMPT, "a blue square"]))
    assert image.shape == (1, TINY.judge.embed_dim) and text.shape == (2, TINY.judge.embed_dim)
    assert json.loads((trained.out / "judge" / BUDGET).read_text())["part"] == "judge"
    with pytest.raises(FileNotFoundError, match="lab.train judge"):
        load_judge(trained.out / "nowhere")


# ----------------------------------------------------------------------------- the VAE's objective and start


def test_foreground_weights_mark_the_objects_only():
    images = sample_batch(DataConfig(batch_size=8, seed=0), 0).images
    weights = foreground_weights(images, 10.0)
    objects = (images > -1 + 1e-3).any(dim=1, keepdim=True)  # any channel above the black background
    assert weights.shape == (8, 1, 32, 32)
    assert set(weights.unique().tolist()) == {1.0, 10.0}
    # anti-aliased rims fainter than the threshold stay background; every clearly lit pixel weighs 10
    assert torch.all(weights[~objects] == 1) and torch.all(weights[(images + 1).amax(1, keepdim=True) > 0.1] == 10)
    assert 0.03 < (weights == 10).float().mean() < 0.3  # objects are a small part of each image


def test_reconstruction_loss_is_weighted_l1_plus_l2():
    images = sample_batch(DataConfig(batch_size=8, seed=0), 0).images
    assert reconstruction_loss(images, images, foreground_weights(images, 10.0)) == 0
    other = torch.rand_like(images) * 2 - 1
    error = other - images
    ones = torch.ones(8, 1, 32, 32)
    torch.testing.assert_close(reconstruction_loss(other, images, ones), (error.abs() + error**2).mean())
    # an all-black reconstruction (every object lost) costs several times more once objects are weighted
    black = torch.full_like(images, -1.0)
    weighted, plain = (
        reconstruction_loss(black, images, foreground_weights(images, 10.0)),
        reconstruction_loss(black, images, ones),
    )
    assert weighted > 3 * plain


def test_vae_starts_with_a_near_deterministic_posterior():
    vae = build_vae(VaeConfig(block_out_channels=(8, 16)))
    images = sample_batch(DataConfig(batch_size=4, seed=0), 0).images
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
    torch.testing.assert_close(posterior.std, torch.full_like(posterior.std, math.exp(-5.0)))  # log variance -10
    assert posterior.mean.std() > 0  # the mean still depends on the image


def test_truncated_snr_weight_is_the_snr_but_never_under_one():
    alphas = decoder_scheduler().alphas_cumprod
    t = torch.tensor([0, 200, 500, 700, 950, 999])
    ratio = snr(alphas, t)
    torch.testing.assert_close(ratio, alphas[t] / (1 - alphas[t]))
    assert ratio[0] > 1000 and ratio[-1] < 1e-6  # the cosine schedule spans both sides of 1
    torch.testing.assert_close(truncated_snr_weight(ratio), torch.maximum(ratio, torch.ones(6)))


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_denoising_loss_is_zero_for_the_truth_and_recovers_the_clean_image(prediction_type):
    alphas = decoder_scheduler().alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x0 = sample_batch(DataConfig(batch_size=6, seed=0), 0).images
    noise, t = torch.randn(x0.shape, generator=g), torch.tensor([0, 10, 300, 600, 900, 990])
    x_t = q_sample(x0, noise, t, alphas)
    a = alphas[t].reshape(-1, 1, 1, 1)
    truth = {"sample": x0, "epsilon": noise, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * x0}[prediction_type]
    loss, x0_pred = denoising_loss(truth, x0, noise, x_t, t, alphas, prediction_type)
    assert loss == 0
    torch.testing.assert_close(x0_pred, x0, atol=2e-3, rtol=0)  # t = 990 divides by sqrt(a) = 0.014
    wrong, _ = denoising_loss(truth + 0.1, x0, noise, x_t, t, alphas, prediction_type)
    assert wrong > 0


def test_denoising_loss_weighs_a_noisy_steps_image_error_at_least_as_its_own():
    """The noise loss weighs an error in the clean image by SNR (0.006 at t = 950): the decoder and
    super-res trained so never learned the scene at the first steps and sampled grey backgrounds."""
    alphas = decoder_scheduler().alphas_cumprod
    x0 = sample_batch(DataConfig(batch_size=1, seed=0), 0).images
    noise, t = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)), torch.tensor([950])
    x_t = q_sample(x0, noise, t, alphas)
    error = 0.5 * torch.ones_like(x0)  # the clean image off by 0.5 everywhere
    sample_loss, _ = denoising_loss(x0 + error, x0, noise, x_t, t, alphas, "sample")
    a = alphas[950]
    eps_off = noise - (a / (1 - a)).sqrt() * error  # the noise prediction that implies the same image
    eps_loss, _ = denoising_loss(eps_off, x0, noise, x_t, t, alphas, "epsilon")
    torch.testing.assert_close(sample_loss, torch.tensor(0.25))
    assert eps_loss < 0.01 * sample_loss


def test_unknown_prediction_types_are_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        DecoderConfig(prediction_type="x0")
    with pytest.raises(ValueError, match="prediction_type"):
        SuperResConfig(prediction_type="noise")
    with pytest.raises(ValueError, match="prediction_type"):  # Karlo's UnCLIPScheduler cannot sample v
        SuperResConfig(prediction_type="v_prediction")
    with pytest.raises(ValueError, match="prediction_type"):
        LdUnetConfig(prediction_type="x0")
    assert LdUnetConfig(prediction_type="v_prediction").prediction_type == "v_prediction"
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="prediction_type"):
        denoising_loss(x, x, x, x, torch.tensor([1]), decoder_scheduler().alphas_cumprod, "v")


def test_the_variance_term_trains_the_variance_only():
    alphas = decoder_scheduler().alphas_cumprod
    x0 = sample_batch(DataConfig(batch_size=2, seed=0), 0).images
    noise, t = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 400])
    x_t = q_sample(x0, noise, t, alphas)
    x0_pred, variance = (x0 + 0.1).requires_grad_(), torch.zeros_like(x0, requires_grad=True)
    hybrid_vlb_term(x0_pred, variance, x0, x_t, t, alphas).sum().backward()
    assert x0_pred.grad is None and variance.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- data and CLI


def test_batches_are_train_split_deterministic_and_in_range():
    config = DataConfig(batch_size=64, seed=3, unique_captions=True, p_swap=0.5)
    batch, again, other = sample_batch(config, 7), sample_batch(config, 7), sample_batch(config, 8)
    assert torch.equal(batch.images, again.images) and batch.captions == again.captions
    assert batch.captions != other.captions
    assert batch.images.shape == (64, 3, 32, 32) and batch.images.min() >= -1 and batch.images.max() <= 1
    assert len(set(batch.captions)) == len(batch.captions)
    assert all(split_of(parse_caption(c)) == "train" for c in batch.captions)


def test_swapped_twin_exchanges_the_objects_and_keeps_held_out_combinations_out():
    from lab.world import Scene, SceneObject

    left, right = SceneObject("red", "circle", "small", (0.2, 0.5)), SceneObject("blue", "square", "large", (0.8, 0.5))
    twin = swapped(Scene((left, right), "left of"))
    assert twin.caption() == "a large blue square to the left of a small red circle"
    triangle, circle = (
        SceneObject("red", "triangle", "small", (0.5, 0.8)),
        SceneObject("white", "circle", "small", (0.5, 0.2)),
    )
    assert swapped(Scene((circle, triangle), "above")) is None  # the twin would be "triangle above circle", held out


def test_cli_rejects_bad_arguments():
    for argv in (["unicorn"], ["clip", "--steps", "0"], ["clip", "--steps-scale", "-1"]):
        with pytest.raises(SystemExit):
            main(argv)
