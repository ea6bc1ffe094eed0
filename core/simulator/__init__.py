"""A seeded music-search user simulator and the in-process LTR&R experiment (issue 6).

- world: the catalog as the simulator sees it (facets: genre, subgenre, playlist, decade, mood, artist);
- users: users and their four intents (spearfishing, topical, attribute, context), the generative model;
- noise: typing noise (typos, dropped words, partial titles);
- metadata: imperfect metadata, the catalog the index is built from (playlist, genre tags missing or wrong);
- listening: the listener who plays, skips or searches again on a ranked list (one user model);
- retrieval: the strategies of an index run in process, with per-query caching;
- policies: the retrieval plans compared at one candidate budget;
- runner: searches through featurize -> decide -> retrieve -> merge -> rank -> listen -> learn;
- metrics: per-search records, candidate recall, MRR@10, nDCG@10, regret against the oracle.
"""
