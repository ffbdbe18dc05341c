"""The Results tab's backend: the gallery newest first with its captions, a row's details, the values that send a row
to Compare, the chosen configuration's summary, which is never an empty table, and the log filtered and exported,
its images named inside the results folder."""

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from comparisons.app import results as results_module
from comparisons.app.results import Results, caption, compare_values, find_row, gallery_items, plain_row, row_details
from comparisons.app.session import AppConfig, Session
from comparisons.app.views import chosen_summary
from comparisons.configurations import choices, choose
from comparisons.schema import frame_from_records
from comparisons.settings import Settings

FAST = dict(prior_steps=2, decoder_steps=3, super_res_steps=2, prior_guidance=4.0, decoder_guidance=6.0)


def row(arch: str, seed: int, prompt: str = "a red circle above a blue square", **settings) -> dict:
    """A row as the harness logs it (the columns the gallery and the summary read)."""
    own = Settings(**settings).for_architecture(arch)
    stages = ("prior", "decoder", "super_res") if arch == "unclip" else ("unet", "vae_decode")
    return {
        "run_id": f"run{seed}",
        "created_at": pd.Timestamp("2026-12-01 13:46", tz="UTC"),
        "architecture": arch,
        "model": arch,
        "model_hash": "abc",
        "prompt": prompt,
        "seed": seed,
        "height": 32,
        "width": 32,
        **own,
        "dtype": "float32",
        "device": "cpu",
        "device_name": "cpu",
        **{f"seconds_{s}": 0.25 for s in stages},
        "seconds_total": 0.25 * len(stages),
        "peak_memory_mb": 1000.0,
        "memory_kind": "peak RSS",
        "clip_score": 25.0 + seed,
        "check_object1_colour_correct": True,
        "check_object1_shape_correct": False,
        "check_object1_shape_read": "square",
        "image_path": f"/results/images/{arch}/run{seed}.png",
    }


@pytest.fixture()
def df():
    records = [row("unclip", 1, **FAST), row("latent_diffusion", 1, steps=9, negative_prompt="blurry")]
    records += [row("unclip", 2, "a *bold* _prompt_ " + "x" * 60)]
    return frame_from_records(records)  # typed as the run log is: Int64, <NA>, booleans


def test_the_gallery_is_newest_first_with_captions(df):
    items, paths = gallery_items(df)
    assert paths == list(df["image_path"][::-1])
    assert [c for _, c in items] == [
        "unCLIP · seed 2 · a *bold* _prompt_ xxxxxxxxxxxxxxxxxxxxx…",
        "LD · seed 1 · a red circle above a blue square",
        "unCLIP · seed 1 · a red circle above a blue square",
    ]
    assert len(gallery_items(df, limit=2)[0]) == 2 and gallery_items(df.iloc[:0]) == ([], [])
    assert caption(plain_row(df.iloc[0])).endswith("a red circle above a blue square")


def test_a_selected_row_shows_its_settings_stats_and_verdict(df):
    details = row_details(find_row(df, "/results/images/unclip/run1.png"))
    assert details.startswith("**unCLIP (Karlo / DALL·E 2)** · run `run1` · 2026-12-01 13:46 UTC · 32×32 px")
    assert "unCLIP prior steps 2 · unCLIP decoder steps 3 · unCLIP super-res steps 2" in details
    assert "unCLIP decoder guidance 6.0" in details and "unet" not in details  # its own settings and stages only
    assert "seed 1 · 0.75 s (prior 0.25, decoder 0.25, super_res 0.25)" in details
    assert details.endswith("checker: colour ✓ shape ✗ (square)")
    ld = row_details(find_row(df, "/results/images/latent_diffusion/run1.png"))
    assert "Latent diffusion steps 9" in ld and "Negative prompt (latent diffusion only): blurry" in ld
    assert r"a \*bold\* \_prompt\_" in row_details(find_row(df, "/results/images/unclip/run2.png"))


def test_a_row_sent_to_compare_sets_its_architectures_settings_and_keeps_the_others(df):
    shown = dict(Settings().items()) | {"negative_prompt": "", "steps": 50}
    prompt, seed, settings = compare_values(find_row(df, "/results/images/unclip/run1.png"), shown)
    assert (prompt, seed) == ("a red circle above a blue square", "1")
    assert {k: settings[k] for k in FAST} == FAST and settings["steps"] == 50  # LD's as the Compare tab had them
    _, _, settings = compare_values(find_row(df, "/results/images/latent_diffusion/run1.png"), shown)
    assert settings["steps"] == 9 and settings["negative_prompt"] == "blurry" and settings["prior_steps"] == 25


