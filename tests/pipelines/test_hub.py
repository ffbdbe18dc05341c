"""Fetching from the hub (pipelines.hub): only the files that load, through a stand-in hub on 127.0.0.1
(tests/hub_server.py) that serves the real repos' file trees (tests/data/hub_listings.json) with tiny weights.

huggingface_hub reads HF_ENDPOINT into `constants` when it is imported (conftest has imported it by then, offline),
so each test points `constants` at the stand-in itself: ENDPOINT and the resolve-URL template made from it, a cache
of its own (HF_HUB_CACHE) and HF_HUB_OFFLINE off.
"""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from diffusers import UNet2DConditionModel
from huggingface_hub import constants
from open_clip.constants import INCEPTION_MEAN, INCEPTION_STD
from safetensors.torch import save
from tqdm import tqdm

from comparisons import metrics
from comparisons.app.backends import Backends
from comparisons.app.image_in import ImageIn
from comparisons.app.session import AppConfig, Session
from comparisons.presets import load_models, load_problem
from comparisons.settings import Settings
from pipelines import UnCLIP, load_latent_diffusion, load_unclip
from pipelines.components import (
    IMAGE_ENCODER,
    LATENT_DIFFUSION,
    STABLE_UNCLIP,
    UNCLIP,
    load_image_encoder,
    load_stable_unclip,
)
from pipelines.hub import download_bars, fetch_pipeline
from pipelines.layout import MODEL_INDEX, choose_weights, parse_model_index, plan_download
from pipelines.tiny import build_tiny_latent_diffusion, build_tiny_stable_unclip
from pipelines.tokenizer import clip_vocab

from helpers import LD_STEPS, SEED, UNCLIP_STEPS, VARIATION_STEPS, random_image
from hub_server import StandInHub, StandInRepo

