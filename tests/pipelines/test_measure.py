"""What a stage allocates on a CPU: a TensorMeter pass counts the tensors a stage makes (at their peak, above what
was alive at its start) and the weights of the models it runs; views and in-place ops are no new memory."""

import pytest
import torch

from comparisons.presets import load_models
from comparisons.settings import Settings
from pipelines.measure import TENSORS_AND_WEIGHTS, StageRecorder, TensorMeter, module_bytes

MB = 2**20


def test_a_stage_that_allocates_a_known_tensor_reports_at_least_its_size():
    meter = TensorMeter()
    recorder = StageRecorder(torch.device("cpu"), meter)
    kept = torch.zeros(2 * MB // 4)  # alive before the stages: not theirs
    with meter:
        with recorder.stage("makes_8_mb"):
            a = torch.ones(8 * MB // 4)  # 8 MB
            b = a.view(-1)[: MB // 4]  # a view: no new memory
            a.mul_(2)  # in place: none either
            del a, b
        with recorder.stage("makes_two_4_mb_in_turn"):
            for _ in range(2):
                c = torch.ones(4 * MB // 4)
                del c  # freed before the next: the peak is one of them
        with recorder.stage("runs_a_model"):
            model = torch.nn.Linear(512, 512)
            meter.runs([model])
            model(torch.ones(1, 512))
    stages = {s.name: s for s in recorder.stages}
    assert 8 * MB <= stages["makes_8_mb"].peak_memory_bytes < 8.1 * MB
    assert 4 * MB <= stages["makes_two_4_mb_in_turn"].peak_memory_bytes < 4.1 * MB
    assert stages["runs_a_model"].peak_memory_bytes >= module_bytes(model) == (512 * 512 + 512) * 4
    assert {s.memory_kind for s in recorder.stages} == {TENSORS_AND_WEIGHTS} and kept.numel()


@pytest.fixture(scope="module")
def lab():
    return load_models("lab", device="cpu")


def test_each_lab_stage_counts_its_models_weights_and_its_activations(lab):
    for arch, pipe in lab.items():
        memory = pipe.stage_memory(lambda: pipe(["a red circle above a blue square"], seed=[0], **FEWEST[arch]))
        assert list(memory) == [s for s in STAGES[arch]]
        for stage, models in MODELS[arch].items():
            weights = sum(module_bytes(getattr(pipe, m)) for m in models)
            assert weights < memory[stage] < weights + 64 * MB, (arch, stage, memory[stage], weights)


def test_harness_rows_on_a_cpu_carry_stage_memory_and_keep_peak_rss(lab, tmp_path):
    from comparisons.harness import Harness
    from comparisons.metrics import load_judge

    harness = Harness(lab, judge=load_judge("tiny"), out_dir=tmp_path)
    fast = Settings(prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2)
    row = harness.make("latent_diffusion", ["a red circle"], [0], fast).rows[0]
    assert row["memory_kind"] == "tensors + weights"
    unet = module_bytes(lab["latent_diffusion"].unet) / MB
    assert unet < row["peak_memory_mb_unet"] < unet + 64 and row["peak_rss_mb"] > 100  # torch alone is more
    assert row["peak_memory_mb"] == max(row[f"peak_memory_mb_{s}"] for s in STAGES["latent_diffusion"])
    again = harness.make("latent_diffusion", ["a blue square"], [1], fast.replace(steps=5)).rows[0]
    assert again["peak_memory_mb_unet"] == row["peak_memory_mb_unet"]  # one pass per configuration: steps aside
    harness.make("latent_diffusion", ["a red circle"], [2], fast.replace(prior_steps=7, decoder_guidance=3.0))
    assert len(harness._stage_memory) == 1  # unCLIP's settings change nothing latent diffusion allocates
    harness.make("latent_diffusion", ["a red circle"], [2], fast.replace(guidance=2.0))
    assert len(harness._stage_memory) == 2  # its own do


def test_fewest_steps_puts_each_step_count_of_the_architectures_asked_at_its_minimum():
    settings = Settings(prior_steps=9, steps=30, guidance=3.0)
    unclip = settings.fewest_steps(["unclip"])
    own = unclip.of("unclip")
    assert (own.prior_steps, own.decoder_steps, own.super_res_steps) == (2, 2, 2)
    assert (unclip.of("latent_diffusion").steps, unclip.of("latent_diffusion").guidance) == (30, 3.0)  # as given
    both = settings.fewest_steps(["unclip", "latent_diffusion"], at_least=4)
    assert (both.value("prior_steps"), both.value("super_res_steps"), both.value("steps")) == (4, 4, 4)


FEWEST = {
    "unclip": dict(prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2),
    "latent_diffusion": dict(num_inference_steps=1),
    "stable_unclip": dict(prior_num_inference_steps=2, num_inference_steps=1),
}
STAGES = {
    "unclip": ("text_encoder", "prior", "decoder", "super_res"),
    "latent_diffusion": ("text_encoder", "unet", "vae_decode"),
    "stable_unclip": ("text_encoder", "prior", "unet", "vae_decode"),
}
MODELS = {
    "unclip": {
        "text_encoder": ("text_encoder",),
        "prior": ("prior",),
        "decoder": ("text_proj", "decoder"),
        "super_res": ("super_res_first", "super_res_last"),
    },
    "latent_diffusion": {"text_encoder": ("text_encoder",), "unet": ("unet",), "vae_decode": ("vae",)},
    "stable_unclip": {
        "text_encoder": ("prior_text_encoder", "text_encoder"),  # the prior's CLIP and the U-Net's, one stage
        "prior": ("prior",),
        "unet": ("unet",),  # the image normalizer's two vectors beside it
        "vae_decode": ("vae",),
    },
}