@pytest.mark.parametrize(
    "path, message", [("", "no image is selected"), ("/etc/passwd", "no row of this run log has that image")]
)
def test_an_image_no_row_has_is_refused(df, path, message):
    with pytest.raises(ValueError, match=message):
        find_row(df, path)


def test_the_chosen_summary_is_paired_or_unpaired_never_an_empty_table(df):
    both = frame_from_records([row(a, s, **FAST) for s in range(3) for a in ("unclip", "latent_diffusion")])
    table, note = chosen_summary(both, choose(choices(both), None))
    measures = set(table["measure"])
    assert {"seconds per image, all stages", "CLIP score: the judge's text–image similarity, 0–100"} <= measures
    assert "checker: the first object's colour right (share of images)" in measures  # not check_object1_colour_…
    assert (table["pairs"] == 3).all() and list(table.columns[3:5]) == ["unCLIP", "LD"]  # unCLIP first, as everywhere
    assert note.startswith("unCLIP 2/3/2 g 4/6 vs LD 50 steps g 7.5: 3 pairs. unCLIP − LD, paired by prompt and seed")

    unclip = both[both["architecture"] == "unclip"]
    table, note = chosen_summary(unclip, choose(choices(unclip), None))
    assert not table.empty and "unCLIP" in table.columns and set(table["statistic"]) >= {"images", "mean"}
    assert "seconds per image, all stages" in set(table["measure"])
    assert note.startswith("unCLIP 2/3/2 g 4/6: no pairs (no LD or Stable unCLIP rows for the same prompts and seeds)")

    table, note = chosen_summary(both.iloc[:0], choose(choices(both.iloc[:0]), None))
    assert table is None and note.startswith("No text-to-image runs match yet")


def test_a_summary_reads_in_words_ties_as_ties_and_no_interval_from_one_pair():
    one = frame_from_records([row(a, 0, **FAST) for a in ("unclip", "latent_diffusion")])
    table, _ = chosen_summary(one, choose(choices(one), None))
    by = table.set_index("measure")
    clip = by.loc["CLIP score: the judge's text–image similarity, 0–100"]
    assert clip["unCLIP − LD [95% interval]"] == "0 (one pair: no interval)"  # never "[x, x]"
    verdict = by.loc["checker: the first object's colour right (share of images)"]
    assert (verdict["unCLIP better"], verdict["tie"], verdict["LD better"]) == ("0 of 1", "1 of 1", "0 of 1")
    many = frame_from_records(
        [
            row(a, s, **FAST) | {"clip_score": 20.0 + (a == "unclip") * (s % 2)}
            for s in range(8)
            for a in ("unclip", "latent_diffusion")
        ]
    )
    clip = chosen_summary(many, choose(choices(many), None))[0].set_index("measure").loc[clip.name]
    assert clip["unCLIP better"].startswith("50% [") and clip["tie"].startswith("50% [")  # a tie is not a loss
    assert clip["LD better"].startswith("0% [0%, ") and clip["unCLIP − LD [95% interval]"].startswith("+0.5 [")
    assert "`" not in chosen_summary(many, choose(choices(many), None))[1]


def test_image_in_rows_newest_leave_the_results_and_summary_working(df):
    """An Image in row made last once broke every Results panel for every visitor: it chooses no configuration."""
    both = [row(a, s, **FAST) for s in range(2) for a in ("unclip", "latent_diffusion")]
    image_in = row("latent_diffusion", 5, steps=50) | {"mode": "img2img", "strength": 0.8, "source_hash": "f" * 64}
    variations = row("unclip", 5, **FAST) | {"mode": "variations", "source_hash": "f" * 64, "prior_steps": None}
    log = frame_from_records([*both, image_in, variations])
    options = choices(log)
    assert [o.label for o in options] == ["unCLIP 2/3/2 g 4/6 vs LD 50 steps g 7.5"]
    table, note = chosen_summary(log, options[0])
    assert (table["pairs"] == 2).all() and "2 pairs" in note
    assert len(options[0].rows(log)) == 4  # the img2img row shares LD's settings but is never among them


