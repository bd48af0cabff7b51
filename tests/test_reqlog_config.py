"""The logging, logs and metrics sections of the configuration file."""

from __future__ import annotations

import pytest

from p5proxy.config import config_from_dict
from p5proxy.errors import ConfigError
from p5proxy.reqlog import default_database_url, open_request_log


def test_defaults() -> None:
    config = config_from_dict({})
    assert config.logging.format == "text" and config.logging.bodies is False
    assert config.logs.enabled is True and config.logs.database_url is None
    assert config.logs.retention_days == 30 and config.logs.max_rows == 1_000_000
    assert config.metrics.enabled is True and config.metrics.key is None


def test_every_problem_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({
            "logging": {"format": "xml", "bodies": "maybe", "colour": True},
            "logs": {"database_url": "mysql://db/x", "table": "drop table;", "max_rows": -1},
            "metrics": {"enabled": "sometimes"}})
    problems = "\n".join(info.value.problems)
    for path in ("logging.format", "logging.bodies", "logging.colour", "logs.database_url",
                 "logs.table", "logs.max_rows", "metrics.enabled"):
        assert f"{path}:" in problems, problems


def test_values_are_read() -> None:
    config = config_from_dict({
        "logging": {"format": "JSON", "bodies": "true", "body_max_bytes": 100},
        "logs": {"enabled": "no", "database_url": "postgresql://u:pw@h/db", "table": "reqs",
                 "retention_days": 7, "max_rows": 0},
        "metrics": {"key": "k"}})
    assert config.logging.format == "json" and config.logging.bodies is True
    assert config.logs.enabled is False and config.logs.table == "reqs"
    assert config.logs.retention_days == 7 and config.logs.max_rows == 0
    assert config.metrics.key == "k"


def test_default_url_follows_the_data_dir() -> None:
    assert default_database_url({"P5PROXY_DATA_DIR": "/srv/p5"}) == \
        "sqlite:////srv/p5/p5proxy-requests.db"
    assert default_database_url({"XDG_STATE_HOME": "/x/state"}) == \
        "sqlite:////x/state/p5proxy/p5proxy-requests.db"


def test_describe_masks_the_password() -> None:
    config = config_from_dict({"logs": {"database_url": "postgresql://gw:s3cret@db:5432/logs"}})
    info = open_request_log(config.logs).describe()
    assert info["backend"] == "postgresql" and "s3cret" not in info["url"]
    assert info["url"] == "postgresql://gw:****@db:5432/logs"
