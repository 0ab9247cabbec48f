"""A Celery app wired to a hopback namespace (scripts/celery-demo). Environment: NS, BROKER_URL,
VERSION (the worker's version; unset for the producer), OUT (the worker's log of done tasks)."""

import os

from celery import Celery
from kombu import Exchange, Queue

NS = os.environ["NS"]
VERSION = os.environ.get("VERSION")

app = Celery("demo", broker=os.environ["BROKER_URL"])
# hopback owns the topology: Celery must neither declare nor bind it (a binding of its own on
# the consistent-hash entry exchange would join the gate). The queue arguments still say
# "quorum", which is how Celery knows to use per-consumer prefetch (quorum queues refuse a
# global QoS).
entry = Exchange(NS, type="x-consistent-hash", no_declare=True)
app.conf.update(
    task_queues=[
        Queue(
            f"{NS}.{v}",
            exchange=entry,
            routing_key="celery",
            no_declare=True,
            queue_arguments={"x-queue-type": "quorum"},
        )
        for v in ("v1", "v2")
    ],
    task_routes={"demo.work": {"exchange": entry, "routing_key": "celery"}},
    task_create_missing_queues=False,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={
        "client_properties": {"connection_name": f"{NS} worker {VERSION or 'producer'}"}
    },
)


@app.task(name="demo.work")
def work(i):
    with open(os.environ["OUT"], "a", encoding="utf-8") as f:
        f.write(f"{VERSION} {i}\n")


if __name__ == "__main__":
    import sys

    for i in range(int(sys.argv[1])):
        work.apply_async(args=(i,))
    print(f"published {sys.argv[1]} tasks")
