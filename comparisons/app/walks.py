"""Walks through what each architecture conditions on, frame by frame, each a `Walk` of frames:

- **Interpolation** between two prompts, frames at t = 0 … 1:
  - unCLIP: slerp between the prior's CLIP image embeddings of the two prompts (DALL·E 2, Ramesh et al. 2022,
    §3.2, Fig. 4). The decoder also reads text; `decoder_text` says which: "prompts" moves its text conditioning
    along (the CLIP text embedding by slerp, the hidden states linearly, the tokens of either prompt attended to),
    "empty" gives it the empty prompt, as image variations do and as Fig. 4 (two images' embeddings) decodes.
  - latent diffusion: lerp between the two prompts' text-encoder hidden states, which is all its U-Net reads.
  - Stable unCLIP: unCLIP's walk (the same prior, the same slerp) decoded by its latent U-Net, which also reads
    text: with "prompts" the two prompts' hidden states lerped, with "empty" the empty prompt's.
- **Text diffs** (unCLIP, §3.3, Fig. 5): a caption's image embedding moved along the normalised difference of
  two captions' text embeddings (target minus source), frames at θ = 0 … max, z_θ = slerp(z_i, z_d, θ). The paper
  starts from a real image (DDIM inversion gives its noise); here the caption's own sample, whose noise is known.

Every frame starts from the same noise. Latent diffusion's frames are each made from the seed, as text to image
makes one image. unCLIP's text to image draws the prior's noise and then the decoder's from one generator; the
prior's draws are the same for every prompt (same shapes and steps), so each prompt's embedding is made from the
seed as text to image makes it, and every frame is decoded from the generator state the prior left. So with
decoder text "prompts", frame t = 0 (θ = 0) is the text-to-image image of the start prompt (caption), and t = 1
the end prompt's, with the same seed and settings; with "empty" they are not, since text to image's decoder reads
the prompt.

Each walk runs the pipelines' public stages (encode, prior, decode) itself; the Latent space tab
(comparisons.app.latent_space) checks its inputs and reads its frames.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from comparisons.app.progress import Progress
from comparisons.settings import Settings
from pipelines import LatentDiffusion, UnCLIP, interpolation
from pipelines.checks import check_finite, check_negative_prompts
from pipelines.latent_diffusion import HiddenStateConditioning
from pipelines.outputs import to_uint8
from pipelines.prior import TextConditioning
from pipelines.stable_unclip import StableUnCLIP
from pipelines.unclip import uses_guidance

FRAME_PX = 128  # small frames are upscaled (nearest, a whole factor) to about this many pixels
GAP, LABEL_PX = 4, 18  # white between frames; the band under each frame that says its t or θ


# ----------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Walk:
    """One architecture's frames along a path through its conditioning."""

    architecture: str
    variable: str  # "t" (interpolation) or "θ" (text diff)
    positions: tuple[float, ...]  # where each frame is on the path
    frames: np.ndarray  # (F, H, W, 3) float32 in [0, 1], frame i at positions[i]

    def labels(self) -> list[str]:
        return [f"{self.variable} = {p:.2f}" for p in self.positions]

    def strip(self) -> Image.Image:
        return strip_image(self.frames, self.labels())


