//! Self-tests of the harness's SMTP sink, with a minimal raw SMTP client, so the sink's
//! behaviour (which every delivery test relies on) is checked without the service binaries.

use std::time::Duration;

use tests::{SinkMode, SmtpSink};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A bare SMTP client: sends lines, returns each complete (possibly multi-line) reply.
struct RawClient {
    stream: BufReader<TcpStream>,
}

impl RawClient {
    /// Connects and returns the client with the greeting's reply code.
    async fn connect(port: u16) -> (RawClient, u16) {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the sink");
        let mut client = RawClient {
            stream: BufReader::new(stream),
        };
        let (code, _) = client.reply().await;
        (client, code)
    }

    /// Reads one reply: lines `NNN-...` continue it, `NNN ...` ends it.
    async fn reply(&mut self) -> (u16, String) {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .stream
                .read_line(&mut line)
                .await
                .expect("read a reply line");
            assert!(n > 0, "connection closed while waiting for a reply");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line[..3].parse().expect("reply code");
                return (code, all);
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("send a command");
        self.reply().await
    }

    /// MAIL, RCPT, DATA and the body; returns the codes of RCPT and of the final dot (0 when
    /// the transaction stopped before it).
    async fn send_mail(&mut self, from: &str, to: &str, body: &str) -> (u16, u16) {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).await.0, 250);
        let (rcpt, _) = self.cmd(&format!("RCPT TO:<{to}>")).await;
        if rcpt != 250 {
            return (rcpt, 0);
        }
        assert_eq!(self.cmd("DATA").await.0, 354);
        // Dot-stuffing as RFC 5321 4.5.2 asks of clients.
        let mut data = String::new();
        for line in body.split("\r\n") {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
            data.push_str("\r\n");
        }
        data.push_str(".\r\n");
        self.stream
            .get_mut()
            .write_all(data.as_bytes())
            .await
            .expect("send the data");
        (rcpt, self.reply().await.0)
    }
}

const BODY: &str = "From: Sender <from@example.com>\r\n\
To: rcpt@example.com\r\n\
Subject: Hello sink\r\n\
Message-ID: <m1@example.com>\r\n\
\r\n\
.a line starting with a dot\r\n\
code 123456 https://example.com/verify?code=123456&userID=9";

#[tokio::test]
async fn accepts_and_stores_a_mail() {
    let sink = SmtpSink::spawn().await;
    assert_eq!(sink.url(), format!("smtp://127.0.0.1:{}", sink.port()));
    let (mut client, greeting) = RawClient::connect(sink.port()).await;
    assert_eq!(greeting, 220);
    let (code, ehlo) = client.cmd("EHLO client.test").await;
    assert_eq!(code, 250);
    assert!(ehlo.contains("250-PIPELINING") && ehlo.contains("250 8BITMIME"));
    assert!(!ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"));
    assert_eq!(client.cmd("NOOP").await.0, 250);
    assert_eq!(client.cmd("VRFY someone").await.0, 502);
    assert_eq!(client.cmd("DATA").await.0, 503, "DATA before MAIL/RCPT");

    let codes = client
        .send_mail("from@example.com", "rcpt@example.com", BODY)
        .await;
    assert_eq!(codes, (250, 250));
    assert_eq!(client.cmd("QUIT").await.0, 221);

    let mails = sink.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.envelope_from, "from@example.com");
    assert_eq!(mail.recipients, ["rcpt@example.com"]);
    assert!(
        mail.raw_text()
            .contains("\r\n.a line starting with a dot\r\n"),
        "dot-stuffing undone: {}",
        mail.raw_text()
    );
    assert_eq!(mail.subject(), "Hello sink");
    assert_eq!(mail.message_id(), "m1@example.com");
    assert_eq!(mail.from(), "from@example.com");
    assert_eq!(mail.link_param("code").as_deref(), Some("123456"));
    assert_eq!(mail.standalone_codes(6, "0123456789"), ["123456"]);
    assert_eq!(sink.count(), 1);
    assert_eq!(sink.rejected_count(), 0);
    assert_eq!(sink.messages_to("RCPT@example.com").len(), 1);
    let to = sink
        .wait_for_to("rcpt@example.com", 1, Duration::from_secs(1))
        .await;
    assert_eq!(to.len(), 1);
    assert!(sink.messages_to("other@example.com").is_empty());
}

