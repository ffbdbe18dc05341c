"""The "Image in" tab's backend: one uploaded image to each architecture's image-in mode (unCLIP's variations,
latent diffusion's img2img at a strength), side by side, each image a row of the run log like any other.

What the judge scores against is the prompt box, which is optional. img2img needs a prompt (it is conditioned on
it); variations take none (the image's CLIP embedding replaces the prior's). So without a prompt only variations
run, and their rows have no CLIP score. With one, every image is scored against it, and logged under it. Every
image-in row also has the judge's cosine between the image made and the source (`source_cosine`).

GPU work and bookkeeping apart, as ZeroGPU needs (as comparisons.app.compare): `make` generates and scores, and
returns portable `Made`s, writing nothing; `record` keeps the source under its hash, writes the PNGs and logs the
rows in the serving process. `prepare` attaches a borrowed image encoder (the pretrained preset's Karlo has none)
in the serving process before any GPU call: when the Space starts on ZeroGPU, on first use elsewhere.
"""

from __future__ import annotations

import logging
import threading
import weakref
from pathlib import Path

from PIL import Image

from comparisons.app.access import OWNER
from comparisons.app.inputs import parse_seed, parse_text, shown, vocabulary_notice
from comparisons.app.progress import Progress, stage_steps, steps_done, throttled, total_steps
from comparisons.app.session import Session
from comparisons.app.views import stats_line
from comparisons.harness import Harness, Made, new_run_id
from comparisons.presets import get_preset, load_problem
from comparisons.schema import SOURCE_COSINE, SOURCE_IMAGE
from comparisons.settings import Settings
from comparisons.sources import Source, open_source
from pipelines import registry
from pipelines.components import load_image_encoder
from pipelines.hub import ProgressCallback
from pipelines.outputs import StepState
from pipelines.tokenizer import truncation_messages

log = logging.getLogger(__name__)


def _encoder(harness: Harness, architecture: str) -> object | None:
    return getattr(harness.pipeline(architecture), "image_encoder", None)


def _image_ins(harness: Harness) -> list:
    """The ways the loaded architectures take an image in."""
    return [registry.get(a).image_in for a in harness.architectures if registry.get(a).image_in is not None]


