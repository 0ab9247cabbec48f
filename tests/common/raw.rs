//! A bare AMQP 0-9-1 publisher over a plain `TcpStream`, for messages lapin cannot write: short
//! strings that are not UTF-8 (`message_id = b"bad\xff"`), header tables nested thousands deep.
//! RabbitMQ accepts both. It speaks just enough of the protocol to log in (PLAIN), open a
//! channel in confirm mode, publish with `mandatory` and wait for each confirm; the properties
//! are written byte for byte as the test builds them ([`RawProps`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Properties written as given (each `Some` sets its flag); short strings are raw bytes.
#[derive(Debug, Clone, Default)]
pub struct RawProps {
    pub content_type: Option<Vec<u8>>,
    /// The encoded headers table, length prefix included (see [`table`], [`nested_table`]).
    pub headers: Option<Vec<u8>>,
    pub delivery_mode: Option<u8>,
    pub expiration: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
    pub kind: Option<Vec<u8>>,
    pub user_id: Option<Vec<u8>>,
}

impl RawProps {
    /// Flags then fields, in the basic class's order.
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0u16;
        let mut out = Vec::new();
        if let Some(v) = &self.content_type {
            flags |= 1 << 15;
            out.extend(short(v));
        }
        if let Some(v) = &self.headers {
            flags |= 1 << 13;
            out.extend_from_slice(v);
        }
        if let Some(v) = self.delivery_mode {
            flags |= 1 << 12;
            out.push(v);
        }
        if let Some(v) = &self.expiration {
            flags |= 1 << 8;
            out.extend(short(v));
        }
        if let Some(v) = &self.message_id {
            flags |= 1 << 7;
            out.extend(short(v));
        }
        if let Some(v) = &self.kind {
            flags |= 1 << 5;
            out.extend(short(v));
        }
        if let Some(v) = &self.user_id {
            flags |= 1 << 4;
            out.extend(short(v));
        }
        let mut all = flags.to_be_bytes().to_vec();
        all.extend(out);
        all
    }
}

/// A short string: length byte, then the bytes.
pub fn short(b: &[u8]) -> Vec<u8> {
    assert!(b.len() <= 255);
    let mut v = vec![b.len() as u8];
    v.extend_from_slice(b);
    v
}

/// A long string value (`S`).
pub fn long_string(b: &[u8]) -> Vec<u8> {
    let mut v = vec![b'S'];
    v.extend_from_slice(&(b.len() as u32).to_be_bytes());
    v.extend_from_slice(b);
    v
}

/// A table from (key, encoded value: type byte first) entries.
pub fn table(entries: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in entries {
        body.extend(short(k));
        body.extend_from_slice(v);
    }
    let mut t = (body.len() as u32).to_be_bytes().to_vec();
    t.extend(body);
    t
}

/// A table holding `depth - 1` more tables, each the only value (`k`) of the one around it:
/// `depth` levels in all. Built outermost first, in linear time.
pub fn nested_table(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 * depth);
    for level in 1..depth {
        out.extend_from_slice(&((7 * (depth - level)) as u32).to_be_bytes());
        out.extend_from_slice(&[1, b'k', b'F']);
    }
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

/// A headers table `{deep: <nested>, …extra}` that is `depth` levels deep in all.
pub fn deep_headers(depth: usize, extra: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
    let mut deep = vec![b'F'];
    deep.extend(nested_table(depth - 1));
    let mut entries: Vec<(&[u8], Vec<u8>)> = vec![(b"deep", deep)];
    entries.extend(extra.iter().cloned());
    table(&entries)
}

/// One connection, one channel in confirm mode.
pub struct RawPublisher {
    sock: TcpStream,
    frame_max: u32,
    next_tag: u64,
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

fn method(class: u16, id: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(args);
    p
}

impl RawPublisher {
    /// Connect and log in with the test broker's URL (`common::test_url`).
    pub fn connect() -> Self {
        Self::connect_to(&super::test_url())
    }

