"""The Sweep tab's grid picture: the app's sweep drawn by comparisons.grid as its batches land, a PNG in the results
folder (the one place the app serves files from) carrying the sweep's parameters.

The tab polls each second: a grid is drawn again only when a batch has landed or the axes change, since its file
is named by the sweep, the axes and the images done, and an earlier one of the same sweep and axes is removed.
"""

from __future__ import annotations

from pathlib import Path

from comparisons.app.session import Session
from comparisons.grid import draw_grid
from comparisons.sweep import grid_spec, rows_of
from pipelines import registry

GRIDS = "grids"  # the results folder's grid pictures


def sweep_grid(session: Session, rows: str | None = "prompt", columns: str | None = "seed") -> tuple[Path | None, str]:
    """The session's sweep as a grid PNG (rows × columns; placeholders for images not made yet) and a line saying
    what it shows; (None, why) when there is no sweep or the axes cannot make a grid."""
    status = session.sweep
    if status is None or not status.jobs:
        return None, "No sweep yet: its grid fills in here as batches land."
    try:
        spec = grid_spec(list(status.jobs), rows or "prompt", columns or "seed", run_id=status.run_id)
    except ValueError as err:
        return None, f"No grid: {err}."
    folder = session.results_dir / GRIDS
    stem = f"{status.run_id}-{spec.rows}-by-{spec.columns}"
    path = folder / f"{stem}-{status.done}.png"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        draw_grid(rows_of(session.runs(), list(status.jobs)), spec).save(path)
        for old in folder.glob(f"{stem}-*.png"):
            if old != path:
                old.unlink(missing_ok=True)
    n_rows, n_columns = spec.shape
    names = " | ".join(registry.get(a).short for a in spec.architectures)
    to_come = "; grey cells are still to come" if status.done < status.total else ""
    return path, (
        f"Grid of sweep {status.run_id}: {n_rows} rows ({spec.rows}) × {n_columns} columns "
        f"({', '.join(spec.column_axes)}), each cell {names}; {status.done}/{status.total} images made{to_come}."
    )
