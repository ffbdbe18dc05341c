"""The Vote tab: two architectures' images of one prompt and seed, sides at random and names hidden until the vote
is cast, by DALL·E 2's three questions; pairs made on the spot from prompts; and, in the Results tab, the scores
(comparisons.app.vote, comparisons.vote_log, comparisons.votes)."""

from __future__ import annotations

import gradio as gr

from comparisons.app.inputs import parse_settings
from comparisons.app.pairs import GRID_SEEDS
from comparisons.app.ui.common import (
    DEVICE,
    FIT,
    GPU,
    CompareInputs,
    choice_field,
    picture,
    say,
    user_errors,
    visitor_of,
)
from comparisons.app.views import score_views
from comparisons.app.vote import NoPairError, Vote, reveal
from comparisons.app.zerogpu import gpu_duration
from comparisons.vote_log import QUESTIONS
from pipelines import registry

INTRO = (
    "Judge the architectures blind, as DALL·E 2's paper did with people (its Table 1): two images of the same "
    "prompt and seed, each by another architecture, on sides drawn at random; the names show once you have voted. "
    f"For diversity, two sets of {GRID_SEEDS} seeds of one prompt. Every vote is a row of the votes log beside the "
    "run log; the scores, and how often the judge CLIP agrees with people, are in the Results tab."
)
ANSWER_LABELS = {"left": "◀ Left", "tie": "Can't tell", "right": "Right ▶"}


def build(vote: Vote, gpu: GPU, inputs: CompareInputs) -> None:
    """The tab; pairs are made with the Compare tab's settings (`inputs`)."""
    session = vote.session
    archs = session.architectures
    spread = gpu(vote.spread, lambda images: 30)
    make_pairs = gpu(
        user_errors(vote.make_pairs),
        lambda text, settings, *_: gpu_duration(
            [(a, settings, GRID_SEEDS * max(1, len((text or "").splitlines()))) for a in archs]
        ),
    )

    def voter(request: gr.Request | None) -> str:
        return session.voter(getattr(request, "session_hash", None))

    @user_errors
    def next_pair(request: gr.Request, question):
        """A pair and its ballot (the token); none left is said where the caption goes, with no token."""
        try:
            ballot = vote.show(voter(request), question, visitor_of(session, request), spread=spread)
        except NoPairError as err:
            return say(str(err)), None, None, ""
        left, right = vote.pictures(ballot)
        return say(f"{QUESTIONS[question]}\n\nCaption: “{ballot.pair.prompt}”"), left, right, ballot.token

    def conceal():
        """Before a pair: the last one gone, its names and reveal with it, the answers closed."""
        buttons = [gr.Button(interactive=False) for _ in ANSWER_LABELS]
        return "", gr.Image(None, label="Left"), gr.Image(None, label="Right"), *buttons

    def ready(token):
        """A pair is up: the answers open (not when none was left)."""
        return tuple(gr.Button(interactive=bool(token)) for _ in ANSWER_LABELS)

    def caster(answer: str):
        @user_errors
        def cast(request: gr.Request, token):
            row, ballot = vote.cast(voter(request), token, answer)
            names = [s.architecture for s in ballot.pair.sides]
            return reveal(ballot, answer), "", names

        return cast

    def named(names: list[str]):
        """After a vote: each side labelled with its architecture, the answers closed until the next pair."""
        left, right = (registry.get(n).label for n in names)
        buttons = [gr.Button(interactive=False) for _ in ANSWER_LABELS]
        return gr.Image(label=f"Left: {left}"), gr.Image(label=f"Right: {right}"), *buttons

    @user_errors
    def pairs(request: gr.Request, text, *values):
        settings = parse_settings(**inputs.read_settings(values))
        return vote.record(make_pairs(text, settings, visitor_of(session, request)))

    def vote_api(token: str, answer: str, request: gr.Request) -> str:
        """Cast one vote on a pair shown to this session by /next_pair.

        Args:
            token: the ballot /next_pair returned with the pair (single use)
            answer: "left", "right" or "tie" (can't tell)
        Returns:
            which architecture was on each side, and what the judges measured
        """
        row, ballot = user_errors(vote.cast)(voter(request), token, answer)
        return reveal(ballot, answer)

    gr.Markdown(INTRO, elem_id="vote-intro")
    with gr.Row():
        question = choice_field(
            gr.Radio(
                [(text, name) for name, text in QUESTIONS.items()],
                value="caption",
                label="Question",
                elem_id="vote-question",
            ),
            "Question",
        )
        go = gr.Button("Next pair", variant="primary", elem_id="vote-next", scale=0, min_width=160)
    caption = gr.Markdown(elem_id="vote-caption")
    with gr.Row():
        left = picture("Left", type="pil", elem_id="vote-left", height=320)
        right = picture("Right", type="pil", elem_id="vote-right", height=320)
    with gr.Row():
        buttons = {
            answer: gr.Button(label, interactive=False, elem_id=f"vote-answer-{answer}")
            for answer, label in ANSWER_LABELS.items()
        }
    revealed = gr.Markdown(elem_id="vote-reveal")
    token = gr.Textbox(visible=False, elem_id="vote-token")  # the ballot: single use, this session's alone
    names = gr.State([])
    with gr.Accordion("Make pairs on the spot", open=False):
        prompts = gr.Textbox(
            label=f"Prompts for pairs, one a line ({GRID_SEEDS} random seeds each, the Compare tab's settings; empty: "
            "the preset's examples)",
            lines=4,
            elem_id="vote-prompts",
        )
        make = gr.Button("Make pairs", elem_id="vote-make")
        made = gr.Markdown(elem_id="vote-made")

    answers = list(buttons.values())
    for trigger, api_name in ((go.click, "next_pair"), (question.input, False)):
        # no device queue for the pair: it is read from the log (a diversity set's spread takes the device lock)
        trigger(
            conceal, None, [revealed, left, right, *answers], queue=False, api_name=False, show_progress="hidden"
        ).then(next_pair, question, [caption, left, right, token], api_name=api_name, concurrency_limit=None).success(
            ready, token, answers, api_name=False, show_progress="hidden"
        )
    for answer, button in buttons.items():
        button.click(caster(answer), token, [revealed, token, names], api_name=False, concurrency_limit=None).success(
            named, names, [left, right, *answers], api_name=False, show_progress="hidden"
        )
    gr.api(vote_api, api_name="vote", concurrency_limit=None)
    make.click(pairs, [prompts, *inputs.settings], made, api_name="make_pairs", show_progress_on=[made], **DEVICE)


