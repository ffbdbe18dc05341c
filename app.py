"""unCLIP, Stable unCLIP and latent diffusion, side by side: the Gradio app (Hugging Face Spaces runs this file).

    python app.py                      # the Shapes lab on CPU, http://127.0.0.1:7860
    python app.py --preset pretrained  # Karlo + Stable Diffusion 1.5 + a ViT-L-14 judge, fp16 on a GPU
    python app.py --preset pretrained --latent-diffusion stabilityai/stable-diffusion-2-1-base --judge ViT-H-14
    python app.py --host 0.0.0.0       # listen on every interface (or T2I_HOST=0.0.0.0): a public app
    python app.py --public             # a public app on loopback: every visitor a stranger (or T2I_PUBLIC=1)

Layout and wiring only: the session (comparisons.app.session: the models, loaded and switched) and one backend per
tab (comparisons.app.backends) are built once, in `main`, and each tab's screen (comparisons.app.ui) is handed its
backend, which checks the raw widget values, runs the models through the harness and reads the run log. Their
ValueErrors become gr.Error popups.

A public app (a Space, a host other than loopback, or --public) is the owner's: visitors cannot switch its models
unless --allow-switching, see only their own results unless --shared-results, and are held to fair use
(comparisons.app.access).

On ZeroGPU (SPACES_ZERO_GPU set on the Space) a GPU is attached only while a `spaces.GPU` function runs, in a
forked worker: the models load in the main thread before launch, the GPU functions only generate (the serving
process writes PNGs and rows), and a sweep is a sequence of such calls, each asking for the seconds its steps need.
"""

from __future__ import annotations

try:  # first: on ZeroGPU it virtualises CUDA, which must happen before torch touches it
    import spaces
except ImportError:
    spaces = None

import argparse
import os
import threading
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from comparisons.app.access import Access, Limits
from comparisons.app.backends import Backends
from comparisons.app.session import AppConfig, Session
from comparisons.app.ui import compare, findings, header, image_in, inside, latent_space, results, sweep, tools, vote
from comparisons.app.ui.common import CSS, GPU, KEYS_JS, serve_publicly
from comparisons.presets import DEFAULT_PRESET, JUDGES, PRESETS, add_model_flags, models_from_flags

TITLE = (
    "# unCLIP, latent diffusion and Stable unCLIP\nOne prompt, every architecture: DALL·E 2's prior → decoder → "
    "super-resolution against Stable Diffusion's U-Net in a VAE latent, and between them Stable unCLIP, the same "
    "prior feeding a latent U-Net, which tells whether a difference comes from the prior or from the space. Every "
    "image is logged with its seed, the time of every stage, peak memory and CLIP similarity."
)


def on_gpu(fn: Callable, duration: Callable[..., int]) -> Callable:
    """`spaces.GPU` with a duration computed from the call's arguments; off ZeroGPU spaces.GPU returns fn as is."""
    return fn if spaces is None else spaces.GPU(duration=duration)(fn)


def zero_gpu(environ: dict[str, str]) -> bool:
    """On a ZeroGPU Space (the spaces package reads the same variable)."""
    return environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def build_app(backends: Backends, gpu: GPU = on_gpu) -> gr.Blocks:
    """The page: each tab's screen given its backend. `gpu` decorates every function that runs the models
    (spaces.GPU; tests fork, as ZeroGPU does)."""
    if backends.session.config.access.public:
        serve_publicly()
    with gr.Blocks(title="unCLIP, latent diffusion, Stable unCLIP", analytics_enabled=False) as demo:
        gr.Markdown(TITLE)
        switched = header.build(backends.session)
        with gr.Tabs() as tabs:
            with gr.Tab("Compare", id="compare"):
                inputs = compare.build(backends.compare, gpu, switched)
            with gr.Tab("Image in", id="image-in") as image_tab:
                image_in.build(backends.image_in, gpu, inputs, image_tab, tabs)
            with gr.Tab("Inside the models", id="inside"):
                inside.build(backends.inside, gpu, inputs)
            with gr.Tab("Latent space", id="latent"):
                latent_space.build(backends.latent_space, gpu, inputs)
            with gr.Tab("Sweep", id="sweep"):
                sweep.build(backends.sweep, gpu)
            with gr.Tab("Vote", id="vote"):
                vote.build(backends.vote, gpu, inputs)
            with gr.Tab("Results", id="results") as tab:
                results.build(backends.results, tab, inputs, tabs)
                vote.build_scores(backends.vote, tab)
            with gr.Tab("Findings", id="findings"):
                findings.build(backends.findings)
        tools.build(backends, gpu)  # the agent tools (MCP tools with --mcp): endpoints, no screen
    return demo


