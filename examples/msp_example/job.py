"""The example job: summarises what the service recorded, in every configured backend."""

from __future__ import annotations

import asyncio

from msp_runtime import JobContract, Logger

from .backends import Backends, event
from .config import VERSION, JobConfig


class ExampleJob:
    name = "msp-example-job"
    version = VERSION
    config_type = JobConfig

    async def execute(self, logger: Logger, contract: JobContract, config: JobConfig) -> None:
        execution = contract.execution
        logger.info("job started", task_index=execution.task_index, task_count=execution.task_count)
        backends = await Backends.connect(contract, logger)
        try:
            if backends.postgresql is not None and not backends.migrated.is_set():
                raise RuntimeError("postgresql is unavailable")
            found = await backends.recent(limit=100)
            summary = {
                "events": len(found.get("postgresql", [])),
                "counter": found.get("redis", {}).get("count"),
                "execution": execution.id,
            }
            if backends.bigquery is not None:
                await backends.bigquery.write(event("job.summary", **summary))
            await asyncio.sleep(config.work_duration.total_seconds())
            if config.fail:
                raise RuntimeError("job failed as configured by EXAMPLE_JOB_FAIL")
            logger.info("job finished", **summary)
        finally:
            await backends.close()
