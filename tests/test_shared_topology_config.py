"""Topology and configuration loading."""
import pytest

from shared.config import ConfigError, load_toml, section
from shared.topology import Topology


def test_default_topology_has_24_points():
    topo = Topology()
    assert len(topo.points) == 24
    assert topo.stations[0] == "Station-1" and topo.stations[-1] == "Station-12"
    assert topo.points[0].json_key == "extension_3333" and topo.points[1].language == "French"


def test_station_count_is_configurable_and_lookups_are_strict():
    topo = Topology(3)
    assert len(topo.points) == 6
    assert topo.has_point("Station-3", "4444")
    for station, ext in [("Station-4", "3333"), ("Station-0", "3333"), ("Station-01", "3333"),
                         ("station-1", "3333"), ("Station-1", "5555")]:
        assert not topo.has_point(station, ext)
        with pytest.raises(KeyError):
            topo.point(station, ext)


def test_toml_with_env_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[controller]\nhttp_port = 3090\nname = "x"\n')
    doc = load_toml(path, env={"TPMON_CONTROLLER_HTTP_PORT": "4000", "TPMON_CONTROLLER_NAME": "not a toml value"})
    assert doc["controller"] == {"http_port": 4000, "name": "not a toml value"}


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[controller\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_toml(bad, env={})
    with pytest.raises(ConfigError, match="unknown keys: typo"):
        section({"controller": {"typo": 1}}, "controller", {"http_port": 3090})
