//! A real RabbitMQ cluster of three nodes on this machine, for the tests of SPEC 8's last
//! guarantee ("the same holds on a RabbitMQ cluster of three nodes when any one node is
//! killed"): [`RabbitCluster::start`] starts the nodes with the machine's `rabbitmq-server`,
//! clusters them, and stops them (and removes their files) when dropped, even after a panic.
//!
//! The machine's own broker (`rabbit@localhost`, AMQP 5672, distribution port 25672) is never
//! touched: each node has a name unique to the test run (`ce<random>n1@localhost`), its own
//! directory (config, Mnesia, logs, pid file) owned by the `rabbitmq` user (the server script
//! drops to that user), and ports picked from a random base in 40000..49000. What has to be
//! free for that base (see [`pick_ports`]):
//! - the AMQP ports (`base`, `base+1`, ...), bound on 127.0.0.1 only;
//! - the distribution ports (`base+10`, ...);
//! - the distribution ports plus 10000: the CLI tools that the server script runs for a node
//!   take ports from there (25672 and 35672..35682 are why the machine's broker's ranges are
//!   avoided altogether).
//!
//! Faults: [`RabbitCluster::kill`] (SIGKILL by the pid file), [`RabbitCluster::stop`]
//! (`rabbitmqctl stop`), [`RabbitCluster::pause`] / [`RabbitCluster::resume`] (SIGSTOP /
//! SIGCONT of the node's `beam.smp`), and [`RabbitCluster::start_node`] to bring a node back
//! (it rejoins with its Mnesia directory).
//!
//! The clusters of one test binary run one at a time (a start waits for the previous cluster
//! to be dropped): three nodes take about 450 MiB and most of the 2 cores while they boot.
//! Nodes left behind by a test process that was itself killed are stopped by the next
//! [`RabbitCluster::start`] (each cluster directory names the process that owns it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::{Mutex, MutexGuard};

/// Prefix of every cluster directory in the temporary directory.
const DIR_PREFIX: &str = "ce-cluster-";
/// How long one node may take to boot (`await_startup`).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one `rabbitmqctl` call may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// One cluster at a time per test binary.
static TURN: Mutex<()> = Mutex::const_new(());

/// Why the cluster tests cannot run here (`rabbitmq-server` missing, or not root: the server
/// script has to drop to the `rabbitmq` user and node directories are `chown`ed), if so.
pub fn unavailable() -> Option<String> {
    let found = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .any(|dir| dir.join("rabbitmq-server").is_file())
        })
        .unwrap_or(false);
    if !found {
        return Some("rabbitmq-server is not installed".to_string());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0");
    if !root {
        return Some("not root (a RabbitMQ node runs as the rabbitmq user)".to_string());
    }
    None
}

/// One node of a [`RabbitCluster`].
#[derive(Debug, Clone)]
pub struct RabbitNode {
    /// The Erlang node name, such as `ce1a2b3c4dn1@localhost`.
    pub name: String,
    /// Its AMQP listener on 127.0.0.1.
    pub amqp_port: u16,
    /// Its Erlang distribution port.
    pub dist_port: u16,
    dir: PathBuf,
}

impl RabbitNode {
    /// The node's directory (config, `mnesia/`, `log/`, `pid`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's main log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log").join(format!("{}.log", self.name))
    }

    /// The OS pid of the node's `beam.smp` (from its pid file), if it has one.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The variables `rabbitmq-server` needs to start (or restart) this node.
    fn server_env(&self) -> Vec<(&'static str, String)> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        vec![
            ("RABBITMQ_CONFIG_FILE", d("rabbitmq")),
            ("RABBITMQ_NODENAME", self.name.clone()),
            ("RABBITMQ_DIST_PORT", self.dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", d("mnesia")),
            ("RABBITMQ_LOG_BASE", d("log")),
            ("RABBITMQ_PID_FILE", d("pid")),
            ("RABBITMQ_FEATURE_FLAGS_FILE", d("feature_flags")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins")),
            ("RABBITMQ_PLUGINS_EXPAND_DIR", d("plugins")),
        ]
    }
}

