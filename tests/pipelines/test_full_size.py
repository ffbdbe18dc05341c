"""The full-size configs build the real architectures: parameter counts and structure, on the meta device.

A count that misses its published figure means the config is wrong; fix the config, never the
tolerance. Nothing is allocated, so the whole file runs in seconds.
"""

import open_clip
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    PriorTransformer,
    UnCLIPScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.pipelines.deprecated.unclip import UnCLIPTextProjModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

import pipelines.full_size
from pipelines.full_size import (
    CONFIGS,
    JUDGE,
    KARLO,
    build_component,
    build_full_size_latent_diffusion,
    build_full_size_unclip,
    build_judge,
    parameter_count,
    parameter_counts,
    read_config,
)

CLIP_L_WIDTH = 768  # width and projection size of CLIP ViT-L/14's text tower

# name: (published count, relative tolerance); ±2% where the figure is itself rounded ("≈")
PUBLISHED = {
    "unet": (859.5e6, 0.01),  # SD 1.5 U-Net
    "vae": (83.7e6, 0.01),  # SD 1.x KL-f8 VAE
    "text_encoder": (123.1e6, 0.01),  # CLIP ViT-L/14 text tower (CLIPTextModel)
    "prior": (1.02e9, 0.02),  # Karlo prior ≈ 1B
    "decoder": (885e6, 0.02),  # Karlo decoder
    "super_res_first": (692e6, 0.02),  # Karlo super-res, first steps
    "super_res_last": (692e6, 0.02),  # Karlo super-res, last step
    "judge": (427.6e6, 0.02),  # open_clip ViT-L-14, both towers
}


@pytest.fixture(scope="module")
def counts():
    return parameter_counts()


@pytest.fixture(scope="module")
def full_unclip():
    return build_full_size_unclip()


@pytest.fixture(scope="module")
def full_latent_diffusion():
    return build_full_size_latent_diffusion()


# ----------------------------------------------------------------------------- counts


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_count_matches_published(counts, name):
    published, tolerance = PUBLISHED[name]
    assert abs(counts[name] - published) <= tolerance * published, (
        f"{name}: {counts[name]:,} vs published {published:,.0f}"
    )


def test_karlo_text_encoder_is_clip_l_plus_its_projection(counts):
    assert counts["text_encoder_with_projection"] == counts["text_encoder"] + CLIP_L_WIDTH * CLIP_L_WIDTH


def test_super_res_first_and_last_are_the_same_architecture(counts):
    assert counts["super_res_first"] == counts["super_res_last"]


def test_every_component_is_counted(counts, full_unclip, full_latent_diffusion):
    expected = (
        set(full_unclip.modules()) | set(full_latent_diffusion.modules()) | {"text_encoder_with_projection", "judge"}
    )
    assert set(counts) == expected
    assert all(n > 0 for n in counts.values())


# ----------------------------------------------------------------------------- structure


def test_full_size_pipelines_allocate_nothing(full_unclip, full_latent_diffusion):
    for pipe in (full_unclip, full_latent_diffusion):
        for name, module in pipe.modules().items():
            assert all(p.is_meta for p in module.parameters()), name


def test_karlo_structure(full_unclip):
    decoder, text_proj, prior = full_unclip.decoder.config, full_unclip.text_proj.config, full_unclip.prior.config
    assert (decoder.sample_size, decoder.in_channels, decoder.out_channels) == (
        64,
        3,
        6,
    )  # 6: noise + learned variance
    assert decoder.cross_attention_dim == text_proj.cross_attention_dim == 1536
    assert text_proj.time_embed_dim == 4 * decoder.block_out_channels[0]
    assert (
        text_proj.clip_embeddings_dim
        == prior.embedding_dim
        == full_unclip.text_encoder.config.projection_dim
        == CLIP_L_WIDTH
    )
    first, last = full_unclip.super_res_first.config, full_unclip.super_res_last.config
    assert (first.sample_size, first.in_channels, first.out_channels) == (256, 6, 3)  # noisy image + bicubic upscale
    assert (last.in_channels, last.out_channels) == (6, 3)
    assert full_unclip.image_size == 256


def test_karlo_schedulers(full_unclip):
    prior, decoder, super_res = (
        full_unclip.prior_scheduler,
        full_unclip.decoder_scheduler,
        full_unclip.super_res_scheduler,
    )
    assert all(isinstance(s, UnCLIPScheduler) for s in (prior, decoder, super_res))
    assert (prior.config.prediction_type, prior.config.variance_type, prior.config.clip_sample_range) == (
        "sample",
        "fixed_small_log",
        5.0,
    )
    assert (decoder.config.prediction_type, decoder.config.variance_type) == ("epsilon", "learned_range")
    assert (super_res.config.prediction_type, super_res.config.variance_type) == ("epsilon", "fixed_small_log")


