"""The example job: does a little work against the configured backends, then exits."""

from __future__ import annotations

import asyncio

from msp_runtime import JobContract, Logger

from .config import VERSION, JobConfig


class ExampleJob:
    name = "msp-example-job"
    version = VERSION
    config_type = JobConfig

    async def execute(self, logger: Logger, contract: JobContract, config: JobConfig) -> None:
        logger.info("job started", task_index=contract.execution.task_index, task_count=contract.execution.task_count)
        await asyncio.sleep(config.work_duration.total_seconds())
        if config.fail:
            raise RuntimeError("job failed as configured by EXAMPLE_JOB_FAIL")
        logger.info("job finished")
