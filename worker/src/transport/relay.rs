//! The SMTP relay: lettre's SMTP client on TCP connections the worker opens itself, kept in
//! a `deadpool` pool.
//!
//! TODO(lettre TCP_NODELAY): this module is a workaround. lettre 0.11 never sets
//! `TCP_NODELAY` on the sockets it opens, and it writes a mail and its final `\r\n.\r\n` in
//! two writes: Nagle's algorithm holds the terminator until the relay ACKs the mail, which
//! the relay delays (~40 ms on Linux), so every mail costs ~40 ms more (bench/README.md,
//! "Worker throughput"). Here the worker connects itself, sets `TCP_NODELAY`, does implicit
//! TLS / STARTTLS / AUTH with lettre's own pieces, and pools the connections. The fix is
//! merged upstream (lettre/lettre#1159) but 0.11.23 is the newest release: once a lettre
//! release sets `TCP_NODELAY`, drop this module and go back to `AsyncSmtpTransport` with
//! lettre's pool (worker/src/transport.rs before this module was added).

use super::destination::Destinations;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, Pool, PoolError, RecycleError, RecycleResult};
use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A pooled connection that has been idle this long is asked `NOOP` before it is used again;
/// a younger one is only checked for a hang-up, which costs no round trip.
const IDLE_BEFORE_NOOP: Duration = Duration::from_secs(30);
/// How long that `NOOP` may take.
const NOOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How the conversation is secured (`SMTP_URL`'s scheme and `tls=`).
pub(super) enum Security {
    /// `smtp://`: plain SMTP.
    Plain,
    /// `smtp://...?tls=required`: STARTTLS, or fail if the relay does not offer it.
    StartTlsRequired(TlsParameters),
    /// `smtp://...?tls=opportunistic`: STARTTLS when the relay offers it.
    StartTlsOpportunistic(TlsParameters),
    /// `smtps://`: TLS from the first byte.
    Implicit(TlsParameters),
}

/// Everything needed to open one ready connection to the relay.
pub(super) struct RelayConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub helo: ClientId,
    pub credentials: Option<Credentials>,
    /// The connect timeout, and the limit on one whole send (waiting for a connection,
    /// opening it, and the transaction).
    pub timeout: Duration,
    /// Which resolved addresses a connection may use.
    pub destinations: Destinations,
}

/// Why a send failed, before it is classified (`super::classify`).
#[derive(Debug)]
pub(super) enum RelayError {
    /// What lettre said: an SMTP reply, a TLS or protocol failure, a lost connection.
    Smtp(SmtpError),
    /// No TCP connection to the relay (refused, unreachable, name not resolved, timed out).
    Connect(io::Error),
    /// The send took longer than the conversation timeout.
    Timeout(Duration),
    /// The pool itself failed (it is never closed while the worker runs).
    Pool(String),
    /// The relay's addresses are all ones this relay may not reach.
    Blocked(String),
}

impl From<SmtpError> for RelayError {
    fn from(e: SmtpError) -> Self {
        RelayError::Smtp(e)
    }
}

/// One connection to the relay, greeted (EHLO), secured and authenticated as configured.
pub(super) struct Connection {
    smtp: AsyncSmtpConnection,
    /// A second handle on the same socket, to see without a round trip whether the relay has
    /// hung up (or said something unasked, such as a 421) while the connection was idle.
    probe: std::net::TcpStream,
    /// Set while a transaction runs. A connection that comes back to the pool with it set
    /// (its send was cancelled) is discarded, never reused mid-transaction.
    in_transaction: bool,
}

