"""Partitions: one per dataset (static, from the config) and one per domain (dynamic).

Domains are a dynamic partitions definition named `domain`: the config names them, and
`sync_domain_partitions` (called by the landing sensor on every tick, by `make demo` and by the job
helpers) adds any domain of the config that the Dagster instance does not know yet, so a domain
added to the config shows up as a new partition without a code change. A domain removed from the
config keeps its partition (and its history) until a user deletes it in the UI."""

from __future__ import annotations

import dagster as dg

from models.config import ProjectConfig

DOMAIN_PARTITIONS = dg.DynamicPartitionsDefinition(name="domain")


def dataset_partitions(cfg: ProjectConfig) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(cfg.datasets))


def domain_partitions(cfg: ProjectConfig) -> dg.DynamicPartitionsDefinition:
    return DOMAIN_PARTITIONS


def missing_domains(cfg: ProjectConfig, instance: dg.DagsterInstance) -> list[str]:
    known = set(instance.get_dynamic_partitions(DOMAIN_PARTITIONS.name))
    return sorted(set(cfg.domains) - known)


def sync_domain_partitions(cfg: ProjectConfig, instance: dg.DagsterInstance) -> list[str]:
    """Add the config's domains the instance lacks; returns the ones added."""
    new = missing_domains(cfg, instance)
    if new:
        instance.add_dynamic_partitions(DOMAIN_PARTITIONS.name, new)
    return new
