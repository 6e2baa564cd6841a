#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft: broker + controller in one JVM) on 127.0.0.1.
#   broker.sh start | stop | status | topics
# Jars come from Maven Central once (pinned in pom.xml) and are cached in $CONTACTPULSE_CACHE.
# Idempotent: start on a running broker and stop on a stopped one both succeed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")"
CACHE="${CONTACTPULSE_CACHE:-$HOME/.cache/contactpulse}"
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
PORT="${KAFKA_PORT:-9092}"
# Not PORT+1: 9093 is Alertmanager's default port (Debian's package may start it), and a stranger on the
# controller port can keep KRaft from ever opening the broker port.
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 10000))}"
STATE="${KAFKA_STATE_DIR:-$CACHE/broker-$PORT}"
PIDFILE="$STATE/broker.pid"
LOG="$STATE/broker.log"

fetch_jars() {
  [[ -f "$LIBS/.complete" ]] && return
  echo "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS" >&2
  mkdir -p "$LIBS"
  mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIBS" >&2
  touch "$LIBS/.complete"
}

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/${1:-$PORT}") 2>/dev/null; }

java_run() { java -Xms256m -Xmx1g -cp "$LIBS/*" -Dlog4j.configuration="file:$STATE/log4j.properties" \
  -Dkafka.logs.dir="$STATE/logs" "$@"; }

write_config() {
  mkdir -p "$STATE/data" "$STATE/logs"
  cat > "$STATE/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$STATE/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
  cat > "$STATE/log4j.properties" <<PROPS
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$STATE/logs/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
PROPS
}

start() {
  if running; then echo "kafka already running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; return; fi
  command -v java >/dev/null || { echo "java (17+) is required" >&2; exit 1; }
  for p in "$PORT" "$CONTROLLER_PORT"; do
    if port_open "$p"; then echo "127.0.0.1:$p is already taken by another process; set KAFKA_PORT/KAFKA_CONTROLLER_PORT" >&2; exit 1; fi
  done
  fetch_jars
  write_config
  if [[ ! -f "$STATE/data/meta.properties" ]]; then
    java_run kafka.tools.StorageTool format -t "$(java_run kafka.tools.StorageTool random-uuid)" \
      -c "$STATE/server.properties" >/dev/null
  fi
  nohup java -Xms256m -Xmx1g -cp "$LIBS/*" -Dlog4j.configuration="file:$STATE/log4j.properties" \
    -Dkafka.logs.dir="$STATE/logs" kafka.Kafka "$STATE/server.properties" >"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 360); do
    if port_open; then echo "kafka $KAFKA_VERSION running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), state $STATE)"; return; fi
    running || { echo "kafka failed to start; see $LOG and $STATE/logs/server.log" >&2; tail -20 "$LOG" >&2; exit 1; }
    sleep 0.5
  done
  echo "kafka did not open 127.0.0.1:$PORT within 180 s; its logs and threads follow" >&2
  tail -40 "$LOG" "$STATE/logs/server.log" >&2 || true
  command -v jcmd >/dev/null && jcmd "$(cat "$PIDFILE")" Thread.print 2>&1 | grep -A12 '"main"\|kafka-' | head -120 >&2
  exit 1
}

stop() {
  if ! running; then echo "kafka not running on 127.0.0.1:$PORT"; rm -f "$PIDFILE"; return; fi
  local pid; pid="$(cat "$PIDFILE")"
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  echo "kafka stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running (pid $(cat "$PIDFILE"))"; else echo "stopped"; exit 3; fi ;;
  wipe) stop; rm -rf "$STATE"; echo "removed $STATE" ;;
  jars) fetch_jars; echo "$LIBS" ;;
  *) echo "usage: $0 start|stop|status|wipe|jars" >&2; exit 2 ;;
esac