impl Connection {
    /// Whether nothing has arrived on the idle connection: no hang-up, no unasked reply.
    fn is_quiet(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.probe.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Opens and checks connections for the pool.
pub(super) struct Manager {
    config: RelayConfig,
}

impl managed::Manager for Manager {
    type Type = Connection;
    type Error = RelayError;

    async fn create(&self) -> Result<Connection, RelayError> {
        self.config.connect().await
    }

    async fn recycle(&self, conn: &mut Connection, metrics: &Metrics) -> RecycleResult<RelayError> {
        if conn.in_transaction || conn.smtp.has_broken() {
            return Err(RecycleError::message("left mid-transaction or broken"));
        }
        if !conn.is_quiet() {
            return Err(RecycleError::message("closed or answered while idle"));
        }
        if metrics.last_used() > IDLE_BEFORE_NOOP {
            let alive = tokio::time::timeout(NOOP_TIMEOUT, conn.smtp.test_connected()).await;
            if alive != Ok(true) {
                return Err(RecycleError::message("no answer to NOOP"));
            }
        }
        Ok(())
    }
}

/// The pool of connections to the relay.
pub struct Relay {
    pool: Pool<Manager>,
    timeout: Duration,
}

impl Relay {
    /// A pool of at most `size` connections, opened on demand.
    pub(super) fn new(config: RelayConfig, size: usize) -> Result<Relay, String> {
        let timeout = config.timeout;
        let pool = Pool::builder(Manager { config })
            .max_size(size.max(1))
            // The most recently used connection first: under light load one connection
            // stays warm instead of each being reused only after a long idle.
            .queue_mode(managed::QueueMode::Lifo)
            .build()
            .map_err(|e| format!("SMTP connection pool: {e}"))?;
        Ok(Relay { pool, timeout })
    }

    /// Sends one mail on a pooled connection (a new one if none is idle). A connection that
    /// failed in any way is discarded, never given back; lettre has already sent it `QUIT`
    /// when the relay refused a command.
    pub(super) async fn send(
        &self,
        envelope: &Envelope,
        raw: &[u8],
    ) -> Result<Response, RelayError> {
        let deadline = Instant::now() + self.timeout;
        let mut conn = match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(PoolError::Backend(e))) => return Err(e),
            Ok(Err(PoolError::Timeout(_))) => return Err(RelayError::Timeout(self.timeout)),
            Ok(Err(e)) => return Err(RelayError::Pool(format!("SMTP connection pool: {e:?}"))),
            Err(_) => return Err(RelayError::Timeout(self.timeout)),
        };
        conn.in_transaction = true;
        let sent = tokio::time::timeout_at(deadline, conn.smtp.send(envelope, raw)).await;
        match sent {
            Ok(Ok(response)) => {
                conn.in_transaction = false;
                Ok(response)
            }
            Ok(Err(e)) => {
                drop(Object::take(conn));
                Err(RelayError::Smtp(e))
            }
            Err(_) => {
                drop(Object::take(conn));
                Err(RelayError::Timeout(self.timeout))
            }
        }
    }
}

impl RelayConfig {
    /// Connects (with `TCP_NODELAY`), reads the greeting, EHLO, then implicit TLS or
    /// STARTTLS and AUTH as configured: what lettre's own transport does, on our socket.
    async fn connect(&self) -> Result<Connection, RelayError> {
        let tcp = self.tcp().await?;
        let (tcp, probe) = with_probe(tcp).map_err(RelayError::Connect)?;
        let mut smtp = match &self.security {
            Security::Implicit(tls) => {
                #[allow(deprecated)] // lettre's own TLS upgrade, with its certificate checks
                let mut stream = {
                    use lettre::transport::smtp::client::AsyncNetworkStream;
                    AsyncNetworkStream::use_existing_tokio1(Box::new(tcp))
                };
                stream.upgrade_tls(tls.clone()).await?;
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(ImplicitTls(stream)),
                    &self.helo,
                )
                .await?
            }
            _ => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.helo).await?,
        };
        match &self.security {
            Security::StartTlsRequired(tls) => smtp.starttls(tls.clone(), &self.helo).await?,
            Security::StartTlsOpportunistic(tls) if smtp.can_starttls() => {
                smtp.starttls(tls.clone(), &self.helo).await?
            }
            _ => {}
        }
        if let Some(credentials) = &self.credentials {
            smtp.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(Connection {
            smtp,
            probe,
            in_transaction: false,
        })
    }

    /// A TCP connection to the relay with `TCP_NODELAY`, trying each address of the host in
    /// turn, each within the timeout.
    async fn tcp(&self) -> Result<TcpStream, RelayError> {
        let resolved = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(RelayError::Connect)?;
        let addresses = self
            .destinations
            .filter(&self.host, resolved.collect())
            .map_err(RelayError::Blocked)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
        for address in addresses {
            match tokio::time::timeout(self.timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    stream.set_nodelay(true).map_err(RelayError::Connect)?;
                    return Ok(stream);
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connection timed out"),
            }
        }
        Err(RelayError::Connect(last))
    }
}

/// The stream and a second handle on its socket (`dup`), non-blocking like the first.
fn with_probe(tcp: TcpStream) -> io::Result<(TcpStream, std::net::TcpStream)> {
    let std = tcp.into_std()?;
    let probe = std.try_clone()?;
    probe.set_nonblocking(true)?;
    Ok((TcpStream::from_std(std)?, probe))
}