class ImageIn:
    """The tab's backend: what the session's models can take in, and each image-in call, made then recorded."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._attaching = threading.Lock()
        # pipeline -> why its borrowed image encoder did not load, for as long as that pipeline is loaded
        self._problems: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # ---- what these models can do
    def why_not(self, harness: Harness, architecture: str, prompt: str | None = None) -> str | None:
        """Why the architecture cannot take an image in with this prompt (None: it can; prompt None: any prompt)."""
        a, pipe = registry.get(architecture), harness.pipeline(architecture)
        if a.image_in is None:
            return f"{a.short} takes no image in"
        if hasattr(pipe, "attach_image_encoder") and pipe.image_encoder is None:
            # what still runs, said once: img2img needs no image encoder
            still = " (img2img still works)" if any(i.mode == "img2img" for i in _image_ins(harness)) else ""
            problem = self._problems.get(pipe)
            if problem:
                return f"{a.short} cannot make variations: {problem}{still}"
            if self._lender(architecture) is None:
                return (
                    f"{a.short} cannot make variations: this model has no image encoder and the preset names none "
                    f"to borrow{still}"
                )
        if a.image_in.prompt_required and prompt is not None and not prompt:
            return f"{a.image_in.mode} needs a prompt: type what the image should become (variations take none)"
        return None

    def describe(self) -> str:
        """What each architecture does with an image, for the tab (in one line each)."""
        s = self.session
        if not s.settled:
            return "The models are loading: what this tab can do with them shows once they have."
        if s.load_failed:
            return "The models could not load (see the status line)."
        harness = s.harness()
        lines = []
        for arch in harness.architectures:
            a, pipe, why = registry.get(arch), harness.pipeline(arch), self.why_not(harness, arch)
            if why is not None:
                lines.append(f"- **{a.short}**: {why}.")
            elif a.image_in.mode == "variations":
                borrowed = getattr(pipe, "borrowed", {})
                own = pipe.image_encoder is not None and "image_encoder" not in borrowed
                lender = borrowed.get("image_encoder") or self._lender(arch)
                encoder = "its own image encoder" if own else f"the image encoder of `{lender}` (only that component)"
                owner, _ = a.shares.get("image_encoder", (None, None))
                if own and owner in harness.architectures and _encoder(harness, owner) is pipe.image_encoder:
                    # lent in memory by the pipeline beside it (the lab's unCLIP's: the CLIP its prior knows)
                    encoder = f"{registry.get(owner).short}'s image encoder, the same in memory,"
                if a.image_in.prompt_required or a.image_in.takes_prompt:
                    use = (
                        "noised to the noise level, conditions its U-Net where the prior's would; the prompt too, "
                        "if there is one"
                    )
                else:
                    use = "its decoder and super-resolution draw from it. No prompt"
                lines.append(
                    f"- **{a.short}** makes variations: {encoder} embeds the image, in place of the prior's "
                    f"embedding; {use}."
                )
            elif a.image_in.mode == "img2img":
                lines.append(
                    f"- **{a.short}** runs img2img: the VAE encodes the image, noised to the strength; the U-Net "
                    "denoises the rest of the schedule under the prompt (steps × strength of them)."
                )
            else:
                lines.append(f"- **{a.short}** takes the image in as {a.image_in.mode}.")
        return "\n".join(lines)

    def _lender(self, architecture: str) -> str | None:
        """Where the architecture's variations borrow an image encoder: the preset's choice for it."""
        return get_preset(self.session.config.preset).image_encoders.get(architecture)

    # ---- serving process, before the GPU
    def prepare(self, progress: ProgressCallback | None = None) -> None:
        """Attach the preset's image encoder to a model whose variations need one and that loaded none (that
        component alone, downloaded if need be), in the serving process; a failure is kept as the reason variations
        cannot run."""
        harness = self.session.harness()
        for arch, pipe in harness.pipelines.items():
            lender = self._lender(arch)
            if lender is None or not hasattr(pipe, "attach_image_encoder") or pipe.image_encoder is not None:
                continue
            with self._attaching:
                if pipe.image_encoder is not None or (self.session.config.zero_gpu and pipe in self._problems):
                    continue  # on ZeroGPU weights go to the GPU before launch only: no second try
                try:
                    encoder, processor = load_image_encoder(
                        lender, device=pipe.device, dtype=pipe.dtype, progress=progress
                    )
                    with self.session.device_lock:  # no GPU call is halfway through this model
                        pipe.attach_image_encoder(encoder, processor, lender)
                except (ValueError, OSError) as err:
                    log.error("the image encoder of %s could not be attached: %s", lender, err)
                    self._problems[pipe] = f"its image encoder from {lender} did not load: {load_problem(err)}"
                else:
                    self._problems.pop(pipe, None)

    # ---- GPU work, then the record
    def make(
        self,
        source: Source,
        prompt: str | None,
        seed: str | float | int | None,
        strength: float | None,
        settings: Settings,
        progress: Progress | None = None,
        visitor: str = OWNER,
    ) -> tuple[list[Made], dict[str, str], list[str]]:
        """GPU work: each architecture that can take `source` in, generated and scored, nothing written (`record`).
        Returns what was made, why the others did not run ({architecture: reason}) and notices for the user."""
        if not isinstance(source, Source):
            raise ValueError("no image: upload one to make variations and img2img from")
        self.session.fair_use(visitor, "image_in", "Images in")
        self.session.check_room()
        prompt, seed, settings = parse_text(prompt, "prompt"), parse_seed(seed), settings.checked()
        harness = self.session.harness()
        skipped = {a: why for a in harness.architectures if (why := self.why_not(harness, a, prompt)) is not None}
        runs = [a for a in harness.architectures if a not in skipped]
        if not runs:
            raise ValueError("; ".join(skipped.values()))
        strengths = {a: self._strength(a, settings, strength) for a in runs}
        modes = {a: registry.get(a).image_in.mode for a in runs}
        budget = sum(total_steps(a, settings, modes[a], strengths[a]) for a in runs) or 1
        made, done, run_id = [], 0, new_run_id()
        progress = None if progress is None else throttled(progress)
        with self.session.gpu_turn():
            for arch in runs:

                def step(state: StepState, offset: int = done, arch: str = arch) -> None:
                    if progress is not None:
                        steps = offset + steps_done(arch, state, settings, modes[arch], strengths[arch])
                        progress(
                            steps / budget, f"{modes[arch]}: {state.stage} step {state.step + 1}/{state.num_steps}"
                        )

                one = harness.make_image_in(
                    arch,
                    source,
                    prompt,
                    seed,
                    settings,
                    strengths[arch],
                    run_id=run_id,
                    callback=step,
                    visitor=visitor,
                )
                made.append(one.portable())
                done += total_steps(arch, settings, modes[arch], strengths[arch])
        return made, skipped, self._notices(harness, prompt)

    def record(self, made: list[Made]) -> dict[str, dict]:
        """Write what `make` made: the source (once, under its hash), the PNGs, then all rows in one append."""
        self.session.harness().save(*made)
        return {m.architecture: m.rows[0] for m in made}

    def run(
        self,
        image: str | Path | Image.Image | None,
        prompt: str | None,
        seed: str | float | int | None,
        strength: float | None,
        settings: Settings = Settings(),
        progress: Progress | None = None,
        visitor: str = OWNER,
    ) -> tuple[dict[str, dict], dict[str, str], list[str]]:
        """The whole request in one process: check the image, `prepare`, `make`, `record` ({architecture: row},
        {architecture: why it did not run}, notices)."""
        source = open_source(image)
        self.prepare()
        made, skipped, notices = self.make(source, prompt, seed, strength, settings, progress, visitor)
        return self.record(made), skipped, notices

    @staticmethod
    def _strength(architecture: str, settings: Settings, strength: float | None) -> float | None:
        """The architecture's strength, checked (None for a mode without one), refused where it leaves no step."""
        image_in = registry.get(architecture).image_in
        if image_in.strength is None:
            return None
        label = image_in.strength.label
        try:
            strength = float(strength)
        except (TypeError, ValueError):
            raise ValueError(f"{label} must be a number above 0, at most 1, got {shown(strength)}") from None
        if not 0 < strength <= 1:
            raise ValueError(
                f"{label} must be above 0 (at 0 nothing is denoised: the image would come back as it went in) "
                f"and at most 1 (pure noise), got {strength:g}"
            )
        if stage_steps(architecture, settings, image_in.mode, strength).get(image_in.strength.stage, 1) < 1:
            steps = stage_steps(architecture, settings, image_in.mode)[image_in.strength.stage]
            raise ValueError(
                f"{label} {strength:g} of {steps} steps leaves no step to denoise (steps × strength < 1): "
                "raise the strength or the steps"
            )
        return strength

    def _notices(self, harness: Harness, prompt: str) -> list[str]:
        if not prompt:
            return []
        notices = [vocabulary_notice(prompt, self.session.config.preset)]
        cut = truncation_messages(next(iter(harness.pipelines.values())).tokenizer, [prompt])[0]
        notices.append(None if cut is None else f"The CLIP text encoders cut the prompt: {cut}.")
        return [n for n in notices if n]


