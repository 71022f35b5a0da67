"""Settings and keyspace validation: pure logic, no Redis needed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cachewarm import ConfigError, InvalidKey, Settings, UnknownKeyspace
from cachewarm.config.keyspaces import KeyspaceRegistry, check_key, load_keyspaces, placeholders
from cachewarm.settings import mask_url

GOOD = """
[keyspaces.product]
pattern = "product:{id}"
source = "http://127.0.0.1:8000/products/{id}"
ttl = 60
refresh_ahead = 15
tags = ["products", "product:{id}"]

[keyspaces.price]
pattern = "price:{region}:{id}"
source = "python:tests.support.sources_fixture:price"
ttl = 30
"""


def table(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"pattern": "product:{id}", "source": "http://127.0.0.1:8000/products/{id}",
                               "ttl": 60}
    base.update(fields)
    return {"product": base}


def config_error(tables: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        KeyspaceRegistry.from_mapping(tables)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_file_loads(write_config: Callable[[str], Path]) -> None:
    registry = load_keyspaces(write_config(GOOD))
    assert registry.names() == ["product", "price"]
    ks, params = registry.resolve("product:42")
    assert ks.name == "product" and params == {"id": "42"}
    assert ks.ttl == 60 and ks.refresh_ahead == 15
    assert ks.tags_for(params) == ("products", "product:42")
    ks, params = registry.resolve("price:eu:7")
    assert ks.name == "price" and params == {"region": "eu", "id": "7"}


def test_key_matching_no_keyspace_is_an_error_not_a_miss(write_config: Callable[[str], Path]) -> None:
    registry = load_keyspaces(write_config(GOOD))
    assert registry.find("order:1") is None
    with pytest.raises(UnknownKeyspace):
        registry.resolve("order:1")
    # a placeholder is one segment: it never swallows the ':' separator
    with pytest.raises(UnknownKeyspace):
        registry.resolve("product:1:extra")
    with pytest.raises(UnknownKeyspace):
        registry.resolve("product:")


@pytest.mark.parametrize(("fields", "named", "says"), [
    ({"colour": "red"}, "keyspaces.product.colour", "unknown field"),
    ({"ttl": -5}, "keyspaces.product.ttl", "greater than 0"),
    ({"ttl": 0}, "keyspaces.product.ttl", "greater than 0"),
    ({"refresh_ahead": 60}, "keyspaces.product", "refresh_ahead"),
    ({"refresh_ahead": 90}, "keyspaces.product", "refresh_ahead"),
    ({"refresh_ahead": -1}, "keyspaces.product.refresh_ahead", "greater than or equal to 0"),
    ({"pattern": "product:{id"}, "keyspaces.product.pattern", "malformed"),
    ({"pattern": "product:{}"}, "keyspaces.product.pattern", "malformed"),
    ({"pattern": "product:{id!r}"}, "keyspaces.product.pattern", "malformed"),
    ({"pattern": "product:all"}, "keyspaces.product.pattern", "no {placeholder}"),
    ({"pattern": "product:{id}:{id}"}, "keyspaces.product.pattern", "repeats"),
    ({"pattern": "p:{a}{b}", "source": "http://h/{a}/{b}"}, "keyspaces.product.pattern", "nothing between"),
    ({"source": "http://127.0.0.1:8000/products/{sku}"}, "keyspaces.product", "{sku}"),
    ({"tags": ["shop:{shop}"]}, "keyspaces.product", "{shop}"),
    ({"source": "ftp://example.com/{id}"}, "keyspaces.product", "source"),
    ({"source": "http://{id}.example.com/x"}, "keyspaces.product.source", "host"),
    ({"source": "python:no_such_module_xyz:load"}, "keyspaces.product.source", "no_such_module_xyz"),
    ({"source": "python:json:no_such_function"}, "keyspaces.product.source", "no_such_function"),
    ({"source": "python:json"}, "keyspaces.product.source", "package.module:function"),
])
def test_bad_keyspace_is_one_line_naming_it(fields: dict[str, object], named: str, says: str) -> None:
    message = config_error(table(**fields))
    assert message.startswith(named), message
    assert says in message


def test_bad_keyspace_name_and_shape() -> None:
    assert config_error({"bad name": {}}).startswith("keyspaces.bad name")
    assert config_error({"product": "not a table"}).startswith("keyspaces.product")
    assert "pattern" in config_error({"product": {"source": "python:json:dumps", "ttl": 1}})


def test_bad_toml_and_unknown_top_level(write_config: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match=r"^CACHEWARM_CONFIG: .* is not valid TOML"):
        load_keyspaces(write_config("[keyspaces.product\npattern = 1\n"))
    with pytest.raises(ConfigError, match=r"^keyspace: unknown top-level table"):
        load_keyspaces(write_config("[keyspace.product]\nttl = 1\n"))


def test_missing_file(tmp_path: Path) -> None:
    assert len(load_keyspaces(tmp_path / "none.toml")) == 0
    with pytest.raises(ConfigError, match="CACHEWARM_CONFIG"):
        load_keyspaces(tmp_path / "none.toml", required=True)


def test_placeholders() -> None:
    assert placeholders("a:{x}:{y_2}") == ["x", "y_2"]
    for bad in ["a:{", "a:{x:>3}", "a:{0}", "a:{x.y}"]:
        with pytest.raises(ValueError):
            placeholders(bad)


def test_check_key() -> None:
    assert check_key("product:1") == "product:1"
    for bad in ["", "a\x00b", "a\nb", "x" * 1025]:
        with pytest.raises(InvalidKey):
            check_key(bad)
    with pytest.raises(InvalidKey):
        check_key(42)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEWARM_REDIS_URL", "redis://10.0.0.5:6380/3")
    monkeypatch.setenv("CACHEWARM_METRICS_PORT", "9100")
    monkeypatch.setenv("CACHEWARM_LEASE_MS", "750")
    settings = Settings.load()
    assert settings.redis_url == "redis://10.0.0.5:6380/3"
    assert settings.broker_url == "redis://10.0.0.5:6380/1"
    assert settings.metrics_port == 9100
    assert settings.lease_ms == 750


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "BROKER_URL", "CONFIG", "METRICS_HOST", "METRICS_PORT"):
        monkeypatch.delenv(f"CACHEWARM_{name}", raising=False)
    settings = Settings.load()
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.broker_url == "redis://127.0.0.1:6379/1"
    assert settings.config == Path("./cachewarm.toml")
    assert settings.metrics_host == "127.0.0.1"
    assert settings.metrics_port == 9808


@pytest.mark.parametrize(("name", "value"), [
    ("METRICS_PORT", "abc"), ("METRICS_PORT", "70000"), ("METRICS_PORT", "-1"), ("REDIS_URL", "http://x"),
    ("KEY_PREFIX", "nocolon"), ("LEASE_MS", "0"), ("REDIS_TIMEOUT", "-1"),
])
def test_bad_setting_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"CACHEWARM_{name}", value)
    with pytest.raises(ConfigError) as info:
        Settings.load()
    message = str(info.value)
    assert message.startswith(f"CACHEWARM_{name}: ")
    assert "\n" not in message


def test_mask_url_hides_passwords() -> None:
    assert mask_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert mask_url("redis://app:s3cret@host/0") == "redis://app:***@host/0"
    assert mask_url("redis://host:6379/0") == "redis://host:6379/0"
    assert "s3cret" not in mask_url("rediss://user:s3cret@h:1/2")


def test_readme_documents_every_setting_and_keyspace_field() -> None:
    from cachewarm.config.keyspaces import KeyspaceConfig

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"| `CACHEWARM_{name.upper()}` |" in readme, f"CACHEWARM_{name.upper()} is not in README.md"
    for name in KeyspaceConfig.model_fields:
        assert f"| `{name}` |" in readme, f"keyspace field {name} is not in README.md"
