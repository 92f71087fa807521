"""BigQuery: a batching writer for ``insertAll`` into the service's dataset."""

from __future__ import annotations

from dataclasses import dataclass

from .env import Env

__all__ = ["BigQueryContract"]


@dataclass(frozen=True, kw_only=True)
class BigQueryContract:
    """The service's BigQuery dataset: ``BIGQUERY_PROJECT_ID`` and ``BIGQUERY_DATASET_ID``."""

    project_id: str | None
    dataset_id: str | None

    @classmethod
    def from_env(cls, env: Env) -> BigQueryContract:
        project = env.get_optional("BIGQUERY_PROJECT_ID", "BigQuery project ID")
        dataset = env.get_optional("BIGQUERY_DATASET_ID", "BigQuery dataset ID")
        return cls(project_id=project or None, dataset_id=dataset or None)

    @property
    def configured(self) -> bool:
        return self.project_id is not None and self.dataset_id is not None
