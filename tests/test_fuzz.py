"""Fuzzing every public entry point that takes user input (hypothesis): the pipelines' input checks, the app's
handlers called directly and through gradio_client, and the CLIs' argument parsing. Each call either works or
raises the project's clear ValueError (through gradio: shows its message); any other exception fails.

Input that passes every check would start the models, which is slow at fuzzed step counts: a hook on every
model raises `Accepted` (a ValueError) at the first forward, so "the input was accepted" is a result too. The
last tests run the models for real on fuzzed text and seeds at two steps.
"""

import math
import socket
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import app
from comparisons import audit, compare, summary, sweep, votes
from comparisons.app.backends import Backends
from comparisons.app.inputs import parse_settings
from comparisons.app.session import AppConfig, Session
from pipelines.checks import MAX_PROMPT_CHARS

ACCEPTED = "the input was accepted: the models were reached"
GENERIC = "has not enabled verbose error reporting"  # what gradio_client says of an exception that is not gr.Error
FAST = dict(
    prior_steps=2, decoder_steps=2, super_res_steps=2, prior_guidance=4.0, decoder_guidance=8.0, steps=2, guidance=7.5
)
FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


class Accepted(ValueError):
    """Raised by a model's first forward: the call passed every input check."""


# ----------------------------------------------------------------------------- strategies

AWKWARD = [
    "\x00",
    "a\x00b",
    "\u202e\u2067right to left\u2069",
    "🙂" * 200,
    "a red circle " * 400,
    "x" * MAX_PROMPT_CHARS,
    "x" * (MAX_PROMPT_CHARS + 1),
    "\r\n\t\x0b\x0c",
    "=cmd|' /C calc'!A0",
    "<script>alert(1)</script>",
    " ",
    "",
    "\ufeffa red circle",
    "a\u0301\u0301",
    "\U0010fffd",
    "a red circle above a blue square",
    "猫 ネコ",
    "%s%n{0}",
    "../../etc/passwd",
    "-1",
    "NaN",
    "1e308",
    "0-99999",
    "9-0",
    "1,,2",
    "2**63",
]
texts = st.one_of(st.sampled_from(AWKWARD), st.text(max_size=40), st.text(max_size=600))
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, 3, 1000, 1001, -1, 0.5, 2.5, 1e308, 2**63, 2**64]),
    st.text(max_size=12),
    st.none(),
    st.booleans(),
)
json_numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 2, 1000, 1001, -1, 2.5, 1e308, 2**63]),
    st.text(max_size=12),
    st.none(),
)
seeds = st.one_of(texts, numbers)
images = st.one_of(  # uploads of every mode and size, and things that are not images
    st.builds(
        Image.new,
        st.sampled_from(["RGB", "RGBA", "L", "P", "1", "CMYK", "I;16", "F", "LA"]),
        st.tuples(st.integers(1, 80), st.integers(1, 80)),
    ),
    st.sampled_from([None, "", " ", "missing.png", "../../etc/passwd", "/dev/null", b"\x89PNG", 3, [1, 2]]),
    texts,
)
architectures = st.lists(st.sampled_from(["unclip", "latent_diffusion", "gan", "", "UNCLIP"]), max_size=3)
setting_values = st.fixed_dictionaries({name: numbers for name in FAST})


