"""`lambdactl lake`: the lake's version, rows, and how far each partition is complete."""

from __future__ import annotations

from lambda_contracts.settings import Settings
from lambdactl.probes import probe_kafka, probe_lake


def describe_lake(settings: Settings) -> list[str]:
    kafka = probe_kafka(settings)
    lake = probe_lake(settings, kafka.ends)
    if lake.progress is None:
        return [lake.component.detail]
    lines = [f"lake {settings.lake_path}: Delta version {lake.progress.version}, {lake.progress.rows:,} rows"]
    if not kafka.component.up:
        lines.append(f"  (topic ends unknown: {kafka.component.detail})")
    for partition, end in sorted(kafka.ends.items()):
        committed = lake.progress.offsets[partition]
        lines.append(
            f"  partition {partition}: complete below offset {committed:,} "
            f"(topic end {end:,}, behind by {end - committed:,})"
        )
    return lines
