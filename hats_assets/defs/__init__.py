"""Domain folders in the order the data flows: raw → core → rollups → warehouse.

Two Dagster 1.13 features we rely on are still marked beta, accepted here once for every domain:
``multi_observable_source_asset`` (the only way a source asset gets upstream lineage) and
``backfill_policy`` (single-run backfills: any range in one run, a day per query); and the preview
``partitions_def`` of asset checks (data-quality results per hourly partition).
"""

import warnings

import dagster as dg

for _beta in ("multi_observable_source_asset", "backfill_policy"):
    warnings.filterwarnings("ignore", message=f".*{_beta}.*", category=dg.BetaWarning)
# Partitioned asset checks (a check result per hourly partition) are "preview" in 1.13; accepted too.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*", category=dg.PreviewWarning)
