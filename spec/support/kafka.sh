#!/bin/sh
# kafka.sh - real Apache Kafka brokers (KRaft, combined broker+controller) on
# loopback for kroute's test suite. Nothing outside the repository is used:
# the jars come through Maven into .build/kafka.
#
#   kafka.sh fetch               download the broker jars once (.build/kafka/lib)
#   kafka.sh start DIR [NODES]   start a 1- or 3-node cluster in DIR, wait until
#                                every node serves, print "host:port,..." (also in
#                                DIR/bootstrap; DIR/nodeN/port is node N's port)
#   kafka.sh stop DIR            stop the cluster recorded in DIR, remove DIR
#   kafka.sh kill DIR N          SIGKILL node N, keep its data (failover tests)
#   kafka.sh term DIR N          stop node N gracefully (SIGTERM), keep its data
#   kafka.sh restart DIR N       start node N again, wait until it serves, print it
#   kafka.sh stop-all            stop every spec cluster (.build/kafka/run/spec.*)
#
# Relative DIRs are taken from the caller's working directory.
set -eu

KAFKA_VERSION=4.4.0
# log4j-core comes with the broker but no slf4j binding does; without one the
# broker logs nothing and prints SLF4J warnings. Keep in step with the log4j-core
# that KAFKA_VERSION pulls in (ls .build/kafka/lib/log4j-core-*).
LOG4J_VERSION=2.25.5

CALLER_PWD=$(pwd)
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
KDIR=$ROOT/.build/kafka
LIB=$KDIR/lib
STAMP="kafka_2.13 $KAFKA_VERSION log4j-slf4j-impl $LOG4J_VERSION"
PY=/usr/bin/python3
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=20

die() { echo "kafka.sh: $*" >&2; exit 1; }

abspath() {
	case $1 in
	/*) printf '%s\n' "$1" ;;
	*) printf '%s/%s\n' "$CALLER_PWD" "$1" ;;
	esac
}

fetch() {
	if [ -f "$LIB/.stamp" ] && [ "$(cat "$LIB/.stamp")" = "$STAMP" ]; then
		return 0
	fi
	mkdir -p "$KDIR"
	# kafka-tools brings TopicCommand (topics with N partitions, which kcat
	# cannot create); its connect-runtime dependency is Kafka Connect's web
	# server stack, which TopicCommand does not need.
	cat >"$KDIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kroute.spec</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
      <exclusions>
        <exclusion>
          <groupId>org.apache.kafka</groupId>
          <artifactId>connect-runtime</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
	tmp=$KDIR/lib.tmp.$$
	rm -rf "$tmp"
	echo "kafka.sh: fetching kafka_2.13 $KAFKA_VERSION through Maven" >&2
	# Maven prints its errors on stdout: send them to stderr so that callers
	# reading our stdout (start's bootstrap line) never see them.
	if ! mvn -q -B -f "$KDIR/pom.xml" -Dmaven.repo.local="$KDIR/m2" \
		dependency:copy-dependencies -DoutputDirectory="$tmp" >&2; then
		rm -rf "$tmp"
		die "Maven could not fetch kafka_2.13 $KAFKA_VERSION"
	fi
	ls "$tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null
	echo "$STAMP" >"$tmp/.stamp"
	# Another test process may have fetched meanwhile: keep whichever is whole.
	if [ -f "$LIB/.stamp" ] && [ "$(cat "$LIB/.stamp")" = "$STAMP" ]; then
		rm -rf "$tmp"
	else
		rm -rf "$LIB"
		mv "$tmp" "$LIB"
	fi
}

# alive PID: the process exists and is not a zombie (PID 1 here may not reap
# the brokers that a finished kafka.sh left behind).
alive() {
	[ -r "/proc/$1/stat" ] || return 1
	case $(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) in
	Z* | X* | "") return 1 ;;
	esac
	return 0
}

# ours DIR N PID: PID is alive and is node N of DIR's broker, so a stale pid
# file whose number the kernel gave to another process never gets it killed.
ours() {
	alive "$3" || return 1
	case $(tr '\0' ' ' <"/proc/$3/cmdline" 2>/dev/null) in
	*kafka.Kafka\ "$1/node$2/server.properties"*) return 0 ;;
	esac
	return 1
}

node_pid() { # DIR N -> prints the recorded PID if it is still our broker
	[ -f "$1/node$2/pid" ] || return 1
	p=$(cat "$1/node$2/pid")
	ours "$1" "$2" "$p" || return 1
	echo "$p"
}

nodes_of() { # DIR -> node numbers present
	for d in "$1"/node*; do
		[ -f "$d/server.properties" ] && echo "${d##*/node}"
	done
	return 0
}

