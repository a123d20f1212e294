//! An in-process SMTP server that stands in for the real mail relay in black-box tests.
//!
//! It speaks just enough plain SMTP (no TLS, no AUTH) for lettre's client: greeting, EHLO/HELO,
//! MAIL, RCPT, DATA, RSET, NOOP, QUIT. Every accepted mail is kept in memory so tests can read
//! it; the control handle switches between accepting and failing (temporarily or permanently)
//! and can stop and restart the listener on the same port to simulate an SMTP outage.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::mail::ParsedMail;

/// How the sink answers the next transactions. Read at each command, so a change also affects
/// connections that are already open (lettre pools its connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinkMode {
    /// Accept every mail (250 after the final dot of DATA).
    #[default]
    Accept,
    /// Receive the whole mail, then answer 451 to the final dot of DATA: a transient failure
    /// that the worker should retry. Nothing is stored.
    TempFail,
    /// Answer 451 to every RCPT TO: a transient failure before any data is sent.
    TempFailRcpt,
    /// Answer 550 to every RCPT TO: a permanent failure that fails the job at once.
    PermFail,
    /// Answer 530 (authentication required) to MAIL FROM: the sender's configuration is
    /// wrong, not the mail.
    AuthRequired,
}

/// One mail accepted by the sink.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The reverse path of `MAIL FROM:<...>` (without the angle brackets).
    pub envelope_from: String,
    /// The forward paths of every accepted `RCPT TO:<...>`.
    pub recipients: Vec<String>,
    /// The message as transmitted, with dot-stuffing undone and lines ending in CRLF.
    pub raw: Vec<u8>,
    /// When the final dot was received.
    pub received_at: DateTime<Utc>,
    /// Parsed lazily (see `crate::mail`): most tests only look at a few mails.
    pub(crate) parsed: OnceLock<ParsedMail>,
}

/// State shared by the control handle and the server tasks.
struct State {
    mode: Mutex<SinkMode>,
    /// Delay before answering the final dot of DATA; lets tests catch a mail "in flight".
    data_delay: Mutex<Duration>,
    messages: Mutex<Vec<ReceivedMail>>,
    rejected: Mutex<usize>,
    /// The names clients gave in EHLO / HELO, in order.
    helo_names: Mutex<Vec<String>>,
    /// Bumped on every accepted mail, so waiters sleep until something changes instead of
    /// polling; they read `messages` itself to decide.
    count_tx: watch::Sender<usize>,
}

/// The running listener, present between `start` and `stop`.
struct Running {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Owned only by control handles (never by server tasks), so dropping the last handle can
/// shut the server down.
struct Control {
    port: u16,
    running: tokio::sync::Mutex<Option<Running>>,
}

impl Drop for Control {
    fn drop(&mut self) {
        // `Drop` cannot await: signal and abort; the runtime drops the sockets soon after.
        if let Some(running) = self.running.get_mut().take() {
            let _ = running.shutdown.send(true);
            running.task.abort();
        }
    }
}

/// Control handle of the SMTP sink. Cheap to clone; all clones control the same server.
#[derive(Clone)]
pub struct SmtpSink {
    state: Arc<State>,
    control: Arc<Control>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SmtpSink {
    /// The names clients gave in EHLO / HELO so far.
    pub fn helo_names(&self) -> Vec<String> {
        lock(&self.state.helo_names).clone()
    }

    /// Binds `127.0.0.1:0` and starts serving. Must be called inside a tokio runtime.
    pub async fn spawn() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("SMTP sink: bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("SMTP sink: local address")
            .port();
        let (count_tx, _) = watch::channel(0);
        let state = Arc::new(State {
            mode: Mutex::new(SinkMode::Accept),
            helo_names: Mutex::new(Vec::new()),
            data_delay: Mutex::new(Duration::ZERO),
            messages: Mutex::new(Vec::new()),
            rejected: Mutex::new(0),
            count_tx,
        });
        let running = run(listener, state.clone());
        SmtpSink {
            state,
            control: Arc::new(Control {
                port,
                running: tokio::sync::Mutex::new(Some(running)),
            }),
        }
    }

    /// The port the sink listens on (kept across `stop`/`start`).
    pub fn port(&self) -> u16 {
        self.control.port
    }

    /// `smtp://127.0.0.1:PORT`, the value for `SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port())
    }

    /// Changes how the following commands are answered (see [`SinkMode`]).
    pub fn mode(&self, mode: SinkMode) {
        *lock(&self.state.mode) = mode;
    }

    /// The current mode.
    pub fn current_mode(&self) -> SinkMode {
        *lock(&self.state.mode)
    }

    /// Waits this long before answering the final dot of DATA (default zero). Useful to have a
    /// mail in flight while a process is being stopped.
    pub fn data_delay(&self, delay: Duration) {
        *lock(&self.state.data_delay) = delay;
    }