def test_sd15_structure(full_latent_diffusion):
    unet, vae = full_latent_diffusion.unet.config, full_latent_diffusion.vae.config
    assert unet.cross_attention_dim == full_latent_diffusion.text_encoder.config.hidden_size == CLIP_L_WIDTH
    assert vae.latent_channels == unet.in_channels == unet.out_channels == 4
    assert vae.scaling_factor == 0.18215
    assert unet.sample_size == 64 and full_latent_diffusion.vae_scale_factor == 8
    assert full_latent_diffusion.image_size == 512
    scheduler = full_latent_diffusion.scheduler
    assert isinstance(scheduler, PNDMScheduler)
    assert (scheduler.config.beta_schedule, scheduler.config.skip_prk_steps, scheduler.config.steps_offset) == (
        "scaled_linear",
        True,
        1,
    )


def test_judge_is_open_clip_vit_l_14():
    judge = build_judge()
    config = open_clip.get_model_config(JUDGE)
    assert judge.text_projection.shape == (config["text_cfg"]["width"], config["embed_dim"])
    assert judge.visual.image_size == (224, 224)
    assert all(p.is_meta for p in judge.parameters())


EXPECTED_CLASSES = {
    "karlo-v1-alpha": dict(
        text_encoder=CLIPTextModelWithProjection,
        prior=PriorTransformer,
        text_proj=UnCLIPTextProjModel,
        decoder=UNet2DConditionModel,
        super_res_first=UNet2DModel,
        super_res_last=UNet2DModel,
    ),
    "stable-diffusion-v1-5": dict(text_encoder=CLIPTextModel, unet=UNet2DConditionModel, vae=AutoencoderKL),
}


@pytest.mark.parametrize("repo", EXPECTED_CLASSES)
def test_components_have_the_hub_classes(repo, full_unclip, full_latent_diffusion):
    pipe = full_unclip if repo == KARLO else full_latent_diffusion
    assert {name: type(m) for name, m in pipe.modules().items()} == EXPECTED_CLASSES[repo]


def test_every_config_file_is_used(full_unclip, full_latent_diffusion):
    files = {p.parent.relative_to(CONFIGS).as_posix() for p in CONFIGS.glob("*/*/*.json")}
    used = {f"karlo-v1-alpha/{n}" for n in full_unclip.components()} | {
        f"stable-diffusion-v1-5/{n}" for n in full_latent_diffusion.components()
    }
    assert files == used - {"karlo-v1-alpha/tokenizer", "stable-diffusion-v1-5/tokenizer"}


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("build", [build_full_size_unclip, build_full_size_latent_diffusion])
def test_builds_in_the_requested_dtype_and_leaves_global_state_alone(build):
    rng, default_dtype = torch.get_rng_state(), torch.get_default_dtype()
    pipe = build(dtype=torch.float16)
    for name, module in pipe.modules().items():
        assert {p.dtype for p in module.parameters()} == {torch.float16}, name
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_default_dtype() == default_dtype


def test_same_seed_same_weights_on_a_real_device():
    a, b, c = (build_component(KARLO, "text_proj", device="cpu", seed=s) for s in (3, 3, 4))  # 7.9M parameters
    assert torch.equal(a.embedding_proj.weight, b.embedding_proj.weight)
    assert not torch.equal(a.embedding_proj.weight, c.embedding_proj.weight)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(device="gpu0"), "not a torch device"),
        (dict(dtype=torch.int8), "dtype must be one of"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_full_size_latent_diffusion(**kwargs)


def test_unknown_config_raises_value_error():
    with pytest.raises(ValueError, match="no config for karlo-v1-alpha/vae"):
        read_config("karlo-v1-alpha", "vae")


def test_config_naming_an_unknown_class_raises_value_error(tmp_path, monkeypatch):
    (tmp_path / "repo" / "model").mkdir(parents=True)
    (tmp_path / "repo" / "model" / "config.json").write_text('{"_class_name": "UNet3DConditionModel"}')
    monkeypatch.setattr(pipelines.full_size, "CONFIGS", tmp_path)
    with pytest.raises(ValueError, match="UNet3DConditionModel"):
        build_component("repo", "model")


def test_parameter_count_counts_every_parameter():
    assert parameter_count(torch.nn.Linear(3, 2)) == 3 * 2 + 2
