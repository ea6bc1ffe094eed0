"""The lexical index's configuration: fields, scoring (BM25F or the per-field sum), BM25 parameters.

Scoring (see core.lexical.index for the full formula):
- "bm25f" (default): the fields are scored as one weighted field (BM25F, as Elasticsearch's
  combined_fields and Lucene's CombinedFieldQuery). Every field shares one vocabulary, so every
  field must use the same analyzer configuration.
- "sum": each field is scored on its own (its own vocabulary, document frequencies and average
  length) and the field scores are added, each times its field weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.analysis import AnalyzerConfig

DEFAULT_K1 = 0.9
DEFAULT_B = 0.4
DEFAULT_POPULARITY_WEIGHT = 0.0
DEFAULT_LENGTH_QUANTIZATION = "lucene"
DEFAULT_SCORING = "bm25f"
DEFAULT_PRUNING = True
QUANTIZATIONS = ("lucene", "exact")
SCORINGS = ("bm25f", "sum")
RUN_TIME_OPTIONS = ("k1", "b", "popularity_weight", "pruning")


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    """One indexed text field: its weight and its analyzer."""

    name: str
    weight: float = 1.0
    analyzer: AnalyzerConfig = field(default_factory=AnalyzerConfig)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("field `name` must not be empty")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"field {self.name!r}: `weight` must be finite and > 0, but got {self.weight}")


@dataclass(frozen=True, kw_only=True)
class LexicalConfig:
    """fields: empty = every text field of the catalog with weight 1.
    scoring: "bm25f" (one weighted field; every field must share one analyzer) or "sum".
    pruning: True = block-max pruned top-k (exact, counts only the documents it scored);
    False = the exhaustive kernel (exact count), for reference.
    length_quantization: "lucene" stores document lengths as Lucene does (one byte, exact below 24,
    four significant bits above), so scores match Lucene/Anserini; "exact" keeps them exact."""

    fields: tuple[FieldSpec, ...] = ()
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    popularity_weight: float = DEFAULT_POPULARITY_WEIGHT
    length_quantization: str = DEFAULT_LENGTH_QUANTIZATION
    scoring: str = DEFAULT_SCORING
    pruning: bool = DEFAULT_PRUNING

    def __post_init__(self) -> None:
        if not (math.isfinite(self.k1) and self.k1 >= 0):
            raise ValueError(f"`k1` must be finite and >= 0, but got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ValueError(f"`b` must be in [0, 1], but got {self.b}")
        if not (math.isfinite(self.popularity_weight) and self.popularity_weight >= 0):
            raise ValueError(f"`popularity_weight` must be finite and >= 0, but got {self.popularity_weight}")
        if self.length_quantization not in QUANTIZATIONS:
            raise ValueError(f"`length_quantization` must be one of {QUANTIZATIONS}, "
                             f"but got {self.length_quantization!r}")
        if self.scoring not in SCORINGS:
            raise ValueError(f"`scoring` must be one of {SCORINGS}, but got {self.scoring!r}")
        if not isinstance(self.pruning, bool):
            raise ValueError(f"`pruning` must be a bool, but got {self.pruning!r}")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"`fields` must not repeat a name, but got {names}")
        if self.scoring == "bm25f" and len({f.analyzer for f in self.fields}) > 1:
            described = "; ".join(f"{f.name}: {f.analyzer.to_dict()}" for f in self.fields)
            raise ValueError("`scoring` 'bm25f' scores the fields as one and needs one analyzer configuration "
                             f"for every field, but got {described} (use the same analyzer or scoring 'sum')")

    def groups(self) -> tuple[tuple[int, ...], ...]:
        """The vocabulary groups, as field indices: one group of every field under BM25F, one group
        per field under the sum."""
        if not self.fields:
            return ()
        if self.scoring == "bm25f":
            return (tuple(range(len(self.fields))),)
        return tuple((f,) for f in range(len(self.fields)))

    @classmethod
    def from_options(cls, options: Mapping[str, Any], text_fields: Sequence[str] = ()) -> LexicalConfig:
        """From CLI-style options: fields ("title^2,artist"; empty: every name in `text_fields`
        with weight 1), stemmer, stopwords, k1, b, popularity_weight, length_quantization,
        scoring, pruning."""
        analyzer = AnalyzerConfig(stemmer=options.get("stemmer") or AnalyzerConfig.stemmer,
                                  stopwords=options.get("stopwords") or AnalyzerConfig.stopwords)
        spec = parse_fields(options.get("fields") or "") or [(name, 1.0) for name in text_fields]
        return cls(fields=tuple(FieldSpec(name=n, weight=w, analyzer=analyzer) for n, w in spec),
                   k1=float(options.get("k1", DEFAULT_K1)), b=float(options.get("b", DEFAULT_B)),
                   popularity_weight=float(options.get("popularity_weight", DEFAULT_POPULARITY_WEIGHT)),
                   length_quantization=str(options.get("length_quantization", DEFAULT_LENGTH_QUANTIZATION)),
                   scoring=str(options.get("scoring", DEFAULT_SCORING)),
                   pruning=parse_flag(options.get("pruning", DEFAULT_PRUNING)))

    def to_params(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "popularity_weight": self.popularity_weight,
                "length_quantization": self.length_quantization, "scoring": self.scoring, "pruning": self.pruning,
                "fields": [{"name": f.name, "weight": f.weight, "analyzer": f.analyzer.to_dict()}
                           for f in self.fields]}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> LexicalConfig:
        fields = tuple(FieldSpec(name=f["name"], weight=f["weight"], analyzer=AnalyzerConfig(**f["analyzer"]))
                       for f in params["fields"])
        return cls(fields=fields, k1=params["k1"], b=params["b"], popularity_weight=params["popularity_weight"],
                   length_quantization=params["length_quantization"], scoring=params["scoring"],
                   pruning=params["pruning"])

    def describe(self) -> dict[str, str]:
        return {"k1": str(self.k1), "b": str(self.b), "popularity_weight": str(self.popularity_weight),
                "length_quantization": self.length_quantization, "scoring": self.scoring,
                "pruning": str(self.pruning).lower(),
                "fields": ",".join(f"{f.name}^{f.weight:g}" for f in self.fields),
                "stemmer": ",".join(sorted({f.analyzer.stemmer for f in self.fields}))}


def run_time_params(params: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The stored params with this process's run-time overrides (k1, b, popularity_weight, pruning)."""
    out = dict(params)
    for key in RUN_TIME_OPTIONS:
        if key in options:
            out[key] = parse_flag(options[key]) if key == "pruning" else float(options[key])
    return out


def parse_flag(value: Any) -> bool:
    """A boolean option given as a bool or as CLI text ("false", "0", "no" and "off" are false)."""
    return value if isinstance(value, bool) else str(value).strip().lower() not in ("false", "0", "no", "off", "")


def parse_fields(spec: str) -> list[tuple[str, float]]:
    """"title^2,artist^1.5,album" -> [("title", 2.0), ("artist", 1.5), ("album", 1.0)]."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition("^")
        try:
            out.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"bad field weight in {part!r}; expected NAME or NAME^WEIGHT") from None
    return out