# ----------------------------------------------------------------------------- what the tab shows


def image_in_stats(row: dict) -> str:
    """The stats under an image made from an image: its mode (img2img: the strength and the steps its loop ran),
    the judge's cosine to the source, then the usual line."""
    a = registry.get(row["architecture"])
    what, strength = row["mode"], a.image_in.strength if a.image_in is not None else None
    if strength is not None and row.get(strength.name) is not None:
        asked = next(row[s.name] for s in a.settings_of(row["mode"]) if s.stage == strength.stage)
        ran = row.get(f"steps_{strength.stage}")
        what += f" at strength {row[strength.name]:g}: {strength.stage} ran {ran} of {asked} steps"
    cosine = row.get(SOURCE_COSINE)
    near = f" · cosine to the source {cosine:.3f}" if cosine is not None else ""
    return f"{what}{near} · {stats_line(row)}"


def source_line(rows: dict[str, dict], source: Source) -> str:
    """Which source the rows came from: its size, its hash, where the results folder keeps it."""
    kept = " · kept once as `images/sources/<sha256>.png`" if any(r.get(SOURCE_IMAGE) for r in rows.values()) else ""
    return (
        f"Source {source.image.width}×{source.image.height} · sha256 of its RGB pixels `{source.sha256[:16]}…`{kept} "
        "· each model is given its centre square at its own size."
    )


def prepare_progress(progress: Progress | None) -> ProgressCallback | None:
    """A download's bytes as the progress bar's fraction (the borrowed image encoder, on first use)."""
    if progress is None:
        return None
    return lambda repo, done, total: progress(done / total if total else 1.0, f"downloading {repo}'s image encoder")
