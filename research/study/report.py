"""The study's findings: REPORT.md (per claim: the paper's statement, the lab's figures with n and 95% intervals,
a verdict and what limits it), one PNG plot per claim, and every number as JSON (findings.json).

Every figure in the report is formatted from the JSON, so the report holds no number the JSON does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from lab.stable_unclip import NAME as STABLE_UNCLIP  # noqa: E402
from research.study.lab_models import LABELS, LATENT_DIFFUSION, MODELS, UNCLIP  # noqa: E402
from research.study.texts import CLAIMS  # noqa: E402

REPORT, FINDINGS = "REPORT.md", "findings.json"
COLOURS = {UNCLIP: "tab:blue", LATENT_DIFFUSION: "tab:orange", STABLE_UNCLIP: "tab:green"}


def _missing(x: float | None) -> bool:
    return x is None or x != x  # None or NaN


def pct(x: float | None) -> str:
    return "-" if _missing(x) else f"{100 * x:.1f}%"


def num(x: float | None, digits: int = 3) -> str:
    return "-" if _missing(x) else f"{x:.{digits}f}"


def ci(stat: dict | None, fmt=pct) -> str:
    """ "value [low, high]" of a {mean, low, high} figure; a proportion (it has k) also shows its n."""
    if stat is None:
        return "-"
    n = f" (n {stat['n']})" if "k" in stat else ""
    return f"{fmt(stat['mean'])} [{fmt(stat['low'])}, {fmt(stat['high'])}]{n}"


def diff(d: dict, fmt=num) -> str:
    """A paired difference: "mean [low, high], n pairs"."""
    if not d["n"]:
        return "no pairs"
    return f"{fmt(d['mean_diff'])} [{fmt(d['ci_low'])}, {fmt(d['ci_high'])}], n = {d['n']}"


def label(arch: str) -> str:
    model, _, variant = arch.partition("/")
    name = LABELS.get(model, model)
    return {"": name, "text": f"{name}, text embedding", "oracle": f"{name}, oracle embedding"}[variant]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


# ----------------------------------------------------------------------------- per claim: lines of the report


def _parts_rows(name: str, parts: dict, fmt=num) -> list[str]:
    return [name, diff(parts["gap"], fmt), diff(parts["prior_part"], fmt), diff(parts["space_part"], fmt)]


PARTS_HEADER = [
    "measure",
    "unCLIP - latent diffusion",
    "prior's part (Stable unCLIP - LD)",
    "space's part (unCLIP - Stable unCLIP)",
]


def lines_1(r: dict) -> list[str]:
    rows = [
        [
            label(m),
            ci(r["per_model"][m]["entropy"], num),
            ci(r["per_model"][m]["region_entropy"], num),
            ci(r["per_model"][m]["size_entropy"], num),
            ci(r["per_model"][m]["judge_distance"], num),
            ci(r["object_found"][m]),
        ]
        for m in MODELS
    ]
    header = ["model", "entropy of (region, size), bits", "region", "size", "judge distance", "object found"]
    out = _table(header, rows) + ["", "Paired by prompt:", ""]
    return out + _table(
        PARTS_HEADER,
        [
            _parts_rows("entropy, bits", r["parts"]["entropy"]),
            _parts_rows("judge distance", r["parts"]["judge_distance"]),
        ],
    )


def lines_2(r: dict) -> list[str]:
    header = ["model", "guidance", "entropy, bits", "judge distance", "colour", "shape", "all correct"]
    rows = [
        [
            label(m),
            num(p["guidance"], 1),
            ci(p["entropy"], num),
            ci(p["judge_distance"], num),
            ci(p["accuracy colour"]),
            ci(p["accuracy shape"]),
            ci(p["accuracy all correct"]),
        ]
        for m in MODELS
        for p in r["curves"][m]
    ]
    lost = (
        "Lost at the highest guidance, paired by prompt: diversity from the lowest guidance, all correct from "
        f"{r['quality_from']:.1f}:"
    )
    parts = [
        _parts_rows("entropy, bits", r["parts"]["entropy"]),
        _parts_rows("judge distance", r["parts"]["judge_distance"]),
        _parts_rows("all correct", r["parts"]["all_correct"], pct),
    ]
    return _table(header, rows) + ["", lost, ""] + _table(PARTS_HEADER, parts)


def lines_3(r: dict) -> list[str]:
    names = list(next(iter(r["accuracy"].values())))
    rows = [[label(a)] + [ci(acc[k]) for k in names] for a, acc in r["accuracy"].items()]
    out = _table(["model, image embedding from", *names], rows) + ["", "All correct, paired by prompt and seed:", ""]
    paired_rows = []
    for m, d in r["paired_all_correct"].items():
        paired_rows.append([label(m), diff(d["prior_minus_text"], pct), diff(d["oracle_minus_prior"], pct)])
    return out + _table(["model", "prior - text embedding", "oracle - prior"], paired_rows)


def lines_4(r: dict) -> list[str]:
    names = list(next(iter(r["accuracy"].values())))
    rows = [[label(a), ci(r["binding_error"][a])] + [ci(acc[k]) for k in names] for a, acc in r["accuracy"].items()]
    n_note = "binding errors: of the images with both colours drawn, the share with a colour on the wrong object"
    out = _table(["model", "binding errors", *names], rows) + ["", n_note + "; paired by prompt and seed:", ""]
    out += _table(PARTS_HEADER, [_parts_rows("binding errors", r["parts"], pct)])
    oracle = [[label(m), diff(d, pct)] for m, d in r["minus_oracle"].items()]
    return out + ["", *_table(["model", "binding errors: prior's embedding - true render's"], oracle)]


def lines_5(r: dict) -> list[str]:
    rows = [
        [
            label(m),
            str(p["steps"]),
            ci(p["accuracy"]),
            ci(p["shape"]),
            num(p["seconds_per_image"]),
            num(p["batched_seconds_per_image"]),
            num(p["gflop_per_image"], 2),
        ]
        for m, points in r["points"].items()
        for p in points
    ]
    header = ["model", "steps", "all correct", "shape", "s / image (batch 1)", "s / image (batched)", "GFLOP / image"]
    train = [[label(m), num(t, 1)] for m, t in r["training_tflop"].items()]
    return _table(header, rows) + ["", *_table(["model", "training TFLOP (the shared CLIP apart)"], train)]


def lines_6(r: dict) -> list[str]:
    rows = []
    for row in r["table"]:
        fmt = pct if row["percent"] else num
        rows.append([f"{row['claim']}: {row['measure']}", *_parts_rows("", row, fmt)[1:], row["carried_by"]])
    return _table([*PARTS_HEADER, "carried by"], rows)


LINES = {"1": lines_1, "2": lines_2, "3": lines_3, "4": lines_4, "5": lines_5, "6": lines_6}


# ----------------------------------------------------------------------------- plots


def _errorbar(ax, x, stats, **kw):
    mean = [s["mean"] if s else float("nan") for s in stats]
    low = [s["mean"] - s["low"] if s else 0 for s in stats]
    high = [s["high"] - s["mean"] if s else 0 for s in stats]
    ax.errorbar(x, mean, yerr=[low, high], fmt="o", capsize=4, **kw)


def plot_1(r: dict, ax_row) -> None:
    for ax, key, title in zip(
        ax_row, ("entropy", "judge_distance"), ("entropy of (region, size), bits", "judge distance")
    ):
        for i, m in enumerate(MODELS):
            _errorbar(ax, [i], [r["per_model"][m][key]], color=COLOURS[m])
        ax.set_xticks(range(len(MODELS)), [LABELS[m] for m in MODELS], fontsize=8)
        ax.set_title(title, fontsize=9)


def plot_2(r: dict, ax_row) -> None:
    keys = (
        ("entropy", "entropy, bits"),
        ("judge_distance", "judge distance"),
        ("accuracy all correct", "all correct"),
    )
    for ax, (key, title) in zip(ax_row, keys):
        for m in MODELS:
            pts = r["curves"][m]
            g = [p["guidance"] for p in pts]
            mean = [p[key]["mean"] if p[key] else float("nan") for p in pts]
            ax.plot(g, mean, "o-", color=COLOURS[m], label=LABELS[m])
            ax.fill_between(
                g, [p[key]["low"] for p in pts], [p[key]["high"] for p in pts], color=COLOURS[m], alpha=0.2
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("guidance (unCLIP: decoder's)")
        ax.set_title(title, fontsize=9)
    ax_row[0].legend(fontsize=7)


def plot_3(r: dict, ax_row) -> None:
    archs = list(r["accuracy"])
    names = [k for k in next(iter(r["accuracy"].values()))]
    width = 0.8 / len(archs)
    ax = ax_row[0]
    for j, a in enumerate(archs):
        _errorbar(ax, [i + j * width for i in range(len(names))], [r["accuracy"][a][k] for k in names], label=label(a))
    ax.set_xticks([i + 0.4 for i in range(len(names))], names, fontsize=8)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=6)


def plot_4(r: dict, ax_row) -> None:
    ax = ax_row[0]
    archs = list(r["binding_error"])
    _errorbar(ax, range(len(archs)), [r["binding_error"][a] for a in archs])
    ax.set_xticks(range(len(archs)), [label(a).replace(", ", ",\n") for a in archs], fontsize=7)
    ax.set_ylabel("binding errors (share of images with both colours)")


def plot_5(r: dict, ax_row) -> None:
    for ax, key, title in zip(
        ax_row, ("seconds_per_image", "gflop_per_image"), ("seconds per image (batch 1)", "GFLOP per image")
    ):
        for m, pts in r["points"].items():
            x = [p[key] for p in pts]
            ax.plot(x, [p["accuracy"]["mean"] for p in pts], "o-", color=COLOURS[m], label=LABELS[m])
            ax.fill_between(
                x,
                [p["accuracy"]["low"] for p in pts],
                [p["accuracy"]["high"] for p in pts],
                color=COLOURS[m],
                alpha=0.2,
            )
            for p in pts:
                ax.annotate(str(p["steps"]), (p[key], p["accuracy"]["mean"]), fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("all correct")
    ax_row[0].legend(fontsize=7)


def plot_6(r: dict, ax_row) -> None:
    ax = ax_row[0]
    rows = [row for row in r["table"] if all(row[k]["n"] for k in ("gap", "prior_part", "space_part"))]
    for j, (key, colour) in enumerate((("gap", "black"), ("prior_part", "tab:green"), ("space_part", "tab:purple"))):
        y = [i + 0.25 * (j - 1) for i in range(len(rows))]
        mean = [row[key]["mean_diff"] for row in rows]
        err = [
            [row[key]["mean_diff"] - row[key]["ci_low"] for row in rows],
            [row[key]["ci_high"] - row[key]["mean_diff"] for row in rows],
        ]
        ax.errorbar(mean, y, xerr=err, fmt="o", color=colour, capsize=3, label=key.replace("_", " "))
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_yticks(range(len(rows)), [f"{row['claim']}: {row['measure']}" for row in rows], fontsize=7)
    ax.legend(fontsize=7)


PLOTS = {"1": (plot_1, 2), "2": (plot_2, 3), "3": (plot_3, 1), "4": (plot_4, 1), "5": (plot_5, 2), "6": (plot_6, 1)}


def plot(claim: str, result: dict, path: Path) -> None:
    draw, panels = PLOTS[claim]
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels if panels > 1 else 8, 3.6), squeeze=False)
    draw(result, list(axes[0]))
    fig.suptitle(f"Claim {claim}: {CLAIMS[claim]['title']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- the report


def sizes(result: dict) -> str:
    """The claim's sample sizes in words; claim 6 reuses claims 1, 2 and 4's."""
    if "n" not in result:
        return "those of claims 1, 2 and 4; each difference's pairs beside it."
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["n"].items()) + "."


def verdict_table(findings: dict) -> list[str]:
    rows = [
        [
            f"{c}. {CLAIMS[c]['title']}",
            CLAIMS[c]["source"],
            f"**{findings['claims'][c]['verdict']}**",
            findings["claims"][c]["because"],
        ]
        for c in findings["claims"]
    ]
    return _table(["claim", "paper", "verdict in the lab", "why"], rows)


def render(findings: dict) -> str:
    meta = findings["meta"]
    out = [
        "# Findings of the Shapes lab",
        "",
        f"`python -m research.study{' --quick' if meta['quick'] else ''}`, {meta['date']}, {meta['device']}, "
        f"{num(meta['wall_minutes'], 1)} min; every number below is in [{FINDINGS}]({FINDINGS}). 95% intervals: "
        f"Wilson for proportions, bootstrap ({meta['n_boot']:,} resamples) for means and paired differences.",
        "",
        *verdict_table(findings),
    ]
    for c, result in findings["claims"].items():
        text = CLAIMS[c]
        out += [
            "",
            f"## {c}. {text['title']}",
            "",
            f"**Paper.** {text['source']}: {text['statement']}",
            "",
            f"**Lab test.** {text['test']}",
            "",
            f"**n.** {sizes(result)}",
            "",
            *LINES[c](result),
            "",
            f"![claim {c}]({result['plot']})",
            "",
            f"**Verdict: {result['verdict']}.** {result['because']}",
            "",
            f"**Limits.** {text['limits']}",
        ]
    return "\n".join(out) + "\n"


def write(findings: dict, out: Path) -> Path:
    """findings.json, one PNG per claim and REPORT.md under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for c, result in findings["claims"].items():
        result["plot"] = f"claim{c}.png"
        plot(c, result, out / result["plot"])
    findings["texts"] = {c: CLAIMS[c] for c in findings["claims"]}
    (out / FINDINGS).write_text(json.dumps(findings, indent=1) + "\n")
    (out / REPORT).write_text(render(findings))
    return out / REPORT
