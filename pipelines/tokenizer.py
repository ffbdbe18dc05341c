"""An offline CLIP BPE tokenizer built from the merges that ship inside open_clip's wheel.

The machines that build and test this project have no model hub, yet every CLIP text encoder
(OpenAI ViT-L/14 in SD 1.x and Karlo, and our Shapes lab models) uses the same 49,408-token BPE
vocabulary. open_clip ships its merges file (`bpe_simple_vocab_16e6.txt.gz`); we derive the
vocabulary and merges a transformers `CLIPTokenizer` takes, the same way open_clip's
`SimpleTokenizer` derives its encoder, so both give the same ids.
"""

from __future__ import annotations

import functools
import gzip
import threading
import warnings
from pathlib import Path

import torch
from transformers import CLIPTokenizer

MODEL_MAX_LENGTH = 77  # CLIP's context length
NUM_MERGES = 49152 - 256 - 2  # open_clip keeps this many merges: 256 bytes, 2 specials, 49408 in all
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character table (open_clip and transformers share it)."""
    bs = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def open_clip_bpe_path() -> Path:
    import open_clip.tokenizer

    return Path(open_clip.tokenizer.default_bpe())


@functools.cache
def clip_vocab(bpe_path: Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merges derived from open_clip's gzipped merges, as `SimpleTokenizer` does."""
    lines = gzip.open(bpe_path or open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
    return {tok: i for i, tok in enumerate(tokens)}, merges


def offline_clip_tokenizer() -> CLIPTokenizer:
    """A `CLIPTokenizer` (max length 77) that needs no download.

    Up to and including the end-of-text token its ids are `open_clip.tokenize`'s, except where
    open_clip's ftfy and HTML clean-up would rewrite the text first ("&amp;", the "ﬁ" ligature)
    or a prompt spells "<|endoftext|>" itself: there it behaves as the hub's CLIP tokenizers do. It pads with
    "<|endoftext|>" as OpenAI's CLIP tokenizer in SD 1.x does, where open_clip pads with id 0 ("!"):
    a pad token of "!" would make the tokenizer treat every "!" in a prompt as padding. Pads sit
    after the end-of-text token, where CLIP's causal mask and end-of-text pooling never look.
    """
    vocab, merges = clip_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=MODEL_MAX_LENGTH)


EXCERPT_CHARS = 60  # how much of the dropped text a truncation warning quotes


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` in quotation marks, or its start and end around a count of what is left out; its line breaks shown
    as ⏎, so that a log line stays a line."""
    if len(text) <= limit:
        return _quoted(text)
    head, tail = text[: 2 * limit // 3], text[-(limit // 3) :]
    return f"{_quoted(head)} … {len(text) - len(head) - len(tail):,} more characters … {_quoted(tail)}"


def _quoted(text: str) -> str:
    return "“" + text.replace("\r\n", "⏎").replace("\n", "⏎") + "”"


# A fast tokenizer sets its padding and truncation on its one Rust object for each call: two threads calling one
# tokenizer (Stable unCLIP shares Karlo's with unCLIP, and a comparison runs them side by side) would swap settings
# mid-call and get ids of the wrong length. Tokenizing is microseconds: one call at a time in the process.
_TOKENIZING = threading.Lock()


def truncation_messages(tokenizer: CLIPTokenizer, prompts: list[str]) -> list[str | None]:
    """For each prompt, what truncation to the tokenizer's length drops (None when it fits)."""
    max_length = tokenizer.model_max_length
    messages = []
    with _TOKENIZING:
        all_ids = tokenizer(prompts, truncation=False).input_ids
    for ids in all_ids:
        if len(ids) <= max_length:
            messages.append(None)
            continue
        dropped = tokenizer.decode(ids[max_length - 1 : -1])
        messages.append(
            f"prompt is {len(ids):,} tokens but CLIP reads {max_length}; truncated, dropping "
            f"{len(ids) - max_length:,} tokens: {excerpt(dropped)}"
        )
    return messages


def tokenize(tokenizer: CLIPTokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids and boolean attention mask, (B, 77) each; warns when a prompt is truncated."""
    max_length = tokenizer.model_max_length
    with _TOKENIZING:
        inputs = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    for message in truncation_messages(tokenizer, prompts):
        if message is not None:
            warnings.warn(message, stacklevel=3)
    return inputs.input_ids, inputs.attention_mask.bool()
