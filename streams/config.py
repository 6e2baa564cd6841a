"""Settings: one dataclass, read from an optional TOML file and CONTACTPULSE_* environment variables.

Everything a contact centre tunes (thresholds, windows, budgets) lives here, never in code.
Validation happens once at start-up and reports every problem in one clear message.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import ssl
import tomllib
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SL_VARIANTS = ("abandons_count", "answered_only", "abandons_within_met")


class ConfigError(ValueError):
    """Raised with a human-readable list of every invalid setting."""


# The shipped key of the customer hash: fine for a demo, not for a site (anyone could recompute the hashes).
DEFAULT_IDENTITY_SECRET = "change-me"


@dataclass(frozen=True)
class Target:
    threshold_seconds: int  # answered within this many seconds ...
    ratio: float  # ... for this share of contacts (0.8 for 80/20)


@dataclass(frozen=True)
class Settings:
    broker: str = "kafka://127.0.0.1:9092"
    app_id: str = "contactpulse"
    topic_prefix: str = ""  # e.g. "site1." — lets several deployments (or test runs) share a cluster
    partitions: int = 4
    # Copies of every topic (inputs, changelogs, dead letters) on a multi-broker cluster: 3 in production.
    replication: int = 1
    standby_replicas: int = 1  # workers keeping a warm copy of another's tables, for a fast takeover
    store: str = "memory://"
    data_dir: str = ".contactpulse"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # Windows: the current interval is aligned to the site's clock, "today" starts at local midnight.
    timezone: str = "UTC"
    interval_seconds: int = 900
    trailing_seconds: int = 3600
    # Service level (see docs/metrics.md for the variants).
    targets: tuple[Target, ...] = (Target(20, 0.8), Target(10, 0.9))
    queue_targets: Mapping[str, tuple[Target, ...]] = field(default_factory=dict)
    short_abandon_seconds: float = 5.0
    sl_variant: str = "abandons_count"
    # Bad or late data.
    allowed_lateness_seconds: int = 900
    max_future_skew_seconds: int = 300
    max_event_age_seconds: int = 7 * 86400
    max_message_bytes: int = 64 * 1024
    max_open_contact_seconds: int = 86400
    dedupe_horizon_seconds: int = 86400
    # Label cardinality budgets: values past the budget are counted, not exported.
    max_queues: int = 200
    max_agents: int = 5000
    # Throughput: events are handled in batches (one Kafka fetch each, at most this many messages) and
    # each table key is written once per batch.
    batch_size: int = 2000
    # Garbage collection (streams/gc_policy.py): the worker makes a full collection this often itself;
    # 0 = CPython's automatic full collections (pauses that grow with the tables).
    gc_full_collect_seconds: int = 3600
    # Repeat contacts / FCR.
    repeat_window_seconds: int = 72 * 3600
    identity_secret: str = DEFAULT_IDENTITY_SECRET
    default_region: str = "LV"
    # Optional protection of /metrics and the web pages.
    web_basic_auth: str = ""  # "user:password"
    web_tls_cert: str = ""
    web_tls_key: str = ""
    # Wallboard page (streams/wallboard.py): cluster view from Prometheus when set, else this worker's tables.
    wallboard_prometheus_url: str = ""  # e.g. http://prometheus:9090
    wallboard_prometheus_selector: str = ""  # label matchers added to its queries, e.g. job="contactpulse"
    wallboard_amber_points: float = 5.0  # amber when SL is below target by at most this many points
    wallboard_oldest_wait_alert_seconds: int = 120  # the oldest wait turns red from this age
    # Tickets (issue 3): see docs/metrics.md "Tickets".
    max_open_ticket_seconds: int = 30 * 86400  # a ticket record with no event for this long is dropped
    ticket_exact_values: int = 1000  # per window, durations kept exactly up to this many; then the sketch
    ticket_sketch_accuracy: float = 0.01  # relative accuracy of the quantile sketch beyond that
    business_hours: str = ""  # e.g. "mon-fri 09:00-17:00"; empty = no business-hours FRT
    business_timezone: str = ""  # timezone of business_hours; empty = `timezone`

    def targets_for(self, queue: str) -> tuple[Target, ...]:
        return self.queue_targets.get(queue, self.targets)

    @property
    def all_thresholds(self) -> tuple[int, ...]:
        found = {t.threshold_seconds for t in self.targets}
        for ts in self.queue_targets.values():
            found.update(t.threshold_seconds for t in ts)
        return tuple(sorted(found))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def bootstrap_servers(self) -> str:
        """host:port list for aiokafka clients (the Faust URL without its scheme)."""
        return ",".join(u.split("://", 1)[-1] for u in self.broker.split(";"))


_INT_FIELDS = {f.name for f in dataclasses.fields(Settings) if f.type in ("int",)}
_FLOAT_FIELDS = {f.name for f in dataclasses.fields(Settings) if f.type in ("float",)}


def _parse_targets(value: Any, where: str, errors: list[str]) -> tuple[Target, ...]:
    """Accept "20:0.8,10:0.9" or [[20, 0.8], [10, 0.9]] or [{"threshold_seconds":..,"ratio":..}]."""
    items: list[tuple[Any, Any]] = []
    if isinstance(value, str):
        for part in filter(None, (p.strip() for p in value.split(","))):
            if ":" not in part:
                errors.append(f"{where}: '{part}' should look like SECONDS:RATIO, e.g. 20:0.8")
                continue
            a, b = part.split(":", 1)
            items.append((a, b))
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, Target):
                items.append((item.threshold_seconds, item.ratio))
            elif isinstance(item, Mapping):
                items.append((item.get("threshold_seconds"), item.get("ratio")))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                items.append((item[0], item[1]))
            else:
                errors.append(f"{where}: cannot read target {item!r}")
    else:
        errors.append(f"{where}: expected a list of targets, got {value!r}")
    out = []
    for a, b in items:
        try:
            threshold, ratio = int(a), float(b)
        except (TypeError, ValueError):
            errors.append(f"{where}: threshold must be whole seconds and ratio a number, got {a!r}:{b!r}")
            continue
        if threshold <= 0:
            errors.append(f"{where}: threshold must be > 0 seconds, got {threshold}")
        if not 0 < ratio <= 1:
            errors.append(f"{where}: target ratio must be in (0, 1], got {ratio} (write 0.8 for 80%)")
        out.append(Target(threshold, ratio))
    if not out and not errors:
        errors.append(f"{where}: at least one target is required")
    return tuple(out)


def load_settings(path: str | None = None, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from defaults <- TOML file <- environment <- keyword overrides; raises ConfigError."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    path = path or env.get("CONTACTPULSE_CONFIG")
    errors: list[str] = []
    if path:
        try:
            with open(path, "rb") as fh:
                raw.update(tomllib.load(fh))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    names = {f.name for f in dataclasses.fields(Settings)}
    for key, value in env.items():
        if key.startswith("CONTACTPULSE_") and key != "CONTACTPULSE_CONFIG":
            name = key[len("CONTACTPULSE_"):].lower()
            if name in names:
                raw[name] = value
    raw.update(overrides)
    unknown = sorted(set(raw) - names)
    if unknown:
        errors.append(f"unknown setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name not in raw:
            continue
        v = raw[f.name]
        if f.name == "targets":
            values[f.name] = _parse_targets(v, "targets", errors)
        elif f.name == "queue_targets":
            if isinstance(v, str):
                # "billing=20:0.9,10:0.95;sales=30:0.8"
                parsed = {}
                for chunk in filter(None, (c.strip() for c in v.split(";"))):
                    q, _, spec = chunk.partition("=")
                    parsed[q.strip()] = spec
                v = parsed
            if not isinstance(v, Mapping):
                errors.append("queue_targets: expected a table of queue = targets")
                continue
            values[f.name] = {q: _parse_targets(t, f"queue_targets.{q}", errors) for q, t in v.items()}
        elif f.name in _INT_FIELDS:
            try:
                values[f.name] = int(v)
            except (TypeError, ValueError):
                errors.append(f"{f.name}: expected a whole number, got {v!r}")
        elif f.name in _FLOAT_FIELDS:
            try:
                values[f.name] = float(v)
            except (TypeError, ValueError):
                errors.append(f"{f.name}: expected a number, got {v!r}")
        else:
            values[f.name] = str(v)
    if errors:
        try:  # report the other settings' problems in the same message, not one round at a time
            validate(Settings(**{k: v for k, v in values.items() if not any(e.startswith(k) for e in errors)}))
        except ConfigError as more:
            errors += [line[4:] for line in str(more).splitlines()[1:]]
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    errors: list[str] = []
    for url in s.broker.split(";"):
        parsed = urlparse(url if "://" in url else "kafka://" + url)
        if parsed.scheme not in ("kafka", "aiokafka") or not parsed.hostname or parsed.path not in ("", "/"):
            errors.append(f"broker: '{url}' is not a broker URL like kafka://127.0.0.1:9092")
            continue
        try:
            if parsed.port is None:
                errors.append(f"broker: '{url}' needs a port, e.g. kafka://{parsed.hostname}:9092")
        except ValueError:
            errors.append(f"broker: '{url}' has an invalid port")
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(f"timezone: unknown time zone '{s.timezone}' (use an IANA name like Europe/Riga)")
    if s.interval_seconds < 60 or s.interval_seconds % 60 or 86400 % s.interval_seconds:
        errors.append(f"interval_seconds: must be whole minutes that divide a day evenly (900 = 15 min), "
                      f"got {s.interval_seconds}")
    if s.trailing_seconds < 60 or s.trailing_seconds % 60:
        errors.append(f"trailing_seconds: must be a whole number of minutes >= 60 s, got {s.trailing_seconds}")
    if s.sl_variant not in SL_VARIANTS:
        errors.append(f"sl_variant: must be one of {', '.join(SL_VARIANTS)}, got '{s.sl_variant}'")
    if s.short_abandon_seconds < 0:
        errors.append(f"short_abandon_seconds: must be >= 0, got {s.short_abandon_seconds}")
    if s.partitions < 1:
        errors.append(f"partitions: must be >= 1, got {s.partitions}")
    if s.replication < 1:
        errors.append(f"replication: must be >= 1 (at most the number of brokers), got {s.replication}")
    if s.standby_replicas < 0:
        errors.append(f"standby_replicas: must be >= 0, got {s.standby_replicas}")
    if not s.store.startswith(("memory://", "rocksdb://")):
        errors.append(f"store: must be memory:// or rocksdb:// (needs `pip install rocksdict`), got '{s.store}'")
    elif s.store.startswith("rocksdb://") and importlib.util.find_spec("rocksdict") is None:
        errors.append("store: rocksdb:// needs the rocksdict package: pip install rocksdict (or contactpulse[rocksdb])")
    if not 0 < s.web_port < 65536:
        errors.append(f"web_port: must be 1-65535, got {s.web_port}")
    for name in ("allowed_lateness_seconds", "max_future_skew_seconds", "max_event_age_seconds",
                 "max_message_bytes", "max_queues", "max_agents", "batch_size", "repeat_window_seconds",
                 "max_open_contact_seconds", "dedupe_horizon_seconds"):
        if getattr(s, name) <= 0:
            errors.append(f"{name}: must be > 0, got {getattr(s, name)}")
    if s.gc_full_collect_seconds < 0:
        errors.append(f"gc_full_collect_seconds: must be >= 0 (0 = CPython's own full collections), got {s.gc_full_collect_seconds}")
    if s.web_basic_auth and ":" not in s.web_basic_auth:
        errors.append("web_basic_auth: expected user:password")
    if bool(s.web_tls_cert) != bool(s.web_tls_key):
        errors.append("web_tls_cert and web_tls_key must be set together")
    elif s.web_tls_cert:
        try:  # a wrong path or a key that does not match must stop start-up here, not at the first scrape
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(s.web_tls_cert, s.web_tls_key)
        except (OSError, ssl.SSLError) as exc:
            errors.append(f"web_tls_cert/web_tls_key: cannot load the certificate and key: {exc}")
    if s.wallboard_prometheus_url and urlparse(s.wallboard_prometheus_url).scheme not in ("http", "https"):
        errors.append(f"wallboard_prometheus_url: expected http(s)://host:port, got '{s.wallboard_prometheus_url}'")
    if any(c in s.wallboard_prometheus_selector for c in "{}"):
        errors.append("wallboard_prometheus_selector: label matchers without braces, e.g. job=\"contactpulse\"")
    if not 0 <= s.wallboard_amber_points <= 100:
        errors.append(f"wallboard_amber_points: must be 0-100 percentage points, got {s.wallboard_amber_points}")
    if s.wallboard_oldest_wait_alert_seconds <= 0:
        errors.append(f"wallboard_oldest_wait_alert_seconds: must be > 0, got {s.wallboard_oldest_wait_alert_seconds}")
    if not s.targets:
        errors.append("targets: at least one service-level target is required")
    errors.extend(_ticket_errors(s))
    errors.extend(_identity_errors(s))
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))


def _ticket_errors(s: Settings) -> list[str]:
    from metrics.business_hours import parse_schedule

    errors = []
    for name in ("max_open_ticket_seconds", "ticket_exact_values"):
        if getattr(s, name) <= 0:
            errors.append(f"{name}: must be > 0, got {getattr(s, name)}")
    if not 0 < s.ticket_sketch_accuracy < 0.5:
        errors.append(f"ticket_sketch_accuracy: must be in (0, 0.5), e.g. 0.01 for 1%, got {s.ticket_sketch_accuracy}")
    if s.business_hours:
        try:
            parse_schedule(s.business_hours)
        except ValueError as exc:
            errors.append(f"business_hours: {exc}")
    if s.business_timezone:
        try:
            ZoneInfo(s.business_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            errors.append(f"business_timezone: unknown time zone '{s.business_timezone}'")
    return errors


def _identity_errors(s: Settings) -> list[str]:
    """Repeat-contact matching (streams/identity.py)."""
    import phonenumbers

    errors = []
    if not s.identity_secret:
        errors.append("identity_secret: must not be empty (it keys the hash customers are matched on)")
    if s.default_region and s.default_region not in phonenumbers.SUPPORTED_REGIONS:
        errors.append(f"default_region: '{s.default_region}' is not an ISO 3166 region phonenumbers knows "
                      "(e.g. LV, DE, US); empty = only numbers written with +country code match")
    return errors
