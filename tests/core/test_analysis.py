from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.analysis import Analyzer, AnalyzerConfig, normalize, text_key, tokenize


@pytest.mark.parametrize(("text", "expected"), [
    ("Beyoncé", "beyonce"),
    ("STRASSE Straße", "strasse strasse"),
    ("\uff46\uff55\uff4c\uff4c\u3000\uff57\uff49\uff44\uff54\uff48", "full width"),  # NFKC: full-width forms
    ("ﬁnal", "final"),  # ligature
    ("Ḿötley Crüe", "motley crue"),
])
def test_normalize_folds_unicode_case_and_accents(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_accent_folding_can_be_turned_off() -> None:
    assert normalize("Beyoncé", fold_accents=False) == "beyoncé"


@pytest.mark.parametrize(("text", "expected"), [
    ("don't stop", ["don't", "stop"]),
    ("the beatles's song", ["the", "beatles", "song"]),  # possessive removed
    ("u.s.a. 1,000 1.5mg", ["u.s.a", "1,000", "1.5mg"]),  # UAX#29-like joins
    ("5-ht (serotonin)", ["5", "ht", "serotonin"]),
    ("", []),
])
def test_tokenize_like_lucene_standard_tokenizer(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


def test_default_analyzer_is_lucene_english_with_porter() -> None:
    assert Analyzer()("The Running Dogs of the City") == ["run", "dog", "citi"]


def test_analyzer_without_stopwords_or_stemming_keeps_words() -> None:
    a = Analyzer(AnalyzerConfig(stopwords="none", stemmer="none"))
    assert a("The Running Dogs") == ["the", "running", "dogs"]


def test_long_tokens_are_dropped() -> None:
    a = Analyzer(AnalyzerConfig(max_token_chars=5, stemmer="none"))
    assert a("short loooooong") == ["short"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"stemmer": "klingon"}, "stemmer"),
    ({"stopwords": "french-ish"}, "stopwords"),
    ({"max_token_chars": 0}, "max_token_chars"),
])
def test_bad_analyzer_config_names_the_field(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AnalyzerConfig(**kwargs)  # type: ignore[arg-type]


@given(st.text(max_size=200))
def test_analysis_is_idempotent_on_its_own_output_without_stemming(text: str) -> None:
    a = Analyzer(AnalyzerConfig(stemmer="none", stopwords="none"))
    terms = a(text)
    assert a(" ".join(terms)) == terms


@pytest.mark.parametrize(("text", "expected"), [
    ("  Taylor   SWIFT! ", "taylor swift"),
    ("taylor swift", "taylor swift"),
    ("Beyoncé", "beyonce"),
    ("The Beatles's  Song", "the beatles song"),  # stop words kept, possessive dropped, no stemming
    ("\uff2c\uff4f\uff56\uff45 Story", "love story"),  # NFKC: full-width forms
    ("Running (Remix) - 2011", "running remix 2011"),
    ("!!!", ""),
    ("", ""),
])
def test_text_key_examples(text: str, expected: str) -> None:
    assert text_key(text) == expected


@given(st.text(max_size=200))
def test_text_key_is_the_default_normalise_and_tokenise_joined_by_single_spaces(text: str) -> None:
    """Guards the merge of the three copies (attribute vocabulary key_of, memory query_key, ranking
    title_key) into text_key: keys written to indexes and histories before must not change."""
    key = text_key(text)
    assert key == " ".join(tokenize(normalize(text)))
    assert key == " ".join(Analyzer(AnalyzerConfig(stemmer="none", stopwords="none"))(text))
    assert text_key(key) == key and "  " not in key and key == key.strip()
