"""What each claim says, where the paper says it, how the lab tests it and what limits the test (the report's
words; findings.json keeps them beside the figures), and the sentence that gives each verdict its reason."""

from __future__ import annotations

from research.study.lab_models import LABELS

CLAIMS = {
    "1": {
        "title": "unCLIP's samples are more diverse",
        "source": "DALL·E 2 (Ramesh et al. 2022), Table 1, §5.2",
        "statement": "human raters preferred unCLIP's samples for diversity 70.5% of the time against GLIDE, a "
        "model conditioned on the text directly.",
        "test": 'prompts naming a colour and a shape only, so position and size are left open ("a red circle"), '
        "K seeds each; diversity over a prompt's seeds from the ground truth (entropy of the region and size the "
        "checker reads, over the images where it finds the object) and from the judge CLIP (mean pairwise cosine "
        "distance of its image embeddings); unCLIP against latent diffusion, paired by prompt.",
        "limits": "the lab's latent diffusion stands in for GLIDE (both condition on the text directly, but GLIDE "
        "denoises pixels); entropy counts only images where the checker finds the object, so a model that often "
        "draws nothing is measured on fewer images (the object-found column); the judge is a small CLIP trained on "
        "the same world, whose distances also move with colour and shape errors.",
    },
    "2": {
        "title": "guidance keeps unCLIP diverse",
        "source": "DALL·E 2, Figs. 9-11 (§5.1)",
        "statement": "as guidance rises GLIDE's samples converge while unCLIP's keep varying, and unCLIP's quality "
        "degrades less.",
        "test": "the decoder's guidance (unCLIP; its prior's stays 4) and the U-Net's (latent diffusion and Stable "
        "unCLIP) over {1, 2, 4, 8, 16}, K seeds per open prompt; both diversity measures and the accuracy of colour, "
        "shape and all attributes against guidance, one curve per model with 95% bands; the verdict reads the "
        "diversity lost from the lowest guidance to the highest, paired by prompt.",
        "limits": "the lab's models are small and trained briefly, so guidance 16 is far outside what they were "
        "tuned at; unCLIP's prior guidance is held at its default, and the paper varied both; few prompts per "
        "guidance value.",
    },
    "3": {
        "title": "the prior matters",
        "source": "DALL·E 2, §5.1 (Table 2)",
        "statement": "FID 7.99 with the diffusion prior against 16.55 when the decoder is given the text embedding "
        "in place of an image embedding (zero-shot).",
        "test": "single-object prompts; the image embedding from the prior, the caption's CLIP text embedding in its "
        "place, and the oracle: the CLIP image embedding of a true render of the caption (an upper bound of what an "
        "embedding can carry); accuracy per attribute read by the checker, for unCLIP and for Stable unCLIP.",
        "limits": "accuracy per attribute is not FID; the lab's CLIP is small, so its text and image embeddings may "
        "sit closer or farther apart than OpenAI's; one image per prompt.",
    },
    "4": {
        "title": "unCLIP binds attributes worse",
        "source": "DALL·E 2, §7, Figs. 14-15",
        "statement": 'unCLIP confuses which attribute belongs to which object ("a red cube on top of a blue cube"), '
        "and reconstructions from the CLIP image embedding swap colours, so the embedding itself loses the binding.",
        "test": "two-object prompts with two colours (the training distribution); of the images where both colours "
        "are drawn, the share where a colour sits on the wrong object, for the three models and for unCLIP and "
        "Stable unCLIP decoding the CLIP image embedding of a true render (does the embedding lose the binding?), "
        "paired by prompt and seed.",
        "limits": "the checker matches caption objects to drawn ones by shape and place, so a wrong shape can read as "
        "a wrong colour; benchmarks of the released models found the opposite (T2I-CompBench++, Huang et al., scores "
        "DALL·E 2's colour binding above Stable Diffusion 1.4's), and the lab's small CLIP may bind better or worse "
        "than OpenAI's; n counts only images with both colours drawn.",
    },
    "5": {
        "title": "latent space is cheaper",
        "source": "LDM (Rombach et al. 2022), §4.1, Table 18, Fig. 7",
        "statement": "at equal training compute, latent models sample faster at equal quality than pixel models.",
        "test": "all-correct accuracy against measured seconds per image (one-image calls, the app's case, after a "
        "warm-up; batched calls beside) and FLOPs per image (torch's FlopCounterMode over the whole call), over a "
        "range of sampling steps of unCLIP's decoder and the latent models' U-Nets, with each model's training "
        "FLOPs; the verdict asks whether latent diffusion's cheapest setting that reaches unCLIP's default accuracy "
        "(its interval's lower bound) costs less in both seconds and FLOPs.",
        "limits": "the lab's latent (16 x 16 x 4) is no smaller than unCLIP's pixel grid (16 x 16 x 3 before a "
        "super-resolution step), where SD's is 48 times smaller than its image, so the lab cannot show the saving "
        "the paper measured; unCLIP's cost also holds a prior and a super-resolution; CPU timings on a 2-core "
        "machine.",
    },
    "6": {
        "title": "the differences come from the prior",
        "source": "DALL·E 2, §3 and §5 (the CLIP latent as the source of diversity); Stable unCLIP, Kandinsky 2",
        "statement": "the two architectures differ twice, a prior over CLIP image embeddings and pixel against latent "
        "space; DALL·E 2 credits the prior's CLIP latent with unCLIP's diversity (and its binding errors).",
        "test": "the third architecture, Stable unCLIP: the lab's prior feeding a latent-diffusion U-Net conditioned "
        "on the image embedding (lab/stable_unclip.py, run by pipelines/stable_unclip.py: latent diffusion's U-Net, "
        "VAE, data and objective; unCLIP's prior; the same training FLOPs), runs claims 1-4 beside the others; each "
        "gap between unCLIP and latent diffusion is split into the prior's part (Stable unCLIP - latent diffusion) "
        "and the space's part (unCLIP - Stable unCLIP), each a paired difference with its 95% interval. Supported "
        "when every gap that is there is carried by the prior alone, contradicted when every one is carried by the "
        "space alone.",
        "limits": "Stable unCLIP conditions on the embedding through the time embedding (as Stability AI's), not as "
        "unCLIP's decoder does (extra context tokens), so the space's part also holds that difference; its U-Net "
        "got the training FLOPs left after the shared prior and VAE (72 of 96 TFLOP), fewer steps than latent "
        "diffusion's U-Net.",
    },
}


