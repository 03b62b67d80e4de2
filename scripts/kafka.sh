#!/usr/bin/env bash
# Local Apache Kafka 4.x (KRaft, one combined broker+controller node) from Maven Central jars, Java 17.
#
#   scripts/kafka.sh install                  resolve org.apache.kafka:kafka_2.13 + deps into .cache/kafka/libs
#                                             (idempotent; offline after the first run: reuses ~/.m2 and the lib dir)
#   scripts/kafka.sh start [PORT] [DATA_DIR]  format KRaft storage (first time), start the broker in the background,
#                                             wait until it serves, print its pid. Defaults: 9092, .run/kafka/data.
#                                             The controller listens on PORT+1 (env KAFKA_CONTROLLER_PORT overrides).
#   scripts/kafka.sh stop [DATA_DIR]          SIGTERM the broker started with DATA_DIR (controlled shutdown), wait.
#   scripts/kafka.sh topics BOOTSTRAP         create the conversation-log topics (services/convlog/topics.py).
#   scripts/kafka.sh status [DATA_DIR]        print the pid when running, exit 1 otherwise.
#
# Env: KAFKA_VERSION (default from scripts/kafka/pom.xml), KAFKA_HEAP_OPTS (default -Xms128m -Xmx512m),
#      KAFKA_START_TIMEOUT_S (default 90), JAVA (default: java on PATH; must be 17+), PYTHON (default .venv/bin/python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIBS="$ROOT/.cache/kafka/libs"
POM="$ROOT/scripts/kafka/pom.xml"
JAVA="${JAVA:-java}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

die() { echo "kafka.sh: $*" >&2; exit 1; }

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (install openjdk-17-jre-headless)"
  local v
  v="$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  [[ "${v%%.*}" -ge 17 ]] 2>/dev/null || die "Java 17+ required, found '$v'"
}

cmd_install() {
  if [[ -f "$LIBS/.complete" ]] && cmp -s "$POM" "$LIBS/.complete"; then
    echo "kafka libs already installed in $LIBS"; return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install -y maven)"
  local extra=()
  [[ -n "${KAFKA_VERSION:-}" ]] && extra+=("-Dkafka.version=$KAFKA_VERSION")
  rm -rf "$LIBS.tmp"; mkdir -p "$LIBS.tmp"
  # -o (offline) first: works without network once ~/.m2 holds the artifacts.
  if ! mvn -B -q -o -f "$POM" "${extra[@]}" dependency:copy-dependencies \
        -DoutputDirectory="$LIBS.tmp" -DincludeScope=runtime >/dev/null 2>&1; then
    mvn -B -q -f "$POM" "${extra[@]}" dependency:copy-dependencies \
        -DoutputDirectory="$LIBS.tmp" -DincludeScope=runtime
  fi
  ls "$LIBS.tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "resolution produced no kafka_2.13 jar"
  cp "$POM" "$LIBS.tmp/.complete"
  rm -rf "$LIBS"; mv "$LIBS.tmp" "$LIBS"
  echo "kafka libs installed in $LIBS ($(ls "$LIBS"/*.jar | wc -l) jars)"
}

write_config() {  # port cport data_dir
  local port="$1" cport="$2" data="$3"
  cat > "$data/server.properties" <<CFG
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data/logs
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.flush.interval.messages=9223372036854775807
CFG
  cat > "$data/log4j2.properties" <<CFG
status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $data/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
CFG
}

java_opts() {  # data_dir -> JOPTS array
  local data="$1"
  # shellcheck disable=SC2206
  JOPTS=(${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m} -XX:+UseG1GC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
         "-Dlog4j2.configurationFile=$data/log4j2.properties" "-Dkafka.logs.dir=$data" -cp "$LIBS/*")
}

java_cmd() {  # data_dir main-class args...
  local data="$1"; shift
  java_opts "$data"
  "$JAVA" "${JOPTS[@]}" "$@"
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

cmd_start() {
  local port="${1:-9092}" data="${2:-$ROOT/.run/kafka/data}"
  local cport="${KAFKA_CONTROLLER_PORT:-$((port + 1))}"
  check_java
  [[ -f "$LIBS/.complete" ]] || cmd_install
  mkdir -p "$data"; data="$(cd "$data" && pwd)"
  if [[ -f "$data/kafka.pid" ]] && pid_alive "$(cat "$data/kafka.pid")"; then
    echo "kafka.sh: already running" >&2; cat "$data/kafka.pid"; return 0
  fi
  write_config "$port" "$cport" "$data"
  if [[ ! -f "$data/logs/meta.properties" ]]; then
    local cluster_id
    # A base64url UUID as Kafka wants it, never starting with "-" (the storage tool would read it as an option:
    # one start in 64 failed with "--cluster-id expected one argument").
    local gen='import base64,uuid
while True:
    c = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if c[0] != "-":
        print(c); break'
    cluster_id="$("$PYTHON" -c "$gen" 2>/dev/null || python3 -c "$gen")"
    java_cmd "$data" kafka.tools.StorageTool format -t "$cluster_id" -c "$data/server.properties" \
      > "$data/format.log" 2>&1 || { cat "$data/format.log" >&2; die "storage format failed"; }
  fi
  : > "$data/server.log"
  # setsid: the broker gets its own session, so a Ctrl-C in the caller's terminal does not kill it.
  (java_opts "$data"; exec setsid "$JAVA" "${JOPTS[@]}" kafka.Kafka "$data/server.properties") \
    > "$data/kafka.out" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$data/kafka.pid"
  local deadline=$(( $(date +%s) + ${KAFKA_START_TIMEOUT_S:-90} ))
  while :; do
    pid_alive "$pid" || { tail -n 30 "$data/kafka.out" "$data/server.log" >&2; die "broker exited during start"; }
    if grep -q "Kafka Server started" "$data/server.log" 2>/dev/null \
       && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      break
    fi
    [[ $(date +%s) -lt $deadline ]] || { tail -n 30 "$data/server.log" >&2; die "broker not ready in time"; }
    sleep 0.2
  done
  echo "$pid"
}

cmd_stop() {
  local data="${1:-$ROOT/.run/kafka/data}"
  [[ -f "$data/kafka.pid" ]] || { echo "kafka.sh: no pid file in $data" >&2; return 0; }
  local pid; pid="$(cat "$data/kafka.pid")"
  if pid_alive "$pid"; then
    kill -TERM "$pid"
    for _ in $(seq 1 300); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then echo "kafka.sh: broker $pid did not stop in 30 s, killing" >&2; kill -KILL "$pid"; fi
  fi
  rm -f "$data/kafka.pid"
  echo "stopped $pid"
}

cmd_status() {
  local data="${1:-$ROOT/.run/kafka/data}"
  [[ -f "$data/kafka.pid" ]] && pid_alive "$(cat "$data/kafka.pid")" && { cat "$data/kafka.pid"; return 0; }
  return 1
}

cmd_topics() {  # one-node local brokers get --local unless other args are given
  local bootstrap="${1:?usage: kafka.sh topics BOOTSTRAP [topics.py args]}"; shift
  cd "$ROOT" && exec "$PYTHON" -m services.convlog.topics --bootstrap "$bootstrap" "${@:---local}"
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  topics) shift; cmd_topics "$@" ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
