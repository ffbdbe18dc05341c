"""Every tab's backend, built from one session in one place and the same way: `Backends.of(session)`, what `app.py`
hands its screens (comparisons.app.ui, one module per tab). Each backend is Gradio-free and takes raw widget values;
the session below them loads and switches the models and hands out what they share.
"""

from __future__ import annotations

from dataclasses import dataclass

from comparisons.app.compare import Compare
from comparisons.app.findings import Findings
from comparisons.app.image_in import ImageIn
from comparisons.app.inside import Inside
from comparisons.app.latent_space import LatentSpace
from comparisons.app.results import Results
from comparisons.app.session import Session
from comparisons.app.sweep import Sweep
from comparisons.app.vote import Vote


@dataclass(frozen=True)
class Backends:
    """The session, and one backend per tab, in the page's order."""

    session: Session  # the models, loaded and switched (the header's status line and Models picker)
    compare: Compare
    image_in: ImageIn
    inside: Inside
    latent_space: LatentSpace
    sweep: Sweep
    vote: Vote
    results: Results
    findings: Findings

    @classmethod
    def of(cls, session: Session) -> Backends:
        return cls(
            session,
            Compare(session),
            ImageIn(session),
            Inside(session),
            LatentSpace(session),
            Sweep(session),
            Vote(session),
            Results(session),
            Findings(),
        )