#[tokio::test]
async fn eventually_polls_until_some() {
    let sink = SmtpSink::spawn().await;
    let port = sink.port();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (mut client, _) = RawClient::connect(port).await;
        client.cmd("EHLO client.test").await;
        client
            .send_mail("a@example.com", "b@example.com", BODY)
            .await
    });
    let sink_ref = &sink;
    let subject = tests::eventually("a mail", Duration::from_secs(5), || async move {
        sink_ref.messages().first().map(|m| m.subject().to_string())
    })
    .await;
    assert_eq!(subject, "Hello sink");
    assert_eq!(sender.await.expect("sender task"), (250, 250));
}

#[tokio::test]
async fn temp_fail_answers_451_and_stores_nothing() {
    let sink = SmtpSink::spawn().await;
    let (mut client, _) = RawClient::connect(sink.port()).await;
    client.cmd("HELO client.test").await;

    sink.mode(SinkMode::TempFail);
    let codes = client
        .send_mail("a@example.com", "b@example.com", BODY)
        .await;
    assert_eq!(codes, (250, 451), "451 on the final dot");

    sink.mode(SinkMode::TempFailRcpt);
    assert_eq!(client.cmd("RSET").await.0, 250);
    let codes = client
        .send_mail("a@example.com", "b@example.com", BODY)
        .await;
    assert_eq!(codes, (451, 0), "451 on RCPT");
    assert_eq!(sink.rejected_count(), 2);
    assert_eq!(sink.count(), 0);

    // The mode is read per command, so the same (pooled) connection recovers.
    sink.mode(SinkMode::Accept);
    assert_eq!(client.cmd("RSET").await.0, 250);
    let codes = client
        .send_mail("a@example.com", "b@example.com", BODY)
        .await;
    assert_eq!(codes, (250, 250));
    assert_eq!(sink.wait_for(1, Duration::from_secs(5)).await.len(), 1);
}

#[tokio::test]
async fn perm_fail_answers_550_on_rcpt() {
    let sink = SmtpSink::spawn().await;
    sink.mode(SinkMode::PermFail);
    let (mut client, _) = RawClient::connect(sink.port()).await;
    client.cmd("EHLO client.test").await;
    let codes = client
        .send_mail("a@example.com", "b@example.com", BODY)
        .await;
    assert_eq!(codes, (550, 0));
    assert_eq!(client.cmd("DATA").await.0, 503, "no accepted recipient");
    assert_eq!(sink.rejected_count(), 1);
    sink.assert_count_stays(0, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn stop_refuses_and_drops_connections_and_start_recovers() {
    let sink = SmtpSink::spawn().await;
    let port = sink.port();
    let (mut open, _) = RawClient::connect(port).await;
    open.cmd("EHLO client.test").await;

    sink.stop().await;
    assert!(!sink.is_running().await);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "connecting to a stopped sink must be refused"
    );
    // The connection that was open is gone: the next read sees EOF or an error.
    let _ = open.stream.get_mut().write_all(b"NOOP\r\n").await;
    let mut line = String::new();
    let read = open.stream.read_line(&mut line).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "open connection must be dropped, got {read:?} {line:?}"
    );

    sink.start().await;
    assert_eq!(sink.port(), port);
    let (mut client, greeting) = RawClient::connect(port).await;
    assert_eq!(greeting, 220);
    client.cmd("EHLO client.test").await;
    let codes = client
        .send_mail("a@example.com", "b@example.com", BODY)
        .await;
    assert_eq!(codes, (250, 250));
    sink.wait_for(1, Duration::from_secs(5)).await;
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<SmtpSink>();
    check::<tests::ReceivedMail>();
    check::<tests::Api>();
}

#[tokio::test]
#[should_panic(expected = "expected at least 1 mail(s) within")]
async fn wait_for_panics_on_timeout() {
    let sink = SmtpSink::spawn().await;
    sink.wait_for(1, Duration::from_millis(100)).await;
}