def test_the_tab_filters_the_log_names_its_images_inside_the_results_folder_and_exports(df, tmp_path, monkeypatch):
    session = Session(AppConfig("lab", "cpu", tmp_path))  # nothing loads: the tab reads the log alone
    results = Results(session)
    assert results.runs().empty  # no log yet
    images = session.results_dir / "images"
    logged = df.assign(image_path=[str(images / Path(p).relative_to("/results/images")) for p in df["image_path"]])
    monkeypatch.setattr(session, "runs", lambda visitor=None: logged)
    assert list(results.runs("unclip")["seed"]) == [1, 2] and len(results.runs("all", "RED Circle")) == 2
    newest = logged["image_path"].iloc[-1]
    name = results.image_name(newest)
    assert name == "images/unclip/run2.png" and results.image_path(name) == newest == results.image_path(newest)
    assert results.image_name("/elsewhere/secret.png") == "secret.png"  # never the server's own path
    assert results.row(name)["seed"] == 2 and results.row(newest)["prompt"].startswith("a *bold*")
    with pytest.raises(ValueError, match="no row of this run log has that image"):
        results.row("images/unclip/none.png")
    ld = results.runs("latent_diffusion")
    csv = results.export(ld, "csv")
    assert csv.parent == session.results_dir / "exports" and csv.is_file() and results.export(ld, "csv") == csv
    with pytest.raises(ValueError, match="choose csv or parquet"):
        results.export(ld, "xlsx")


def test_the_gallery_sends_a_thumbnail_made_once_and_small_images_as_they_are(tmp_path):
    results = Results(Session(AppConfig("lab", "cpu", tmp_path)))
    folder = tmp_path / "images" / "unclip"
    folder.mkdir(parents=True)
    big, small = folder / "big.png", folder / "small.png"
    Image.new("RGB", (768, 512), "red").save(big)
    Image.new("RGB", (32, 32), "blue").save(small)
    thumb = Path(results.thumbnail(str(big)))
    assert thumb == tmp_path / "thumbs" / "images" / "unclip" / "big.png"
    with Image.open(thumb) as shown:
        assert shown.size == (256, 171) and shown.getpixel((128, 85)) == (255, 0, 0)
    made = thumb.stat().st_mtime_ns
    assert results.thumbnail(str(big)) == str(thumb) and thumb.stat().st_mtime_ns == made  # once
    assert results.thumbnail(str(small)) == str(small)  # the lab's 32 px: as it is
    frame = frame_from_records(
        [row("unclip", 1) | {"image_path": str(big)}, row("unclip", 2) | {"image_path": str(small)}]
    )
    items, paths = results.gallery(frame)
    assert [i for i, _ in items] == [str(small), str(thumb)] and paths == [str(small), str(big)]  # rows name images


def test_a_summary_is_kept_until_its_configurations_rows_change(df, tmp_path, monkeypatch):
    results = Results(Session(AppConfig("lab", "cpu", tmp_path)))
    made = []
    real = results_module.chosen_summary
    monkeypatch.setattr(results_module, "chosen_summary", lambda *a: made.append(1) or real(*a))
    paired = frame_from_records(
        [row("unclip", s, **FAST) for s in (1, 2)] + [row("latent_diffusion", s) for s in (1, 2)]
    )
    choice = choose(results.configurations(paired, ("all", "")), None)
    first = results.summary(paired, choice)
    assert results.summary(paired, choice) is first and len(made) == 1  # the same rows: kept
    other = pd.concat([paired, frame_from_records([row("unclip", 7, decoder_steps=9)])], ignore_index=True)
    assert results.summary(other, choose(results.configurations(other, ("all", "")), choice.label)) is first
    more = pd.concat([paired, frame_from_records([row("unclip", 3, **FAST), row("latent_diffusion", 3)])])
    more = more.reset_index(drop=True)
    again = results.summary(more, choose(results.configurations(more, ("all", "")), choice.label))
    assert len(made) == 2 and again is not first  # its own rows grew: made again


def test_warming_reads_the_log_ahead_and_a_corrupt_log_only_logs(tmp_path, caplog):
    session = Session(AppConfig("lab", "cpu", tmp_path))
    results = Results(session)
    results.warm()  # no log yet: nothing to read, nothing said
    (tmp_path / "runs.jsonl").write_text("not json\n")
    results.warm()
    assert "could not be read ahead" in caplog.text
