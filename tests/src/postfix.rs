//! A private, throwaway Postfix instance: a real MTA for the tests of `tests/real_mta.rs`.
//!
//! [`Postfix::start`] builds everything in a temporary directory of its own and never reads
//! or changes the machine's Postfix setup (`/etc/postfix/main.cf`, port 25, the default
//! queue): `postfix -c <dir>/etc` points every Postfix command and daemon at
//!
//! - its own `main.cf` and `master.cf`, `queue_directory`, `data_directory` and log file
//!   (`maillog_file`, so nothing needs syslog);
//! - listeners on free high ports of `127.0.0.1` only: plain SMTP, STARTTLS required
//!   (`smtpd_tls_security_level=encrypt`), implicit TLS (`smtpd_tls_wrappermode=yes`), and
//!   STARTTLS with AUTH required (when Cyrus SASL is installed);
//! - a throwaway CA and a server certificate for `localhost` and `127.0.0.1`, made with the
//!   `openssl` command (which Debian's postfix package pulls in through `ssl-cert`), so the
//!   worker can be pointed at the CA with `SMTP_TLS_CA_FILE`;
//! - one mail domain, [`DOMAIN`], delivered by Postfix's `virtual` agent into one maildir
//!   that [`Postfix::mails`] reads back; every other destination goes to the `error`
//!   transport (`relayhost` empty, `default_transport = error`), so nothing leaves the
//!   machine;
//! - a recipient access map (`hash:`, rebuilt with `postmap`) that makes Postfix answer
//!   `450 4.7.1` or `550 5.1.1` for chosen recipients ([`Postfix::greylist`],
//!   [`Postfix::reject`], [`Postfix::accept`]);
//! - SMTP AUTH (PLAIN, LOGIN) after STARTTLS through Cyrus SASL with a `sasldb2` file made
//!   by `saslpasswd2` (packages `sasl2-bin` and `libsasl2-modules`), user [`AUTH_USER`].
//!
//! Postfix stores mails with LF line ends and adds its own headers (`Return-Path`,
//! `Delivered-To`, `Received`), so byte-level checks of what the worker sends (CRLF, line
//! lengths) stay with the in-process [`crate::SmtpSink`]; with Postfix, tests assert delivery,
//! headers and content.
//!
//! Postfix's master must be started by root (it drops to `mail_owner = postfix`). When
//! `/usr/sbin/postfix` is missing, or the tests do not run as root, [`Postfix::start_or_skip`]
//! prints why and returns `None`, and the test passes without doing anything; set
//! `CE_REQUIRE_POSTFIX=1` to make that a failure instead (to prove a CI run really used it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::env::free_port;
use crate::smtp_sink::ReceivedMail;

/// The `postfix` command this harness needs.
pub const POSTFIX: &str = "/usr/sbin/postfix";
/// The mail domain the instance delivers locally; every address in it is accepted unless the
/// recipient access map says otherwise.
pub const DOMAIN: &str = "mta.test";
/// `myhostname` of the instance (it shows in `Received` headers).
pub const HOSTNAME: &str = "postfix.mta.test";
/// SASL user that [`Postfix::auth_url`] logs in as (realm [`DOMAIN`]).
pub const AUTH_USER: &str = "mailer";
/// Its password.
pub const AUTH_PASSWORD: &str = "s3cret-Relay-pass";

/// Where Cyrus SASL keeps its plugins on Debian; `libsasldb.so*` there means sasldb works.
const SASL_PLUGIN_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/sasl2",
    "/usr/lib/aarch64-linux-gnu/sasl2",
    "/usr/lib/sasl2",
];

/// How long one Postfix command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A running private Postfix instance. Stopped (`postfix stop`, then SIGKILL to its master if
/// it is still there) and its directory removed on drop; the directory is kept when the test
/// failed or `CE_KEEP_TMP` is set.
pub struct Postfix {
    dir: PathBuf,
    plain_port: u16,
    starttls_port: u16,
    smtps_port: u16,
    auth_port: Option<u16>,
    /// Recipient access entries as (address, action), written to `recipient_access`.
    access: std::sync::Mutex<Vec<(String, String)>>,
    running: bool,
}