def _side(diff: dict, predicted: int) -> str:
    """Where a paired difference's interval lies, against what the paper predicts (+1: above 0, -1: below)."""
    if not diff["n"] or diff["ci_low"] is None:
        return "no pairs"
    if diff["ci_low"] > 0 or diff["ci_high"] < 0:
        return "as the paper says" if (diff["ci_low"] > 0) == (predicted > 0) else "against the paper"
    return "the interval holds 0"


GAP_NAMES = {"entropy": "ground truth", "judge_distance": "judge", "all_correct": "all correct"}


def because(claim: str, result: dict, fmt) -> str:
    """The verdict's reason in one sentence, its numbers formatted from the result (fmt(diff, pct): report.diff)."""
    if claim in ("1", "2"):
        predicted = 1 if claim == "1" else -1
        gaps = "; ".join(
            f"{GAP_NAMES[k]} {fmt(d['gap'], pct=k == 'all_correct')} ({_side(d['gap'], predicted)})"
            for k, d in result["parts"].items()
        )
        what = "diversity" if claim == "1" else "what the highest guidance loses"
        return f"unCLIP - latent diffusion, {what}: {gaps}."
    if claim == "3":
        d = result["paired_all_correct"]["unclip"]["prior_minus_text"]
        o = result["paired_all_correct"]["unclip"]["oracle_minus_prior"]
        return (
            f"unCLIP with its prior - with the text embedding, all correct: {fmt(d, pct=True)} ({_side(d, 1)}); "
            f"the oracle's embedding - the prior's: {fmt(o, pct=True)}."
        )
    if claim == "4":
        d, o = result["parts"]["gap"], result["minus_oracle"]["unclip"]
        return (
            f"unCLIP - latent diffusion, binding errors: {fmt(d, pct=True)} ({_side(d, 1)}); unCLIP from its "
            f"prior's embedding - from a true render's: {fmt(o, pct=True)}."
        )
    if claim == "5":
        c, ref = result["latent_diffusion_cheapest_reaching_it"], result["unclip_default"]
        theirs = (
            f"unCLIP's default ({ref['steps']} decoder steps: {100 * ref['accuracy']['mean']:.1f}% all correct, "
            f"{ref['seconds_per_image']:.3f} s, {ref['gflop_per_image']:.2f} GFLOP per image)"
        )
        if c is None:
            return f"no latent diffusion setting reached {theirs}."
        return (
            f"{LABELS['latent_diffusion']} at {c['steps']} steps ({100 * c['accuracy']['mean']:.1f}%, "
            f"{c['seconds_per_image']:.3f} s, {c['gflop_per_image']:.2f} GFLOP) reaches {theirs}."
        )
    carried = "; ".join(f"{row['measure']}: {row['carried_by']}" for row in result["table"])
    return f"carried by: {carried}."
