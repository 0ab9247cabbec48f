//! The broker's own AMQP server properties (`connection.start`: `product`, `version`), read on a
//! short connection of their own: lapin keeps them to itself, and they are the one place a
//! broker names its version when its management API does not (no `monitoring` tag, API down,
//! a node without the metrics collector whose overview is refused).
//!
//! Only the protocol header is sent and the broker's first frame read; no credentials travel
//! and no AMQP session is opened. TLS uses the profile's one trust configuration
//! (`broker::tls`).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Profile;

/// AMQP 0-9-1's protocol header.
const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";
/// The whole exchange is bounded by this.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// A `connection.start` larger than this is not one.
const MAX_FRAME: usize = 64 * 1024;

/// The broker's version from its `connection.start` (`None`: not known — no answer, not AMQP,
/// no `version` property).
pub async fn server_version(profile: &Profile) -> Option<String> {
    let frame = tokio::time::timeout(PROBE_TIMEOUT, first_frame(profile))
        .await
        .ok()??;
    version_of(&frame)
}

/// The broker's first frame after the protocol header.
async fn first_frame(profile: &Profile) -> Option<Vec<u8>> {
    let (host, port) = profile.host_and_port();
    let host = host.trim_matches(['[', ']']).to_string();
    let mut tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .ok()?;
    if !profile.is_tls() {
        tcp.write_all(PROTOCOL_HEADER).await.ok()?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while frame_len(&got).is_none_or(|n| got.len() < n) && got.len() < MAX_FRAME {
            let n = tcp.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
        }
        return Some(got);
    }
    let cfg = crate::broker::tls::client_config(profile).ok()?;
    let name = rustls::pki_types::ServerName::try_from(host).ok()?;
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).ok()?;
    std::io::Write::write_all(&mut conn.writer(), PROTOCOL_HEADER).ok()?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while conn.wants_write() {
            let mut out = Vec::new();
            conn.write_tls(&mut out).ok()?;
            tcp.write_all(&out).await.ok()?;
        }
        let mut plain = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut conn.reader(), &mut plain) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&plain[..n]),
                Err(_) => break,
            }
        }
        if frame_len(&got).is_some_and(|n| got.len() >= n) || got.len() >= MAX_FRAME {
            return Some(got);
        }
        let n = tcp.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        let mut rd = &buf[..n];
        while !rd.is_empty() {
            conn.read_tls(&mut rd).ok()?;
            conn.process_new_packets().ok()?;
        }
    }
}

/// The length of the frame at the start of `bytes` (header, payload and frame-end), once its
/// header is there.
fn frame_len(bytes: &[u8]) -> Option<usize> {
    let size = u32::from_be_bytes(bytes.get(3..7)?.try_into().ok()?);
    Some(7 + usize::try_from(size).ok()? + 1)
}

/// `version` of a `connection.start` method frame.
fn version_of(frame: &[u8]) -> Option<String> {
    if frame.first() != Some(&1) {
        return None;
    }
    let payload = frame.get(7..frame_len(frame)? - 1)?;
    // class 10 (connection), method 10 (start), then version-major and version-minor.
    if payload.get(0..4)? != [0, 10, 0, 10] {
        return None;
    }
    let (_, table) = lapin::types::parsing::parse_field_table(payload.get(6..)?).ok()?;
    table
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == "version")
        .and_then(|(_, v)| match v {
            lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        })
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `connection.start` frame with these server properties.
    fn start_frame(props: &[(&str, &str)]) -> Vec<u8> {
        let mut table = Vec::new();
        for (k, v) in props {
            table.push(u8::try_from(k.len()).unwrap());
            table.extend_from_slice(k.as_bytes());
            table.push(b'S');
            table.extend_from_slice(&u32::try_from(v.len()).unwrap().to_be_bytes());
            table.extend_from_slice(v.as_bytes());
        }
        let mut payload = vec![0, 10, 0, 10, 0, 9];
        payload.extend_from_slice(&u32::try_from(table.len()).unwrap().to_be_bytes());
        payload.extend_from_slice(&table);
        payload.extend_from_slice(&[0, 0, 0, 5]);
        payload.extend_from_slice(b"PLAIN");
        payload.extend_from_slice(&[0, 0, 0, 5]);
        payload.extend_from_slice(b"en_US");
        let mut frame = vec![1, 0, 0];
        frame.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&payload);
        frame.push(0xCE);
        frame
    }

    #[test]
    fn reads_the_version_of_a_connection_start() {
        let f = start_frame(&[("product", "RabbitMQ"), ("version", "4.0.5")]);
        assert_eq!(frame_len(&f), Some(f.len()));
        assert_eq!(version_of(&f).as_deref(), Some("4.0.5"));
    }

    #[test]
    fn anything_else_is_unknown() {
        assert_eq!(version_of(&start_frame(&[("product", "RabbitMQ")])), None);
        assert_eq!(version_of(b"AMQP\x00\x00\x09\x01"), None);
        assert_eq!(version_of(&[]), None);
        let mut other = start_frame(&[("version", "4.0.5")]);
        other[10] = 11; // connection.secure, not start
        assert_eq!(version_of(&other), None);
    }
}
