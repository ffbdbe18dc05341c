"""The Compare tab's backend: one prompt and seed through every architecture, side by side, each image a row of the
run log.

GPU work and bookkeeping apart, as ZeroGPU needs: `make_compare` may run in a forked worker (`spaces.GPU`), so it
changes nothing and returns all it made (portable `Made`s: CPU tensors, images, rows); `record` then writes the
PNGs and the run log in the serving process. `run` is both, in one process.
"""

from __future__ import annotations

from comparisons.app.access import OWNER
from comparisons.app.inputs import example_prompts, parse_prompt, parse_seed, vocabulary_notice
from comparisons.app.progress import Progress, steps_done, throttled, total_steps
from comparisons.app.session import Session
from comparisons.harness import Made, new_run_id
from comparisons.settings import Settings
from pipelines import registry
from pipelines.outputs import StepCallback, StepState
from pipelines.tokenizer import truncation_messages


class Compare:
    """The tab's requests on a session's models: every architecture on one prompt and seed, made then recorded."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def examples(self, n: int = 8) -> list[str]:
        """Example prompts that fit the models loaded now (the Shapes vocabulary in the lab)."""
        return example_prompts(self.session.config.preset, n)

    def notice(self, prompt: str | None) -> str | None:
        """What to say of a prompt as it is typed: in the Shapes lab, that it leaves the models' vocabulary."""
        return vocabulary_notice(prompt or "", self.session.config.preset)

    def run(
        self,
        prompt: str | None,
        seed: str | float | int | None,
        settings: Settings,
        progress: Progress | None = None,
        visitor: str = OWNER,
    ) -> tuple[dict[str, dict], list[str]]:
        """Every architecture on one prompt and seed, logged: {architecture: row}, and notices for the user."""
        made, notices = self.make_compare(prompt, seed, settings, progress, visitor)
        return self.record(made), notices

    def make_compare(
        self,
        prompt: str | None,
        seed: str | float | int | None,
        settings: Settings,
        progress: Progress | None = None,
        visitor: str = OWNER,
    ) -> tuple[list[Made], list[str]]:
        """GPU work: each architecture on one prompt and seed, generated and scored, nothing written (see `record`);
        its rows say which visitor asked (on a public app)."""
        prompt, seed = parse_prompt(prompt), parse_seed(seed)
        settings = settings.checked()
        self.session.check_room()
        notices = [n for n in (self.notice(prompt), self._truncation_notice(prompt)) if n]
        harness = self.session.harness()
        budget = sum(total_steps(a, settings) for a in harness.architectures)
        done = dict.fromkeys(harness.architectures, 0)  # steps so far, per architecture: they may run side by side
        progress = None if progress is None else throttled(progress)

        def step(arch: str) -> StepCallback | None:
            def report(state: StepState) -> None:
                done[arch] = steps_done(arch, state, settings)
                progress(
                    sum(done.values()) / budget,
                    f"{registry.get(arch).label}: {state.stage} step {state.step + 1}/{state.num_steps}",
                )

            return report if progress is not None else None

        callbacks = {arch: step(arch) for arch in harness.architectures}
        with self.session.gpu_turn():
            made = harness.make_each(prompt, seed, settings, new_run_id(), callbacks, visitor=visitor)
        return [m.portable() for m in made], notices

    def record(self, made: list[Made]) -> dict[str, dict]:
        """Write what `make_compare` made: the PNGs, then all rows in one append (all or none); {architecture: row}."""
        self.session.harness().save(*made)
        return {m.architecture: m.rows[0] for m in made}

    def _truncation_notice(self, prompt: str) -> str | None:
        tokenizer = next(iter(self.session.harness().pipelines.values())).tokenizer  # every architecture's is CLIP's
        message = truncation_messages(tokenizer, [prompt])[0]
        return None if message is None else f"The architectures' CLIP text encoders cut the prompt: {message}."
