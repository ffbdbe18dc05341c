"""The offline CLIP tokenizer against open_clip's, which reads the same BPE merges."""

import threading
import warnings

import open_clip
import pytest
import torch

from pipelines.tiny import VOCAB_SIZE
from pipelines.tokenizer import MODEL_MAX_LENGTH, offline_clip_tokenizer, tokenize, truncation_messages

START, END = 49406, 49407  # <|startoftext|>, <|endoftext|>: the last two ids of the vocabulary

TEXTS = {
    "plain": "a photo of a cat",
    "exclamations": "wow! a red square!!! really?!",  # "!" is id 0, open_clip's padding
    "punctuation": "dogs, cats; birds: (fish) [frogs] {ants} -- \"quoted\" 'single' ... 3.14 $5 #1 @me 100%",
    "contractions": "it's they're I'm we'll you've she'd can't",
    "accents": "café naïve résumé Ångström façade",
    "emoji": "a 🐱 riding a 🚀 👍🏽",
    "cjk": "東京タワーの写真 北京 서울",
    "mixed-case": "A Red SQUARE above a bLuE circle",
    "multiple-spaces": "a    red \t\t square \n\n above   a circle",
    "digits": "1234567890 and 2024-01-01",
    "empty": "",
    "long": "the quick brown fox jumps over the lazy dog " * 10 + "zebra",  # 91 words, over 77 tokens
}


@pytest.fixture(scope="module")
def tokenizer():
    return offline_clip_tokenizer()


def test_vocabulary_is_clip_s(tokenizer):
    assert len(tokenizer) == tokenizer.vocab_size == VOCAB_SIZE == 49408
    assert tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [START, END]
    assert tokenizer.model_max_length == MODEL_MAX_LENGTH == 77


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_ids_equal_open_clip_s_up_to_the_end_token(tokenizer, text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long text warns; test_long_text_* checks that
        ids, mask = tokenize(tokenizer, [text])
    reference = open_clip.tokenize([text])[0]  # (77,), padded with 0

    assert ids.shape == mask.shape == (1, 77) and mask.dtype == torch.bool
    ids, mask = ids[0], mask[0]
    assert torch.equal(mask, reference != 0), "the mask must cover exactly open_clip's non-padding ids"
    assert torch.equal(ids[mask], reference[mask])
    # after the end token we pad with <|endoftext|>, where open_clip pads with 0
    assert (ids[~mask] == END).all()
    assert ids[0] == START and ids[mask][-1] == END


def test_batch_tokenizes_each_text_as_alone(tokenizer):
    texts = [TEXTS["plain"], TEXTS["exclamations"], TEXTS["empty"]]
    ids, mask = tokenize(tokenizer, texts)
    for i, text in enumerate(texts):
        alone_ids, alone_mask = tokenize(tokenizer, [text])
        assert torch.equal(ids[i], alone_ids[0]) and torch.equal(mask[i], alone_mask[0])


def test_long_text_warns_and_keeps_the_first_75_tokens(tokenizer):
    text = TEXTS["long"]
    with pytest.warns(UserWarning, match="truncated") as record:
        ids, mask = tokenize(tokenizer, [text])
    assert "zebra" in str(record[0].message)  # what was dropped
    assert mask.all()
    full = tokenizer(text).input_ids
    assert ids[0].tolist() == full[:76] + [END]


def test_short_text_does_not_warn(tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize(tokenizer, [TEXTS["plain"], "word " * 75])  # 75 words + start + end: exactly 77


def test_one_tokenizer_called_from_threads_at_once_gives_every_call_its_own_settings():
    """Stable unCLIP shares Karlo's tokenizer with unCLIP and a comparison runs them side by side: a fast tokenizer's
    padding is set on its one object per call, and two threads once swapped it mid-call (ids of 5 tokens, not 77)."""
    tokenizer = offline_clip_tokenizer()
    long = " ".join(["red"] * 100)
    failures = []

    def work(i: int) -> None:
        for _ in range(100):
            try:
                ids, mask = tokenize(tokenizer, ["a red circle", f"a blue square {i}"])
                assert ids.shape == mask.shape == (2, 77)
                assert truncation_messages(tokenizer, ["a red circle", long])[0] is None
            except Exception as err:  # noqa: BLE001 - collected, asserted below
                failures.append(repr(err))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