def clear(err: BaseException) -> bool:
    """A message a user can act on: our ValueErrors and gradio's gr.Error say what was wrong."""
    return isinstance(err, ValueError) and bool(str(err).strip()) and GENERIC not in str(err)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A lab-preset Session's backends (the served app's own), its models raising Accepted when `gate["on"]`."""
    tabs = Backends.of(Session(AppConfig("lab", "cpu", tmp_path_factory.mktemp("fuzz"))))
    harness = tabs.session.harness()
    gate = {"on": True}

    def refuse(module, args):
        if gate["on"]:
            raise Accepted(ACCEPTED)

    hooks = [
        m.register_forward_pre_hook(refuse) for pipe in harness.pipelines.values() for m in pipe.modules().values()
    ]
    yield tabs, gate
    for hook in hooks:
        hook.remove()


@pytest.fixture(scope="module")
def served(guarded):
    tabs, _ = guarded
    demo = app.build_app(tabs)
    demo.queue(default_concurrency_limit=4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.launch(
        **app.launch_options(None, port, {}),
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=[str(tabs.session.results_dir)],
    )
    yield Client(url, verbose=False)
    demo.close()


def works_or_clear(call) -> object:
    try:
        return call()
    except Exception as err:  # noqa: BLE001 - the point: only clear ValueErrors may come out
        assert clear(err), f"{type(err).__name__}: {err}"
        return err


# ----------------------------------------------------------------------------- the pipelines' input checks


@FUZZ
@given(
    prompt=st.one_of(texts, st.lists(texts, max_size=3), numbers),
    steps=st.tuples(numbers, numbers, numbers),
    guidance=st.tuples(numbers, numbers),
    seed=st.one_of(numbers, st.lists(numbers, max_size=3)),
    count=numbers,
)
def test_unclip_checks_every_input(guarded, prompt, steps, guidance, seed, count):
    pipe = guarded[0].session.harness().pipeline("unclip")
    works_or_clear(
        lambda: pipe(
            prompt,
            prior_num_inference_steps=steps[0],
            decoder_num_inference_steps=steps[1],
            super_res_num_inference_steps=steps[2],
            prior_guidance_scale=guidance[0],
            decoder_guidance_scale=guidance[1],
            seed=seed,
            num_images_per_prompt=count,
        )
    )


@FUZZ
@given(
    prompt=st.one_of(texts, st.lists(texts, max_size=3), numbers),
    negative=st.one_of(texts, st.lists(texts, max_size=3), numbers),
    steps=numbers,
    guidance=numbers,
    seed=numbers,
    size=st.tuples(numbers, numbers),
    strength=numbers,
)
def test_latent_diffusion_checks_every_input(guarded, prompt, negative, steps, guidance, seed, size, strength):
    pipe = guarded[0].session.harness().pipeline("latent_diffusion")
    works_or_clear(
        lambda: pipe(
            prompt,
            negative_prompt=negative,
            num_inference_steps=steps,
            guidance_scale=guidance,
            seed=seed,
            height=size[0],
            width=size[1],
        )
    )
    image = (
        guarded[0].session.harness().pipeline("unclip").feature_extractor
    )  # any object that is not an image must be refused
    works_or_clear(lambda: pipe.img2img(prompt, image, strength=strength, num_inference_steps=steps, seed=seed))


# ----------------------------------------------------------------------------- the app's handlers, called directly


@FUZZ
@given(prompt=texts, negative=texts, seed=seeds, values=setting_values)
def test_compare_and_explain_handlers(guarded, prompt, negative, seed, values):
    tabs, _ = guarded
    works_or_clear(lambda: tabs.compare.run(prompt, seed, parse_settings(negative_prompt=negative, **values)))
    works_or_clear(lambda: tabs.inside.explain(prompt, seed, parse_settings(negative_prompt=negative, **values)))


@FUZZ
@given(
    start=texts,
    end=texts,
    seed=seeds,
    frames=numbers,
    text=st.one_of(texts, st.sampled_from(["prompts", "empty"])),
    theta=numbers,
    values=setting_values,
)
def test_latent_space_handlers(guarded, start, end, seed, frames, text, theta, values):
    latent = guarded[0].latent_space
    works_or_clear(lambda: latent.interpolate(start, end, seed, frames, text, parse_settings(**values)))
    works_or_clear(lambda: latent.text_diff(start, start, end, seed, frames, theta, text, parse_settings(**values)))


@FUZZ
@given(
    prompts=st.one_of(texts, st.lists(texts, max_size=4).map("\n".join)),
    seeds_text=texts,
    steps=texts,
    guidance=texts,
    archs=architectures,
)
def test_sweep_handler(guarded, prompts, seeds_text, steps, guidance, archs):
    sweep = guarded[0].sweep
    status = works_or_clear(lambda: sweep.start(prompts, seeds_text, steps, guidance, archs))
    sweep.wait(60)
    if not isinstance(status, Exception):  # a grid that passed its checks stops at the first model it reaches
        assert not status.running and ACCEPTED in (status.error or ""), status.message()


@FUZZ
@given(
    arch=st.one_of(texts, st.sampled_from(["all", "unclip"])),
    contains=texts,
    fmt=st.one_of(texts, st.sampled_from(["csv"])),
)
def test_results_handler(guarded, arch, contains, fmt):
    results = guarded[0].results
    df = works_or_clear(lambda: results.runs(arch, contains))
    if not isinstance(df, Exception) and not df.empty:
        works_or_clear(lambda: results.export(df, fmt))


@FUZZ
@given(image=images, prompt=texts, seed=seeds, strength=numbers, values=setting_values)
def test_image_in_handler(guarded, image, prompt, seed, strength, values):
    image_in = guarded[0].image_in
    works_or_clear(lambda: image_in.run(image, prompt, seed, strength, parse_settings(**values)))


# ----------------------------------------------------------------------------- through gradio_client


@settings(FUZZ, max_examples=15)
@given(
    prompt=texts,
    negative=texts,
    seed=st.one_of(texts, json_numbers),
    values=st.fixed_dictionaries({name: json_numbers for name in FAST}),
)
def test_compare_and_explain_endpoints(served, prompt, negative, seed, values):
    for endpoint in ("/compare", "/explain"):
        works_or_clear(lambda: served.predict(prompt, negative, seed, *values.values(), api_name=endpoint))


@settings(FUZZ, max_examples=15)
@given(prompt=texts, seed=st.one_of(texts, json_numbers), strength=json_numbers, size=st.integers(1, 64))
def test_image_in_endpoint(served, tmp_path_factory, prompt, seed, strength, size):
    upload = tmp_path_factory.mktemp("upload") / "upload.png"
    Image.new("RGBA", (size, 40), (200, 10, 10, 128)).save(upload)
    works_or_clear(
        lambda: served.predict(
            handle_file(str(upload)), prompt, strength, seed, "", *FAST.values(), api_name="/image_in"
        )
    )


@settings(FUZZ, max_examples=15)
@given(
    start=texts,
    end=texts,
    seed=st.one_of(texts, json_numbers),
    frames=json_numbers,
    text=st.one_of(texts, st.sampled_from(["prompts", "empty"])),
    theta=json_numbers,
)
def test_latent_space_endpoints(served, start, end, seed, frames, text, theta):
    fast = list(FAST.values())
    works_or_clear(lambda: served.predict(start, end, frames, text, "", seed, *fast, api_name="/interpolate"))
    works_or_clear(
        lambda: served.predict(start, start, end, frames, theta, text, "", seed, *fast, api_name="/text_diff")
    )


@settings(FUZZ, max_examples=15)
@given(prompts=texts, seeds_text=texts, steps=texts, guidance=texts, archs=architectures, arch=texts, contains=texts)
def test_sweep_and_results_endpoints(guarded, served, prompts, seeds_text, steps, guidance, archs, arch, contains):
    works_or_clear(lambda: served.predict(prompts, seeds_text, steps, guidance, archs, api_name="/sweep"))
    guarded[0].sweep.wait(60)
    works_or_clear(lambda: served.predict(arch, contains, api_name="/results"))


questions = st.one_of(st.sampled_from(["caption", "photorealism", "diversity", "Caption", ""]), texts, numbers)
answers = st.one_of(st.sampled_from(["left", "right", "tie", "LEFT", "both"]), texts, numbers)


@FUZZ
@given(question=questions, token=st.one_of(texts, numbers), answer=answers, prompts=texts)
def test_vote_handlers(guarded, question, token, answer, prompts):
    vote = guarded[0].vote
    works_or_clear(lambda: vote.show("fuzzer", question))
    works_or_clear(lambda: vote.cast("fuzzer", token, answer))
    works_or_clear(lambda: vote.make_pairs(prompts, parse_settings(**FAST)))  # checked, then Accepted


@settings(FUZZ, max_examples=15)
@given(question=questions, token=st.one_of(texts, json_numbers), answer=answers, prompts=texts)
def test_vote_endpoints(served, question, token, answer, prompts):
    works_or_clear(lambda: served.predict(question, api_name="/next_pair"))
    works_or_clear(lambda: served.predict(token, answer, api_name="/vote"))
    works_or_clear(lambda: served.predict(prompts, "", "", *FAST.values(), api_name="/make_pairs"))


# ----------------------------------------------------------------------------- the CLIs' argument parsing


def exit_code(main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        return stop.code


@FUZZ
@given(
    content=st.one_of(texts, st.binary(max_size=200)),
    seeds_text=texts,
    steps=texts,
    guidance=texts,
    batch=texts,
    archs=texts,
    extra=st.lists(texts, max_size=3),
)
def test_sweep_cli(monkeypatch, tmp_path_factory, capsys, content, seeds_text, steps, guidance, batch, archs, extra):
    import comparisons.presets

    monkeypatch.setattr(comparisons.presets, "load_harness", lambda *a, **k: (_ for _ in ()).throw(Accepted(ACCEPTED)))
    folder = tmp_path_factory.mktemp("cli")
    prompts = folder / "prompts.txt"
    prompts.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    argv = [
        "--prompts",
        str(prompts),
        "--seeds",
        seeds_text,
        "--steps",
        steps,
        "--guidance",
        guidance,
        "--batch-size",
        batch,
        "--architectures",
        archs,
        "--out",
        str(folder / "out"),
        "--no-progress",
        *extra,
    ]
    code = exit_code(sweep.main, argv)
    assert code == 2, code  # every fuzzed run is refused with a message, or reaches the models (also exit 2 here)
    err = capsys.readouterr().err.strip().splitlines()
    assert err and (err[-1].startswith("error:") or err[-1].startswith("usage:") or "error:" in err[-1]), err[-3:]


@FUZZ
@given(prompt=texts, seed=texts, values=st.lists(texts, min_size=2, max_size=2), preset=texts)
def test_compare_cli(monkeypatch, capsys, prompt, seed, values, preset):
    monkeypatch.setattr(compare, "load_harness", lambda *a, **k: (_ for _ in ()).throw(Accepted(ACCEPTED)))
    code = exit_code(
        compare.main, [prompt, "--seed", seed, "--steps", values[0], "--guidance", values[1], "--preset", preset]
    )
    assert code == 2, code
    assert capsys.readouterr().err.strip()


@FUZZ
@given(path=texts)
def test_audit_summary_and_votes_clis(capsys, path):
    assert exit_code(audit.main, [path]) == 2
    assert exit_code(summary.main, [path]) == 2
    assert "error:" in capsys.readouterr().err
    code = exit_code(votes.main, [path])  # a folder that exists (".", "/") holds no votes: said, not an error
    said = capsys.readouterr()
    assert (code == 2 and said.err.startswith("error: ")) or (code == 0 and said.out.startswith("No votes in"))


# ----------------------------------------------------------------------------- the models, for real


@settings(FUZZ, max_examples=12)
@given(prompt=texts, negative=texts, seed=seeds)
def test_fuzzed_text_and_seeds_make_images_or_clear_errors(guarded, prompt, negative, seed):
    tabs, gate = guarded
    gate["on"] = False
    try:
        result = works_or_clear(
            lambda: tabs.compare.run(prompt, seed, parse_settings(negative_prompt=negative, **FAST))
        )
    finally:
        gate["on"] = True
    if not isinstance(result, Exception):
        rows, _ = result
        for row in rows.values():
            assert Path(row["image_path"]).is_file() and math.isfinite(row["clip_score"])