# Ports below the kernel's ephemeral range, so that a client connection cannot
# take a killed node's port before `restart` binds it again; each candidate is
# bound (and held until all are chosen) to be sure it is free now.
pick_ports() {
	$PY -c '
import random, socket, sys
n = int(sys.argv[1])
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except Exception:
    low = 32768
held = []
for port in random.sample(range(10000, max(low, 12000)), 500) + [0] * n:
    if len(held) == n:
        break
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        held.append(s)
    except OSError:
        s.close()
print(" ".join(str(s.getsockname()[1]) for s in held))
' "$1"
}

write_config() { # DIR N NODES VOTERS
	dir=$1 n=$2 nodes=$3 voters=$4
	nd=$dir/node$n
	if [ "$nodes" -eq 1 ]; then rf=1 isr=1; else rf=3 isr=2; fi
	cat >"$nd/server.properties" <<EOF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(cat "$nd/port"),CONTROLLER://127.0.0.1:$(cat "$nd/cport")
advertised.listeners=PLAINTEXT://127.0.0.1:$(cat "$nd/port")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$nd/data
auto.create.topics.enable=true
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
# Small internal topics: created on first use, fewer partitions = faster.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
share.coordinator.state.topic.num.partitions=4
group.initial.rebalance.delay.ms=0
# Limit specs produce 1 MiB inputs (the broker's default limit is 1 MiB plus
# batch overhead); kroute's own producer limit is what they test.
message.max.bytes=4194304
replica.fetch.max.bytes=4194304
# Failover tests: a killed node is fenced (and leaves the ISR, unblocking
# acks=all) after 4 s instead of 9 s.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=4000
replica.lag.time.max.ms=10000
# Specs run consumers with short session timeouts so a killed member is
# noticed quickly; Kafka's default floor is 6 s.
group.min.session.timeout.ms=1000
# Fewer threads: less memory and startup on a 2-core machine.
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
EOF
}

launch() { # DIR N: start node N in the background, record its PID
	nd=$1/node$2
	# cwd is the node's directory so that JVM crash files land there too.
	# stdin/stdout/stderr are redirected so that a caller reading our stdout
	# to EOF ($(...), popen) is not held open by the broker.
	(
		cd "$nd"
		exec java -Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
			-Djava.awt.headless=true \
			-Dlog4j2.configurationFile="$1/log4j2.properties" \
			-Dkafka.logs.dir="$nd" \
			-cp "$LIB/*" kafka.Kafka "$nd/server.properties"
	) </dev/null >"$nd/out.log" 2>&1 &
	echo $! >"$nd/pid"
}

# listening PORT: something listens on 127.0.0.1:PORT. Cheap, unlike a kcat
# that waits out its metadata timeout while the broker is not up yet.
# The JVM listens on an IPv6 socket (::ffff:127.0.0.1), listed in tcp6.
listening() {
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
		grep -q "^ *[0-9]*: [0-9A-F]*0100007F:$(printf '%04X' "$1") [0-9A-F]*:[0-9A-F]* 0A "
}

# brokers_seen PORT -> number of brokers in that node's metadata (0 if it
# does not answer).
brokers_seen() {
	listening "$1" || { echo 0; return 0; }
	kcat -b "127.0.0.1:$1" -L -m 2 -X reconnect.backoff.max.ms=100 2>/dev/null |
		sed -n 's/^ *\([0-9][0-9]*\) brokers:.*/\1/p' | head -n 1 | grep . || echo 0
}

