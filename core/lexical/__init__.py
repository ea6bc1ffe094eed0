"""The lexical strategy: BM25 (Lucene variant) over Roaring-bitmap postings, scored by Numba kernels."""