/// A RabbitMQ cluster of its own for one test. See the module documentation.
pub struct RabbitCluster {
    dir: PathBuf,
    nodes: Vec<RabbitNode>,
    /// When this cluster's turn came (its start began).
    since: std::time::Instant,
    /// Released after `Drop::drop` has stopped the nodes (fields drop after it).
    _turn: MutexGuard<'static, ()>,
}

impl RabbitCluster {
    /// [`RabbitCluster::start`] with three nodes, or `None` after printing
    /// `SKIPPED <test>: <reason>` on stderr when [`unavailable`] says why it cannot run.
    pub async fn start_or_skip(test: &str) -> Option<RabbitCluster> {
        if let Some(reason) = unavailable() {
            eprintln!("SKIPPED {test}: {reason}");
            return None;
        }
        Some(RabbitCluster::start(3).await)
    }

    /// Starts `n` nodes and joins nodes 2.. to node 1. Waits for the previous cluster of this
    /// test binary to be dropped first. Panics (after stopping what it started, and showing
    /// the end of the failing node's log) if a node does not boot or join.
    pub async fn start(n: usize) -> RabbitCluster {
        assert!(n >= 1, "a cluster needs a node");
        let turn = TURN.lock().await;
        let since = std::time::Instant::now();
        reap_abandoned_clusters();
        let tag = format!("{:010x}", rand::random::<u64>() & 0xff_ffff_ffff);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{tag}"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create cluster directory {}: {e}", dir.display()));
        std::fs::write(dir.join("owner"), std::process::id().to_string())
            .unwrap_or_else(|e| panic!("write {}/owner: {e}", dir.display()));
        let (amqp, dist) = pick_ports(n);
        let nodes = (0..n)
            .map(|i| RabbitNode {
                name: format!("ce{tag}n{}@localhost", i + 1),
                amqp_port: amqp[i],
                dist_port: dist[i],
                dir: dir.join(format!("n{}", i + 1)),
            })
            .collect();
        // From here on, `Drop` stops whatever a panic leaves behind.
        let cluster = RabbitCluster {
            dir,
            nodes,
            since,
            _turn: turn,
        };
        for node in &cluster.nodes {
            prepare_node_dir(node);
        }
        // Boot all nodes at once (they are independent until they join), then cluster them.
        for i in 0..n {
            cluster.launch(i).await;
        }
        let mut boots = tokio::task::JoinSet::new();
        for node in cluster.nodes.clone() {
            boots.spawn(async move {
                let result = await_startup(&node.name).await;
                (node, result)
            });
        }
        while let Some(joined) = boots.join_next().await {
            let (node, result) = joined.expect("a boot task");
            if let Err(e) = result {
                panic!(
                    "RabbitMQ node {} did not start: {e}\nlast lines of {}:\n{}",
                    node.name,
                    node.log_path().display(),
                    tail(&node.log_path(), 30)
                );
            }
        }
        let first = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            for args in [
                vec!["stop_app"],
                vec!["join_cluster", first.as_str()],
                vec!["start_app"],
            ] {
                if let Err(e) = ctl(&node.name, &args).await {
                    panic!(
                        "clustering {} with {first}: {e}\nlast lines of its log:\n{}",
                        node.name,
                        tail(&node.log_path(), 30)
                    );
                }
            }
        }
        let running = cluster.running_nodes(0).await;
        assert_eq!(
            running.len(),
            n,
            "the cluster runs {running:?}, expected {n} nodes"
        );
        eprintln!(
            "RabbitMQ cluster of {n} nodes up in {:.1} s: {}",
            since.elapsed().as_secs_f64(),
            cluster
                .nodes
                .iter()
                .map(|n| format!("{} (AMQP {})", n.name, n.amqp_port))
                .collect::<Vec<_>>()
                .join(", ")
        );
        cluster
    }

    /// When the cluster's start began (after waiting for the previous cluster of the test
    /// binary): what a test's duration is measured from.
    pub fn since(&self) -> std::time::Instant {
        self.since
    }

    /// The nodes, in start order (node 1 is index 0).
    pub fn nodes(&self) -> &[RabbitNode] {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, i: usize) -> &RabbitNode {
        &self.nodes[i]
    }

    /// The cluster's directory (one subdirectory per node).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/VHOST` of node `i`.
    pub fn url(&self, i: usize, vhost: &str) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/{vhost}",
            self.nodes[i].amqp_port
        )
    }

    /// An `AMQP_URL` listing the nodes in `order` (indexes), comma-separated (SPEC 7).
    pub fn urls(&self, vhost: &str, order: &[usize]) -> String {
        order
            .iter()
            .map(|&i| self.url(i, vhost))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The indexes of all nodes starting with `first` and going round: `[first, first+1, ..]`.
    pub fn order_from(&self, first: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .map(|k| (first + k) % self.nodes.len())
            .collect()
    }

    /// Creates a vhost with a random name that `guest` may use entirely, and returns its name.
    pub async fn add_vhost(&self) -> String {
        let vhost = format!(
            "ce_cluster_{:012x}",
            rand::random::<u64>() & 0xffff_ffff_ffff
        );
        let node = &self.nodes[0].name;
        ctl(node, &["add_vhost", &vhost])
            .await
            .unwrap_or_else(|e| panic!("add_vhost on the cluster: {e}"));
        ctl(
            node,
            &["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"],
        )
        .await
        .unwrap_or_else(|e| panic!("set_permissions on the cluster: {e}"));
        vhost
    }

    /// `rabbitmqctl -q -n <node i> ARGS...`; its stdout, or an error with its output.
    pub async fn ctl(&self, i: usize, args: &[&str]) -> Result<String, String> {
        ctl(&self.nodes[i].name, args).await
    }

    /// The running nodes of the cluster as node `via` sees them (indexes).
    pub async fn running_nodes(&self, via: usize) -> Vec<usize> {
        let out = self
            .ctl(via, &["cluster_status", "--formatter", "json"])
            .await
            .unwrap_or_else(|e| panic!("cluster_status: {e}"));
        let status: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("cluster_status is not JSON ({e}): {out}"));
        let running: Vec<&str> = status["running_nodes"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        self.indexes(&running)
    }

    fn indexes(&self, names: &[&str]) -> Vec<usize> {
        let mut found: Vec<usize> = names
            .iter()
            .filter_map(|name| self.nodes.iter().position(|n| n.name == *name))
            .collect();
        found.sort_unstable();
        found
    }

    /// The node that leads quorum queue `queue` of `vhost`, asking each node of `ask` in turn
    /// until one answers; `None` when none knows (no queue, or an election going on).
    pub async fn leader_via(&self, vhost: &str, queue: &str, ask: &[usize]) -> Option<usize> {
        for &i in ask {
            let Ok(out) = self
                .ctl(
                    i,
                    &[
                        "list_queues",
                        "-p",
                        vhost,
                        "name",
                        "leader",
                        "--no-table-headers",
                        "--timeout",
                        "10",
                    ],
                )
                .await
            else {
                continue;
            };
            for line in out.lines() {
                let mut fields = line.split_whitespace();
                if fields.next() == Some(queue)
                    && let Some(leader) = fields.next()
                    && let Some(index) = self.nodes.iter().position(|n| n.name == leader)
                {
                    return Some(index);
                }
            }
        }
        None
    }

    /// Waits (up to `timeout`) until a node other than those in `not` leads `queue`, asking
    /// only nodes outside `not` (a stopped or paused node cannot answer), and returns it.
    pub async fn wait_leader(
        &self,
        vhost: &str,
        queue: &str,
        not: &[usize],
        timeout: Duration,
    ) -> usize {
        let ask: Vec<usize> = (0..self.nodes.len()).filter(|i| !not.contains(i)).collect();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader_via(vhost, queue, &ask).await
                && !not.contains(&leader)
            {
                return leader;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("no node outside {not:?} leads {queue} of {vhost} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The client connections to `vhost`: for each, the node it is connected to (index) and
    /// the connection name the client gave (`contact-email-api`, ...; empty if none).
    pub async fn connections(&self, vhost: &str, via: usize) -> Vec<(usize, String)> {
        let out = self
            .ctl(
                via,
                &[
                    "list_connections",
                    "vhost",
                    "port",
                    "client_properties",
                    "--no-table-headers",
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("list_connections: {e}"));
        let mut found = Vec::new();
        for line in out.lines() {
            let mut fields = line.split('\t');
            if fields.next() != Some(vhost) {
                continue;
            }
            let Some(port) = fields.next().and_then(|p| p.trim().parse::<u16>().ok()) else {
                continue;
            };
            let Some(node) = self.nodes.iter().position(|n| n.amqp_port == port) else {
                continue;
            };
            let props = fields.collect::<Vec<_>>().join("\t");
            let name = props
                .find("contact-email-")
                .map(|at| {
                    props[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect()
                })
                .unwrap_or_default();
            found.push((node, name));
        }
        found.sort();
        found
    }

    /// SIGKILL to node `i` (by its pid file); returns once the process is gone.
    pub async fn kill(&self, i: usize) {
        let node = &self.nodes[i];
        let pid = node
            .pid()
            .unwrap_or_else(|| panic!("{} has no pid file", node.name));
        signal(pid, "KILL");
        wait_gone(pid, Duration::from_secs(10)).await;
    }

    /// Stops node `i` gracefully (`rabbitmqctl stop` with its pid file: returns once the OS
    /// process has exited).
    pub async fn stop(&self, i: usize) {
        let node = &self.nodes[i];
        let pid_file = node.dir.join("pid").display().to_string();
        self.ctl(i, &["stop", &pid_file])
            .await
            .unwrap_or_else(|e| panic!("rabbitmqctl stop {}: {e}", node.name));
    }

    /// SIGSTOP to node `i`'s `beam.smp`: its sockets stay open but nothing answers.
    pub fn pause(&self, i: usize) {
        let node = &self.nodes[i];
        signal(
            node.pid()
                .unwrap_or_else(|| panic!("{} has no pid file", node.name)),
            "STOP",
        );
    }

    /// SIGCONT to node `i`'s `beam.smp`.
    pub fn resume(&self, i: usize) {
        let node = &self.nodes[i];
        signal(
            node.pid()
                .unwrap_or_else(|| panic!("{} has no pid file", node.name)),
            "CONT",
        );
    }

    /// Starts node `i` again (after [`RabbitCluster::kill`] or [`RabbitCluster::stop`]) with
    /// the same name, ports and directory, so it rejoins the cluster; waits until it runs.
    pub async fn start_node(&self, i: usize) {
        self.launch(i).await;
        let node = &self.nodes[i];
        if let Err(e) = await_startup(&node.name).await {
            panic!(
                "RabbitMQ node {} did not start again: {e}\nlast lines of its log:\n{}",
                node.name,
                tail(&node.log_path(), 30)
            );
        }
    }

    /// `rabbitmq-server -detached` for node `i` (returns before the node has booted).
    async fn launch(&self, i: usize) {
        let node = &self.nodes[i];
        let _ = std::fs::remove_file(node.dir.join("pid"));
        let out = tokio::time::timeout(
            CTL_TIMEOUT,
            Command::new("rabbitmq-server")
                .arg("-detached")
                .envs(node.server_env())
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("rabbitmq-server -detached for {} hangs", node.name))
        .unwrap_or_else(|e| panic!("run rabbitmq-server: {e}"));
        assert!(
            out.status.success(),
            "rabbitmq-server -detached for {} failed with {}: {}{}",
            node.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        // Never panic here: a panic while unwinding aborts the whole test binary.
        let failed = std::thread::panicking();
        for node in &self.nodes {
            if let Some(pid) = node.pid().filter(|&pid| is_node_process(pid, &node.dir)) {
                // A paused node dies from SIGKILL as well; no graceful stop needed: the whole
                // cluster goes away with its files.
                signal(pid, "KILL");
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while Path::new(&format!("/proc/{pid}")).exists()
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            if failed {
                let log = tail(&node.log_path(), 15);
                if !log.is_empty() {
                    eprintln!("---- last lines of RabbitMQ node {} ----\n{log}", node.name);
                }
            }
        }
        if failed || std::env::var_os("CE_KEEP_TMP").is_some() {
            eprintln!("RabbitMQ cluster files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The node directory: `rabbitmq.conf` (AMQP on 127.0.0.1 only, guest allowed from there),
/// no plugins, owned by the `rabbitmq` user.
fn prepare_node_dir(node: &RabbitNode) {
    std::fs::create_dir_all(&node.dir)
        .unwrap_or_else(|e| panic!("create {}: {e}", node.dir.display()));
    let conf = format!(
        "listeners.tcp.local = 127.0.0.1:{}\nloopback_users = none\n",
        node.amqp_port
    );
    std::fs::write(node.dir.join("rabbitmq.conf"), conf)
        .unwrap_or_else(|e| panic!("write rabbitmq.conf: {e}"));
    std::fs::write(node.dir.join("enabled_plugins"), "[].\n")
        .unwrap_or_else(|e| panic!("write enabled_plugins: {e}"));
    let status = std::process::Command::new("chown")
        .args(["-R", "rabbitmq:rabbitmq"])
        .arg(&node.dir)
        .status()
        .expect("run chown");
    assert!(
        status.success(),
        "chown -R rabbitmq:rabbitmq {} failed",
        node.dir.display()
    );
}

/// Ports for `n` nodes from a random base in 40000..49000: AMQP `base..base+n`, distribution
/// `base+10..base+10+n`; each of those, and the CLI range of each distribution port
/// (`+10000..+10010`), free right now.
pub fn pick_ports(n: usize) -> (Vec<u16>, Vec<u16>) {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..200 {
        let base: u16 = rng.random_range(40_000..49_000 - 20);
        let amqp: Vec<u16> = (0..n as u16).map(|k| base + k).collect();
        let dist: Vec<u16> = (0..n as u16).map(|k| base + 10 + k).collect();
        let cli = (base + 10 + 10_000)..=(base + 10 + n as u16 + 10_010);
        let all_free = amqp
            .iter()
            .chain(dist.iter())
            .copied()
            .chain(cli)
            .all(port_free);
        if all_free {
            return (amqp, dist);
        }
    }
    panic!("no free port range for a RabbitMQ cluster in 40000..49000");
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// `rabbitmqctl -q -n NODE ARGS...` with a time limit.
async fn ctl(node: &str, args: &[&str]) -> Result<String, String> {
    let run = Command::new("rabbitmqctl")
        .args(["-q", "-n", node])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(CTL_TIMEOUT, run).await {
        Err(_) => return Err(format!("rabbitmqctl {args:?} on {node} timed out")),
        Ok(Err(e)) => return Err(format!("run rabbitmqctl: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "rabbitmqctl {args:?} on {node} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Waits until the node has booted (`rabbitmqctl await_startup`), retrying while it is not
/// even reachable yet.
async fn await_startup(node: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + BOOT_TIMEOUT;
    let timeout = BOOT_TIMEOUT.as_secs().to_string();
    loop {
        match ctl(node, &["await_startup", "--timeout", &timeout]).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// `kill -SIGNAL PID` (errors ignored: the process may be gone).
fn signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

async fn wait_gone(pid: u32, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while Path::new(&format!("/proc/{pid}")).exists() {
        if tokio::time::Instant::now() >= deadline {
            panic!("process {pid} still there {timeout:?} after SIGKILL");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `pid` is a node started from `dir` (its environment or command line names the
/// directory), so a recycled pid is never signalled.
fn is_node_process(pid: u32, dir: &Path) -> bool {
    let needle = dir.display().to_string();
    ["environ", "cmdline"].iter().any(|file| {
        std::fs::read(format!("/proc/{pid}/{file}"))
            .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(&needle))
    })
}

/// Stops the nodes of clusters whose owning test process is gone (killed before its `Drop`
/// could run), and removes their directories.
fn reap_abandoned_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_cluster = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_cluster {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join("owner"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let owner_alive = owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if owner_alive {
            continue;
        }
        let Ok(nodes) = std::fs::read_dir(&dir) else {
            continue;
        };
        for node in nodes.flatten() {
            let node_dir = node.path();
            let pid = std::fs::read_to_string(node_dir.join("pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if let Some(pid) = pid.filter(|&pid| is_node_process(pid, &node_dir)) {
                eprintln!(
                    "stopping RabbitMQ node {pid} left behind in {}",
                    node_dir.display()
                );
                signal(pid, "KILL");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The last `n` lines of a file (empty if unreadable).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
