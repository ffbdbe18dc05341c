"""Packaging the trained parts: both pipelines and the third model in diffusers' hub layout (fp16), each component
with the budget and loss log of the part that trained it, within the shipping budget (`lab.train package`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from diffusers import AutoencoderKL, PriorTransformer, UNet2DConditionModel, UNet2DModel
from diffusers.pipelines.deprecated.unclip import UnCLIPTextProjModel
from transformers import CLIPModel

from lab.models import (
    LabConfig,
    decoder_scheduler,
    feature_extractor,
    image_encoder_of,
    ld_scheduler,
    prior_scheduler,
    super_res_scheduler,
    text_encoder_of,
)
from lab.runs import RunOptions, load_part
from lab.stable_unclip import NAME as STABLE_UNCLIP
from lab.stable_unclip import save_package
from lab.trainer import BUDGET, LOSS_LOG
from pipelines.latent_diffusion import LatentDiffusion
from pipelines.tokenizer import offline_clip_tokenizer
from pipelines.unclip import UnCLIP

# 40 MB for the two pipelines and the judge, 8 more for the third model's U-Net (lab.stable_unclip)
SHIP_LIMIT_MB = 48
# which part trained each component of the packaged pipelines
UNCLIP_PARTS = {
    "text_encoder": "clip",
    "image_encoder": "clip",
    "prior": "prior",
    "text_proj": "decoder",
    "decoder": "decoder",
    "super_res_first": "super_res",
    "super_res_last": "super_res",
}
LD_PARTS = {"text_encoder": "clip", "vae": "vae", "unet": "ld_unet"}
STABLE_UNCLIP_PARTS = {"unet": "stable_unclip"}  # its own: its prior, CLIP and VAE are the other packages'


def _attach_budgets(directory: Path, parts: dict[str, str], opts: RunOptions, counted: tuple[str, ...] = ()) -> None:
    """Each component gets its part's budget and loss log; the pipeline a summary over its parts (and the `counted`
    parts it was trained with but ships elsewhere)."""
    budgets = {}
    for component, part in parts.items():
        for name in (BUDGET, LOSS_LOG):
            shutil.copy(opts.part_dir(part) / name, directory / component / name)
        budgets[part] = json.loads((opts.part_dir(part) / BUDGET).read_text())
    for part in counted:
        budgets[part] = json.loads((opts.part_dir(part) / BUDGET).read_text())
    total = {key: sum(b[key] for b in budgets.values()) for key in ("wall_seconds", "training_flops", "parameters")}
    (directory / BUDGET).write_text(json.dumps({"parts": budgets, "total": total}, indent=2) + "\n")


def _megabytes(directory: Path, pattern: str = "*") -> float:
    return sum(f.stat().st_size for f in directory.rglob(pattern) if f.is_file()) / 1e6


def package_stable_unclip(lab: LabConfig, opts: RunOptions, embed_dim: int) -> Path:
    """<out>/stable_unclip: the third model's own parts, in stabilityai's unCLIP layout (lab.stable_unclip); its
    training budget counts the prior and VAE it was trained with, which the other packages ship."""
    unet = load_part(opts, STABLE_UNCLIP, "unet", UNet2DConditionModel)
    directory = save_package(
        opts.out / STABLE_UNCLIP, unet, ld_scheduler(lab.stable_unclip.prediction_type), embed_dim
    )
    _attach_budgets(directory, STABLE_UNCLIP_PARTS, opts, counted=("prior", "vae"))
    return directory


def package(lab: LabConfig, opts: RunOptions) -> tuple[Path, Path]:
    """Assemble <out>/unclip, <out>/latent_diffusion and <out>/stable_unclip from the trained parts."""
    clip = load_part(opts, "clip", "clip", CLIPModel)
    super_res = load_part(opts, "super_res", "super_res", UNet2DModel)
    unclip = UnCLIP(
        text_encoder=text_encoder_of(clip, with_projection=True),
        tokenizer=offline_clip_tokenizer(),
        prior=load_part(opts, "prior", "prior", PriorTransformer),
        prior_scheduler=prior_scheduler(),
        text_proj=load_part(opts, "decoder", "text_proj", UnCLIPTextProjModel),
        decoder=load_part(opts, "decoder", "decoder", UNet2DConditionModel),
        decoder_scheduler=decoder_scheduler(lab.decoder.prediction_type),
        # Karlo trains a separate model for the last step; one trained model serves both here
        super_res_first=super_res,
        super_res_last=super_res,
        super_res_scheduler=super_res_scheduler(lab.super_res.prediction_type),
        image_encoder=image_encoder_of(clip),
        feature_extractor=feature_extractor(),
    )
    latent_diffusion = LatentDiffusion(
        text_encoder=text_encoder_of(clip, with_projection=False),
        tokenizer=offline_clip_tokenizer(),
        unet=load_part(opts, "ld_unet", "unet", UNet2DConditionModel),
        vae=load_part(opts, "vae", "vae", AutoencoderKL),
        scheduler=ld_scheduler(lab.ld_unet.prediction_type),
    )
    paths = []
    for name, pipe, parts in (("unclip", unclip, UNCLIP_PARTS), ("latent_diffusion", latent_diffusion, LD_PARTS)):
        directory = opts.out / name
        if directory.exists():
            shutil.rmtree(directory)  # no stale component of an earlier layout stays behind
        for module in pipe.modules().values():
            module.half()  # fp16 halves the shipped weights; the loaders upcast to the dtype asked for
        pipe.save_pretrained(directory)
        # The tokenizer is OpenAI's CLIP BPE, which pipelines.tokenizer rebuilds offline from open_clip's
        # merges whenever the folder is absent: shipping two 3.6 MB copies would break the 40 MB budget.
        shutil.rmtree(directory / "tokenizer")
        _attach_budgets(directory, parts, opts)
        paths.append(directory)
    third = package_stable_unclip(lab, opts, unclip.prior.config.embedding_dim)
    shipped = [d for d in (*paths, third, opts.out / "judge") if d.is_dir()]
    weights = sum(_megabytes(d, "*.safetensors") for d in shipped)
    print(
        ", ".join(f"{d.name} {_megabytes(d, '*.safetensors'):.1f} MB" for d in shipped)
        + f": weights {weights:.1f} MB, {sum(_megabytes(d) for d in shipped):.1f} MB on disk with configs and logs"
    )
    if weights > SHIP_LIMIT_MB:
        print(f"warning: the shipped weights take {weights:.1f} MB, over the {SHIP_LIMIT_MB} MB budget")
    return paths[0], paths[1]
