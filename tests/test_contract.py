from __future__ import annotations

from datetime import timedelta

import pytest

from msp_runtime import ConfigError, Env, JobContract, ServiceContract, testing


def test_service_requires_port_as_upstream() -> None:
    env = Env({"MSP": "true"})
    contract = ServiceContract.from_env(env, testing.Metadata())
    assert contract.msp is True
    with pytest.raises(ConfigError) as info:
        env.validate()
    assert info.value.variables == ["PORT"]


def test_job_validates_with_no_variables() -> None:
    env = Env({"MSP": "true"})
    contract = JobContract.from_env(env, testing.Metadata())
    env.validate()
    assert contract.msp is True
    assert contract.environment_id == "unknown"
    assert contract.execution.task_count == 1


def test_full_deployed_environment() -> None:
    contract = testing.service_contract(
        {
            "MSP": "true",
            "PORT": "9992",
            "ENVIRONMENT_ID": "prod",
            "GOOGLE_CLOUD_PROJECT": "proj",
            "EXTERNAL_DNS_NAME": "svc.example.com",
            "REDIS_ENDPOINT": "rediss://:auth@10.0.0.3:6378",
            "PGINSTANCE": "proj:us-central1:db",
            "PGUSER": "svc-sa@proj.iam",
            "BIGQUERY_PROJECT_ID": "proj",
            "BIGQUERY_DATASET_ID": "svc",
            "DIAGNOSTICS_SECRET": "abcdef0123456789",
            "SENTRY_DSN": "https://key@sentry.example.com/1",
        }
    )
    assert (contract.port, contract.environment_id, contract.external_dns_name) == (9992, "prod", "svc.example.com")
    assert contract.postgresql.configured  # upstream's inverted check says False here
    assert contract.redis.configured
    assert contract.redis_endpoint == "rediss://:auth@10.0.0.3:6378"
    assert contract.bigquery.configured
    assert contract.diagnostics.opentelemetry.gcp_project_id == "proj"
    text = repr(contract)
    for secret in ("abcdef0123456789", "auth@", "key@sentry"):
        assert secret not in text


def test_local_defaults_configure_nothing() -> None:
    contract = testing.service_contract()
    assert not contract.msp
    assert not contract.postgresql.configured
    assert not contract.redis.configured
    assert not contract.bigquery.configured
    assert contract.diagnostics.secret is None
    assert contract.diagnostics.opentelemetry.gcp_project_id is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PGINSTANCE": "p:r:i"}, False),
        ({"PGUSER": "u"}, False),
        ({"PGINSTANCE": "p:r:i", "PGUSER": "u"}, True),
        ({"PGDSN": "dbname={{ .Database }}"}, True),
    ],
)
def test_postgresql_configured(env: dict[str, str], expected: bool) -> None:
    assert testing.service_contract(env).postgresql.configured is expected


def test_pgdsn_template_renders_database() -> None:
    contract = testing.service_contract({"PGDSN": "host=127.0.0.1 dbname={{ .Database }} user=postgres"})
    assert contract.postgresql.dsn("primary") == "host=127.0.0.1 dbname=primary user=postgres"


def test_local_only_postgres_settings_rejected_when_deployed() -> None:
    with pytest.raises(ConfigError) as info:
        testing.service_contract({"MSP": "true", "PGDSN": "dbname=x", "PG_QUERY_LOGGING": "true"})
    assert info.value.variables == ["PGDSN", "PG_QUERY_LOGGING"]
    assert "PGDSN is not allowed with MSP=true" in str(info.value)


def test_empty_diagnostics_secret_is_an_error_not_open_access() -> None:
    with pytest.raises(ConfigError) as info:
        testing.service_contract({"DIAGNOSTICS_SECRET": ""})
    assert info.value.variables == ["DIAGNOSTICS_SECRET"]


def test_job_execution_from_cloud_run_variables() -> None:
    contract = testing.job_contract(
        {
            "CLOUD_RUN_JOB": "my-job",
            "CLOUD_RUN_EXECUTION": "my-job-abcde",
            "CLOUD_RUN_TASK_INDEX": "1",
            "CLOUD_RUN_TASK_ATTEMPT": "2",
            "CLOUD_RUN_TASK_COUNT": "3",
            "JOB_EXECUTION_CRON_SCHEDULE": "0 * * * *",
            "JOB_EXECUTION_DEADLINE": "600s",
        }
    )
    execution = contract.execution
    assert (execution.job, execution.execution, execution.task_index, execution.task_attempt) == (
        "my-job",
        "my-job-abcde",
        1,
        2,
    )
    assert execution.task_count == 3
    assert execution.task_name == "my-job-abcde-1-2"
    assert len(execution.id) == 36
    assert execution.id[14] == "7"
    assert contract.diagnostics.cron_deadline == timedelta(minutes=10)


def test_job_execution_rejects_inconsistent_task_index() -> None:
    with pytest.raises(ConfigError) as info:
        testing.job_contract({"CLOUD_RUN_TASK_INDEX": "3", "CLOUD_RUN_TASK_COUNT": "3"})
    assert info.value.variables == ["CLOUD_RUN_TASK_INDEX"]


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_port_out_of_range(port: str) -> None:
    with pytest.raises(ConfigError) as info:
        testing.service_contract({"PORT": port})
    assert info.value.variables == ["PORT"]


@pytest.mark.parametrize(
    "dsn",
    [
        "not a url",
        "ftp://key@sentry.example.com/1",
        "https://sentry.example.com/1",
        "https://key@sentry.example.com/project",
        "https://key@sentry.example.com:99999/1",
    ],
)
def test_a_dsn_sentry_would_refuse_is_a_config_error_that_hides_it(dsn: str) -> None:
    with pytest.raises(ConfigError) as info:
        testing.service_contract({"SENTRY_DSN": dsn})
    assert info.value.variables == ["SENTRY_DSN"]
    assert "sentry.example.com" not in str(info.value)