    /// Connect and log in with `url` (user, password, host, port and vhost from it).
    pub fn connect_to(url: &str) -> Self {
        let url = url::Url::parse(url).unwrap();
        let user = percent_encoding::percent_decode_str(url.username())
            .decode_utf8()
            .unwrap()
            .to_string();
        let pass = percent_encoding::percent_decode_str(url.password().unwrap_or("guest"))
            .decode_utf8()
            .unwrap()
            .to_string();
        let vhost_raw = url.path().trim_start_matches('/');
        let vhost = if vhost_raw.is_empty() {
            "/".to_string()
        } else {
            percent_encoding::percent_decode_str(vhost_raw)
                .decode_utf8()
                .unwrap()
                .to_string()
        };
        let sock = TcpStream::connect(format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(5672)
        ))
        .unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut p = RawPublisher {
            sock,
            frame_max: 131_072,
            next_tag: 1,
        };
        p.sock.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
        p.expect(0, 10, 10);
        let mut args = 0u32.to_be_bytes().to_vec(); // client properties: {}
        args.extend(short(b"PLAIN"));
        let resp = format!("\0{user}\0{pass}");
        args.extend_from_slice(&(resp.len() as u32).to_be_bytes());
        args.extend_from_slice(resp.as_bytes());
        args.extend(short(b"en_US"));
        p.send(1, 0, &method(10, 11, &args));
        let tune = p.expect(0, 10, 30);
        let server_frame_max = u32::from_be_bytes([tune[2], tune[3], tune[4], tune[5]]);
        if server_frame_max != 0 {
            p.frame_max = p.frame_max.min(server_frame_max);
        }
        let mut args = tune[..2].to_vec();
        args.extend_from_slice(&p.frame_max.to_be_bytes());
        args.extend_from_slice(&0u16.to_be_bytes());
        p.send(1, 0, &method(10, 31, &args));
        let mut args = short(vhost.as_bytes());
        args.extend(short(b""));
        args.push(0);
        p.send(1, 0, &method(10, 40, &args));
        p.expect(0, 10, 41);
        p.send(1, 1, &method(20, 10, &short(b"")));
        p.expect(1, 20, 11);
        p.send(1, 1, &method(85, 10, &[0]));
        p.expect(1, 85, 11);
        p
    }

    fn send(&mut self, kind: u8, channel: u16, payload: &[u8]) {
        self.sock.write_all(&frame(kind, channel, payload)).unwrap();
    }

    /// Read one frame: (type, channel, payload).
    fn read_frame(&mut self) -> (u8, u16, Vec<u8>) {
        let mut head = [0u8; 7];
        self.sock.read_exact(&mut head).unwrap();
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        self.sock.read_exact(&mut payload).unwrap();
        assert_eq!(payload.pop(), Some(0xCE), "frame end");
        (head[0], u16::from_be_bytes([head[1], head[2]]), payload)
    }

    /// Wait for method `class.id` on `channel` (heartbeats skipped); returns its arguments.
    /// A connection or channel close from the broker fails the test with its reply text.
    fn expect(&mut self, channel: u16, class: u16, id: u16) -> Vec<u8> {
        loop {
            let (kind, ch, payload) = self.read_frame();
            if kind != 1 {
                continue;
            }
            let (c, m) = (
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            );
            if (c, m) == (10, 50) || (c, m) == (20, 40) {
                let text_len = payload[6] as usize;
                panic!(
                    "the broker closed the {}: {}",
                    if c == 10 { "connection" } else { "channel" },
                    String::from_utf8_lossy(&payload[7..7 + text_len])
                );
            }
            if ch == channel && (c, m) == (class, id) {
                return payload[4..].to_vec();
            }
        }
    }

    /// Publish one message (`mandatory`) to `exchange` with `routing_key` and wait for the
    /// broker's confirm; a return or a nack fails the test.
    pub fn publish(&mut self, exchange: &str, routing_key: &str, props: &RawProps, body: &[u8]) {
        let mut args = 0u16.to_be_bytes().to_vec();
        args.extend(short(exchange.as_bytes()));
        args.extend(short(routing_key.as_bytes()));
        args.push(1); // mandatory
        self.send(1, 1, &method(60, 40, &args));
        let mut header = 60u16.to_be_bytes().to_vec();
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        header.extend(props.encode());
        assert!(
            header.len() + 8 <= self.frame_max as usize,
            "the properties ({} bytes) do not fit one frame",
            header.len()
        );
        self.send(2, 1, &header);
        for chunk in body.chunks(self.frame_max as usize - 8) {
            self.send(3, 1, chunk);
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        loop {
            let (kind, _, payload) = self.read_frame();
            if kind != 1 {
                continue;
            }
            let (c, m) = (
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            );
            match (c, m) {
                (60, 80) => {
                    let acked = u64::from_be_bytes(payload[4..12].try_into().unwrap());
                    assert_eq!(acked, tag, "confirm for another publish");
                    return;
                }
                (60, 50) => panic!("the broker returned the message (unroutable)"),
                (60, 120) => panic!("the broker nacked the message"),
                (10, 50) | (20, 40) => {
                    let text_len = payload[6] as usize;
                    panic!(
                        "the broker closed the channel: {}",
                        String::from_utf8_lossy(&payload[7..7 + text_len])
                    );
                }
                _ => {}
            }
        }
    }

    /// Close the connection politely.
    pub fn close(mut self) {
        let mut args = 200u16.to_be_bytes().to_vec();
        args.extend(short(b"bye"));
        args.extend_from_slice(&[0, 0, 0, 0]);
        self.send(1, 0, &method(10, 50, &args));
        let _ = self.expect(0, 10, 51);
    }
}
