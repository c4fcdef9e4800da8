"""The World tokenizer: the Rust encoder we use equals greedy longest match and the `rwkv` package."""

from __future__ import annotations

import random

import pytest

from rwkv_tui.trainer.errors import DataError
from rwkv_tui.trainer.world_tokenizer import WorldTokenizer, get_tokenizer

SAMPLES = [
    "Hello world",
    "User: What is water?\n\nAssistant: Water is a colorless liquid.",
    "广东的省会是广州，历史非常悠久。",
    "日本語のテキストとカタカナ、ひらがな。",
    "emoji 😀🎉👍🏽 and flags 🇨🇳🇺🇸 and ZWJ 👩‍👩‍👧",
    "def f(x):\n\treturn x ** 2  # comment\r\n",
    "    \n\n\n\t\t   trailing   ",
    "Ünïcödé façade naïve résumé Ελληνικά русский العربية हिन्दी",
    "\x00\x01\x7f control \u200b zero-width",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral 𠀋𡈽",
]


def random_corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()[]{}<>\n\t",
        "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经",
        "あいうえおかきくけこさしすせそアイウエオカキクケコ",
        "😀😁😂🤣😃😄😅😆😉😊🎉🔥✨🚀",
    ]
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            kind = rng.random()
            if kind < 0.85:
                pool = rng.choice(pools)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 40))))
            else:  # random code points anywhere in Unicode, surrogates excluded
                cps = [rng.randint(1, 0x10FFFF) for _ in range(rng.randint(1, 6))]
                parts.append("".join(chr(c) for c in cps if not 0xD800 <= c <= 0xDFFF))
        texts.append("".join(parts))
    return texts


@pytest.fixture(scope="module")
def tokenizers():
    return get_tokenizer(), WorldTokenizer(use_rust=False)


def test_known_ids(tokenizers):
    rust, python = tokenizers
    assert rust.backend == "rust"
    assert rust.encode("Hello world") == python.encode("Hello world") == [33155, 40213]
    assert rust.vocab_size == 65536


def test_rust_equals_greedy_longest_match_and_the_rwkv_package(tokenizers):
    rwkv_tokenizer = pytest.importorskip("rwkv.rwkv_tokenizer")
    rust, python = tokenizers
    official = rwkv_tokenizer.TRIE_TOKENIZER(str(rust.vocab_path))
    corpus = SAMPLES + random_corpus(400)
    assert sum(len(t) for t in corpus) > 20_000
    for text in corpus:
        ids = rust.encode(text)
        assert ids == python.encode(text) == official.encode(text), text[:60]
    assert rust.encode_batch(corpus[:50]) == [python.encode(t) for t in corpus[:50]]


def test_round_trip_is_exact(tokenizers):
    rust, _ = tokenizers
    for text in SAMPLES + random_corpus(100, seed=1):
        assert rust.decode(rust.encode(text)) == text


def test_decode_replaces_only_the_broken_bytes(tokenizers):
    rust, _ = tokenizers
    emoji = "😀".encode("utf-8")
    # The single-byte tokens of the emoji's first two bytes: half a character.
    half = [next(i for i in range(1, 300) if rust.token_bytes(i) == bytes([byte])) for byte in emoji[:2]]
    assert rust.decode(rust.encode("ok ") + half + rust.encode(" ok")) == "ok \ufffd ok"
    assert rust.decode_bytes(half) == emoji[:2]


def test_end_of_text_decodes_to_nothing_and_bad_ids_are_errors(tokenizers):
    rust, _ = tokenizers
    assert rust.decode([0] + rust.encode("hi") + [0]) == "hi"
    with pytest.raises(DataError, match="token id 70000"):
        rust.decode([70000])
    with pytest.raises(DataError, match="not in the World vocabulary"):
        rust.decode([65535])


def test_lone_surrogates_are_refused_clearly(tokenizers):
    for tokenizer in tokenizers:
        with pytest.raises(DataError, match="lone surrogate"):
            tokenizer.encode("bad \ud800 text")


def test_public_api():
    from rwkv_tui import trainer

    tok = trainer.tokenizer()
    assert tok.decode(tok.encode("Hello world")) == "Hello world"
