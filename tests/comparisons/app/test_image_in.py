"""The "Image in" backend (comparisons.app.image_in) on the Shapes lab: an image to unCLIP's and Stable unCLIP's
variations and to latent diffusion's img2img, each a row and a PNG that say what made them, the source kept once
under the hash of its pixels, the audit and regeneration agreeing, bad input refused, and summaries keeping these rows
apart."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from comparisons.app import progress
from comparisons.app.compare import Compare
from comparisons.app.image_in import ImageIn, image_in_stats
from comparisons.app.session import AppConfig, Session
from comparisons.audit import audit, prune
from comparisons.harness import Harness
from comparisons.records import parse_infotext, settings_from_png
from comparisons.settings import Settings
from comparisons.sources import canonical, image_in_from_png, open_source, read_source, source_hash
from comparisons.store import RunLog
from comparisons.summary import describe_long, summary_table
from pipelines import registry
from pipelines.measure import module_bytes
from pipelines.tiny import build_tiny_unclip

from helpers import check_results_folder, random_image

FAST = Settings(prior_steps=2, decoder_steps=2, super_res_steps=2, steps=6, stable_unclip_steps=2)
MODES = {"unclip": "variations", "latent_diffusion": "img2img", "stable_unclip": "variations"}
PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    session = Session(AppConfig("lab", "cpu", tmp_path_factory.mktemp("image-in")))
    session.harness()
    return session


@pytest.fixture(scope="module")
def image_in(lab):
    return ImageIn(lab)


@pytest.fixture(scope="module")
def made(image_in, tmp_path_factory):
    """One request: a half-transparent RGBA upload, a prompt, strength 0.5 of 6 steps; the progress it reported."""
    upload = tmp_path_factory.mktemp("upload") / "upload.png"
    pixels = np.asarray(random_image(48, seed=7).convert("RGBA")).copy()
    pixels[:, :12, 3] = 0  # a transparent strip: made white, not black
    Image.fromarray(pixels, "RGBA").save(upload)
    seen = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progress, "PROGRESS_EVERY_S", 0.0)  # every step reported, to count them
        rows, skipped, notices = image_in.run(str(upload), PROMPT, "9", 0.5, FAST, lambda f, what: seen.append(what))
    return upload, rows, skipped, notices, seen


def test_every_architecture_makes_one_row_and_png_that_say_what_made_them(lab, made):
    upload, rows, skipped, notices, _ = made
    assert list(rows) == list(MODES) and skipped == {} and notices == []
    sha = source_hash(canonical(Image.open(upload)))
    for arch, mode in MODES.items():
        row = rows[arch]
        assert (row["mode"], row["source_hash"], row["prompt"], row["seed"]) == (mode, sha, PROMPT, 9)
        assert row["clip_score"] is not None and -1 <= row["source_cosine"] <= 1
        text = Image.open(row["image_path"]).text["parameters"]
        info = parse_infotext(text)
        assert (info["Mode"], info["Source hash"], info["Seed"], info["prompt"]) == (mode, sha, "9", PROMPT)
        found_arch, found_prompt, found_seed, found = settings_from_png(row["image_path"])
        assert (found_arch, found_prompt, found_seed) == (arch, PROMPT, 9)
        assert found.for_architecture(arch, mode) == FAST.for_architecture(arch, mode)
        kept = image_in_from_png(row["image_path"])
        assert (kept.mode, kept.source_hash, str(kept.source_image)) == (mode, sha, row["source_image"])
        assert image_in_stats(row).startswith(mode)
    ld, unclip = rows["latent_diffusion"], rows["unclip"]
    assert (
        ld["strength"] == 0.5
        and parse_infotext(Image.open(ld["image_path"]).text["parameters"])["Denoising strength"] == "0.5"
    )
    assert "strength" not in unclip and "Denoising strength" not in Image.open(unclip["image_path"]).text["parameters"]
    assert "prior_steps" not in unclip and "Prior steps" not in Image.open(unclip["image_path"]).text["parameters"]
    assert (unclip["steps_decoder"], unclip["steps_super_res"]) == (2, 2) and "steps_prior" not in unclip
    # what each stage allocates, as for text-to-image rows: the VAE encode holds at least the VAE's weights
    vae = module_bytes(lab.harness().pipeline("latent_diffusion").vae) / 2**20
    assert ld["memory_kind"] == unclip["memory_kind"] == "tensors + weights" and ld["peak_memory_mb_vae_encode"] > vae
    assert "peak_memory_mb_prior" not in unclip and unclip["peak_memory_mb_image_encoder"] > 0
    # Stable unCLIP's variations: the image's embedding at the noise level, its U-Net's steps, no prior's
    stable = rows["stable_unclip"]
    assert (stable["noise_level"], stable["steps_unet"]) == (0, 2) and "stable_unclip_prior_steps" not in stable
    assert "Stable unCLIP prior steps" not in Image.open(stable["image_path"]).text["parameters"]
    assert stable["peak_memory_mb_image_encoder"] > 0 and "steps_prior" not in stable


def test_img2img_at_strength_s_runs_int_steps_times_s_denoising_steps(made):
    _, rows, _, _, seen = made
    row = rows["latent_diffusion"]
    assert row["steps"] == 6 and row["steps_unet"] == int(6 * 0.5) == 3
    assert [w for w in seen if w.startswith("img2img: unet")] == [f"img2img: unet step {i}/3" for i in (1, 2, 3)]
    assert "unet ran 3 of 6 steps" in image_in_stats(row)
    lab_ld = registry.get("latent_diffusion")
    assert lab_ld.steps_of_stages({"steps": 25, "guidance": 7.5}, "img2img", 0.35) == {"unet": 8}  # int(8.75)


def test_the_source_is_kept_once_under_the_hash_of_its_pixels(lab, image_in, made):
    upload, rows, *_ = made
    path = rows["unclip"]["source_image"]
    assert path == rows["latent_diffusion"]["source_image"] and path.endswith(
        f"/images/sources/{rows['unclip']['source_hash']}.png"
    )
    kept = Image.open(path)
    assert kept.mode == "RGB" and kept.size == (48, 48)
    expected = hashlib.sha256(b"RGB 48x48\n" + kept.tobytes()).hexdigest()  # the definition, written out
    assert read_source(path).sha256 == expected == rows["unclip"]["source_hash"]
    assert np.asarray(kept)[:, :12].min() == 255  # transparency onto white
    image_in.run(str(upload), PROMPT, "10", 0.5, FAST)  # the same picture again: still one file
    assert len(list((lab.results_dir / "images" / "sources").iterdir())) == 1
    check_results_folder(lab.results_dir, pipes=lab.harness().pipelines)  # the audit, and every row regenerates


def test_the_hash_is_of_the_picture_not_the_file(tmp_path):
    picture = random_image(32, seed=3)
    picture.save(tmp_path / "a.png", compress_level=0)
    picture.save(tmp_path / "b.png", compress_level=9)
    picture.convert("RGBA").save(tmp_path / "c.png")  # opaque alpha changes nothing
    hashes = {open_source(tmp_path / n).sha256 for n in ("a.png", "b.png", "c.png")} | {open_source(picture).sha256}
    assert len(hashes) == 1 and (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()
    changed = np.asarray(picture).copy()
    changed[0, 0, 0] ^= 1
    assert open_source(Image.fromarray(changed)).sha256 not in hashes
    assert open_source(picture.resize((16, 64))).sha256 != open_source(picture.resize((64, 16))).sha256


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.new("L", (20, 20), 128), (128, 128, 128)),
        (Image.new("P", (20, 20), 0), (0, 0, 0)),
        (Image.new("CMYK", (20, 20), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("LA", (20, 20), (0, 0)), (255, 255, 255)),  # fully transparent: white
        (Image.new("I;16", (20, 20), 65535), (255, 255, 255)),  # 16-bit white stays white
        (Image.new("1", (20, 20), 1), (255, 255, 255)),
    ],
)
def test_non_rgb_modes_are_made_rgb(image, expected):
    source = open_source(image)
    assert source.image.mode == "RGB" and source.image.getpixel((3, 3)) == expected


@pytest.mark.parametrize(
    "image, strength, seed, steps, error",
    [
        (None, 0.5, "0", 6, "no image: upload one"),
        ("", 0.5, "0", 6, "no image: upload one"),
        (Image.new("RGB", (8, 40)), 0.5, "0", 6, "8x40 pixels: too small, each side needs at least 16"),
        ("wide.png", 0.5, "0", 6, "5000x20 pixels: too large, at most 4096 a side"),
        ("notes.txt", 0.5, "0", 6, "“notes.txt” is not a picture this app can read"),
        ("missing.png", 0.5, "0", 6, "“missing.png” is not a picture"),
        (Image.new("RGB", (20, 20)), 0, "0", 6, r"img2img strength must be above 0 \(at 0 nothing is denoised"),
        (Image.new("RGB", (20, 20)), 1.5, "0", 6, r"img2img strength must be above 0 .* got 1.5"),
        (Image.new("RGB", (20, 20)), float("nan"), "0", 6, r"img2img strength must be above 0 .* got nan"),
        (Image.new("RGB", (20, 20)), "x", "0", 6, "img2img strength must be a number above 0, at most 1, got “x”"),
        (
            Image.new("RGB", (20, 20)),
            None,
            "0",
            6,
            "img2img strength must be a number above 0, at most 1, got nothing",
        ),
        (Image.new("RGB", (20, 20)), 0.1, "0", 6, "img2img strength 0.1 of 6 steps leaves no step to denoise"),
        (Image.new("RGB", (20, 20)), 0.5, "-2", 6, "Seed: “-2” is out of range"),
        (Image.new("RGB", (20, 20)), 0.5, "0", 0, "steps"),
    ],
)
def test_bad_input_is_refused_clearly_and_logs_nothing(lab, image_in, tmp_path, image, strength, seed, steps, error):
    Image.new("RGB", (5000, 20)).save(tmp_path / "wide.png")
    (tmp_path / "notes.txt").write_text("not a picture")
    if isinstance(image, str) and image:
        image = str(tmp_path / image)
    before = len(lab.runs())
    with pytest.raises(ValueError, match=error):
        image_in.run(image, PROMPT, seed, strength, FAST.replace(steps=steps))
    assert len(lab.runs()) == before


def test_without_a_prompt_only_variations_run_and_go_unscored_by_clip(image_in):
    rows, skipped, _ = image_in.run(random_image(40, seed=4), "  ", "3", 0.8, FAST)
    assert list(rows) == ["unclip", "stable_unclip"] and "img2img needs a prompt" in skipped["latent_diffusion"]
    for row in rows.values():  # Stable unCLIP's U-Net reads the empty prompt
        assert row["prompt"] == "" and row["clip_score"] is None and row["clip_cosine"] is None
        assert row["source_cosine"] is not None and "CLIP n/a (no prompt)" in image_in_stats(row)


def test_the_lab_makes_variations_with_its_own_image_encoder(lab, image_in):
    assert lab.harness().pipeline("unclip").image_encoder is not None
    assert "its own image encoder" in image_in.describe() and "runs img2img" in image_in.describe()
    stable = lab.harness().pipeline("stable_unclip")  # the CLIP its prior was trained on, lent by the lab's unCLIP
    assert stable.image_encoder is lab.harness().pipeline("unclip").image_encoder
    assert "**Stable unCLIP** makes variations: unCLIP's image encoder, the same in memory, embeds the image" in (
        image_in.describe()
    )


def test_a_model_without_an_image_encoder_says_so_and_img2img_still_runs(tmp_path):
    directory = build_tiny_unclip(0).save_pretrained(tmp_path / "no-encoder")  # Karlo's layout: no image encoder
    # the lab's Stable unCLIP cannot run on a tiny unCLIP's prior: it is left out (test_loading checks the refusal)
    models = {"unclip": str(directory), "stable_unclip": "none"}
    session = Session(AppConfig("lab", "cpu", tmp_path / "results", models=models))
    session.harness()
    image_in = ImageIn(session)
    assert "cannot make variations: this model has no image encoder" in image_in.describe()
    rows, skipped, _ = image_in.run(random_image(40, seed=4), PROMPT, "3", 0.5, FAST)
    assert list(rows) == ["latent_diffusion"] and "img2img still works" in skipped["unclip"]
    with pytest.raises(ValueError, match="img2img needs a prompt.*; |cannot make variations"):
        image_in.run(random_image(40, seed=4), "", "3", 0.5, FAST)


def test_summaries_pair_text_to_image_rows_only(lab):
    for seed in (9, 10):  # the image-in rows above have these prompts and seeds too
        Compare(lab).run(PROMPT, seed, FAST)
    df = lab.runs()
    assert {"text_to_image", "variations", "img2img"} <= set(df["mode"])
    table = summary_table(df)
    assert (table["n"] == 2).all()  # the two compares; never an image-in row
    rows = describe_long(df).query("metric == 'rows'")
    assert set(rows["value"]) == {2.0}


def test_the_audit_finds_a_missing_or_altered_source(lab, tmp_path):
    loaded = lab.harness()
    harness = Harness(loaded.pipelines, loaded.judge, tmp_path, log=RunLog(tmp_path))
    source = open_source(random_image(40, seed=5))
    harness.save(*(harness.make_image_in(a, source, PROMPT, 1, FAST, 0.5) for a in harness.architectures))
    assert audit(tmp_path).clean
    kept = tmp_path / "images" / "sources" / f"{source.sha256}.png"
    Image.new("RGB", (40, 40)).save(kept)
    report = audit(tmp_path)
    n = len(harness.architectures)  # a row each, naming the one source
    assert [p.kind for p in report.problems] == ["mismatch"] * n and all(
        "hash to" in p.detail for p in report.problems
    )
    kept.unlink()
    assert [p.kind for p in audit(tmp_path).problems] == ["missing"] * n
    (tmp_path / "images" / "sources" / "stray.png").write_bytes(b"")
    assert "unreferenced" in {p.kind for p in audit(tmp_path).problems}


def test_a_save_killed_before_its_rows_leaves_files_the_audit_prunes(lab, tmp_path, monkeypatch):
    loaded = lab.harness()
    harness = Harness(loaded.pipelines, loaded.judge, tmp_path, log=RunLog(tmp_path))
    harness.save(harness.make_image_in("unclip", open_source(random_image(40, seed=1)), "", 1, FAST))
    made = harness.make_image_in("latent_diffusion", open_source(random_image(40, seed=2)), PROMPT, 1, FAST, 0.5)

    def killed(rows):
        raise OSError("killed")

    monkeypatch.setattr(harness.log, "append", killed)
    with pytest.raises(OSError):
        harness.save(made)  # the source and the PNG are written, the row is not
    report = audit(tmp_path)
    assert sorted(p.path.parent.name for p in report.problems if p.kind == "unreferenced") == [
        "latent_diffusion",
        "sources",
    ]
    assert len(prune(report)) == 2
    check_results_folder(tmp_path, expected_rows=1)  # the first save's source and row untouched
