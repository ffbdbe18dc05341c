"""Train the Shapes lab's models: `python -m lab.train <part> [--steps N | --steps-scale X] [--batch-size B]
[--device auto] [--out lab/weights] [--checkpoints lab/checkpoints] [--resume]`.

Parts, in dependency order: clip -> judge; clip -> prior, decoder, super_res (unCLIP);
vae -> ld_unet (latent diffusion, whose text encoder is also clip's); clip, vae, prior -> stable_unclip
(the third model: unCLIP's prior feeding a latent U-Net, lab.stable_unclip). `all` trains every part,
then `package` assembles both pipelines in diffusers' hub layout, loadable by
`pipelines.load_unclip` / `pipelines.load_latent_diffusion` like Karlo and Stable Diffusion.

Where things go:
  <checkpoints>/<part>/    last.pt (resumable), loss_log.jsonl, training_budget.json, and the
                           final weights (fp32, EMA for the diffusion models), one folder per model
  <out>/judge/             the judge CLIP (open_clip local-dir layout), its budget and loss log
  <out>/unclip/, <out>/latent_diffusion/, <out>/stable_unclip/
                           the pipelines (fp16); each component folder holds the budget and loss
                           log of the part that trained it, the pipeline folder a summary of all
"""

from __future__ import annotations

import os

# Before torch starts OpenMP: idle threads sleep instead of spinning, so a busy machine stays predictable
# (measured: lab/README.md, "Training"; OMP_WAIT_POLICY=ACTIVE in the environment wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import nn

from lab.data import (
    IMAGE_SIZE,
    Batch,
    DataConfig,
    downsample,
    sample_batch,
    step_generator,
    upsample_like_pipeline,
)
from lab.judge import save_judge
from lab.losses import (
    contrastive_loss,
    denoising_loss,
    foreground_weights,
    hybrid_vlb_term,
    q_sample,
    reconstruction_loss,
    retrieval_accuracy,
)
from lab.models import (
    LabConfig,
    build_clip,
    build_decoder,
    build_judge,
    build_ld_unet,
    build_prior,
    build_stable_unclip_unet,
    build_super_res,
    build_text_proj,
    build_vae,
    decoder_scheduler,
    judge_open_clip_config,
    ld_scheduler,
    prior_scheduler,
    super_res_scheduler,
)
from lab.package import package
from lab.runs import (
    STATS_SEED,
    ClipEncoder,
    RunOptions,
    drop_captions,
    fit,
    load_encoder,
    load_part,
    save_models,
    timesteps_and_noise,
)
from lab.stable_unclip import class_labels
from lab.trainer import BUDGET, LOSS_LOG
from pipelines.devices import pick_device
from pipelines.tokenizer import offline_clip_tokenizer

ORDER = ("clip", "judge", "vae", "ld_unet", "prior", "decoder", "super_res", "stable_unclip")
# ----------------------------------------------------------------------------- the CLIPs


def train_clip(lab: LabConfig, opts: RunOptions) -> None:
    config, tc = lab.clip, opts.train_config(lab.clip.train)
    model, tokenizer = build_clip(config), offline_clip_tokenizer()

    def loss_fn(batch: Batch, step: int) -> dict[str, torch.Tensor]:
        # Padded to the batch's longest caption, not 77: causal attention and end-of-text pooling never
        # read past a caption's end, so the embedding is the one a 77-token input gets, at a fraction of the cost.
        ids = tokenizer(batch.captions, padding=True, return_tensors="pt").input_ids.to(opts.device)
        text = model.get_text_features(ids).pooler_output  # (B, D)
        image = model.get_image_features(batch.images.to(opts.device)).pooler_output  # (B, D)
        return {
            "loss": contrastive_loss(image, text, model.logit_scale),
            "accuracy": retrieval_accuracy(image.detach(), text.detach()),
        }

    data = DataConfig(tc.batch_size, tc.seed, unique_captions=True, p_swap=config.p_swap)
    save_models(opts, "clip", clip=fit("clip", model, loss_fn, data, tc, opts))


def train_judge(lab: LabConfig, opts: RunOptions) -> None:
    config, tc = lab.judge, opts.train_config(lab.judge.train)
    model, tokenizer = build_judge(config), open_clip.tokenizer.SimpleTokenizer()

    def loss_fn(batch: Batch, step: int) -> dict[str, torch.Tensor]:
        g = step_generator(tc.seed, step)
        std = torch.rand(len(batch.images), 1, 1, 1, generator=g) * config.max_noise
        images = batch.images + std * torch.randn(batch.images.shape, generator=g)
        image = model.encode_image(images.to(opts.device))
        text = model.encode_text(tokenizer(batch.captions).to(opts.device))
        return {
            "loss": contrastive_loss(image, text, model.logit_scale),
            "accuracy": retrieval_accuracy(image.detach(), text.detach()),
        }

    data = DataConfig(tc.batch_size, tc.seed, unique_captions=True, p_swap=config.p_swap)
    final = fit("judge", model, loss_fn, data, tc, opts)
    directory = save_judge(final, judge_open_clip_config(config), opts.out / "judge")
    for name in (BUDGET, LOSS_LOG):
        shutil.copy(opts.part_dir("judge") / name, directory / name)