log_tail() { # DIR N
	nd=$1/node$2
	for f in "$nd/server.log" "$nd/out.log"; do
		[ -s "$f" ] || continue
		echo "---- tail of $f" >&2
		tail -n 30 "$f" >&2
	done
}

# wait_serving DIR NODES N...: until each listed node reports all NODES brokers.
wait_serving() {
	dir=$1 want=$2
	shift 2
	deadline=$(($(date +%s) + START_TIMEOUT))
	for n in "$@"; do
		while :; do
			if ! node_pid "$dir" "$n" >/dev/null; then
				echo "kafka.sh: node $n exited while starting" >&2
				log_tail "$dir" "$n"
				return 1
			fi
			[ "$(brokers_seen "$(cat "$dir/node$n/port")")" -ge "$want" ] && break
			if [ "$(date +%s)" -ge "$deadline" ]; then
				echo "kafka.sh: node $n not serving $want brokers after ${START_TIMEOUT}s" >&2
				log_tail "$dir" "$n"
				return 1
			fi
			sleep 0.2
		done
	done
}

start() {
	[ $# -ge 1 ] || die "usage: kafka.sh start DIR [NODES]"
	dir=$(abspath "$1") nodes=${2:-1}
	case $nodes in 1 | 3) ;; *) die "NODES must be 1 or 3" ;; esac
	command -v kcat >/dev/null || die "kcat is needed to see when brokers serve"
	if [ -e "$dir" ]; then
		# Reuse only a run directory of ours whose brokers are all gone.
		[ -f "$dir/.kafka-run" ] || [ -z "$(ls -A "$dir")" ] ||
			die "$dir exists and is not a kafka.sh run directory"
		for n in $(nodes_of "$dir"); do
			node_pid "$dir" "$n" >/dev/null && die "$dir has a running node $n; stop it first"
		done
		rm -rf "$dir"
	fi
	fetch
	mkdir -p "$dir"
	: >"$dir/.kafka-run"
	trap 'stop_nodes "$dir"' EXIT
	trap 'exit 1' INT TERM HUP

	cat >"$dir/log4j2.properties" <<'EOF'
