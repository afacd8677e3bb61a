"""The project data directory's layout (README, "The data directory") and the reads and atomic
writes every stage shares: splits, titles, candidate lists, score files. No Dagster here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from models.core.files import file_sha256, write_parquet_atomic


class MissingArtifact(FileNotFoundError):
    """An upstream artifact is not there: the message says which asset to materialize first."""


@dataclass(frozen=True)
class Workspace:
    root: Path

    def dir(self, *parts: str) -> Path:
        path = Path(self.root).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def domain(self, domain: str, *parts: str) -> Path:
        return self.dir("domains", domain, *parts)

    @property
    def models_dir(self) -> Path:
        return self.dir("models")

    def split_path(self, domain: str) -> Path:
        return self.domain(domain) / "split.parquet"

    def cf_path(self, domain: str, model: str) -> Path:
        return self.domain(domain, "cf") / f"{model}.npz"

    def scores_path(self, domain: str, family: str) -> Path:
        return self.domain(domain, "scores") / f"{family}.parquet"

    def adapter_dir(self, kind: str, domain: str | None = None) -> Path:
        """adapters/base_spirit, or adapters/ingredient/<domain>: the training folder (the PEFT adapter is in adapter/)."""
        return self.dir("adapters", kind) if domain is None else self.dir("adapters", kind, domain)

    def cocktail_dir(self, domain: str) -> Path:
        return self.dir("models", "cocktail", domain)

    def collm_dir(self, domain: str, method: str | None = None) -> Path:
        return self.dir("adapters", "collm", domain) if method is None else self.dir("adapters", "collm", domain, method)

    def reports_dir(self, domain: str | None = None, *parts: str) -> Path:
        return self.dir("reports") if domain is None else self.dir("reports", domain, *parts)

    def require(self, path: Path, asset: str, domain: str | None = None) -> Path:
        if not Path(path).exists():
            raise MissingArtifact(f"{path} is missing: materialize {asset}"
                                  + (f" for domain {domain!r}" if domain else "") + " first")
        return Path(path)

    def read_split(self, domain: str) -> pl.DataFrame:
        return pl.read_parquet(self.require(self.split_path(domain), "temporal_split", domain))

    def titles(self, domain: str) -> dict[str, str]:
        return dict(pl.read_parquet(self.require(self.domain(domain) / "items.parquet", "temporal_split",
                                                 domain)).iter_rows())

    def split_sha256(self, domain: str) -> str:
        """The content hash of the domain's split: score files carry it, so the report never pairs
        scores with the rows of a newer split."""
        return file_sha256(self.require(self.split_path(domain), "temporal_split", domain))

    def candidates(self, domain: str) -> pl.DataFrame:
        path = self.require(self.domain(domain) / "candidates.parquet", "ranking_candidates", domain)
        return pl.read_parquet(path).sort("row")


def write_scores(path: Path, rows: list[dict], split_sha: str) -> str:
    """Scores of one family of methods: (method, row, score, candidate_scores) and the sha256 of the
    split whose test rows `row` indexes; returns the file's sha256."""
    df = pl.DataFrame(rows, schema={"method": pl.Utf8, "row": pl.Int64, "score": pl.Float64,
                                    "candidate_scores": pl.List(pl.Float64)})
    return write_parquet_atomic(df.with_columns(pl.lit(split_sha).alias("split_sha256")), path)