/// Why the Postfix tests cannot run on this machine, or `None` when they can.
pub fn skip_reason() -> Option<String> {
    if !Path::new(POSTFIX).exists() {
        return Some(format!(
            "{POSTFIX} is absent: Postfix is not installed (apt-get install postfix; see \
             docs/testing-with-postfix.md)"
        ));
    }
    if !is_root() {
        return Some(
            "the tests do not run as root, and Postfix's master must be started by root"
                .to_string(),
        );
    }
    if id(&["-u", "postfix"]).is_none() {
        return Some("there is no user postfix (the postfix package creates it)".to_string());
    }
    if !command_exists("openssl") {
        return Some("the openssl command is missing (package openssl)".to_string());
    }
    None
}

/// Why SMTP AUTH cannot be offered by the private instance, or `None` when it can: it needs
/// `saslpasswd2` (package `sasl2-bin`) and Cyrus SASL's sasldb and PLAIN plugins (package
/// `libsasl2-modules`).
pub fn auth_skip_reason() -> Option<String> {
    if !Path::new("/usr/sbin/saslpasswd2").exists() {
        return Some("/usr/sbin/saslpasswd2 is absent (apt-get install sasl2-bin)".to_string());
    }
    let has_plugin = |prefix: &str| {
        SASL_PLUGIN_DIRS.iter().any(|dir| {
            std::fs::read_dir(dir).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
            })
        })
    };
    if !has_plugin("libsasldb.so") || !has_plugin("libplain.so") {
        return Some(
            "Cyrus SASL's sasldb or PLAIN plugin is missing (apt-get install libsasl2-modules)"
                .to_string(),
        );
    }
    None
}