    /// Stops listening and drops every open connection: afterwards connecting is refused.
    /// Mails received so far are kept. Does nothing when already stopped.
    pub async fn stop(&self) {
        let running = self.control.running.lock().await.take();
        if let Some(running) = running {
            let _ = running.shutdown.send(true);
            // Waiting for the task guarantees the sockets are closed when `stop` returns.
            let _ = running.task.await;
        }
    }

    /// Listens again on the same port after [`SmtpSink::stop`]. Does nothing when running.
    /// Panics if the port cannot be bound again within a few seconds.
    pub async fn start(&self) {
        let mut running = self.control.running.lock().await;
        if running.is_some() {
            return;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port()));
        // The port was free a moment ago, but the kernel may still hold it briefly; retry.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("SMTP sink: cannot listen on {addr} again: {e}"),
            }
        };
        *running = Some(run(listener, self.state.clone()));
    }

    /// Whether the sink is currently listening.
    pub async fn is_running(&self) -> bool {
        self.control.running.lock().await.is_some()
    }

    /// All mails accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        lock(&self.state.messages).clone()
    }

    /// Number of mails accepted so far.
    pub fn count(&self) -> usize {
        lock(&self.state.messages).len()
    }

    /// Number of rejected attempts so far: each 451/550 answer to RCPT or to the final dot.
    pub fn rejected_count(&self) -> usize {
        *lock(&self.state.rejected)
    }

    /// Forgets the mails and the rejected count (the mode stays).
    pub fn clear(&self) {
        lock(&self.state.messages).clear();
        *lock(&self.state.rejected) = 0;
        // Never notify while holding `messages`: waiters lock it inside the watch (deadlock).
        self.state.count_tx.send_replace(0);
    }

    /// Waits until at least `n` mails have been accepted and returns all of them (not only
    /// the new ones). Panics with a clear message after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        self.wait_until(timeout, &format!("at least {n} mail(s)"), |mails| {
            mails.len() >= n
        })
        .await
    }

    /// The mails whose envelope recipients include `address` (case-insensitive).
    pub fn messages_to(&self, address: &str) -> Vec<ReceivedMail> {
        to_recipient(&self.messages(), address)
    }

    /// Waits until at least `n` mails to `address` (envelope, case-insensitive) have been
    /// accepted and returns those. Panics after `timeout`. Prefer this over [`Self::wait_for`]
    /// when several mails are in flight and their order is not fixed.
    pub async fn wait_for_to(
        &self,
        address: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<ReceivedMail> {
        let what = format!("at least {n} mail(s) to {address}");
        self.wait_until(timeout, &what, |mails| {
            to_recipient(mails, address).len() >= n
        })
        .await;
        self.messages_to(address)
    }

    /// Waits until `done` holds for the accepted mails, then returns all of them. Panics with
    /// `what` and a summary of the sink after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[ReceivedMail]) -> bool,
    ) -> Vec<ReceivedMail> {
        let mut rx = self.state.count_tx.subscribe();
        // Re-checked on every change of the count, so no arrival is missed.
        let waited =
            tokio::time::timeout(timeout, rx.wait_for(|_| done(&lock(&self.state.messages)))).await;
        match waited {
            Ok(Ok(_)) => self.messages(),
            // The sender lives in `State`, which we hold: it cannot be closed.
            Ok(Err(_)) => unreachable!("SMTP sink state dropped while waiting"),
            Err(_) => panic!(
                "SMTP sink: expected {what} within {timeout:?}; got {} mail(s) \
                 (rejected attempts: {}, mode: {:?}); recipients so far: {:?}",
                self.count(),
                self.rejected_count(),
                self.current_mode(),
                self.messages()
                    .iter()
                    .map(|m| m.recipients.join(","))
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Waits until at least `n` rejected attempts have happened. Panics after `timeout`.
    pub async fn wait_for_rejections(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.rejected_count() < n {
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "SMTP sink: expected at least {n} rejected attempt(s) within {timeout:?}, got {}",
                    self.rejected_count()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asserts that the number of accepted mails stays exactly `n` for `duration` (for "no mail
    /// is sent" checks). Fails as soon as another mail arrives.
    pub async fn assert_count_stays(&self, n: usize, duration: Duration) {
        assert_eq!(self.count(), n, "SMTP sink: unexpected number of mails");
        let mut rx = self.state.count_tx.subscribe();
        let changed = tokio::time::timeout(
            duration,
            rx.wait_for(|_| lock(&self.state.messages).len() != n),
        )
        .await;
        if changed.is_ok() {
            panic!(
                "SMTP sink: expected the mail count to stay {n} for {duration:?}, but it became {}",
                self.count()
            );
        }
    }
}

fn to_recipient(mails: &[ReceivedMail], address: &str) -> Vec<ReceivedMail> {
    mails
        .iter()
        .filter(|m| m.recipients.iter().any(|r| r.eq_ignore_ascii_case(address)))
        .cloned()
        .collect()
}

/// Spawns the accept loop on `listener`.
fn run(listener: TcpListener, state: Arc<State>) -> Running {
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown_rx.wait_for(|stop| *stop) => break,
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        connections.spawn(serve(stream, state.clone()));
                    }
                }
                // Reap finished connections so the set does not grow without bound.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        // Aborts every open connection and waits until their sockets are dropped.
        connections.shutdown().await;
    });
    Running { shutdown, task }
}

/// The transaction being built on one connection.
#[derive(Default)]
struct Transaction {
    from: Option<String>,
    recipients: Vec<String>,
}

/// Takes the address out of `FROM:<a@b> PARAMS` / `TO:<a@b>`; `None` if malformed.
fn path_arg(arg: &str, prefix: &str) -> Option<String> {
    let arg = arg.trim_start();
    if arg.len() < prefix.len() || !arg[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[..end].to_string())
}

/// Serves one SMTP connection until QUIT, EOF, an I/O error or shutdown (task abort).
async fn serve(stream: TcpStream, state: Arc<State>) {
    // I/O errors just end the session: the client sees a dropped connection, which is a
    // legitimate outcome the service must cope with anyway.
    let _ = session(stream, state).await;
}

async fn session(stream: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(b"220 smtp-sink.test ESMTP ready\r\n")
        .await?;
    let mut tx = Transaction::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        if stream.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = match text.find(' ') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, ""),
        };
        let reply: &[u8] = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                tx = Transaction::default();
                lock(&state.helo_names).push(arg.trim().to_string());
                b"250-smtp-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
            }
            "HELO" => {
                tx = Transaction::default();
                lock(&state.helo_names).push(arg.trim().to_string());
                b"250 smtp-sink.test\r\n"
            }
            "MAIL" if *lock(&state.mode) == SinkMode::AuthRequired => {
                *lock(&state.rejected) += 1;
                b"530 5.7.0 Authentication required (sink in AuthRequired mode)\r\n"
            }
            "MAIL" => match path_arg(arg, "FROM:") {
                Some(from) => {
                    tx = Transaction {
                        from: Some(from),
                        recipients: Vec::new(),
                    };
                    b"250 2.1.0 OK\r\n"
                }
                None => b"501 5.5.4 syntax: MAIL FROM:<address>\r\n",
            },
            "RCPT" => match (tx.from.is_some(), path_arg(arg, "TO:")) {
                (false, _) => b"503 5.5.1 need MAIL first\r\n",
                (true, None) => b"501 5.5.4 syntax: RCPT TO:<address>\r\n",
                (true, Some(to)) => match *lock(&state.mode) {
                    SinkMode::PermFail => {
                        *lock(&state.rejected) += 1;
                        b"550 5.1.1 mailbox unavailable (sink in PermFail mode)\r\n"
                    }
                    SinkMode::TempFailRcpt => {
                        *lock(&state.rejected) += 1;
                        b"451 4.3.0 try again later (sink in TempFailRcpt mode)\r\n"
                    }
                    SinkMode::Accept | SinkMode::TempFail | SinkMode::AuthRequired => {
                        tx.recipients.push(to);
                        b"250 2.1.5 OK\r\n"
                    }
                },
            },
            "DATA" => {
                if tx.from.is_none() || tx.recipients.is_empty() {
                    b"503 5.5.1 need MAIL and RCPT first\r\n"
                } else {
                    stream
                        .get_mut()
                        .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let Some(raw) = read_data(&mut stream).await? else {
                        return Ok(());
                    };
                    let delay = *lock(&state.data_delay);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let tx = std::mem::take(&mut tx);
                    if *lock(&state.mode) == SinkMode::TempFail {
                        *lock(&state.rejected) += 1;
                        b"451 4.3.0 try again later (sink in TempFail mode)\r\n"
                    } else {
                        let mail = ReceivedMail {
                            envelope_from: tx.from.unwrap_or_default(),
                            recipients: tx.recipients,
                            raw,
                            received_at: Utc::now(),
                            parsed: OnceLock::new(),
                        };
                        lock(&state.messages).push(mail);
                        // After releasing `messages` (waiters lock it inside the watch), and
                        // as an increment so concurrent sessions cannot publish a stale count.
                        state.count_tx.send_modify(|count| *count += 1);
                        b"250 2.0.0 OK queued\r\n"
                    }
                }
            }
            "RSET" => {
                tx = Transaction::default();
                b"250 2.0.0 OK\r\n"
            }
            "NOOP" => b"250 2.0.0 OK\r\n",
            "QUIT" => {
                stream.get_mut().write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 command not implemented\r\n",
        };
        stream.get_mut().write_all(reply).await?;
    }
}

/// Reads DATA lines up to the lone dot, undoing dot-stuffing. `None` on EOF before the dot.
async fn read_data(stream: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut raw = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if stream.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(Some(raw));
        }
        // RFC 5321 4.5.2: a leading dot was doubled by the client.
        let content = line.strip_prefix(b".").unwrap_or(&line);
        raw.extend_from_slice(content);
    }
}