def build_scores(vote: Vote, tab: gr.Tab) -> None:
    """The Results tab's section of people's votes: win rates, Bradley–Terry strengths, agreement with the judges."""

    @user_errors
    def scores():
        note, *tables = score_views(*vote.scores())
        return note, *(gr.Dataframe(t, visible=t is not None) for t in tables)

    def exporter(fmt: str):
        @user_errors
        def export(request: gr.Request = None):
            """The votes log as a file (on a public app that keeps results apart, this session's votes)."""
            return str(vote.export(vote.votes(session_voter(request)), fmt))

        return export

    def session_voter(request: gr.Request | None) -> str:
        return vote.session.voter(getattr(request, "session_hash", None))

    with gr.Accordion("People as judges: the Vote tab's scores", open=True):
        note = gr.Markdown(elem_id="vote-scores-note")
        wins = gr.Dataframe(label="Win rates", elem_id="vote-wins", wrap=True, elem_classes=FIT, visible=False)
        strength = gr.Dataframe(
            label="Bradley–Terry strengths", elem_id="vote-strengths", wrap=True, elem_classes=FIT, visible=False
        )
        agree = gr.Dataframe(
            label="People and the judges", elem_id="vote-agreement", wrap=True, elem_classes=FIT, visible=False
        )
        with gr.Row():
            refresh = gr.Button("Refresh the scores", elem_id="vote-scores-refresh", size="sm")
            to_csv = gr.Button("Export votes CSV", elem_id="export-votes-csv", size="sm")
            to_parquet = gr.Button("Export votes Parquet", elem_id="export-votes-parquet", size="sm")
        exported = gr.File(label="Votes: one row per vote", elem_id="votes-file", height=110)
    to_csv.click(exporter("csv"), None, exported, api_name="export_votes_csv", show_progress_on=[exported])
    to_parquet.click(exporter("parquet"), None, exported, api_name="export_votes_parquet", show_progress_on=[exported])
    outputs = [note, wins, strength, agree]
    refresh.click(scores, None, outputs, api_name="vote_scores", show_progress_on=[note])
    tab.select(scores, None, outputs, api_name=False, show_progress="hidden")