/// Prints a skip notice on stderr, past the test harness's output capture, so it shows in
/// `cargo test` output even when the test passes. Panics instead when `CE_REQUIRE_POSTFIX=1`.
pub fn report_skip(test: &str, reason: &str) {
    if std::env::var("CE_REQUIRE_POSTFIX").is_ok_and(|v| v == "1") {
        panic!("{test}: CE_REQUIRE_POSTFIX=1 but this test cannot run: {reason}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {reason}; this test needs a real Postfix"
    );
}

impl Postfix {
    /// Starts a private instance for `test`, or prints why it cannot (see [`skip_reason`]) and
    /// returns `None`. Panics if Postfix is there but does not start.
    pub async fn start_or_skip(test: &str) -> Option<Postfix> {
        match skip_reason() {
            Some(reason) => {
                report_skip(test, &reason);
                None
            }
            None => Some(Postfix::start().await),
        }
    }

    /// Builds and starts a private instance. Panics (showing its log) if it does not start;
    /// a listener port taken meanwhile is retried with other ports.
    pub async fn start() -> Postfix {
        let suffix = format!("{:016x}", rand::random::<u64>());
        let dir = std::env::temp_dir().join(format!("ce-postfix-{suffix}"));
        let auth = auth_skip_reason().is_none();
        let mut postfix = Postfix {
            dir,
            plain_port: 0,
            starttls_port: 0,
            smtps_port: 0,
            auth_port: None,
            access: std::sync::Mutex::new(Vec::new()),
            running: false,
        };
        postfix.prepare(auth);
        for attempt in 1..=3 {
            postfix.plain_port = free_port();
            postfix.starttls_port = free_port();
            postfix.smtps_port = free_port();
            postfix.auth_port = auth.then(free_port);
            postfix.write_config();
            let out = postfix.postfix_command(&["start"]).await;
            if out.status.success() {
                postfix.running = true;
                return postfix;
            }
            let log = postfix.maillog();
            if attempt < 3 && log.contains("Address already in use") {
                continue;
            }
            panic!(
                "postfix -c {} start failed ({}):\n{}{}\n---- maillog ----\n{log}",
                postfix.config_dir().display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
        }
        unreachable!("the loop returns or panics");
    }

    // ---- what tests use ------------------------------------------------------------------

    /// The instance's directory (configuration, queue, maildir, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config_directory`: what `postfix -c`, `postmap -c` and `postqueue -c` get.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// The throwaway CA's certificate (PEM), for `SMTP_TLS_CA_FILE`.
    pub fn ca_file(&self) -> PathBuf {
        self.config_dir().join("tls/ca.pem")
    }

    /// Port of the plain SMTP listener (no STARTTLS, no AUTH).
    pub fn plain_port(&self) -> u16 {
        self.plain_port
    }

    /// Port of the listener that requires STARTTLS before MAIL (530 otherwise).
    pub fn starttls_port(&self) -> u16 {
        self.starttls_port
    }

    /// Port of the implicit-TLS (smtps) listener.
    pub fn smtps_port(&self) -> u16 {
        self.smtps_port
    }

    /// Port of the listener that requires STARTTLS and then AUTH (530 at RCPT without it);
    /// `None` when AUTH is unavailable (see [`auth_skip_reason`]).
    pub fn auth_port(&self) -> Option<u16> {
        self.auth_port
    }

    /// `smtp://127.0.0.1:PLAIN`.
    pub fn plain_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.plain_port)
    }

    /// `smtp://127.0.0.1:STARTTLS?tls=required`.
    pub fn starttls_url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=required", self.starttls_port)
    }

    /// `smtp://127.0.0.1:STARTTLS?tls=opportunistic`.
    pub fn opportunistic_url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=opportunistic", self.starttls_port)
    }

    /// `smtps://127.0.0.1:SMTPS`.
    pub fn smtps_url(&self) -> String {
        format!("smtps://127.0.0.1:{}", self.smtps_port)
    }

    /// `smtp://USER:PASSWORD@127.0.0.1:AUTH?tls=required`; `None` without AUTH.
    pub fn auth_url(&self, user: &str, password: &str) -> Option<String> {
        let port = self.auth_port?;
        let user = percent_encode(user);
        let password = percent_encode(password);
        Some(format!(
            "smtp://{user}:{password}@127.0.0.1:{port}?tls=required"
        ))
    }

    /// Makes Postfix answer `450 4.7.1 ... try later` to `RCPT TO:<address>`.
    pub async fn greylist(&self, address: &str) {
        self.set_access(address, Some("450 4.7.1 try later")).await;
    }

    /// Makes Postfix answer `550 5.1.1 ... no such user` to `RCPT TO:<address>`.
    pub async fn reject(&self, address: &str) {
        self.set_access(address, Some("550 5.1.1 no such user"))
            .await;
    }

    /// Removes `address` from the access map: it is accepted again.
    pub async fn accept(&self, address: &str) {
        self.set_access(address, None).await;
    }

    /// Sets (or with `None` removes) the recipient access map's action for `address`, rebuilds
    /// the map with `postmap` and reloads Postfix so no daemon keeps the old map.
    pub async fn set_access(&self, address: &str, action: Option<&str>) {
        let entries = {
            let mut access = self.access.lock().unwrap_or_else(|e| e.into_inner());
            access.retain(|(a, _)| !a.eq_ignore_ascii_case(address));
            if let Some(action) = action {
                access.push((address.to_string(), action.to_string()));
            }
            access.clone()
        };
        self.write_access_map(&entries);
        self.postmap_access().await;
        self.reload().await;
    }

    /// `postfix -c DIR reload`; panics if it fails.
    pub async fn reload(&self) {
        let out = self.postfix_command(&["reload"]).await;
        assert!(
            out.status.success(),
            "postfix reload failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postqueue -c DIR -f`: attempts to deliver whatever waits in the queue now.
    pub async fn flush(&self) {
        let config = self.config_dir();
        let out = run(
            tokio::process::Command::new("/usr/sbin/postqueue")
                .arg("-c")
                .arg(&config)
                .arg("-f"),
            "postqueue -f",
        )
        .await;
        assert!(
            out.status.success(),
            "postqueue -f failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postqueue -c DIR -p`: the queue listing (`Mail queue is empty` when empty).
    pub async fn queue(&self) -> String {
        let config = self.config_dir();
        let out = run(
            tokio::process::Command::new("/usr/sbin/postqueue")
                .arg("-c")
                .arg(&config)
                .arg("-p"),
            "postqueue -p",
        )
        .await;
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Everything the instance logged so far (`maillog_file`).
    pub fn maillog(&self) -> String {
        std::fs::read(self.dir.join("maillog"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn maillog_tail(&self, n: usize) -> String {
        let log = self.maillog();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Every mail delivered so far into the maildir, oldest first, as stored by Postfix (LF
    /// line ends, Postfix's own headers on top). `envelope_from` is from `Return-Path`,
    /// `recipients` from `X-Original-To` (else `Delivered-To`), `received_at` the file's time.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        let maildir = self.dir.join("mail/inbox");
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(maildir.join(sub)) {
                for entry in entries.flatten() {
                    let modified = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    files.push((modified, entry.path()));
                }
            }
        }
        files.sort();
        files
            .into_iter()
            .filter_map(|(modified, path)| {
                let raw = std::fs::read(&path).ok()?;
                Some(stored_mail(raw, modified))
            })
            .collect()
    }

    /// The delivered mails whose envelope recipient is `address` (case-insensitive).
    pub fn mails_to(&self, address: &str) -> Vec<ReceivedMail> {
        self.mails()
            .into_iter()
            .filter(|m| m.recipients.iter().any(|r| r.eq_ignore_ascii_case(address)))
            .collect()
    }

    /// Waits until at least `n` mails to `address` were delivered and returns them. Panics
    /// after `timeout`, showing the end of the instance's log.
    pub async fn wait_for_to(
        &self,
        address: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mails = self.mails_to(address);
            if mails.len() >= n {
                return mails;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "Postfix delivered {} mail(s) to {address} within {timeout:?}, expected {n}; \
                     queue: {}\nlast lines of its log:\n{}",
                    mails.len(),
                    self.queue().await.trim(),
                    self.maillog_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the instance (`postfix -c DIR stop`), then kills its master if it is still
    /// there. Safe to call twice.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let pid = self.master_pid();
        let _ = Command::new(POSTFIX)
            .arg("-c")
            .arg(self.config_dir())
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(pid) = pid {
            // `postfix stop` waits for the master in most versions; make sure of it.
            for _ in 0..50 {
                if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    // ---- setup ---------------------------------------------------------------------------

    /// The master's pid, from `pid/master.pid` in the queue directory.
    fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("spool/pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Directories, ownerships, certificates, the SASL database: everything but the files
    /// that name the ports.
    fn prepare(&self, auth: bool) {
        let etc = self.config_dir();
        for sub in ["etc/tls", "etc/sasl", "spool", "data", "mail"] {
            let path = self.dir.join(sub);
            std::fs::create_dir_all(&path)
                .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        }
        // Postfix checks that what root reads is not writable by others, and its daemons
        // (user postfix) must get through every directory above their files.
        for path in [&self.dir, &etc, &self.dir.join("spool")] {
            set_mode(path, 0o755);
        }
        let postfix_uid = id(&["-u", "postfix"]).expect("uid of postfix");
        let postfix_gid = id(&["-g", "postfix"]).expect("gid of postfix");
        chown(&self.dir.join("data"), postfix_uid, postfix_gid);
        // The virtual delivery agent writes the maildir as nobody (static uid/gid maps).
        let (nobody_uid, nobody_gid) = nobody();
        chown(&self.dir.join("mail"), nobody_uid, nobody_gid);
        set_mode(&self.dir.join("mail"), 0o700);

        self.make_certificates();
        self.write_access_map(&[]);
        std::fs::write(
            etc.join("auth_required"),
            "127.0.0.1 530 5.7.0 Authentication required\n",
        )
        .expect("write auth_required");
        std::fs::write(self.dir.join("maillog"), b"").expect("create maillog");

        if auth {
            let sasldb = etc.join("sasldb2");
            std::fs::write(
                etc.join("sasl/smtpd.conf"),
                format!(
                    "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n\
                     sasldb_path: {}\n",
                    sasldb.display()
                ),
            )
            .expect("write sasl/smtpd.conf");
            let mut child = Command::new("/usr/sbin/saslpasswd2")
                .args(["-p", "-c", "-f"])
                .arg(&sasldb)
                .args(["-u", DOMAIN, AUTH_USER])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run saslpasswd2");
            child
                .stdin
                .take()
                .expect("saslpasswd2 stdin")
                .write_all(AUTH_PASSWORD.as_bytes())
                .expect("give saslpasswd2 the password");
            let out = child.wait_with_output().expect("wait for saslpasswd2");
            assert!(
                out.status.success(),
                "saslpasswd2 failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Read by smtpd after it dropped to user postfix; root keeps ownership.
            chown(&sasldb, 0, postfix_gid);
            set_mode(&sasldb, 0o640);
        }
    }

    /// A CA and a server certificate for `localhost` and `127.0.0.1` signed by it (EC P-256,
    /// valid for two days), in `etc/tls`.
    fn make_certificates(&self) {
        let tls = self.config_dir().join("tls");
        let path = |name: &str| tls.join(name).display().to_string();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &path("ca.key"),
            "-out",
            &path("ca.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=ce-test throwaway CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &path("server.key"),
            "-out",
            &path("server.csr"),
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            tls.join("server.ext"),
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write server.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path("server.csr"),
            "-CA",
            &path("ca.pem"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-out",
            &path("server.pem"),
            "-days",
            "2",
            "-extfile",
            &path("server.ext"),
        ]);
    }

    /// `main.cf` and `master.cf` for the current ports.
    fn write_config(&self) {
        let dir = self.dir.display();
        let etc = self.config_dir();
        let main_cf = format!(
            "# Private test instance of the contact email service's tests (tests/src/postfix.rs).
compatibility_level = 2
queue_directory = {dir}/spool
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
myhostname = {HOSTNAME}
mydomain = {DOMAIN}
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# Nothing leaves this machine: no relay host, every non-local destination fails.
relayhost =
default_transport = error:5.3.0 this test instance delivers nothing outside {DOMAIN}
relay_transport = error:5.3.0 this test instance delivers nothing outside {DOMAIN}
local_transport = error:5.3.0 this test instance has no local users
notify_classes =
alias_maps =
alias_database =
biff = no
# Every address of {DOMAIN} lands in one maildir, {dir}/mail/inbox/.
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {dir}/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
smtpd_banner = $myhostname ESMTP private test instance
# Never add or rewrite headers of what the worker sends (a missing Date or Message-ID stays
# missing), whichever address it connects from.
local_header_rewrite_clients =
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access hash:{dir}/etc/recipient_access, reject_unauth_destination
smtpd_tls_security_level = none
smtpd_tls_cert_file = {dir}/etc/tls/server.pem
smtpd_tls_key_file = {dir}/etc/tls/server.key
smtpd_tls_loglevel = 1
smtpd_sasl_auth_enable = no
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {dir}/etc/sasl
smtpd_sasl_security_options = noanonymous
smtpd_sasl_local_domain = {DOMAIN}
smtpd_sasl_authenticated_header = yes
smtpd_tls_auth_only = yes
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
",
            uid = nobody().0,
            gid = nobody().1,
        );
        let smtpd = "inet  n       -       n       -       -       smtpd";
        let mut master_cf = format!(
            "# Private test instance: every service unchrooted, listeners on 127.0.0.1 only.
127.0.0.1:{plain} {smtpd}
127.0.0.1:{starttls} {smtpd}
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
127.0.0.1:{smtps} {smtpd}
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
",
            plain = self.plain_port,
            starttls = self.starttls_port,
            smtps = self.smtps_port,
        );
        if let Some(port) = self.auth_port {
            master_cf.push_str(&format!(
                "127.0.0.1:{port} {smtpd}
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,check_client_access,texthash:{dir}/etc/auth_required,reject
"
            ));
        }
        master_cf.push_str(
            "pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
virtual    unix  -       n       n       -       -       virtual
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
",
        );
        std::fs::write(etc.join("main.cf"), main_cf).expect("write main.cf");
        std::fs::write(etc.join("master.cf"), master_cf).expect("write master.cf");
        // postmap needs main.cf, so the map is built once main.cf exists.
        let out = Command::new("/usr/sbin/postmap")
            .arg("-c")
            .arg(&etc)
            .arg(format!("hash:{}", etc.join("recipient_access").display()))
            .output()
            .expect("run postmap");
        assert!(
            out.status.success(),
            "postmap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn write_access_map(&self, entries: &[(String, String)]) {
        let mut text = String::from("# recipient  action (see access(5))\n");
        for (address, action) in entries {
            text.push_str(&format!("{address} {action}\n"));
        }
        let path = self.config_dir().join("recipient_access");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    async fn postmap_access(&self) {
        let etc = self.config_dir();
        let out = run(
            tokio::process::Command::new("/usr/sbin/postmap")
                .arg("-c")
                .arg(&etc)
                .arg(format!("hash:{}", etc.join("recipient_access").display())),
            "postmap",
        )
        .await;
        assert!(
            out.status.success(),
            "postmap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn postfix_command(&self, args: &[&str]) -> std::process::Output {
        let config = self.config_dir();
        run(
            tokio::process::Command::new(POSTFIX)
                .arg("-c")
                .arg(&config)
                .args(args),
            &format!("postfix {args:?}"),
        )
        .await
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // Never panic here: a panic while unwinding aborts the whole test binary.
        let failed = std::thread::panicking();
        if failed {
            eprintln!(
                "---- last lines of the private Postfix's log ----\n{}",
                self.maillog_tail(40)
            );
        }
        self.stop();
        if failed || std::env::var_os("CE_KEEP_TMP").is_some() {
            eprintln!("private Postfix files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A mail file of the maildir as a [`ReceivedMail`].
fn stored_mail(raw: Vec<u8>, modified: SystemTime) -> ReceivedMail {
    let parsed = crate::mail::ParsedMail::parse(&raw);
    let unbracket = |v: &str| {
        v.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string()
    };
    let envelope_from = parsed
        .header("Return-Path")
        .map(unbracket)
        .unwrap_or_default();
    let recipients = parsed
        .header("X-Original-To")
        .or_else(|| parsed.header("Delivered-To"))
        .map(|v| vec![unbracket(v)])
        .unwrap_or_default();
    let mail = ReceivedMail {
        envelope_from,
        recipients,
        raw,
        received_at: chrono::DateTime::<chrono::Utc>::from(modified),
        parsed: Default::default(),
    };
    let _ = mail.parsed.set(parsed);
    mail
}

/// Runs a command with a time limit; panics if it cannot be run or hangs.
async fn run(cmd: &mut tokio::process::Command, what: &str) -> std::process::Output {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {COMMAND_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("run {what}: {e}"))
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `id ARGS` as a number (`id -u`, `id -u postfix`, `id -g nobody`).
fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn is_root() -> bool {
    id(&["-u"]) == Some(0)
}

/// uid and gid of `nobody` (65534 where the lookup fails).
fn nobody() -> (u32, u32) {
    (
        id(&["-u", "nobody"]).unwrap_or(65534),
        id(&["-g", "nobody"]).unwrap_or(65534),
    )
}

fn command_exists(name: &str) -> bool {
    Command::new(name)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {uid}:{gid} {}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Whether `/proc/PID/stat` shows a zombie (exited, not reaped: the master was started by a
/// shell that exited, so whoever adopts it reaps it later).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Percent-encodes the userinfo part of a URL (everything but unreserved characters).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
