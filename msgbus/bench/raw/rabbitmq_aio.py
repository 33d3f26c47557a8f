"""RabbitMQ's asyncio client, aio-pika, doing the work of ``python -m msgbus.bench.rabbitmq
--api aio`` (:mod:`msgbus.bench.rabbitmq_aio`): confirmed persistent publishes with a window,
and draining a pre-filled group queue with manual acks, on msgbus's exchange. Needs the
``bench`` extra (aio-pika).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aio_pika

from msgbus.bench.raw.rabbitmq import BODY, EXCHANGE

__all__ = ["aio_pika_consume", "aio_pika_publish"]


def aio_pika_publish(url: str, topic: str, messages: int, window: int) -> float:
    """Raw aio-pika: confirmed persistent publishes, at most ``window`` in flight; msg/s."""

    async def go() -> float:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(EXCHANGE)
            limit = asyncio.Semaphore(window)

            async def one() -> None:
                async with limit:
                    await exchange.publish(
                        aio_pika.Message(
                            BODY,
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=topic,
                    )

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(messages)))
            return messages / (time.perf_counter() - started)
        finally:
            await connection.close()

    return asyncio.run(go())


def aio_pika_consume(url: str, queue: str, messages: int, prefetch: int) -> float:
    """Raw aio-pika: drain ``messages`` from ``queue`` with manual acks; msg/s."""

    async def go() -> float:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=prefetch)
            source = await channel.get_queue(queue)
            done = asyncio.Event()
            count = 0

            async def on_message(message: Any) -> None:
                nonlocal count
                json.loads(message.body)
                await message.ack()
                count += 1
                if count == messages:
                    done.set()

            started = time.perf_counter()
            await source.consume(on_message)
            await asyncio.wait_for(done.wait(), 300)
            return messages / (time.perf_counter() - started)
        finally:
            await connection.close()

    return asyncio.run(go())
