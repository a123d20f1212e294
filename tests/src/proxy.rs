//! A TCP forwarder between the processes under test and a shared server (PostgreSQL,
//! RabbitMQ), so a test can cut one environment off from that server without stopping it for
//! every other test running in parallel.
//!
//! [`TcpProxy::stop`] closes the listener and drops every open connection in both directions
//! (the process sees its connections end and new ones refused: an outage as the process
//! experiences it); [`TcpProxy::start`] listens again on the same port (the server is back).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The running listener, present between `start` and `stop`.
struct Running {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Inner {
    port: u16,
    target: SocketAddr,
    running: tokio::sync::Mutex<Option<Running>>,
    /// Connections accepted since the proxy was created (all starts).
    accepted: AtomicUsize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // `Drop` cannot await: signal and abort; the runtime drops the sockets soon after.
        if let Some(running) = self.running.get_mut().take() {
            let _ = running.shutdown.send(true);
            running.task.abort();
        }
    }
}

/// Control handle of one proxy. Cheap to clone; all clones control the same proxy, and the
/// proxy stops when the last handle is dropped.
#[derive(Clone)]
pub struct TcpProxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy")
            .field("port", &self.inner.port)
            .field("target", &self.inner.target)
            .finish()
    }
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `target`. Must be called
    /// inside a tokio runtime.
    pub async fn spawn(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy: bind 127.0.0.1:0");
        let port = listener.local_addr().expect("proxy: local address").port();
        let inner = Arc::new(Inner {
            port,
            target,
            running: tokio::sync::Mutex::new(None),
            accepted: AtomicUsize::new(0),
        });
        let running = run(listener, inner.target, Arc::downgrade(&inner));
        *inner.running.lock().await = Some(running);
        TcpProxy { inner }
    }

    /// The port the proxy listens on (kept across `stop`/`start`).
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.inner.port))
    }

    /// Where connections are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.inner.target
    }

    /// Connections accepted so far (over all starts).
    pub fn accepted(&self) -> usize {
        self.inner.accepted.load(Ordering::Relaxed)
    }

    /// Stops listening and closes every open connection on both sides: afterwards connecting
    /// is refused. Does nothing when already stopped.
    pub async fn stop(&self) {
        let running = self.inner.running.lock().await.take();
        if let Some(running) = running {
            let _ = running.shutdown.send(true);
            // Waiting for the task guarantees the sockets are closed when `stop` returns.
            let _ = running.task.await;
        }
    }

    /// Listens again on the same port after [`TcpProxy::stop`]. Does nothing when running.
    /// Panics if the port cannot be bound again within a few seconds.
    pub async fn start(&self) {
        let mut running = self.inner.running.lock().await;
        if running.is_some() {
            return;
        }
        let addr = self.addr();
        // The kernel may hold the port for a moment after the old listener closed; retry.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("proxy: cannot listen on {addr} again: {e}"),
            }
        };
        *running = Some(run(
            listener,
            self.inner.target,
            Arc::downgrade(&self.inner),
        ));
    }

    /// Whether the proxy is currently listening.
    pub async fn is_running(&self) -> bool {
        self.inner.running.lock().await.is_some()
    }
}

/// Spawns the accept loop. The loop holds only a weak reference, so dropping the last
/// handle still shuts it down.
fn run(listener: TcpListener, target: SocketAddr, inner: std::sync::Weak<Inner>) -> Running {
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown_rx.wait_for(|stop| *stop) => break,
                accepted = listener.accept() => {
                    if let Ok((client, _)) = accepted {
                        if let Some(inner) = inner.upgrade() {
                            inner.accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        connections.spawn(forward(client, target));
                    }
                }
                // Reap finished connections so the set does not grow without bound.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        // Aborts every connection task; each drops both of its sockets.
        connections.shutdown().await;
    });
    Running { shutdown, task }
}

/// Copies bytes both ways until either side closes; a refused upstream closes the client.
async fn forward(mut client: TcpStream, target: SocketAddr) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