def parse_args(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> argparse.Namespace:
    """The flags; each defaults to its environment variable (T2I_PRESET, T2I_UNCLIP, ...), as a Space sets them."""
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(description="unCLIP, latent diffusion and Stable unCLIP, side by side")
    parser.add_argument("--preset", default=environ.get("T2I_PRESET", DEFAULT_PRESET), choices=sorted(PRESETS))
    parser.add_argument("--device", default=environ.get("T2I_DEVICE", "auto"))
    parser.add_argument("--results", type=Path, default=Path(environ.get("T2I_RESULTS", "results")))
    parser.add_argument(
        "--host", default=environ.get("T2I_HOST"), help="default 127.0.0.1; 0.0.0.0 to listen on every interface"
    )
    parser.add_argument("--port", type=int, default=int(environ.get("T2I_PORT", 7860)))
    parser.add_argument(
        "--mcp",
        action="store_true",
        default=environ.get("T2I_MCP", "").strip().lower() in ("1", "true", "yes", "on"),
        help="also serve the agent tools over MCP at /gradio_api/mcp/ (or T2I_MCP=1; docs/app.md)",
    )
    public = parser.add_argument_group("a public app (a Space, a host other than loopback, or --public)")
    public.add_argument("--public", action="store_true", help="treat every visitor as a stranger (or T2I_PUBLIC=1)")
    public.add_argument(
        "--allow-switching", action="store_true", help="visitors may switch models (or T2I_ALLOW_SWITCHING=1)"
    )
    public.add_argument(
        "--allowed-models",
        default="",
        help="comma-separated hub ids a visitor's switch may name (or T2I_ALLOWED_MODELS); never a server folder",
    )
    public.add_argument(
        "--shared-results", action="store_true", help="every visitor sees every row (or T2I_SHARED_RESULTS=1)"
    )
    public.add_argument(
        "--results-cap-gb",
        type=float,
        default=float(environ.get("T2I_RESULTS_CAP_GB", Limits.results_cap_gb)),
        help="new images are refused once the results folder holds this much (or T2I_RESULTS_CAP_GB; 0: no cap)",
    )
    public.add_argument(
        "--per-minute",
        type=int,
        default=int(environ.get("T2I_PER_MINUTE", Limits.per_minute)),
        help="sweeps, latent walks and images in per visitor per minute, each kind (or T2I_PER_MINUTE)",
    )
    public.add_argument(
        "--sweeps-at-once",
        type=int,
        default=int(environ.get("T2I_SWEEPS_AT_ONCE", Limits.background_sweeps)),
        help="sweeps running at once, all visitors together (or T2I_SWEEPS_AT_ONCE)",
    )
    public.add_argument(
        "--votes-per-minute",
        type=int,
        default=int(environ.get("T2I_VOTES_PER_MINUTE", Limits.votes_per_minute)),
        help="votes per browser session per minute in the Vote tab (or T2I_VOTES_PER_MINUTE)",
    )
    add_model_flags(parser, environ)
    parser.add_argument(
        "--judge",
        default=environ.get("T2I_JUDGE") or None,
        choices=JUDGES,
        help="the open_clip model that scores every image (or T2I_JUDGE); default: the preset's",
    )
    return parser.parse_args(argv)


def launch_options(host: str | None, port: int, environ: dict[str, str], mcp: bool = False) -> dict:
    """Loopback unless a host is asked for; on Spaces (SPACE_ID set) its own host and port. Never a share link.
    With `mcp`, the MCP server too (otherwise not named: gradio then reads GRADIO_MCP_SERVER)."""
    agents = dict(mcp_server=True) if mcp else {}
    if "SPACE_ID" in environ and host is None:
        return dict(
            server_name=None, server_port=None, share=False, css=CSS, js=KEYS_JS, **agents
        )  # Gradio reads GRADIO_SERVER_NAME / _PORT
    return dict(server_name=host or "127.0.0.1", server_port=port, share=False, css=CSS, js=KEYS_JS, **agents)


def access_from(args: argparse.Namespace, environ: dict[str, str]) -> Access:
    """Who may do what: the public flags, each or'ed with its environment variable."""
    if min(args.per_minute, args.sweeps_at_once, args.votes_per_minute) < 1 or args.results_cap_gb < 0:
        raise SystemExit(
            "--per-minute, --sweeps-at-once and --votes-per-minute must be at least 1, --results-cap-gb at least 0"
        )
    limits = Limits(args.per_minute, args.sweeps_at_once, args.results_cap_gb or None, args.votes_per_minute)
    try:
        return Access.of(
            args.host,
            environ,
            public=args.public,
            allow_switching=args.allow_switching,
            allowed_models=args.allowed_models,
            shared_results=args.shared_results,
            limits=limits,
        )
    except ValueError as err:
        raise SystemExit(str(err)) from None


def config_from(args: argparse.Namespace, environ: dict[str, str]) -> AppConfig:
    return AppConfig(
        args.preset,
        args.device,
        args.results,
        models_from_flags(args),
        args.judge,
        zero_gpu=zero_gpu(environ),
        access=access_from(args, environ),
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    session = Session(config_from(args, dict(os.environ)))
    backends = Backends.of(session)
    if session.config.zero_gpu:  # in the main thread, before launch: ZeroGPU packs the weights it saw placed on CUDA
        try:
            session.harness()
            backends.image_in.prepare()  # a borrowed image encoder too (the pretrained preset's variations)
        except ValueError as err:
            print(err)  # the page says it too, with the lab preset one click away
    else:
        session.start_loading()
    threading.Thread(target=backends.results.warm, daemon=True, name="results-warm-up").start()
    demo = build_app(backends)
    demo.queue(default_concurrency_limit=4)
    options = launch_options(args.host, args.port, dict(os.environ), args.mcp)
    demo.launch(**options, allowed_paths=[str(session.results_dir)])


if __name__ == "__main__":
    main()
