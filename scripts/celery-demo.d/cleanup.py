"""Delete what a scripts/celery-demo run created: the namespace's objects (NS, NS.dlx,
NS.unrouted, NS.gate-a/-b, its queues) and — when CELERY_OBJECTS_NEW=1, i.e. they did not
exist before the run — Celery's native delayed-delivery queues and exchanges
(`celery_delayed_*`) and its `celery.pidbox` and `celeryev` exchanges."""

import os

import amqp

NS = os.environ["NS"]
url = os.environ.get("AMQP_HOSTPORT", "127.0.0.1:5672")
conn = amqp.Connection(
    host=url,
    userid=os.environ.get("AMQP_USER", "guest"),
    password=os.environ.get("AMQP_PASSWORD", "guest"),
    virtual_host=os.environ.get("AMQP_VHOST", "/"),
)
conn.connect()
ch = conn.channel()
for x in (NS, f"{NS}.dlx", f"{NS}.unrouted", f"{NS}.gate-a", f"{NS}.gate-b",
          f"{NS}.replay-origin", f"{NS}.replay-unknown", f"{NS}.replay-origin-keyed"):
    ch.exchange_delete(x)
for q in (f"{NS}.v1", f"{NS}.v2", f"{NS}.dlq", f"{NS}.unrouted", f"{NS}.parked"):
    ch.queue_delete(q)
if os.environ.get("CELERY_OBJECTS_NEW") == "1":
    for i in range(28):
        ch.queue_delete(f"celery_delayed_{i}")
        ch.exchange_delete(f"celery_delayed_{i}")
    ch.exchange_delete("celery_delayed_delivery")
    ch.exchange_delete("celery.pidbox")
    ch.exchange_delete("celeryev")
conn.close()
