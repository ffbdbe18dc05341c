"""The status line (what is loaded, downloads, why a load failed, the lab one click away), the Models picker, and on a
public app what its visitors may do (no picker unless the owner allows switching: comparisons.app.access)."""

from __future__ import annotations

import gradio as gr

from comparisons.app.session import Session
from comparisons.app.ui.common import DEVICE, user_errors
from comparisons.presets import JUDGES, PRESETS
from pipelines import registry

LOCKED = " (fixed on ZeroGPU: set T2I_PRESET, T2I_UNCLIP, ... in the Space's settings)"


def build(session: Session) -> list:
    """The status line and the picker; returns the switch events, for screens that follow the models (`.then`)."""
    archs = session.architectures

    def status_now():
        offer_lab = session.load_failed and session.config.access.switching
        return session.status(), gr.Timer(active=not session.settled), gr.Button(visible=offer_lab)

    @user_errors
    def switch_models(preset, judge, *sources):
        session.switch(preset, dict(zip(archs, sources)), judge or None)
        return (*status_now(), preset)

    @user_errors
    def use_lab():
        session.switch("lab")
        return (*status_now(), "lab", *[""] * len(archs))

    access = session.config.access
    if access.public:
        gr.Markdown(access.describe(), elem_id="public-mode")
    with gr.Row(equal_height=True):
        status = gr.Markdown(session.status(), elem_id="status")
        lab_button = gr.Button(
            "Switch to the lab preset",
            visible=session.load_failed and access.switching,
            size="sm",
            scale=0,
            elem_id="use-lab",
        )
    status_timer = gr.Timer(1.0)
    status_outputs = [status, status_timer, lab_button]
    status_timer.tick(status_now, outputs=status_outputs, queue=False, show_progress="hidden", api_name=False)
    fixed = session.config.zero_gpu
    # On a public app without switching the picker is not shown; its endpoints stay, and refuse (Session.switch).
    with gr.Accordion("Models", open=False, elem_id="models", visible=access.switching):
        with gr.Row():
            preset_box = gr.Dropdown(
                sorted(PRESETS),
                value=session.config.preset,
                label="Preset" + (LOCKED if fixed else ""),
                elem_id="preset",
                interactive=not fixed,
            )
            source_boxes = [
                gr.Textbox(
                    label=f"{registry.get(a).short} model: hub id or directory (empty: the preset's)",
                    value=session.config.models.get(a, ""),
                    placeholder="e.g. " + PRESETS["pretrained"].models.get(a, "org/name"),
                    elem_id=f"model-{a}",
                    interactive=not fixed,
                )
                for a in archs
            ]
            judge_box = gr.Dropdown(
                ["", *JUDGES],
                value=session.config.judge or "",
                label="Judge (empty: the preset's)",
                elem_id="judge",
                interactive=not fixed,
            )
        load_button = gr.Button("Load these models", elem_id="load-models", interactive=not fixed)
    switched = load_button.click(
        switch_models,
        [preset_box, judge_box, *source_boxes],
        [*status_outputs, preset_box],
        api_name="switch_models",
        show_progress="hidden",  # the status line says what is loading; a refusal's pill would hide the picker
        **DEVICE,
    )
    to_lab = lab_button.click(
        use_lab,
        None,
        [*status_outputs, preset_box, *source_boxes],
        api_name="use_lab",
        show_progress="hidden",
        **DEVICE,
    )
    return [switched, to_lab]
