"""Saving and loading in diffusers' hub layout: round trips, diffusers' own loaders, and errors
that name the file at fault."""

import json
import shutil
import socket
from itertools import chain
from pathlib import Path

import diffusers.pipelines
import diffusers.pipelines.deprecated.unclip
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline

from pipelines import load_latent_diffusion, load_unclip
from pipelines.components import LATENT_DIFFUSION
from pipelines.layout import MODEL_INDEX
from pipelines.loading import resolve_pipeline_dir
from pipelines.tokenizer import MODEL_MAX_LENGTH, offline_clip_tokenizer, tokenize

from helpers import (
    LD_STEPS,
    UNCLIP_STEPS,
    VARIATION_STEPS,
    assert_images_close,
    oracle_generators,
    random_image,
    sd_oracle,
    unclip_oracle,
    variations_oracle,
)

PROMPT = "a red square above a blue circle"
LOADERS = {"unclip": load_unclip, "latent_diffusion": load_latent_diffusion}
STEPS = {"unclip": UNCLIP_STEPS, "latent_diffusion": LD_STEPS}


@pytest.fixture(scope="session")
def saved(tmp_path_factory, unclip, latent_diffusion) -> dict[str, Path]:
    """Each tiny pipeline saved once; tests that damage a save work on a copy (see `copy_of`)."""
    root = tmp_path_factory.mktemp("saved")
    return {
        "unclip": unclip.save_pretrained(root / "unclip"),
        "latent_diffusion": latent_diffusion.save_pretrained(root / "ld"),
    }


@pytest.fixture
def copy_of(saved, tmp_path):
    return lambda arch: Path(shutil.copytree(saved[arch], tmp_path / arch))


def generate(pipe, arch: str, seed: int = 4):
    return pipe(PROMPT, seed=seed, **STEPS[arch])


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("arch", ["unclip", "latent_diffusion"])
def test_round_trip_gives_bit_identical_images(request, saved, arch):
    original = request.getfixturevalue(arch)
    # the loaders copy weights out of the safetensors buffer into aligned memory: without that,
    # CPU kernels round differently on unaligned views and images come back an ulp apart
    loaded = LOADERS[arch](saved[arch])

    # from_pretrained gives eval mode; a pipeline built from configs must be in it too, or its
    # ResnetBlock2D lays out tensors differently (2e-6 apart in unCLIP's decoder)
    assert not any(m.training for m in chain(original.modules().values(), loaded.modules().values()))
    assert np.array_equal(generate(loaded, arch).images, generate(original, arch).images)


def test_saved_unclip_loads_in_diffusers(saved, unclip, monkeypatch):
    index = json.loads((saved["unclip"] / MODEL_INDEX).read_text())
    assert index["_class_name"] == "UnCLIPPipeline"
    assert index["text_proj"] == ["unclip", "UnCLIPTextProjModel"]  # as in kakaobrain/karlo-v1-alpha
    # Karlo's index names text_proj's library "unclip", which diffusers resolved as `diffusers.pipelines.unclip`
    # until the pipeline moved under `deprecated`; diffusers 0.42 no longer has that name (it cannot load its
    # own UnCLIPPipeline.save_pretrained either), so put it back where Karlo's index expects it.
    monkeypatch.setattr(diffusers.pipelines, "unclip", diffusers.pipelines.deprecated.unclip, raising=False)
    oracle = UnCLIPPipeline.from_pretrained(saved["unclip"])
    oracle.set_progress_bar_config(disable=True)

    ours = generate(unclip, "unclip")
    reference = oracle(PROMPT, generator=oracle_generators(ours.seeds), output_type="np", **UNCLIP_STEPS).images
    assert_images_close(ours.images, reference)