# The broker logs to server.log in its node directory, never the terminal.
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF

	set -- $(pick_ports $((nodes * 2)))
	[ $# -eq $((nodes * 2)) ] || die "could not find $((nodes * 2)) free ports"
	voters="" boot=""
	n=1
	while [ "$n" -le "$nodes" ]; do
		mkdir -p "$dir/node$n"
		echo "$1" >"$dir/node$n/port"
		echo "$2" >"$dir/node$n/cport"
		voters="$voters${voters:+,}$n@127.0.0.1:$2"
		boot="$boot${boot:+,}127.0.0.1:$1"
		shift 2
		n=$((n + 1))
	done
	echo "$boot" >"$dir/bootstrap"

	# A static quorum (controller.quorum.voters) needs no --initial-controllers
	# or --standalone when formatting; every node gets the same cluster id.
	# (a cluster id is 16 random bytes in unpadded base64url: 22 characters; it
	# may begin with "-", so it is passed as --cluster-id=ID, never as a separate word)
	cid=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
	[ ${#cid} -eq 22 ] || die "cannot make a cluster id (got '$cid')"
	pids=""
	for n in $(seq "$nodes"); do
		write_config "$dir" "$n" "$nodes" "$voters"
		# Format the nodes in parallel: each is a JVM start.
		java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
			-Dlog4j2.configurationFile="$dir/log4j2.properties" \
			-Dkafka.logs.dir="$dir/node$n" \
			-cp "$LIB/*" kafka.tools.StorageTool format \
			--cluster-id="$cid" -c "$dir/node$n/server.properties" \
			</dev/null >"$dir/node$n/format.log" 2>&1 &
		pids="$pids $!"
	done
	n=1
	for p in $pids; do
		if ! wait "$p"; then
			echo "kafka.sh: formatting node $n failed:" >&2
			cat "$dir/node$n/format.log" >&2
			exit 1
		fi
		n=$((n + 1))
	done

	for n in $(seq "$nodes"); do launch "$dir" "$n"; done
	wait_serving "$dir" "$nodes" $(seq "$nodes") || exit 1
	trap - EXIT INT TERM HUP
	echo "$boot"
}

# stop_nodes DIR [N]: TERM the recorded brokers (all, or node N), wait, KILL.
stop_nodes() {
	sdir=$1 only=${2:-}
	spids=""
	for n in $(nodes_of "$sdir"); do
		[ -z "$only" ] || [ "$n" = "$only" ] || continue
		if p=$(node_pid "$sdir" "$n"); then
			kill -TERM "$p" 2>/dev/null || true
			spids="$spids $n:$p"
		fi
	done
	left=$((STOP_TIMEOUT * 5))
	while [ "$left" -gt 0 ]; do
		up=""
		for np in $spids; do
			ours "$sdir" "${np%%:*}" "${np#*:}" && up="$up $np"
		done
		spids=$up
		[ -n "$spids" ] || break
		sleep 0.2
		left=$((left - 1))
	done
	for np in $spids; do
		ours "$sdir" "${np%%:*}" "${np#*:}" && kill -KILL "${np#*:}" 2>/dev/null || true
	done
	return 0
}

stop() {
	[ $# -eq 1 ] || die "usage: kafka.sh stop DIR"
	dir=$(abspath "$1")
	[ -e "$dir" ] || return 0
	[ -f "$dir/.kafka-run" ] || die "$dir is not a kafka.sh run directory"
	stop_nodes "$dir"
	rm -rf "$dir"
}

kill_node() {
	[ $# -eq 2 ] || die "usage: kafka.sh kill DIR N"
	dir=$(abspath "$1") n=$2
	[ -f "$dir/node$n/server.properties" ] || die "no node $n in $dir"
	if p=$(node_pid "$dir" "$n"); then
		kill -KILL "$p"
		# Gone for good before we return, so that its port is free again.
		i=0
		while alive "$p" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	fi
	rm -f "$dir/node$n/pid"
}

term_node() {
	[ $# -eq 2 ] || die "usage: kafka.sh term DIR N"
	dir=$(abspath "$1") n=$2
	[ -f "$dir/node$n/server.properties" ] || die "no node $n in $dir"
	stop_nodes "$dir" "$n"
	rm -f "$dir/node$n/pid"
}

restart() {
	[ $# -eq 2 ] || die "usage: kafka.sh restart DIR N"
	dir=$(abspath "$1") n=$2
	[ -f "$dir/node$n/server.properties" ] || die "no node $n in $dir"
	node_pid "$dir" "$n" >/dev/null && die "node $n in $dir is running"
	# Keep the first run's log and out.log around for post-mortems.
	for f in server.log out.log; do
		[ -f "$dir/node$n/$f" ] && mv "$dir/node$n/$f" "$dir/node$n/$f.1"
	done
	launch "$dir" "$n"
	if ! wait_serving "$dir" "$(nodes_of "$dir" | wc -l)" "$n"; then
		stop_nodes "$dir" "$n"
		exit 1
	fi
	echo "127.0.0.1:$(cat "$dir/node$n/port")"
}

stop_all() { # the specs' clusters (run/spec.*), not one started by `make kafka`
	for d in "$KDIR"/run/spec.*; do
		[ -f "$d/.kafka-run" ] && stop "$d"
	done
	return 0
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
fetch) fetch ;;
start) start "$@" ;;
stop) stop "$@" ;;
kill) kill_node "$@" ;;
term) term_node "$@" ;;
restart) restart "$@" ;;
stop-all) stop_all ;;
*) die "usage: kafka.sh fetch | start DIR [1|3] | stop DIR | kill DIR N | term DIR N | restart DIR N | stop-all" ;;
esac
