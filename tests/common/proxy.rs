//! A TCP proxy the fault tests put between hopback and the broker — in front of AMQP or of the
//! management API — so a test can break *its own* connections without touching anyone else's:
//! [`Proxy::cut`] drops every live connection abruptly (no AMQP close: the peer just sees the socket
//! go away), [`Proxy::down`] also closes the listening port so new connections are refused, like a
//! stopped broker or a dead management plugin, until [`Proxy::up`] opens the same port again.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

/// A cuttable TCP proxy on 127.0.0.1.
pub struct Proxy {
    /// The local port clients connect to.
    pub port: u16,
    upstream: String,
    live: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

fn listen(port: u16) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    s.listen(1024)
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`).
    pub async fn to(upstream: &str) -> Self {
        let listener = listen(0).unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Self {
            port,
            upstream: upstream.to_string(),
            live: Arc::default(),
            acceptor: Mutex::new(None),
        };
        p.serve(listener);
        p
    }

    /// A proxy to the test broker's AMQP port.
    pub async fn amqp() -> Self {
        let u = url::Url::parse(&super::test_url()).unwrap();
        Self::to(&format!(
            "{}:{}",
            u.host_str().unwrap(),
            u.port().unwrap_or(5672)
        ))
        .await
    }

    /// A proxy to the test broker's management API.
    pub async fn mgmt() -> Self {
        let cfg = super::test_config();
        let u = &cfg.profile.mgmt_url;
        Self::to(&format!(
            "{}:{}",
            u.host_str().unwrap(),
            u.port_or_known_default().unwrap_or(15672)
        ))
        .await
    }

    fn serve(&self, listener: TcpListener) {
        let live = self.live.clone();
        let up = self.upstream.clone();
        let h = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let up = up.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&up).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut l = live.lock().unwrap();
                l.retain(|h| !h.is_finished());
                l.push(h);
            }
        });
        *self.acceptor.lock().unwrap() = Some(h);
    }

    /// Drop every live connection; returns how many were cut.
    pub fn cut(&self) -> usize {
        let mut live = self.live.lock().unwrap();
        let n = live.iter().filter(|h| !h.is_finished()).count();
        for h in live.drain(..) {
            h.abort();
        }
        n
    }

    /// Stop listening (new connections are refused) and cut the live ones. Returns once the
    /// listening socket is closed: a connection racing into the old backlog would be reset
    /// rather than refused, which a client may read as something else.
    pub async fn down(&self) -> usize {
        let h = self.acceptor.lock().unwrap().take();
        if let Some(h) = h {
            h.abort();
            let _ = h.await;
        }
        self.cut()
    }

    /// Listen again on the same port.
    pub async fn up(&self) {
        if self.acceptor.lock().unwrap().is_some() {
            return;
        }
        // The aborted acceptor drops its listener on its next poll: retry the bind briefly.
        for _ in 0..100 {
            if let Ok(l) = listen(self.port) {
                self.serve(l);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("proxy: cannot listen on port {} again", self.port);
    }

    /// Is it listening?
    pub fn is_up(&self) -> bool {
        self.acceptor.lock().unwrap().is_some()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(h) = self.acceptor.lock().unwrap().take() {
            h.abort();
        }
        self.cut();
    }
}

/// A config whose AMQP and/or management traffic goes through proxies (the other one direct), with
/// its own operator name so its connections (`hopback PURPOSE (OPERATOR)`) can be found and killed
/// through the management API without touching other tests' connections.
pub fn config_via(
    amqp: Option<&Proxy>,
    mgmt: Option<&Proxy>,
    operator: &str,
) -> hopback::config::Config {
    let base = super::test_config();
    let mut url = url::Url::parse(&super::test_url()).unwrap();
    if let Some(p) = amqp {
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(p.port)).unwrap();
    }
    let mut mgmt_url = base.profile.mgmt_url.clone();
    if let Some(p) = mgmt {
        mgmt_url.set_host(Some("127.0.0.1")).unwrap();
        mgmt_url.set_port(Some(p.port)).unwrap();
    }
    let mut cfg = hopback::config::resolve(
        hopback::config::raw::RawConfig::default(),
        &std::path::PathBuf::from("/nonexistent/hopback-test.toml"),
        false,
        &hopback::config::Overrides {
            url: Some(url.to_string()),
            mgmt_url: Some(mgmt_url.to_string()),
            ..Default::default()
        },
    )
    .unwrap();
    cfg.operator = operator.to_string();
    cfg
}
