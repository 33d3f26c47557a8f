"""``python -m msgbus.testing.brokers start kafka|rabbitmq|activemq|redis [--port N]``."""

import sys

from msgbus.testing.brokers.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m msgbus.testing.brokers"))
