"""Partitions built from the config: one per dataset, one per domain, and the map between them."""

from __future__ import annotations

import dagster as dg

from models.config import ProjectConfig


def dataset_partitions(cfg: ProjectConfig) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(cfg.datasets))


def domain_partitions(cfg: ProjectConfig) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(cfg.domains))


def dataset_to_domains(cfg: ProjectConfig) -> dg.StaticPartitionMapping:
    return dg.StaticPartitionMapping(
        {ds: sorted(d.name for d in cfg.domains_of(ds)) for ds in cfg.datasets if cfg.domains_of(ds)}
    )