# ----------------------------------------------------------------------------- latent diffusion


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, samples: int, device: torch.device) -> float:
    """1 / std of the latents, so the U-Net sees unit-variance inputs (Rombach et al. 2022, sec. 4.3.2)."""
    images = sample_batch(DataConfig(samples, STATS_SEED), 0).images
    generator = torch.Generator().manual_seed(STATS_SEED)
    latents = torch.cat([vae.encode(chunk.to(device)).latent_dist.sample(generator) for chunk in images.split(256)])
    return 1.0 / latents.std().item()


def train_vae(lab: LabConfig, opts: RunOptions) -> None:
    config, tc = lab.vae, opts.train_config(lab.vae.train)
    vae = build_vae(config)

    def loss_fn(batch: Batch, step: int) -> dict[str, torch.Tensor]:
        x = batch.images.to(opts.device)
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample(step_generator(tc.seed, step))).sample
        # SD's autoencoder without its perceptual and GAN terms, weighted towards the sparse objects
        rec = reconstruction_loss(reconstruction, x, foreground_weights(x, config.foreground_weight))
        kl = posterior.kl().mean()
        return {
            "loss": rec + config.kl_weight * kl,
            "reconstruction": rec.detach(),
            "kl": kl.detach(),
            "l1": F.l1_loss(reconstruction.detach(), x),
        }

    final = fit("vae", vae, loss_fn, DataConfig(tc.batch_size, tc.seed), tc, opts)
    final.register_to_config(scaling_factor=latent_scaling_factor(final, config.scaling_samples, opts.device))
    save_models(opts, "vae", vae=final)


def train_ld_unet(lab: LabConfig, opts: RunOptions) -> None:
    config, tc = lab.ld_unet, opts.train_config(lab.ld_unet.train)
    encoder = load_encoder(opts)
    vae = load_part(opts, "vae", "vae", AutoencoderKL).to(opts.device).eval().requires_grad_(False)
    latent_size = IMAGE_SIZE // 2 ** (len(vae.config.block_out_channels) - 1)
    unet = build_ld_unet(config, latent_size, encoder.clip.config.text_config.hidden_size)
    alphas = ld_scheduler(config.prediction_type).alphas_cumprod

    def loss_fn(batch: Batch, step: int) -> dict[str, torch.Tensor]:
        g = step_generator(tc.seed, step)
        _, hidden, _ = encoder.text(
            drop_captions(batch.captions, torch.rand(len(batch.captions), generator=g) < config.p_uncond)
        )
        with torch.no_grad():
            z0 = (
                vae.encode(batch.images.to(opts.device)).latent_dist.sample(g) * vae.config.scaling_factor
            )  # (B, 4, 16, 16)
        t, noise = timesteps_and_noise(z0, g)
        z_t = q_sample(z0, noise, t, alphas)
        pred = unet(z_t, t, encoder_hidden_states=hidden).sample
        return {"loss": denoising_loss(pred, z0, noise, z_t, t, alphas, config.prediction_type)[0]}

    save_models(opts, "ld_unet", unet=fit("ld_unet", unet, loss_fn, DataConfig(tc.batch_size, tc.seed), tc, opts))


# ----------------------------------------------------------------------------- unCLIP


