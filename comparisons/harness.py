"""Generate, score, save and log: the one path every image takes, from the CLI, sweeps or the app.

A `Harness` holds each architecture's pipeline, the judge and the run log. `generate(architecture, prompts,
seeds, settings)` makes one batched pipeline call (image i from prompts[i] and seeds[i]), scores
every image with the judge (and, in the Shapes lab, the checker), writes each PNG with its
infotext and appends one row per image to the log. `make_image_in` does the same from an image taken in
(unCLIP's variations, latent diffusion's img2img), and `save` keeps that image once under its hash.

`make_each` makes one comparison: every architecture on one prompt and seed, side by side when the harness is
`concurrent`, instead of one after the other. The lab's models are bound by per-call overhead, not arithmetic: one
intra-op thread runs their denoisers about as fast as two (benchmarks/README.md, "The lab preset on two CPU cores"),
so one architecture leaves the second core idle. Each architecture then runs in a thread of its own with one
intra-op thread; torch releases the GIL inside its operators (and inside a traced graph, pipelines.traced), so they
overlap. Their rows say how their seconds were measured, `timing` = "concurrent" (each shared the machine with the
others), not "isolated".
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from comparisons.files import fsync_dir
from comparisons.metrics import Judge, embedding_cosine
from comparisons.records import build_rows, image_name, row_key, save_png, weights_hash
from comparisons.schema import CONCURRENT, ISOLATED, MODE, SOURCE_HASH, SOURCE_IMAGE, TIMING, VISITOR
from comparisons.settings import Settings
from comparisons.sources import Source, call_image_in, save_source, source_path
from lab.captions import parse_caption
from lab.checker import check
from pipelines import PipelineOutput, registry
from pipelines.base import Pipeline
from pipelines.checks import NonFiniteError
from pipelines.devices import cores
from pipelines.outputs import StepCallback, to_uint8


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Made:
    """What one `Harness.make` call generated and scored, not yet written."""

    architecture: str
    output: PipelineOutput
    images: list[Image.Image]
    rows: list[dict]  # one per image; image_path is where `save` will try to write it
    source: Source | None = None  # the image taken in, which `save` keeps under its hash

    def portable(self) -> Made:
        """This with the output's tensors on the CPU and its extras dropped: what a forked GPU worker (ZeroGPU) can
        hand back to the serving process, which has no CUDA of its own."""
        o = self.output
        cpu = {k: getattr(o, k).detach().cpu() for k in ("image_embeds", "text_embeds") if getattr(o, k) is not None}
        return dataclasses.replace(self, output=dataclasses.replace(o, extras={}, **cpu))


def pays(architectures: int) -> bool:
    """Whether running `architectures` side by side can gain: more than one, and more than one core."""
    return architectures > 1 and cores() > 1


def workers(architectures: int) -> int:
    """Threads for `architectures` side by side: one per core at most (a third architecture on two cores waits for
    the first free core, rather than slowing both by sharing one)."""
    return max(1, min(architectures, cores()))


def _one_thread(fn: Callable[[], Made]) -> Made:
    # Per thread: torch's intra-op thread count is the calling thread's OpenMP setting, restored after.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(previous)


@dataclass
class Harness:
    """Each architecture's pipeline, how to name their weights, the judge, where images and rows go."""

    pipelines: dict[str, Pipeline]  # architecture -> its pipeline, in the order comparisons show them
    judge: Judge
    out_dir: Path
    models: dict[str, str] = field(default_factory=dict)  # architecture -> preset, hub id or path
    use_checker: bool = False  # Shapes lab only: score every image with lab.checker
    log: object | None = None  # a comparisons.store.RunLog, or None to keep rows in memory only
    meter_memory: bool = True  # on a CPU, each configuration's stage memory from one TensorMeter pass
    concurrent: bool = False  # a comparison's architectures run side by side, a core each (make_each)
    _stage_memory: dict[tuple, dict[str, int]] = field(default_factory=dict, repr=False)  # per configuration

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir).resolve()  # rows name their PNG by an absolute path, wherever they are read
        for name in self.pipelines:
            registry.get(name)

    @property
    def architectures(self) -> tuple[str, ...]:
        return tuple(self.pipelines)

    def pipeline(self, architecture: str) -> Pipeline:
        if architecture not in self.pipelines:
            registry.get(architecture)  # an unknown name says which are known
            raise ValueError(f"this harness has no {architecture} pipeline; it has {', '.join(self.pipelines)}")
        return self.pipelines[architecture]

    def generate(
        self, architecture: str, prompts: list[str], seeds: list[int], settings: Settings = Settings(), **options
    ) -> tuple[PipelineOutput, list[dict]]:
        """`make` then `save`: one batched call for len(prompts) images; returns the output and its logged rows.
        `options` are make's: run_id, callback, extra_columns (more columns per row, e.g. a sweep's resume key)."""
        made = self.make(architecture, prompts, seeds, settings, **options)
        return made.output, self.save(made)

    def make(
        self,
        architecture: str,
        prompts: list[str],
        seeds: list[int],
        settings: Settings = Settings(),
        *,
        run_id: str | None = None,
        callback: StepCallback | None = None,
        extra_columns: list[dict] | None = None,
        timing: str = ISOLATED,
        visitor: str = "",
    ) -> Made:
        """Generate and score, writing nothing: `save` writes what this made (see `generate`). `timing` says in the
        rows how their seconds were measured (make_each)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per image")
        pipe = self.pipeline(architecture)
        output = pipe(prompts, seed=list(seeds), callback=callback, **settings.pipeline_kwargs(architecture))
        images = _checked_images(architecture, output)  # once: the judge, the image encoder and the PNGs read them
        run_id = run_id or new_run_id()
        keys = [row_key(architecture, p, s, settings) for p, s in zip(output.prompts, output.seeds)]
        rows = build_rows(
            output,
            architecture=architecture,
            model=self.models.get(architecture, architecture),
            model_hash=weights_hash(pipe),
            settings=settings,
            run_id=run_id,
            image_paths=[str(self.image_dir(architecture) / image_name(run_id, k)) for k in keys],
            clip_cosine=self.judge.cosine(images, output.prompts),
            prior_image_cosine=self._prior_image_cosine(pipe, output, images),
            checks=self._checks(output.images, output.prompts) if self.use_checker else None,
            stage_memory=self.stage_memory(architecture, output.prompts, settings),
        )
        for i, row in enumerate(rows):
            row[TIMING], row[VISITOR] = timing, visitor
            row.update(extra_columns[i] if extra_columns else {})
        return Made(architecture, output, images, rows)

    def make_each(
        self,
        prompt: str,
        seed: int,
        settings: Settings,
        run_id: str,
        callbacks: dict[str, StepCallback | None],
        concurrent: bool | None = None,
        visitor: str = "",
    ) -> list[Made]:
        """One comparison: every architecture on one prompt and seed (`make`, nothing written), in their order;
        side by side when `concurrent` (default: the harness's), else one after the other. A failure is raised
        once all have finished."""

        def job(arch: str, timing: str) -> Callable[[], Made]:
            return lambda: self.make(
                arch,
                [prompt],
                [seed],
                settings,
                run_id=run_id,
                callback=callbacks.get(arch),
                timing=timing,
                visitor=visitor,
            )

        if not (self.concurrent if concurrent is None else concurrent):
            return [job(arch, ISOLATED)() for arch in self.architectures]
        with ThreadPoolExecutor(workers(len(self.architectures)), thread_name_prefix="architecture") as pool:
            # Each in a copy of the caller's context: what it keeps in context variables (gradio's progress bar)
            # reaches the callbacks; one copy each, as a context runs in one thread at a time.
            futures = [
                pool.submit(contextvars.copy_context().run, _one_thread, job(arch, CONCURRENT))
                for arch in self.architectures
            ]
        return [f.result() for f in futures]

    def make_image_in(
        self,
        architecture: str,
        source: Source,
        prompt: str,
        seed: int,
        settings: Settings = Settings(),
        strength: float | None = None,
        *,
        run_id: str | None = None,
        callback: StepCallback | None = None,
        visitor: str = "",
    ) -> Made:
        """One image from `source` by the architecture's image-in method (registry.ImageIn), scored, writing nothing.
        The judge scores it against `prompt` (none when empty) and against the source; `save` writes it."""
        pipe, run_id = self.pipeline(architecture), run_id or new_run_id()
        output = call_image_in(pipe, architecture, source.image, prompt, [seed], settings, strength, callback)
        images = _checked_images(architecture, output)
        image_in = registry.get(architecture).image_in
        columns = {MODE: image_in.mode, SOURCE_HASH: source.sha256}
        if image_in.strength is not None:
            columns[image_in.strength.name] = float(strength)
        key = row_key(architecture, prompt, seed, settings, columns)
        columns[SOURCE_IMAGE] = str(source_path(self.out_dir, source.sha256))
        model = self.models.get(architecture, architecture)
        lent = {name: repo for name, repo in getattr(pipe, "borrowed", {}).items() if repo != model}  # not its own
        borrowed = "".join(f" + {name} of {repo}" for name, repo in lent.items())
        judge = self.judge
        rows = build_rows(
            output,
            architecture=architecture,
            model=model + borrowed,
            model_hash=weights_hash(pipe, with_borrowed=True),
            settings=settings,
            run_id=run_id,
            image_paths=[str(self.image_dir(architecture) / image_name(run_id, key))],
            clip_cosine=judge.cosine(images, [prompt]) if prompt else None,
            checks=self._checks(output.images, [prompt]) if self.use_checker else None,
            image_in=columns,
            source_cosine=embedding_cosine(judge.embed_images(images), judge.embed_images([source.image])),
            prompts=[prompt],
            stage_memory=self.stage_memory(architecture, [prompt], settings, (source, strength)),
        )
        rows[0][TIMING], rows[0][VISITOR] = ISOLATED, visitor
        return Made(architecture, output, images, rows, source)

    def save(self, *made: Made) -> list[dict]:
        """Write the PNGs of one or more `make` calls (and each source image taken in, once), then log all their
        rows in one append; returns the rows."""
        rows = []
        for source in {m.source.sha256: m.source for m in made if m.source is not None}.values():
            save_source(source, self.out_dir)  # before any row names it
        for m in made:
            for image, row in zip(m.images, m.rows):
                # a new file per row: save_png never writes over an image, and says where it wrote
                row["image_path"] = str(save_png(image, Path(row["image_path"]), row, sync_dir=False))
            fsync_dir(self.image_dir(m.architecture))  # the new names are durable before any row points to them
            rows += m.rows
        if self.log is not None:
            self.log.append(rows)
        return rows

    def stage_memory(
        self,
        architecture: str,
        prompts: list[str],
        settings: Settings,
        image_in: tuple[Source, float | None] | None = None,
    ) -> dict[str, int] | None:
        """On a CPU, the bytes each stage allocates for this many images and these settings (Pipeline.stage_memory),
        measured once per configuration at each loop's fewest steps: a stage's peak does not grow with its steps.
        `image_in` (source, strength): the architecture's image-in call instead. None on a GPU, where the call's
        own max allocated per stage is kept."""
        pipe = self.pipeline(architecture)
        if not self.meter_memory or pipe.device.type != "cpu":
            return None
        strength = image_in[1] if image_in else None
        at_least = math.ceil(1 / strength) if strength else 1  # img2img runs int(steps * strength) of them
        fewest = settings.fewest_steps([architecture], at_least)
        shape = (image_in[0].image.size, strength) if image_in else None
        # Its own settings alone: the other architectures' do not change what this one allocates.
        key = (architecture, len(prompts), tuple(fewest.for_architecture(architecture).items()), shape)
        if key not in self._stage_memory:
            if image_in:
                source = image_in[0].image

                def call():
                    return call_image_in(pipe, architecture, source, prompts[0], [0], fewest, strength, None)
            else:
                kwargs = fewest.pipeline_kwargs(architecture)

                def call():
                    return pipe(list(prompts), seed=[0] * len(prompts), **kwargs)

            self._stage_memory[key] = pipe.stage_memory(call)
        return self._stage_memory[key]

    def image_dir(self, architecture: str) -> Path:
        return self.out_dir / "images" / architecture

    @staticmethod
    def _prior_image_cosine(pipe: Pipeline, output: PipelineOutput, images: list[Image.Image]) -> np.ndarray | None:
        """How close the decoded image comes to the CLIP image embedding that conditioned it (unCLIP's prior's), in
        the generator's own CLIP image space; None for a pipeline without an image embedding or an image encoder."""
        if output.image_embeds is None or getattr(pipe, "image_encoder", None) is None:
            return None
        return embedding_cosine(pipe.encode_image(images).cpu(), output.image_embeds)

    @staticmethod
    def _checks(images: np.ndarray, prompts: list[str]) -> list[dict]:
        """The checker's verdicts per image; none for a prompt outside the Shapes grammar (nothing to check)."""

        verdicts = []
        for image, prompt in zip(to_uint8(images), prompts):
            try:
                parse_caption(prompt)
            except ValueError:
                verdicts.append({})
                continue
            verdicts.append(check(image, prompt).as_dict())
        return verdicts


def _checked_images(architecture: str, output: PipelineOutput) -> list[Image.Image]:
    """The output's images as PIL, once its pixels are finite (the pipelines check every stage; this guards the
    PNGs alone)."""
    if not np.isfinite(output.images).all():
        raise NonFiniteError(f"{architecture} returned NaN or infinite pixels; no image was saved")
    return output.pil_images()
