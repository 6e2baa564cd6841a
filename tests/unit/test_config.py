import pytest

from streams.config import ConfigError, Target, load_settings


def test_defaults_are_80_20_and_90_10():
    s = load_settings(env={})
    assert s.targets == (Target(20, 0.8), Target(10, 0.9))
    assert s.all_thresholds == (10, 20)


def test_env_and_per_queue_targets():
    s = load_settings(env={"CONTACTPULSE_TARGETS": "30:0.7", "CONTACTPULSE_QUEUE_TARGETS": "vip=10:0.95",
                           "CONTACTPULSE_TIMEZONE": "Europe/Riga"})
    assert s.targets_for("vip") == (Target(10, 0.95),)
    assert s.targets_for("sales") == (Target(30, 0.7),)
    assert s.all_thresholds == (10, 30)


@pytest.mark.parametrize("env,message", [
    ({"CONTACTPULSE_TIMEZONE": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"CONTACTPULSE_TARGETS": "20:80"}, "target ratio must be in (0, 1], got 80.0 (write 0.8 for 80%)"),
    ({"CONTACTPULSE_BROKER": "kafka://localhost"}, "needs a port"),
    ({"CONTACTPULSE_INTERVAL_SECONDS": "700"}, "must be whole minutes that divide a day evenly"),
    ({"CONTACTPULSE_WEB_PORT": "eighty"}, "web_port: expected a whole number, got 'eighty'"),
    ({"CONTACTPULSE_REPLICATION": "0"}, "replication: must be >= 1 (at most the number of brokers), got 0"),
    ({"CONTACTPULSE_STANDBY_REPLICAS": "-1"}, "standby_replicas: must be >= 0, got -1"),
    ({"CONTACTPULSE_STORE": "redis://"}, "store: must be memory:// or rocksdb://"),
    ({"CONTACTPULSE_GC_FULL_COLLECT_SECONDS": "-5"}, "gc_full_collect_seconds: must be >= 0 (0 = CPython's own full collections), got -5"),
])
def test_bad_settings_give_clear_messages(env, message):
    with pytest.raises(ConfigError) as err:
        load_settings(env=env)
    assert message in str(err.value)


def test_replication_and_standby_settings():
    # defaults fit one local broker; a 3-broker cluster sets replication 3 (docs/operations.md)
    s = load_settings(env={})
    assert (s.replication, s.standby_replicas, s.store) == (1, 1, "memory://")
    s = load_settings(env={"CONTACTPULSE_REPLICATION": "3", "CONTACTPULSE_STANDBY_REPLICAS": "0"})
    assert (s.replication, s.standby_replicas) == (3, 0)