@torch.no_grad()
def image_embedding_stats(encoder: ClipEncoder, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (1, D) of CLIP image embeddings: the prior's clip_mean and clip_std."""
    images = sample_batch(DataConfig(samples, STATS_SEED), 0).images
    embeds = torch.cat([encoder.image(chunk) for chunk in images.split(256)])
    return embeds.mean(0, keepdim=True), embeds.std(0, keepdim=True)


def train_prior(lab: LabConfig, opts: RunOptions) -> None:
    config, tc = lab.prior, opts.train_config(lab.prior.train)
    encoder = load_encoder(opts)
    prior = build_prior(config, encoder.embed_dim)
    mean, std = image_embedding_stats(encoder, config.stats_samples)
    prior.clip_mean.data.copy_(mean)
    prior.clip_std.data.copy_(std)
    alphas = prior_scheduler().alphas_cumprod

    def loss_fn(batch: Batch, step: int) -> dict[str, torch.Tensor]:
        g = step_generator(tc.seed, step)
        captions = drop_captions(batch.captions, torch.rand(len(batch.captions), generator=g) < config.p_uncond)
        embeds, hidden, mask = encoder.text(captions)
        x0 = (encoder.image(batch.images) - prior.clip_mean) / prior.clip_std  # (B, D), normalised as Karlo's
        t, noise = timesteps_and_noise(x0, g)
        pred = prior(
            q_sample(x0, noise, t, alphas),
            timestep=t,
            proj_embedding=embeds,
            encoder_hidden_states=hidden,
            attention_mask=mask,
        ).predicted_image_embedding
        return {"loss": F.mse_loss(pred, x0)}  # prediction_type "sample": the clean embedding (DALL-E 2, sec. 2.1)

    save_models(opts, "prior", prior=fit("prior", prior, loss_fn, DataConfig(tc.batch_size, tc.seed), tc, opts))


def train_decoder(lab: LabConfig, opts: RunOptions) -> None:
    config, tc = lab.decoder, opts.train_config(lab.decoder.train)
    encoder = load_encoder(opts)
    model = nn.ModuleDict({"text_proj": build_text_proj(config, encoder.embed_dim), "decoder": build_decoder(config)})
    alphas = decoder_scheduler(config.prediction_type).alphas_cumprod

    def loss_fn(batch: Batch, step: int) -> dict[str, torch.Tensor]:
        g = step_generator(tc.seed, step)
        u = torch.rand(len(batch.captions), generator=g)
        # u < p_uncond drops both (the pipeline's unconditional branch); the next p_drop_text the caption
        # alone (what image variations condition on)
        drop_image, drop_text = (u < config.p_uncond).to(opts.device), u < config.p_uncond + config.p_drop_text
        embeds, hidden, mask = encoder.text(drop_captions(batch.captions, drop_text))
        image_embeds = encoder.image(batch.images)  # (B, D)
        null = model["text_proj"].learned_classifier_free_guidance_embeddings
        image_embeds = torch.where(drop_image[:, None], null.expand_as(image_embeds), image_embeds)
        context, time_embeds = model["text_proj"](
            image_embeddings=image_embeds,
            prompt_embeds=embeds,
            text_encoder_hidden_states=hidden,
            do_classifier_free_guidance=False,
        )
        mask = F.pad(mask, (config.extra_context_tokens, 0), value=True)  # the image tokens are always attended to
        x0 = downsample(batch.images.to(opts.device))  # (B, 3, 16, 16)
        t, noise = timesteps_and_noise(x0, g)
        x_t = q_sample(x0, noise, t, alphas)
        out = model["decoder"](
            x_t, t, encoder_hidden_states=context, class_labels=time_embeds, attention_mask=mask
        ).sample
        pred, variance = (
            out[:, :3],
            out[:, 3:],
        )  # (B, 3, 16, 16) each: v (or noise, clean image), variance interpolation
        simple, x0_pred = denoising_loss(pred, x0, noise, x_t, t, alphas, config.prediction_type)
        vlb = hybrid_vlb_term(x0_pred, variance, x0, x_t, t, alphas).mean()
        return {"loss": simple + config.vlb_weight * vlb, "mse": simple.detach(), "vlb": vlb.detach()}

    final = fit("decoder", model, loss_fn, DataConfig(tc.batch_size, tc.seed), tc, opts)
    save_models(opts, "decoder", text_proj=final["text_proj"], decoder=final["decoder"])


def train_super_res(lab: LabConfig, opts: RunOptions) -> None:
    config, tc = lab.super_res, opts.train_config(lab.super_res.train)
    unet = build_super_res(config)
    alphas = super_res_scheduler(config.prediction_type).alphas_cumprod

    def loss_fn(batch: Batch, step: int) -> dict[str, torch.Tensor]:
        g = step_generator(tc.seed, step)
        low = downsample(batch.images)  # (B, 3, 16, 16)
        # noise augmentation of the condition (Ho et al. 2022, cascaded diffusion): the decoder's samples
        # are never as clean as a render
        std = torch.rand(len(low), 1, 1, 1, generator=g) * config.max_aug_noise
        low = (low + std * torch.randn(low.shape, generator=g)).clamp(-1, 1)  # clamped, as the decoder's output
        condition = upsample_like_pipeline(low, IMAGE_SIZE).to(opts.device)  # (B, 3, 32, 32)
        x0 = batch.images.to(opts.device)
        t, noise = timesteps_and_noise(x0, g)
        x_t = q_sample(x0, noise, t, alphas)
        pred = unet(torch.cat([x_t, condition], dim=1), t).sample
        return {"loss": denoising_loss(pred, x0, noise, x_t, t, alphas, config.prediction_type)[0]}

    save_models(
        opts, "super_res", super_res=fit("super_res", unet, loss_fn, DataConfig(tc.batch_size, tc.seed), tc, opts)
    )


# ----------------------------------------------------------------------------- the third model


def train_stable_unclip(lab: LabConfig, opts: RunOptions) -> None:
    """Latent diffusion's U-Net conditioned on the CLIP image embedding as well (lab.stable_unclip); at sampling
    the embedding comes from unCLIP's prior, in training from the image itself, as unCLIP's decoder trains."""
    config, tc = lab.stable_unclip, opts.train_config(lab.stable_unclip.train)
    encoder = load_encoder(opts)
    vae = load_part(opts, "vae", "vae", AutoencoderKL).to(opts.device).eval().requires_grad_(False)
    latent_size = IMAGE_SIZE // 2 ** (len(vae.config.block_out_channels) - 1)
    unet = build_stable_unclip_unet(
        config, latent_size, encoder.clip.config.text_config.hidden_size, encoder.embed_dim
    )
    alphas = ld_scheduler(config.prediction_type).alphas_cumprod

    def loss_fn(batch: Batch, step: int) -> dict[str, torch.Tensor]:
        g = step_generator(tc.seed, step)
        u = torch.rand(len(batch.captions), generator=g)
        # u < p_uncond drops both (the unconditional branch), the next p_drop_text the caption alone
        drop_image, drop_text = (u < config.p_uncond).to(opts.device), u < config.p_uncond + config.p_drop_text
        _, hidden, _ = encoder.text(drop_captions(batch.captions, drop_text))
        labels = class_labels(encoder.image(batch.images))  # (B, 2D): as the pipeline hands them at level 0
        labels = torch.where(drop_image[:, None], torch.zeros_like(labels), labels)
        with torch.no_grad():
            z0 = vae.encode(batch.images.to(opts.device)).latent_dist.sample(g) * vae.config.scaling_factor
        t, noise = timesteps_and_noise(z0, g)
        z_t = q_sample(z0, noise, t, alphas)
        pred = unet(z_t, t, encoder_hidden_states=hidden, class_labels=labels).sample
        return {"loss": denoising_loss(pred, z0, noise, z_t, t, alphas, config.prediction_type)[0]}

    final = fit("stable_unclip", unet, loss_fn, DataConfig(tc.batch_size, tc.seed), tc, opts)
    save_models(opts, "stable_unclip", unet=final)


# ----------------------------------------------------------------------------- entry point

PARTS: dict[str, Callable[[LabConfig, RunOptions], None]] = {
    "clip": train_clip,
    "judge": train_judge,
    "vae": train_vae,
    "ld_unet": train_ld_unet,
    "prior": train_prior,
    "decoder": train_decoder,
    "super_res": train_super_res,
    "stable_unclip": train_stable_unclip,
}


def run(part: str, lab: LabConfig = LabConfig(), opts: RunOptions = RunOptions()) -> None:
    """Train one part, all of them (then package), or package."""
    if part not in (*PARTS, "all", "package"):
        raise ValueError(f"unknown part {part!r}; choose one of {', '.join((*ORDER, 'all', 'package'))}")
    for name in ORDER if part == "all" else (part,) if part in PARTS else ():
        PARTS[name](lab, opts)
    if part in ("all", "package"):
        package(lab, opts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the Shapes lab's models.")
    parser.add_argument("part", choices=(*ORDER, "all", "package"))
    parser.add_argument("--steps", type=int, help="override every part's default number of steps")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every part's default steps")
    parser.add_argument("--batch-size", type=int, help="override every part's default batch size")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", type=Path, default=RunOptions.out, help="where the shipped weights go")
    parser.add_argument(
        "--checkpoints", type=Path, default=RunOptions.checkpoints, help="per-part checkpoints and logs"
    )
    parser.add_argument("--resume", action="store_true", help="continue each part from its last checkpoint")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.steps_scale > 0:
        parser.error("--steps-scale must be > 0")
    try:
        device = pick_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    opts = RunOptions(
        out=args.out,
        checkpoints=args.checkpoints,
        device=device,
        resume=args.resume,
        steps=args.steps,
        steps_scale=args.steps_scale,
        batch_size=args.batch_size,
    )
    try:
        run(args.part, LabConfig(), opts)
    except FileNotFoundError as err:  # a part trained before the part it needs
        parser.exit(1, f"error: {err}\n")


if __name__ == "__main__":
    main()