def test_saved_latent_diffusion_loads_in_diffusers(saved, latent_diffusion):
    index = json.loads((saved["latent_diffusion"] / MODEL_INDEX).read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    # SD repos list a safety checker and a feature extractor; the save says it has neither
    assert index.get("safety_checker") == index.get("feature_extractor") == [None, None], index
    oracle = StableDiffusionPipeline.from_pretrained(saved["latent_diffusion"])
    oracle.set_progress_bar_config(disable=True)

    ours = generate(latent_diffusion, "latent_diffusion")
    reference = oracle(PROMPT, generator=oracle_generators(ours.seeds), output_type="np", **LD_STEPS).images
    assert_images_close(ours.images, reference)


# ----------------------------------------------------------------------------- what diffusers writes


@pytest.mark.parametrize("kind", ["unclip", "unclip_variations", "latent_diffusion"])
def test_a_pipeline_saved_by_diffusers_loads_and_makes_diffusers_images(tiny, kind, tmp_path):
    """diffusers' own save_pretrained (the version in requirements.txt): a fine-tuned model saved with diffusers
    opens here, and makes the images diffusers makes from the same folder."""
    pipe = tiny(kind)
    oracle = {"unclip": unclip_oracle, "unclip_variations": variations_oracle, "latent_diffusion": sd_oracle}[kind]
    saved = oracle(pipe)
    saved.save_pretrained(tmp_path)
    index = json.loads((tmp_path / MODEL_INDEX).read_text())
    if kind != "latent_diffusion":  # diffusers writes the library of the class, not Karlo's module name
        assert index["text_proj"] == ["diffusers", "UnCLIPTextProjModel"], index["text_proj"]
    loaded = LOADERS["latent_diffusion" if kind == "latent_diffusion" else "unclip"](tmp_path)
    if kind == "unclip_variations":
        assert loaded.prior is None and loaded.image_encoder is not None
        image = random_image(32, 3)
        ours = loaded.variations(image, seed=4, **VARIATION_STEPS)
        reference = saved(image=image, generator=oracle_generators(ours.seeds), output_type="np", **VARIATION_STEPS)
    else:
        steps = STEPS["latent_diffusion" if kind == "latent_diffusion" else "unclip"]
        ours = loaded(PROMPT, seed=4, **steps)
        reference = saved(PROMPT, generator=oracle_generators(ours.seeds), output_type="np", **steps)
    assert_images_close(ours.images, reference.images)


# ----------------------------------------------------------------------------- the tokenizer


def test_tokenizer_folder_wins_over_the_offline_tokenizer(copy_of):
    directory = copy_of("latent_diffusion")
    shutil.rmtree(directory / "tokenizer")
    own = offline_clip_tokenizer()
    own.model_max_length = 60
    own.save_pretrained(directory / "tokenizer")

    tokenizer = load_latent_diffusion(directory).tokenizer
    assert tokenizer.model_max_length == 60
    assert tokenize(tokenizer, [PROMPT])[0].shape == (1, 60)


def test_without_tokenizer_folder_the_offline_tokenizer_is_used(copy_of, latent_diffusion):
    directory = copy_of("latent_diffusion")
    shutil.rmtree(directory / "tokenizer")

    loaded = load_latent_diffusion(directory)
    assert loaded.tokenizer.model_max_length == MODEL_MAX_LENGTH
    assert torch.equal(tokenize(loaded.tokenizer, [PROMPT])[0], tokenize(offline_clip_tokenizer(), [PROMPT])[0])
    assert np.array_equal(
        generate(loaded, "latent_diffusion").images, generate(latent_diffusion, "latent_diffusion").images
    )


# ----------------------------------------------------------------------------- pickle


def test_bin_weights_need_allow_pickle(copy_of, latent_diffusion):
    directory = copy_of("latent_diffusion")
    (directory / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    latent_diffusion.unet.save_pretrained(directory / "unet", safe_serialization=False)
    pickled = directory / "unet" / "diffusion_pytorch_model.bin"
    assert pickled.is_file()

    with pytest.raises(ValueError, match="allow_pickle=True") as err:
        load_latent_diffusion(directory)
    assert str(pickled) in str(err.value)

    loaded = load_latent_diffusion(directory, allow_pickle=True)
    assert np.array_equal(
        generate(loaded, "latent_diffusion").images, generate(latent_diffusion, "latent_diffusion").images
    )


# ----------------------------------------------------------------------------- errors name the file


def _overwrite(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    return _overwrite(path, data[: len(data) // 2])


def _delete(path: Path) -> Path:
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    return path


# id -> (architecture, damage(directory) -> the path the error must name, a phrase of the message)
DAMAGE = {
    "unclip-no-model-index": ("unclip", lambda d: _delete(d / MODEL_INDEX).parent, "model_index.json"),
    "ld-no-model-index": ("latent_diffusion", lambda d: _delete(d / MODEL_INDEX).parent, "model_index.json"),
    "unclip-no-decoder-folder": ("unclip", lambda d: _delete(d / "decoder"), "missing"),
    "ld-no-vae-folder": ("latent_diffusion", lambda d: _delete(d / "vae"), "missing"),
    "ld-unreadable-model-index": ("latent_diffusion", lambda d: _overwrite(d / MODEL_INDEX, b"{not json"), "JSON"),
    "ld-no-unet-weights": (
        "latent_diffusion",
        lambda d: _delete(d / "unet" / "diffusion_pytorch_model.safetensors").parent,
        "missing",
    ),
    "ld-no-text-encoder-weights": (
        "latent_diffusion",
        lambda d: _delete(d / "text_encoder" / "model.safetensors").parent,
        "missing",
    ),
    "ld-no-unet-config": ("latent_diffusion", lambda d: _delete(d / "unet" / "config.json"), "missing"),
    "ld-no-scheduler-config": (
        "latent_diffusion",
        lambda d: _delete(d / "scheduler" / "scheduler_config.json"),
        "scheduler config",
    ),
    "ld-junk-unet-weights": (
        "latent_diffusion",
        lambda d: _overwrite(d / "unet" / "diffusion_pytorch_model.safetensors", b"junk" * 64),
        "corrupt",
    ),
    "ld-truncated-unet-weights": (
        "latent_diffusion",
        lambda d: _truncate(d / "unet" / "diffusion_pytorch_model.safetensors"),
        "corrupt",
    ),
    "ld-truncated-vae-weights": (
        "latent_diffusion",
        lambda d: _truncate(d / "vae" / "diffusion_pytorch_model.safetensors"),
        "corrupt",
    ),
    "ld-junk-text-encoder-weights": (
        "latent_diffusion",
        lambda d: _overwrite(d / "text_encoder" / "model.safetensors", b"\0" * 100),
        "corrupt",
    ),
    "unclip-truncated-prior-weights": (
        "unclip",
        lambda d: _truncate(d / "prior" / "diffusion_pytorch_model.safetensors"),
        "corrupt",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_pipeline_dir_raises_value_error_naming_the_file(copy_of, case):
    arch, damage, phrase = DAMAGE[case]
    directory = copy_of(arch)
    culprit = damage(directory)

    with pytest.raises(ValueError, match=phrase) as err:
        LOADERS[arch](directory)
    assert str(culprit) in str(err.value)


def test_file_instead_of_directory_is_named(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file") as err:
        resolve_pipeline_dir(path, LATENT_DIFFUSION)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("arch", ["unclip", "latent_diffusion"])
def test_hub_id_offline_is_a_value_error_without_network(arch, monkeypatch):
    attempts = []

    def refuse(sock, address):
        attempts.append(address)
        raise OSError("tests allow no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)

    with pytest.raises(ValueError, match="no-such-org/no-such-model"):
        LOADERS[arch]("no-such-org/no-such-model")
    assert attempts == []
