"""Norm codes and tables (core.lexical.norms): Lucene's one-byte norm, SmallFloat.intToByte4 /
byte4ToInt, and the table lookup the kernels do in place of a float per document."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.lexical.index import lucene_length
from core.lexical.norms import inv_norms, lucene_code, lucene_code_length, norm_codes, norm_table

# (length, SmallFloat.intToByte4(length), SmallFloat.byte4ToInt of that code). The decoded values
# are Lucene's; the codes are worked by hand from Lucene's source (NUM_FREE_VALUES = 24, then
# longToInt4: (shift + 1) << 3 | the three bits after the leading one), e.g. 100: 76 = 0b1001100,
# shift 3, code 24 + (4 << 3 | 0b001) = 57.
SMALLFLOAT = [
    (0, 0, 0), (1, 1, 1), (23, 23, 23), (24, 24, 24), (31, 31, 31), (32, 32, 32), (40, 40, 40), (41, 40, 40),
    (100, 57, 96), (1000, 87, 984), (5000, 105, 4632), (2**31 - 1, 255, 2013265944),
]


@pytest.mark.parametrize(("length", "lucene"), [
    (0, 0), (1, 1), (23, 23), (24, 24), (40, 40), (41, 40), (100, 96), (1000, 984), (5000, 4632),
])
def test_lucene_length_matches_smallfloat(length: int, lucene: int) -> None:
    """Expected values from Lucene's SmallFloat.byte4ToInt(SmallFloat.intToByte4(length))."""
    assert lucene_length(np.array([length]))[0] == lucene


@pytest.mark.parametrize(("length", "code", "decoded"), SMALLFLOAT)
def test_lucene_code_matches_smallfloat(length: int, code: int, decoded: int) -> None:
    assert lucene_code(np.array([length]))[0] == code
    assert lucene_code_length(np.array([code]))[0] == decoded


def test_every_code_decodes_to_lucene_length() -> None:
    lengths = np.concatenate([np.arange(300_000), np.array([2**20 - 1, 2**20, 2**30 + 12345, 2**31 - 1])])
    codes = lucene_code(lengths)
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(lucene_code_length(codes), lucene_length(lengths))
    assert np.all(np.diff(codes.astype(np.int64)) >= 0)  # monotone: longer never codes lower


def test_each_code_is_the_code_of_the_length_it_decodes_to() -> None:
    codes = np.arange(256)
    np.testing.assert_array_equal(lucene_code(lucene_code_length(codes)), codes)


@pytest.mark.parametrize("bad", [-1, 2**31])
def test_lucene_code_refuses_lengths_outside_a_java_int(bad: int) -> None:
    with pytest.raises(ValueError, match=r"`lengths` must be in \[0, 2147483647\]"):
        lucene_code(np.array([3, bad]))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_fields=st.integers(1, 3), top=st.sampled_from([1, 30, 300, 70_000, 10**6]),
       b=st.sampled_from([0.0, 0.4, 0.75, 1.0]), quantization=st.sampled_from(["lucene", "exact"]))
def test_table_at_code_is_inv_norm_bit_for_bit(seed: int, n_fields: int, top: int, b: float,
                                               quantization: str) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, top, size=(n_fields, 500)).astype(np.uint32)
    avgdl = lengths.sum(axis=1) / np.maximum((lengths > 0).sum(axis=1), 1)
    code = norm_codes(lengths, quantization)
    table = norm_table(avgdl, b, quantization, code)
    assert code.dtype == (np.uint8 if quantization == "lucene" else np.min_scalar_type(int(lengths.max())))
    assert table.dtype == np.float32 and table.shape[0] == n_fields
    got = np.take_along_axis(table, code.astype(np.int64), axis=1)
    np.testing.assert_array_equal(got.view(np.uint32), inv_norms(lengths, avgdl, b, quantization).view(np.uint32))
    # and against the formula itself, where the field is not empty
    length = (lucene_length(lengths) if quantization == "lucene" else lengths).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        formula = (1.0 / (1.0 - b + b * length / avgdl[:, None])).astype(np.float32)
    held = lengths > 0
    np.testing.assert_array_equal(got[held], formula[held])
    assert np.all(got[~held] == 0)