def strip_image(frames: np.ndarray, labels: list[str]) -> Image.Image:
    """Frames (F, H, W, 3) in [0, 1] side by side on white, upscaled nearest to about FRAME_PX, each over a label."""
    pixels = to_uint8(frames)
    factor = max(1, FRAME_PX // max(pixels.shape[1:3]))
    pixels = pixels.repeat(factor, axis=1).repeat(factor, axis=2)
    count, height, width = pixels.shape[:3]
    canvas = Image.new("RGB", (count * width + (count - 1) * GAP, height + LABEL_PX), "white")
    draw, (font, greek) = ImageDraw.Draw(canvas), _label_font()
    for i, (frame, label) in enumerate(zip(pixels, labels)):
        x = i * (width + GAP)
        canvas.paste(Image.fromarray(frame), (x, 0))
        label = label if greek else label.replace("θ", "theta")
        draw.text((x + width / 2, height + LABEL_PX / 2), label, fill="black", font=font, anchor="mm")
    return canvas


@functools.cache
def _label_font() -> tuple[ImageFont.FreeTypeFont, bool]:
    """DejaVu Sans where the system has it, else Pillow's own font, which has no θ: (font, whether it draws θ)."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", LABEL_PX - 4), True
    except OSError:
        return ImageFont.load_default(size=LABEL_PX - 4), False


def frame_of(strip: Image.Image, i: int, size: int) -> np.ndarray:
    """Frame i of a strip whose frames are `size` px wide once upscaled: its pixels, (size, size, 3) uint8."""
    x = i * (size + GAP)
    return np.asarray(strip)[:size, x : x + size]


# ----------------------------------------------------------------------------- unCLIP


@dataclass(frozen=True)
class PriorRun:
    """A prompt's prior output as text to image makes it from a seed, and the noise its decoder then draws."""

    image_embeds: torch.Tensor  # (1, D)
    text: TextConditioning  # what text to image's decoder reads
    state: torch.Tensor  # the generator's state after the prior: where the decoder's draws start


def prior_of(pipe: UnCLIP, prompt: str, seed: int, settings: Settings) -> PriorRun:
    """Steps 2 and 3 of UnCLIP.__call__ for one prompt (encode, prior) with its seed's CPU generator."""
    kwargs = settings.pipeline_kwargs("unclip")
    prior_scale, decoder_scale = kwargs["prior_guidance_scale"], kwargs["decoder_guidance_scale"]
    generator = torch.Generator("cpu").manual_seed(seed)  # pipelines.checks.make_generators' generator of one image
    text = pipe.encode_prompt([prompt], 1, with_uncond=uses_guidance(prior_scale, decoder_scale))
    embeds = pipe.run_prior(text, generator, kwargs["prior_num_inference_steps"], prior_scale)
    check_finite(embeds, "prior", {"prior_guidance_scale": prior_scale})
    return PriorRun(embeds, text, generator.get_state())


def text_between(a: TextConditioning, b: TextConditioning, t: float) -> TextConditioning:
    """The decoder's text conditioning a fraction t of the way from a to b: the CLIP text embedding by slerp, the
    hidden states linearly, the tokens of either prompt attended to (its own alone at the ends); a's uncond."""
    mask = a.mask if t == 0 else b.mask if t == 1 else a.mask | b.mask
    embeds = interpolation.slerp(a.embeds, b.embeds, t)
    return TextConditioning(embeds, interpolation.lerp(a.hidden_states, b.hidden_states, t), mask, a.uncond)


def decode_frames(
    pipe: UnCLIP,
    embeds: list[torch.Tensor],
    texts: list[TextConditioning],
    state: torch.Tensor,
    settings: Settings,
    progress: Progress | None = None,
) -> np.ndarray:
    """Each embedding decoded alone (a frame is then what decoding it alone gives) from the same generator state."""
    kwargs = settings.pipeline_kwargs("unclip")
    frames = []
    for i, (embed, text) in enumerate(zip(embeds, texts)):
        if progress is not None:
            progress(i / len(embeds), f"unCLIP frame {i + 1}/{len(embeds)}")
        generator = torch.Generator("cpu")
        generator.set_state(state)
        out = pipe.decode_embeddings(
            embed,
            text,
            decoder_num_inference_steps=kwargs["decoder_num_inference_steps"],
            super_res_num_inference_steps=kwargs["super_res_num_inference_steps"],
            decoder_guidance_scale=kwargs["decoder_guidance_scale"],
            generator=generator,
        )
        frames.append(out.images[0])
    return np.stack(frames)


def _empty_text(pipe: UnCLIP, settings: Settings) -> TextConditioning:
    kwargs = settings.pipeline_kwargs("unclip")
    return pipe.encode_prompt([""], 1, with_uncond=kwargs["decoder_guidance_scale"] > 1.0)


def interpolate_unclip(
    pipe: UnCLIP,
    start: str,
    end: str,
    seed: int,
    settings: Settings,
    num_frames: int,
    decoder_text: str = "prompts",
    progress: Progress | None = None,
) -> Walk:
    """unCLIP's frames between two prompts: the prior's image embeddings slerped, decoded from one noise."""
    ts = interpolation.positions(num_frames)
    a, b = prior_of(pipe, start, seed, settings), prior_of(pipe, end, seed, settings)
    embeds = [interpolation.slerp(a.image_embeds, b.image_embeds, t) for t in ts]
    if decoder_text == "empty":
        texts = [_empty_text(pipe, settings)] * len(ts)
    else:
        texts = [text_between(a.text, b.text, t) for t in ts]
    return Walk("unclip", "t", tuple(ts), decode_frames(pipe, embeds, texts, a.state, settings, progress))


def text_diff_unclip(
    pipe: UnCLIP,
    caption: str,
    source: str,
    target: str,
    seed: int,
    settings: Settings,
    num_frames: int,
    max_theta: float,
    decoder_text: str = "prompts",
    progress: Progress | None = None,
) -> Walk:
    """unCLIP's frames along a text diff: the caption's image embedding moved towards target minus source."""
    thetas = interpolation.positions(num_frames, max_theta)
    run = prior_of(pipe, caption, seed, settings)
    texts = [pipe.encode_prompt([p], 1, with_uncond=False).embeds for p in (source, target)]
    direction = interpolation.text_direction(*texts)
    embeds = [interpolation.text_diff(run.image_embeds, direction, theta) for theta in thetas]
    text = _empty_text(pipe, settings) if decoder_text == "empty" else run.text
    frames = decode_frames(pipe, embeds, [text] * len(embeds), run.state, settings, progress)
    return Walk("unclip", "θ", tuple(thetas), frames)


# ----------------------------------------------------------------------------- latent diffusion


def interpolate_latent_diffusion(
    pipe: LatentDiffusion,
    start: str,
    end: str,
    seed: int,
    settings: Settings,
    num_frames: int,
    progress: Progress | None = None,
) -> Walk:
    """Latent diffusion's frames between two prompts: their hidden states lerped, each frame from the seed's noise."""
    ts = interpolation.positions(num_frames)
    kwargs = settings.pipeline_kwargs("latent_diffusion")
    scale = kwargs["guidance_scale"]
    negatives = check_negative_prompts(kwargs["negative_prompt"], 1) if scale > 1.0 else None
    a, b = (pipe.encode_prompt([p], negatives, 1) for p in (start, end))  # one at a time, as text to image encodes
    frames = []
    for i, t in enumerate(ts):
        if progress is not None:
            progress(i / len(ts), f"latent diffusion frame {i + 1}/{len(ts)}")
        text = HiddenStateConditioning(interpolation.lerp(a.cond, b.cond, t), a.uncond)
        out = pipe.generate_from_hidden_states(
            text, num_inference_steps=kwargs["num_inference_steps"], guidance_scale=scale, seed=seed
        )
        frames.append(out.images[0])
    return Walk("latent_diffusion", "t", tuple(ts), np.stack(frames))


# ----------------------------------------------------------------------------- Stable unCLIP


def interpolate_stable_unclip(
    pipe: StableUnCLIP,
    start: str,
    end: str,
    seed: int,
    settings: Settings,
    num_frames: int,
    decoder_text: str = "prompts",
    progress: Progress | None = None,
) -> Walk:
    """Stable unCLIP's frames between two prompts: the prior's image embeddings slerped (unCLIP's walk, the same
    prior) through the latent U-Net, every frame from the noise text to image draws after the prior; the U-Net reads
    the prompts' hidden states lerped ("prompts": its ends are text to image's images) or the empty prompt's."""
    ts = interpolation.positions(num_frames)
    kwargs = settings.pipeline_kwargs("stable_unclip")
    prior_scale, scale = kwargs["prior_guidance_scale"], kwargs["guidance_scale"]
    negatives = check_negative_prompts(kwargs["negative_prompt"], 1) if scale > 1.0 else None
    runs = []
    for prompt in (start, end):  # steps 2 and 3 of StableUnCLIP.__call__, with the seed's generator
        generator = torch.Generator("cpu").manual_seed(seed)
        prior_text, text = pipe.encode_prompt([prompt], negatives, 1, prior_scale > 1.0)
        embeds = pipe.run_prior(prior_text, generator, kwargs["prior_num_inference_steps"], prior_scale)
        runs.append(
            (check_finite(embeds, "prior", {"prior_guidance_scale": prior_scale}), text, generator.get_state())
        )
    (a, text_a, state), (b, text_b, _) = runs
    empty = pipe.encode_unet_prompt([""], negatives) if decoder_text == "empty" else None
    frames = []
    for i, t in enumerate(ts):
        if progress is not None:
            progress(i / len(ts), f"Stable unCLIP frame {i + 1}/{len(ts)}")
        generator = torch.Generator("cpu")
        generator.set_state(state)
        text = (
            empty
            if empty is not None
            else HiddenStateConditioning(interpolation.lerp(text_a.cond, text_b.cond, t), text_a.uncond)
        )
        out = pipe.decode_embeddings(
            interpolation.slerp(a, b, t),
            text,
            noise_level=kwargs["noise_level"],
            num_inference_steps=kwargs["num_inference_steps"],
            guidance_scale=scale,
            generator=generator,
        )
        frames.append(out.images[0])
    return Walk("stable_unclip", "t", tuple(ts), np.stack(frames))