/// lettre's TLS stream (futures-io) as a tokio stream, so that `connect_with_transport` can
/// speak SMTP over it: implicit TLS must start before the greeting, which lettre only does
/// on sockets it opens itself.
#[allow(deprecated)]
#[derive(Debug)]
struct ImplicitTls(lettre::transport::smtp::client::AsyncNetworkStream);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.peer_addr()
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = futures_util::io::AsyncRead::poll_read(
            Pin::new(&mut self.0),
            cx,
            buf.initialize_unfilled(),
        );
        let n = ready!(read)?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures_util::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_util::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_util::io::AsyncWrite::poll_close(Pin::new(&mut self.0), cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use lettre::Address;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    /// A scripted relay on 127.0.0.1: counts connections, answers RCPT with 451 while
    /// `refuse` is set, and hangs up after each accepted mail while `hang_up` is set.
    #[derive(Default)]
    struct Script {
        connections: AtomicUsize,
        mails: AtomicUsize,
        refuse: AtomicBool,
        hang_up: AtomicBool,
    }

    /// A plain-SMTP relay on 127.0.0.1:`port`, without credentials.
    fn plain_config(port: u16) -> RelayConfig {
        RelayConfig {
            host: "127.0.0.1".into(),
            port,
            security: Security::Plain,
            helo: ClientId::Domain("worker.test".into()),
            credentials: None,
            timeout: Duration::from_secs(5),
            destinations: Destinations::Any,
        }
    }

    async fn relay_with(script: Arc<Script>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                script.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, script.clone()));
            }
        });
        Relay::new(plain_config(port), 2).unwrap()
    }

    async fn serve(stream: TcpStream, script: Arc<Script>) -> io::Result<()> {
        let mut stream = BufReader::new(stream);
        stream.get_mut().write_all(b"220 relay.test\r\n").await?;
        let mut line = String::new();
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "RCPT" if script.refuse.load(Ordering::SeqCst) => b"451 4.3.0 later\r\n",
                "DATA" => {
                    stream.get_mut().write_all(b"354 go on\r\n").await?;
                    loop {
                        line.clear();
                        if stream.read_line(&mut line).await? == 0 {
                            return Ok(());
                        }
                        if line == ".\r\n" {
                            break;
                        }
                    }
                    script.mails.fetch_add(1, Ordering::SeqCst);
                    stream.get_mut().write_all(b"250 2.0.0 queued\r\n").await?;
                    if script.hang_up.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    continue;
                }
                "QUIT" => {
                    stream.get_mut().write_all(b"221 bye\r\n").await?;
                    return Ok(());
                }
                _ => b"250 ok\r\n",
            };
            stream.get_mut().write_all(reply).await?;
        }
    }

    fn envelope() -> Envelope {
        let address: Address = "someone@example.org".parse().unwrap();
        Envelope::new(Some(address.clone()), vec![address]).unwrap()
    }

    #[tokio::test]
    async fn a_healthy_connection_is_reused() {
        let script = Arc::new(Script::default());
        let relay = relay_with(script.clone()).await;
        for _ in 0..3 {
            relay
                .send(&envelope(), b"Subject: x\r\n\r\nhi\r\n")
                .await
                .unwrap();
        }
        assert_eq!(script.mails.load(Ordering::SeqCst), 3);
        assert_eq!(script.connections.load(Ordering::SeqCst), 1);
    }

    /// A connection the relay closed while it sat in the pool is noticed without a round
    /// trip and replaced: the next mail goes out without an error.
    #[tokio::test]
    async fn a_connection_closed_by_the_relay_is_replaced() {
        let script = Arc::new(Script::default());
        script.hang_up.store(true, Ordering::SeqCst);
        let relay = relay_with(script.clone()).await;
        for _ in 0..3 {
            relay
                .send(&envelope(), b"Subject: x\r\n\r\nhi\r\n")
                .await
                .unwrap();
            // Let the hang-up arrive.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(script.mails.load(Ordering::SeqCst), 3);
        assert_eq!(script.connections.load(Ordering::SeqCst), 3);
    }

    /// A refusal mid-transaction (4xx to RCPT) fails that mail, and its connection is never
    /// used again: the next mail opens a new one.
    #[tokio::test]
    async fn a_connection_refused_mid_transaction_is_discarded() {
        let script = Arc::new(Script::default());
        let relay = relay_with(script.clone()).await;
        script.refuse.store(true, Ordering::SeqCst);
        let err = relay
            .send(&envelope(), b"Subject: x\r\n\r\nhi\r\n")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RelayError::Smtp(e) if e.is_transient()),
            "{err:?}"
        );
        script.refuse.store(false, Ordering::SeqCst);
        relay
            .send(&envelope(), b"Subject: x\r\n\r\nhi\r\n")
            .await
            .unwrap();
        assert_eq!(script.connections.load(Ordering::SeqCst), 2);
        assert_eq!(relay.pool.status().size, 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let relay = Relay::new(plain_config(port), 1).unwrap();
        let err = relay.send(&envelope(), b"x").await.unwrap_err();
        assert!(matches!(err, RelayError::Connect(_)), "{err:?}");
    }
}
