#!/usr/bin/env python3
"""A faithful pipelined AMQP mover in Python (pika), the baseline of `benches/engines.rs`.

Moves exactly N messages from SRC to DST the way a careful script would: consume with manual
ack and prefetch 1000, publish each to DST through the default exchange with its original
properties on a publisher-confirm channel (pipelined: never waiting for a confirm before the next
publish), and ack a source message only once the broker confirmed its copy (a multiple confirm
acks every message up to it). Prints `moved N in S seconds`.

Usage: pika_mover.py AMQP_URL SRC DST N
"""

import sys
import time

import pika


def main():
    url, src, dst, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    params = pika.URLParameters(url)
    state = {
        "published": 0,  # publish sequence number (1-based, as the broker counts confirms)
        "seq_to_tag": {},  # publish seq -> source delivery tag
        "acked": 0,
        "done": False,
        "started": None,
    }

    def on_open(conn):
        conn.channel(on_open_callback=lambda ch: on_src(conn, ch))

    def on_src(conn, src_ch):
        conn.channel(on_open_callback=lambda dst_ch: on_dst(conn, src_ch, dst_ch))

    def on_dst(conn, src_ch, dst_ch):
        def on_confirm(frame):
            method = frame.method
            tag = method.delivery_tag
            if isinstance(method, pika.spec.Basic.Nack):
                raise SystemExit(f"nacked {tag}")
            seqs = [s for s in state["seq_to_tag"] if (s <= tag if method.multiple else s == tag)]
            if not seqs:
                return
            top = max(seqs)
            src_tag = state["seq_to_tag"][top]
            # Source tags follow publish order: one multiple ack covers every confirmed one.
            src_ch.basic_ack(delivery_tag=src_tag, multiple=len(seqs) > 1 or method.multiple)
            for s in seqs:
                del state["seq_to_tag"][s]
            state["acked"] += len(seqs)
            if state["acked"] >= n and not state["done"]:
                state["done"] = True
                conn.close()

        def on_message(ch, method, props, body):
            if state["published"] >= n:
                return  # beyond N: left unacked, back to the source on close
            dst_ch.basic_publish(exchange="", routing_key=dst, body=body, properties=props)
            state["published"] += 1
            state["seq_to_tag"][state["published"]] = method.delivery_tag

        def start(_frame):
            src_ch.basic_qos(prefetch_count=1000)
            state["started"] = time.monotonic()
            src_ch.basic_consume(queue=src, on_message_callback=on_message, auto_ack=False)

        dst_ch.confirm_delivery(on_confirm, callback=start)

    conn = pika.SelectConnection(
        params,
        on_open_callback=on_open,
        on_open_error_callback=lambda c, err: (print(f"cannot connect: {err}", file=sys.stderr), c.ioloop.stop()),
        on_close_callback=lambda c, reason: c.ioloop.stop(),
    )
    conn.ioloop.start()
    if state["started"] is None or state["acked"] < n:
        raise SystemExit(f"moved {state['acked']} of {n}")
    secs = time.monotonic() - state["started"]
    print(f"moved {state['acked']} in {secs:.3f} seconds")


if __name__ == "__main__":
    main()