ROOT = Path(__file__).resolve().parents[2]
LISTINGS = json.loads((Path(__file__).parents[1] / "data" / "hub_listings.json").read_text())["repos"]
KARLO, VARIATIONS = "kakaobrain/karlo-v1-alpha", "kakaobrain/karlo-v1-alpha-image-variations"
SD15, SD21 = "stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/stable-diffusion-2-1-base"
SU = "stabilityai/stable-diffusion-2-1-unclip-small"  # Stable unCLIP: no prior of its own (Karlo's, shared)
JUDGES = {"ViT-L-14": "timm/vit_large_patch14_clip_224.openai", "ViT-H-14": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"}
TINY_JUDGE = "stand-in/tiny-judge"  # not a real repo: a tiny open_clip model's, to load a judge end to end
KINDS = {KARLO: UNCLIP, VARIATIONS: UNCLIP, SD15: LATENT_DIFFUSION, SD21: LATENT_DIFFUSION, SU: STABLE_UNCLIP}
LOADERS = {UNCLIP.name: load_unclip, LATENT_DIFFUSION.name: load_latent_diffusion}
TINY = {
    KARLO: "unclip",
    VARIATIONS: "unclip_variations",
    SD15: "latent_diffusion",
    SD21: "latent_diffusion",
    SU: "stable_unclip",
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
TOKENIZER_FILES = {
    f"tokenizer/{n}" for n in ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")
}
PROMPT = "a red square above a blue circle"


def _model(folder: str, weights: str) -> set[str]:
    return {f"{folder}/config.json", f"{folder}/{weights}"}


def expected_files(repo_id: str, dtype: str) -> set[str]:
    """What a load reads, written out from the repos' layouts (not by the planner): no safety checker, no root
    checkpoint, no .bin, no non-EMA U-Net, one precision; fp16 files where a repo has them (Karlo's have none)."""
    diffusers_weights = "diffusion_pytorch_model.safetensors"
    if repo_id == SU:  # never a prior (Karlo's is shared), nor the image encoder (read for variations alone)
        v = ".fp16" if dtype == "fp16" else ""
        return {
            MODEL_INDEX,
            "scheduler/scheduler_config.json",
            "image_noising_scheduler/scheduler_config.json",
            *TOKENIZER_FILES,
            *_model("image_normalizer", f"diffusion_pytorch_model{v}.safetensors"),
            *_model("text_encoder", f"model{v}.safetensors"),
            *_model("unet", f"diffusion_pytorch_model{v}.safetensors"),
            *_model("vae", f"diffusion_pytorch_model{v}.safetensors"),
        }
    if repo_id in (SD15, SD21):
        v = ".fp16" if dtype == "fp16" else ""
        return {
            MODEL_INDEX,
            "scheduler/scheduler_config.json",
            *TOKENIZER_FILES,
            *_model("text_encoder", f"model{v}.safetensors"),
            *_model("unet", f"diffusion_pytorch_model{v}.safetensors"),
            *_model("vae", f"diffusion_pytorch_model{v}.safetensors"),
        }
    common = {
        MODEL_INDEX,
        *TOKENIZER_FILES,
        "decoder_scheduler/scheduler_config.json",
        "super_res_scheduler/scheduler_config.json",
        *_model("text_encoder", "model.safetensors"),
        *(
            f
            for n in ("text_proj", "decoder", "super_res_first", "super_res_last")
            for f in _model(n, diffusers_weights)
        ),
    }
    if repo_id == KARLO:
        return common | {"prior_scheduler/scheduler_config.json", *_model("prior", diffusers_weights)}
    return common | {"feature_extractor/preprocessor_config.json", *_model("image_encoder", "model.safetensors")}


# The bytes of `expected_files` as the real repos list them (sums over tests/data/hub_listings.json)
EXPECTED_BYTES = {
    (KARLO, "fp32"): 13_690_454_057,
    (KARLO, "fp16"): 13_690_454_057,
    (VARIATIONS, "fp32"): 10_818_215_771,
    (VARIATIONS, "fp16"): 10_818_215_771,
    (SD15, "fp32"): 4_266_665_293,
    (SD15, "fp16"): 2_134_193_413,
    (SD21, "fp32"): 5_161_551_542,
    (SD21, "fp16"): 2_581_645_928,
    (SU, "fp32"): 5_177_762_586,
    (SU, "fp16"): 2_589_731_148,
}


def model_index(repo_id: str) -> dict:
    return parse_model_index(json.dumps(LISTINGS[repo_id]["model_index"]), repo_id)


def model_index_of(directory: Path) -> dict:
    return parse_model_index((directory / MODEL_INDEX).read_text(), directory)


# ----------------------------------------------------------------------------- the stand-in hub


def tokenizer_files() -> dict[str, bytes]:
    """A CLIP tokenizer as the hub repos hold it (vocab.json and merges.txt; no tokenizer.json)."""
    vocab, merges = clip_vocab()
    specials = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    return {
        "tokenizer/vocab.json": json.dumps(vocab).encode(),
        "tokenizer/merges.txt": ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode(),
        "tokenizer/special_tokens_map.json": json.dumps(specials).encode(),
        "tokenizer/tokenizer_config.json": json.dumps({**specials, "model_max_length": 77}).encode(),
    }


def _files_in(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def tiny_judge_model() -> open_clip.CLIP:
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        return open_clip.CLIP(**metrics.TINY_JUDGE_CONFIG, quick_gelu=True).eval()


@pytest.fixture(scope="session")
def stand_in(tmp_path_factory, tiny):
    """The stand-in hub, serving the tiny pipelines in each real repo's layout (fp16 variants where it has them)."""
    root = tmp_path_factory.mktemp("stand_in")
    variations = tiny("unclip_variations").components()
    content = {
        KARLO: _files_in(tiny("unclip").save_pretrained(root / "karlo")),
        VARIATIONS: _files_in(
            UnCLIP(**{k: v for k, v in variations.items() if not k.startswith("prior")}).save_pretrained(
                root / "variations"
            )
        ),
        SD15: _files_in(tiny("latent_diffusion").save_pretrained(root / "ld")),
    }
    half = tiny("latent_diffusion", torch.float16)
    for name in ("text_encoder", "unet", "vae"):  # the weights only: an fp16 save's config.json says float16
        getattr(half, name).save_pretrained(root / "ld16" / name, variant="fp16")
        content[SD15] |= {f"{name}/{n}": b for n, b in _files_in(root / "ld16" / name).items() if ".fp16." in n}
    content[SD21] = content[SD15]
    stable = build_tiny_stable_unclip(SEED, prior_scheduler="unclip")
    content[SU] = _files_in(stable.save_pretrained(root / "su"))
    half = stable.to(dtype=torch.float16)
    for name in ("text_encoder", "unet", "vae", "image_normalizer", "image_encoder"):
        getattr(half, name).save_pretrained(root / "su16" / name, variant="fp16")
        content[SU] |= {f"{name}/{n}": b for n, b in _files_in(root / "su16" / name).items() if ".fp16." in n}
    repos = []
    for repo_id, listing in LISTINGS.items():
        files = {**content.get(repo_id, {}), **tokenizer_files()}
        if "model_index" in listing:
            files[MODEL_INDEX] = json.dumps(listing["model_index"], indent=2).encode()
        repos.append(StandInRepo(repo_id, listing["files"], {p: b for p, b in files.items() if p in listing["files"]}))
    judge = save({k: v.contiguous() for k, v in tiny_judge_model().state_dict().items()})
    listed = {"open_clip_model.safetensors": len(judge), "open_clip_pytorch_model.bin": len(judge)}
    repos.append(StandInRepo(TINY_JUDGE, listed, {"open_clip_model.safetensors": judge}))
    with StandInHub(repos) as hub:
        yield hub


@pytest.fixture
def hub(stand_in, tmp_path, monkeypatch) -> StandInHub:
    monkeypatch.setattr(constants, "ENDPOINT", stand_in.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", stand_in.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    stand_in.clear()
    stand_in.cut_once.clear()
    return stand_in


def cache() -> Path:
    return Path(constants.HF_HUB_CACHE)


def snapshot(repo_id: str) -> Path:
    (folder,) = (cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots").iterdir()
    return folder


def files_on_disk(repo_id: str) -> set[str]:
    return {p.relative_to(snapshot(repo_id)).as_posix() for p in snapshot(repo_id).rglob("*") if p.is_file()}


def same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    a_state, b_state = a.state_dict(), b.state_dict()
    return a_state.keys() == b_state.keys() and all(
        a_state[k].dtype == b_state[k].dtype and torch.equal(a_state[k], b_state[k]) for k in a_state
    )


def same_weights(a, b) -> bool:
    """Two pipelines' models hold the same tensors, in the same dtypes."""
    a_modules, b_modules = a.modules(), b.modules()
    return a_modules.keys() == b_modules.keys() and all(same_tensors(m, b_modules[n]) for n, m in a_modules.items())


def load(repo_id: str, tiny, **options):
    """A repo loaded as the app loads it: Stable unCLIP with the tiny Karlo's prior shared, in the same dtype."""
    if repo_id != SU:
        return LOADERS[KINDS[repo_id].name](repo_id, **options)
    karlo = tiny("unclip", options.get("dtype", torch.float32))
    shared = {"prior": karlo.prior, "prior_text_encoder": karlo.text_encoder, "prior_tokenizer": karlo.tokenizer}
    return load_stable_unclip(repo_id, shared=shared | {"prior_scheduler": karlo.prior_scheduler}, **options)


def reference(tiny, repo_id: str, dtype: torch.dtype):
    """The tiny pipeline a repo's stand-in serves, in `dtype` (image variations: without a prior)."""
    pipe = tiny(TINY[repo_id], dtype)
    if repo_id == VARIATIONS:
        return UnCLIP(**{k: v for k, v in pipe.components().items() if not k.startswith("prior")})
    return pipe


def generate(pipe, repo_id: str):
    if repo_id == VARIATIONS:
        return pipe.variations(random_image(48, seed=5), seed=4, **VARIATION_STEPS).images
    if repo_id == SU:
        return pipe(PROMPT, seed=4, prior_num_inference_steps=2, num_inference_steps=2).images
    return pipe(PROMPT, seed=4, **(LD_STEPS if repo_id in (SD15, SD21) else UNCLIP_STEPS)).images


# ----------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("repo_id", KINDS)
def test_the_plan_is_what_the_loader_reads_of_the_real_repo(repo_id, dtype):
    listing = LISTINGS[repo_id]["files"]
    plan = plan_download(model_index(repo_id), listing, KINDS[repo_id], DTYPES[dtype])
    assert sorted(f.path for f in plan) == sorted(expected_files(repo_id, dtype))
    assert all(f.size == listing[f.path] for f in plan)
    assert sum(f.size for f in plan) == EXPECTED_BYTES[repo_id, dtype]


def test_the_plan_takes_a_pickle_only_with_allow_pickle():
    listing = {p: s for p, s in LISTINGS[KARLO]["files"].items() if p != "prior/diffusion_pytorch_model.safetensors"}
    with pytest.raises(ValueError, match=r"prior/ holds only pickle .*allow_pickle=True"):
        plan_download(model_index(KARLO), listing, UNCLIP, torch.float32, where=KARLO)
    paths = {f.path for f in plan_download(model_index(KARLO), listing, UNCLIP, torch.float32, allow_pickle=True)}
    prior = "prior/diffusion_pytorch_model"
    assert paths == expected_files(KARLO, "fp32") - {f"{prior}.safetensors"} | {f"{prior}.bin"}


def whole_repo_bytes(repo_id: str) -> int:
    """What the loader fetched before it planned: every *.json, *.txt and *.safetensors of the repo."""
    listing = LISTINGS[repo_id]["files"]
    return sum(size for path, size in listing.items() if path.endswith((".json", ".txt", ".safetensors")))


def test_sd15_whole_repo_was_11_times_what_half_precision_reads():
    whole = whole_repo_bytes(SD15)
    assert round(whole / 1e9, 1) == 23.6 and round(whole / EXPECTED_BYTES[SD15, "fp16"]) == 11


def test_readme_states_what_each_repo_and_preset_downloads():
    """The README's tables of download sizes are the plans', from the listings."""
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([\w./-]+)` \| ([^\n]+) \|$", readme, flags=re.M))
    stated = {repo_id: [float(x) for x in re.findall(r"([\d.]+) GB", row)] for repo_id, row in rows.items()}
    for repo_id in KINDS:
        expected = [EXPECTED_BYTES[repo_id, "fp32"], EXPECTED_BYTES[repo_id, "fp16"], whole_repo_bytes(repo_id)]
        assert stated[repo_id] == [round(n / 1e9, 2) for n in expected], repo_id
    for repo_id in JUDGES.values():
        weights = LISTINGS[repo_id]["files"]["open_clip_model.safetensors"]
        assert stated[repo_id] == [round(n / 1e9, 2) for n in (weights, weights, whole_repo_bytes(repo_id))], repo_id
    judge = LISTINGS[JUDGES["ViT-L-14"]]["files"]["open_clip_model.safetensors"]
    for dtype, device in (("fp16", "CUDA"), ("fp32", "CPU")):
        total = EXPECTED_BYTES[KARLO, dtype] + EXPECTED_BYTES[SD15, dtype] + EXPECTED_BYTES[SU, dtype] + judge
        assert f"| `pretrained` on {device} ({dtype}) | {total / 1e9:.2f} GB |" in readme


# ----------------------------------------------------------------------------- fetching and loading


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("repo_id", KINDS)
def test_a_load_fetches_only_what_it_reads(hub, tiny, repo_id, dtype):
    pipe = load(repo_id, tiny, dtype=DTYPES[dtype])

    expected = expected_files(repo_id, dtype)
    # each file the plan names asked for once, and no other file's bytes sent (a file whose ETag the cache holds,
    # such as a config identical to another's, is not sent twice; model_index.json is read into memory first)
    assert sorted(r.file for r in hub.requests if r.repo_id == repo_id and r.method == "HEAD") == sorted(expected)
    assert set(hub.downloads(repo_id)) <= expected and hub.downloads(repo_id).count(MODEL_INDEX) == 2
    assert files_on_disk(repo_id) == expected  # so the loader cannot have read anything else
    assert all((snapshot(repo_id) / p).read_bytes() == hub.repos[repo_id].served(p) for p in expected)
    assert sum(hub.repos[repo_id].listed[p] for p in expected) == EXPECTED_BYTES[repo_id, dtype]
    # fp16 repos: their fp16 files, as saved in half precision; Karlo's fp32 files cast down
    assert same_weights(pipe, reference(tiny, repo_id, DTYPES[dtype]))
    if dtype == "fp32" and repo_id != SD21:  # (SD 2.1's stand-in serves SD 1.5's tiny weights: same image)
        assert np.array_equal(generate(pipe, repo_id), generate(reference(tiny, repo_id, torch.float32), repo_id))


def test_a_second_load_asks_for_the_listing_only(hub):
    load_latent_diffusion(SD15, dtype=torch.float16)
    hub.clear()
    load_latent_diffusion(SD15, dtype=torch.float16)
    sha = hub.repos[SD15].sha
    assert [(r.method, r.path) for r in hub.requests if r.repo_id] == [
        ("GET", f"/api/models/{SD15}/revision/main"),
        ("GET", f"/api/models/{SD15}/tree/{sha}"),
    ]


def test_offline_a_warm_cache_loads_without_a_request(hub, tiny, monkeypatch):
    load_latent_diffusion(SD15)
    hub.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    assert same_weights(load_latent_diffusion(SD15), tiny("latent_diffusion"))
    # offline the listing is the cache's: half precision casts the cached fp32 files rather than fail
    assert same_weights(load_latent_diffusion(SD15, dtype=torch.float16), tiny("latent_diffusion", torch.float16))
    with pytest.raises(ValueError, match=f"{KARLO} is not in the hub cache .*unset HF_HUB_OFFLINE"):
        load_unclip(KARLO)
    assert hub.requests == []


def test_with_the_hub_out_of_reach_a_warm_cache_loads(hub, tiny, monkeypatch):
    load_latent_diffusion(SD15)
    with socket.socket() as closed:  # a port nothing listens on once the block ends
        closed.bind(("127.0.0.1", 0))
        unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", unreachable)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", unreachable + "/{repo_id}/resolve/{revision}/{filename}"
    )

    assert same_weights(load_latent_diffusion(SD15), tiny("latent_diffusion"))
    with pytest.raises(ValueError, match=f"could not fetch {KARLO} from {unreachable} .*check the connection"):
        load_unclip(KARLO)


def test_an_interrupted_download_resumes_where_it_stopped(hub, monkeypatch):
    # huggingface_hub writes 10 MB chunks, more than a tiny file: smaller ones let the cut file keep some
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    path = "unet/diffusion_pytorch_model.safetensors"
    hub.cut_once.add((SD15, path))

    directory = fetch_pipeline(SD15, LATENT_DIFFUSION, torch.float32)

    served = hub.repos[SD15].served(path)
    cut, resumed = [r for r in hub.requests if r.file == path and r.method == "GET" and r.body_bytes]
    assert (cut.status, cut.range, cut.body_bytes) == (200, None, len(served) // 2)
    start = int(re.fullmatch(r"bytes=(\d+)-", resumed.range).group(1))
    assert 0 < start <= len(served) // 2 and (resumed.status, resumed.body_bytes) == (206, len(served) - start)
    assert (directory / path).read_bytes() == served


def test_the_file_tree_is_read_across_pages(hub, monkeypatch):
    monkeypatch.setattr(hub, "page_size", 5)
    fetch_pipeline(KARLO, UNCLIP, torch.float32)
    listing = LISTINGS[KARLO]["files"]
    entries = len(listing) + len({p.split("/")[0] for p in listing if "/" in p})  # files and folders
    pages = [r for r in hub.requests if "/tree/" in r.path]
    assert len(pages) == math.ceil(entries / 5)
    assert [r.query.count("cursor=") for r in pages] == [0] + [1] * (len(pages) - 1)  # each page's link followed
    assert files_on_disk(KARLO) == expected_files(KARLO, "fp32")


def test_progress_reports_bytes_done_of_what_each_repo_downloads(hub, capsys):
    calls = []
    load_models(
        "lab",
        models={"unclip": KARLO, "latent_diffusion": SD15, "stable_unclip": SU},
        device="cpu",
        progress=lambda *call: calls.append(call),
    )
    for repo_id in (KARLO, SD15, SU):
        done = [d for r, d, total in calls if r == repo_id]
        assert {total for r, _, total in calls if r == repo_id} == {EXPECTED_BYTES[repo_id, "fp32"]}
        assert done[0] == 0 and done[-1] == EXPECTED_BYTES[repo_id, "fp32"] and done == sorted(done)

    fetch_pipeline(VARIATIONS, UNCLIP, torch.float32, progress=download_bars())  # the command-line display
    err = capsys.readouterr().err
    total = tqdm.format_sizeof(EXPECTED_BYTES[VARIATIONS, "fp32"])
    assert f"downloading {VARIATIONS}: 100%" in err and f"{total}/{total}" in err


def test_the_app_status_line_follows_each_repos_download_and_then_names_the_models(hub, monkeypatch, tmp_path):
    models = {"unclip": KARLO, "latent_diffusion": SD15, "stable_unclip": SU}
    session = Session(AppConfig("lab", "cpu", tmp_path, models=models))
    lines = []
    original = session._downloaded
    monkeypatch.setattr(session, "_downloaded", lambda *call: (original(*call), lines.append(session.status())))
    session.harness()
    karlo, sd, su = (f"{EXPECTED_BYTES[r, 'fp32'] / 1e9:.2f}" for r in (KARLO, SD15, SU))
    assert lines[0].startswith("loading **lab** + custom models… ") and f"{KARLO} 0.00 / {karlo} GB" in lines[0]
    assert f"{KARLO} {karlo} / {karlo} GB · {SD15} {sd} / {sd} GB · {SU} {su} / {su} GB" in lines[-1]
    assert session.status().startswith("**lab** + custom models loaded on cpu") and f"`{KARLO}`" in session.status()


def test_hf_endpoint_points_a_fresh_process_at_the_stand_in(hub):
    """How a user points the loaders at a mirror: HF_ENDPOINT set before huggingface_hub is imported."""
    code = (
        "import torch; from pipelines.hub import download_bars, fetch_pipeline; "
        "from pipelines.components import LATENT_DIFFUSION; "
        f"print(fetch_pipeline({SD15!r}, LATENT_DIFFUSION, torch.float16, progress=download_bars()))"
    )
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache()), "HF_HUB_OFFLINE": "0"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == snapshot(SD15) and files_on_disk(SD15) == expected_files(SD15, "fp16")
    assert f"downloading {SD15}: 100%" in done.stderr


@pytest.mark.parametrize("preset", ["lab", "tiny"])
def test_the_lab_and_tiny_presets_download_nothing(hub, preset):
    load_models(preset, device="cpu")
    metrics.load_judge(preset)
    assert hub.requests == [] and not cache().exists()


# ----------------------------------------------------------------------------- Karlo's variations: a borrowed encoder

# What the pretrained preset's variations read of the image-variations repo: not its decoder, super-resolution,
# text encoder, text_proj, schedulers or tokenizer, which Karlo has already (10.8 GB against 1.2 GB)
ENCODER_FILES = {MODEL_INDEX, "feature_extractor/preprocessor_config.json", "image_encoder/config.json"}
ENCODER_FILES |= {"image_encoder/model.safetensors"}


def test_the_plan_of_an_image_encoder_alone_is_its_two_components():
    plan = plan_download(model_index(VARIATIONS), LISTINGS[VARIATIONS]["files"], IMAGE_ENCODER, torch.float16)
    assert {f.path for f in plan} == ENCODER_FILES
    assert round(sum(f.size for f in plan) / 1e9, 2) == 1.22


def test_variations_borrow_only_the_image_encoder_of_the_variations_repo(hub, tiny):
    encoder, processor = load_image_encoder(VARIATIONS)
    assert sorted(r.file for r in hub.requests if r.repo_id == VARIATIONS and r.method == "HEAD") == sorted(
        ENCODER_FILES
    )
    assert files_on_disk(VARIATIONS) == ENCODER_FILES
    karlo = load_unclip(KARLO)
    assert karlo.image_encoder is None
    with pytest.raises(ValueError, match="no image_encoder"):
        generate(karlo, VARIATIONS)
    karlo.attach_image_encoder(encoder, processor, VARIATIONS)
    assert karlo.borrowed == {"image_encoder": VARIATIONS}
    # Karlo's decoder and super-resolution with the borrowed encoder: the variations repo's pipeline, image for image
    own = reference(tiny, VARIATIONS, torch.float32)
    assert np.array_equal(generate(karlo, VARIATIONS), generate(own, VARIATIONS))


def test_the_pretrained_preset_attaches_the_borrowed_encoder_on_first_use(hub, tmp_path):
    tabs = Backends.of(Session(AppConfig("pretrained", "cpu", tmp_path, judge="tiny")))
    session, image_in = tabs.session, tabs.image_in
    fast = Settings(
        prior_steps=2, decoder_steps=2, super_res_steps=2, steps=4, stable_unclip_prior_steps=2, stable_unclip_steps=2
    )
    before, _ = tabs.compare.run(PROMPT, 3, fast)
    assert session.harness().pipeline("unclip").image_encoder is None and hub.downloads(VARIATIONS) == []
    assert session.harness().pipeline("stable_unclip").image_encoder is None  # read for variations alone
    assert not [f for f in hub.downloads(SU) if f.startswith(("image_encoder/", "feature_extractor/"))]
    assert f"the image encoder of `{VARIATIONS}` (only that component)" in image_in.describe()
    assert f"the image encoder of `{SU}` (only that component)" in image_in.describe()
    seen = []
    image_in.prepare(lambda *call: seen.append(call))
    rows, skipped, _ = image_in.run(random_image(48, seed=5), PROMPT, "3", 0.5, fast)
    assert skipped == {} and [r["mode"] for r in rows.values()] == ["variations", "img2img", "variations"]
    assert files_on_disk(VARIATIONS) == ENCODER_FILES
    assert ENCODER_FILES - {MODEL_INDEX} <= files_on_disk(SU)  # its own repo's encoder, fetched now
    for repo in (VARIATIONS, SU):  # each download followed to its end, 1.2 GB as listed
        done = [call for call in seen if call[0] == repo]
        assert done and done[-1][1] == done[-1][2] > 10**9, repo
    assert rows["stable_unclip"]["model"] == SU  # its own repo's encoder: nothing borrowed
    unclip = rows["unclip"]
    assert unclip["model"] == f"{KARLO} + image_encoder of {VARIATIONS}"
    after, _ = tabs.compare.run(PROMPT, 4, fast)  # text to image keeps its hash: the borrowed encoder is not Karlo's
    assert after["unclip"]["model_hash"] == before["unclip"]["model_hash"] != unclip["model_hash"]
    assert after["unclip"]["model"] == KARLO and after["unclip"]["prior_image_cosine"] is not None


def test_the_pretrained_preset_fetches_karlos_prior_once_and_stable_unclip_shares_it(hub):
    pipes = load_models("pretrained", device="cpu")
    assert list(pipes) == ["unclip", "latent_diffusion", "stable_unclip"]
    unclip, stable = pipes["unclip"], pipes["stable_unclip"]
    # the very objects, not copies: Karlo's prior and its CLIP are held once
    assert stable.prior is unclip.prior and stable.prior_text_encoder is unclip.text_encoder
    assert stable.prior_tokenizer is unclip.tokenizer and stable.prior_scheduler is unclip.prior_scheduler
    assert hub.downloads(KARLO).count("prior/diffusion_pytorch_model.safetensors") == 1
    assert files_on_disk(SU) == expected_files(SU, "fp32") and not any("prior" in f for f in files_on_disk(SU))
    assert stable.image_encoder is None and stable.unet is not pipes["latent_diffusion"].unet


def test_leaving_stable_unclip_out_fetches_nothing_of_its_repo(hub):
    pipes = load_models("pretrained", device="cpu", models={"stable_unclip": "none"})
    assert list(pipes) == ["unclip", "latent_diffusion"]
    assert not [r for r in hub.requests if r.repo_id == SU]


def test_offline_without_the_borrowed_encoder_variations_say_why_and_img2img_runs(hub, tmp_path, monkeypatch):
    session = Session(AppConfig("pretrained", "cpu", tmp_path, judge="tiny"))
    session.harness()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    rows, skipped, _ = ImageIn(session).run(random_image(48, seed=5), PROMPT, "3", 0.5, Settings(steps=4))
    assert list(rows) == ["latent_diffusion"]
    assert skipped["unclip"] == (
        f"unCLIP cannot make variations: its image encoder from {VARIATIONS} did not load: {VARIATIONS} is not "
        "downloaded and the hub cannot be reached (offline) (img2img still works)"
    )


# ----------------------------------------------------------------------------- refusals


def test_an_unknown_repo_is_named_with_what_to_do(hub):
    with pytest.raises(ValueError, match=r"no-such-org/no-such-model is not on the hub .*hf auth login") as err:
        load_latent_diffusion("no-such-org/no-such-model")
    assert not cache().exists()
    assert (
        load_problem(err.value)
        == "no-such-org/no-such-model is not on the hub (check the id, or log in if it is private)"
    )


def test_a_gated_repo_says_to_accept_its_licence_and_log_in(hub, monkeypatch):
    monkeypatch.setattr(hub.repos[SD21], "gated", True)
    with pytest.raises(
        ValueError, match=rf"{SD21} is gated: accept its licence on {hub.url}/{SD21} .*hf auth login"
    ) as err:
        load_latent_diffusion(SD21)
    assert load_problem(err.value) == f"{SD21} is gated: accept its licence on the hub and log in"  # the app's status
    assert [r.status for r in hub.requests if "/resolve/" in r.path] == [401] and not cache().exists()


def test_a_disk_without_room_is_refused_before_downloading(hub, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 10**9, 10**9))
    needed = EXPECTED_BYTES[SD15, "fp16"]
    with pytest.raises(ValueError) as err:
        load_latent_diffusion(SD15, dtype=torch.float16)
    assert str(err.value) == (
        f"{SD15} needs {needed / 1e9:.2f} GB in {cache()}, whose disk has 1.00 GB free: free "
        f"{(needed - 10**9) / 1e9:.2f} GB there, or point HF_HUB_CACHE at a disk with room"
    )
    assert hub.downloads(SD15) == [MODEL_INDEX] and not cache().exists()  # read into memory only
    assert load_problem(err.value) == f"there is no room on disk to download {SD15}"


@pytest.mark.parametrize("bad", ["karlo-v1-alpha", "kakaobrain/karlo/v1", "kakao--brain/karlo", "/kakaobrain/karlo"])
def test_an_id_that_is_not_org_name_is_refused_without_a_request(hub, bad):
    with pytest.raises(ValueError, match="hub id like 'org/name'"):
        load_unclip(bad)
    assert hub.requests == [] and not cache().exists()


def test_a_directory_without_model_index_is_refused_and_left_as_it_was(hub, tmp_path):
    directory = tmp_path / "not-a-pipeline"
    (directory / "unet").mkdir(parents=True)
    (directory / "unet" / "config.json").write_text("{}")
    before = sorted(directory.rglob("*"))
    with pytest.raises(ValueError, match=f"{directory} has no model_index.json"):
        load_latent_diffusion(directory)
    assert sorted(directory.rglob("*")) == before and hub.requests == []


def test_a_repo_naming_a_class_we_cannot_load_is_refused_before_any_download(hub, monkeypatch):
    index = {**LISTINGS[SD15]["model_index"], "unet": ["diffusers", "UNetFooModel"]}
    monkeypatch.setitem(hub.repos[SD15].content, MODEL_INDEX, json.dumps(index).encode())
    message = rf"{SD15}/model_index.json: 'unet' names diffusers.UNetFooModel, which is not a UNet2DConditionModel"
    with pytest.raises(ValueError, match=message):
        load_latent_diffusion(SD15)
    assert hub.downloads(SD15) == [MODEL_INDEX] and not cache().exists()


# ----------------------------------------------------------------------------- the judges' open_clip weights


@pytest.mark.parametrize("name", ["ViT-L-14", "ViT-H-14"])
def test_a_pretrained_judge_fetches_its_safetensors_file_alone(hub, name):
    repo_id = JUDGES[name]
    path = metrics.judge_weights(*metrics.PRETRAINED_JUDGES[name])
    assert hub.downloads(repo_id) == ["open_clip_model.safetensors"]
    assert not any(r.file.endswith(".bin") for r in hub.requests if r.file)
    assert path.name == "open_clip_model.safetensors" and path.read_bytes() == hub.repos[repo_id].served(path.name)


def test_load_judge_loads_the_fetched_file_with_its_tags_settings(hub, monkeypatch):
    """A tiny open_clip model registered as a pretrained tag whose settings differ from open_clip's defaults
    (QuickGELU, Inception's mean and std, squash resizing): the loaded judge scores as the same model does."""
    arch, tag = "stand-in-tiny", "standin"
    settings = dict(mean=INCEPTION_MEAN, std=INCEPTION_STD, interpolation="bicubic", resize_mode="squash")
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, arch, metrics.TINY_JUDGE_CONFIG)
    pretrained = {"hf_hub": f"{TINY_JUDGE}/", "quick_gelu": True, **settings}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, arch, {tag: pretrained})
    monkeypatch.setitem(metrics.PRETRAINED_JUDGES, "stand-in", (arch, tag))

    judge = metrics.load_judge("stand-in")

    preprocess = open_clip.image_transform(32, is_train=False, **settings)
    expected = metrics.Judge("reference", tiny_judge_model(), preprocess, open_clip.tokenize, torch.device("cpu"))
    images, prompts = [random_image(48, seed=6), random_image(40, seed=7)], [PROMPT, "a green triangle"]
    assert np.array_equal(judge.cosine(images, prompts), expected.cosine(images, prompts))
    assert hub.downloads(TINY_JUDGE) == ["open_clip_model.safetensors"]


# ----------------------------------------------------------------------------- one rule for the weights file


def test_half_precision_reads_the_fp16_file_not_fp32_cast_down(tmp_path, latent_diffusion):
    directory = latent_diffusion.save_pretrained(tmp_path / "ld")
    other = build_tiny_latent_diffusion(SEED + 1).unet.to(torch.float16)  # fp16 weights unlike the fp32 ones
    other.save_pretrained(tmp_path / "other", variant="fp16")
    shutil.copy(tmp_path / "other" / "diffusion_pytorch_model.fp16.safetensors", directory / "unet")

    assert same_tensors(load_latent_diffusion(directory, dtype=torch.float16).unet, other)
    assert same_tensors(load_latent_diffusion(directory).unet, latent_diffusion.unet)


def test_sharded_weights_are_planned_and_loaded_with_their_index(tmp_path, tiny):
    directory = tiny("latent_diffusion").save_pretrained(tmp_path / "ld")
    (directory / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    tiny("latent_diffusion").unet.save_pretrained(directory / "unet", max_shard_size="1MB")
    half = tiny("latent_diffusion", torch.float16).unet
    half.save_pretrained(tmp_path / "half", variant="fp16", max_shard_size="1MB")
    for f in (tmp_path / "half").glob("*fp16*"):
        shutil.copy(f, directory / "unet")
    names = {p.name for p in (directory / "unet").iterdir()}

    for dtype in (torch.float32, torch.float16):
        weights = choose_weights(names, UNet2DConditionModel, dtype)
        index, *shards = weights.files
        assert set(shards) == set(json.loads((directory / "unet" / index).read_text())["weight_map"].values())
        assert len(shards) > 1
        assert (".fp16" in index) == (dtype == torch.float16) == all(".fp16" in s for s in shards)
        listing = {p.relative_to(directory).as_posix(): p.stat().st_size for p in directory.rglob("*") if p.is_file()}
        planned = {f.path for f in plan_download(model_index_of(directory), listing, LATENT_DIFFUSION, dtype)}
        assert {p for p in planned if p.startswith("unet/")} == {f"unet/{n}" for n in ("config.json", *weights.files)}
        assert same_tensors(load_latent_diffusion(directory, dtype=dtype).unet, tiny("latent_diffusion", dtype).unet)
