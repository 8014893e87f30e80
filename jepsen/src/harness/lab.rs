//! The lab: the nodes' network namespaces, their `railyard` processes and every fault the
//! nemesis applies to them, with the cleanup that undoes it all.
//!
//! Layout (for harness pid P): a bridge `ryjPbr` in the root namespace holding 10.A.B.254/24,
//! and per node i a namespace `ryjPn<i>` whose `eth0` (10.A.B.i) is the far end of the veth
//! `ryjPv<i>` on the bridge. A node listens for clients on 10.A.B.i:9092 and for peers on
//! 10.A.B.i:9093, so its peer connections leave from its own address and a DROP rule in its
//! namespace's INPUT chain cuts exactly one direction of one link, silently. The clients run
//! in the root namespace (source 10.A.B.254) and are never cut off.
//!
//! Node ids are the host part of the address and are never reused: a broker the membership
//! nemesis adds gets the next id and a namespace of its own, and a decommissioned broker's
//! namespace stays (empty) until the cleanup. Only the cluster's current members are started,
//! faulted and healed.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nemesis::NemesisKind;
use super::workload::Bootstrap;
use super::{RunOpts, TOPIC};

/// Clients' port on every node.
const KAFKA_PORT: u16 = 9092;
/// Peers' port on every node.
const RAFT_PORT: u16 = 9093;
/// The core's tick; an election timeout is 10 to 20 ticks (raft's defaults in core/replica.rs).
pub const TICK_MS: u64 = 100;
/// Election timeout range that follows from [`TICK_MS`], for the report.
pub const ELECTION_TIMEOUT_MS: [u64; 2] = [10 * TICK_MS, 20 * TICK_MS];
/// A started node must accept client connections within this.
const START_WITHIN: Duration = Duration::from_secs(30);
/// After a start or a heal, every key must have a leader within this.
const LEADERS_WITHIN: Duration = Duration::from_secs(60);
/// A node asked to stop (SIGTERM) is killed if still running after this.
const TERMINATE_WITHIN: Duration = Duration::from_secs(15);
/// Lines of a node's log printed when it fails.
const LOG_TAIL_LINES: usize = 40;
/// Where Debian's `faketime` package (and `make install` upstream) puts libfaketime.
const LIBFAKETIME: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
];
/// Prefix of every namespace, veth and bridge name the harness makes.
const NAME_PREFIX: &str = "ryj";
/// Node ids are address host parts: 254 is the bridge's.
const NODE_ID_MAX: u64 = 253;

/// Why the lab could not do what was asked.
#[derive(Debug)]
pub enum LabError {
    /// The machine lacks something (root, `ip`, `iptables`, libfaketime, the binary) or a
    /// setup command failed.
    Setup(String),
    /// A node did not start, or exited when the harness had not stopped it.
    NodeFailed {
        /// The node.
        id: u64,
        /// What happened.
        why: String,
    },
    /// The cluster did not become ready (no leader for some key).
    NotReady(String),
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::Setup(e) => write!(f, "lab setup failed: {e}"),
            LabError::NodeFailed { id, why } => write!(f, "node {id} failed: {why}"),
            LabError::NotReady(e) => write!(f, "cluster not ready: {e}"),
        }
    }
}

impl std::error::Error for LabError {}

impl From<super::workload::WorkloadError> for LabError {
    fn from(e: super::workload::WorkloadError) -> LabError {
        match e {
            super::workload::WorkloadError::NotReady(why) => LabError::NotReady(why),
        }
    }
}

/// One node: its namespace, files and process.
struct Node {
    id: u64,
    ns: String,
    veth: String,
    ip: Ipv4Addr,
    config: PathBuf,
    log: PathBuf,
    clock: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// In the cluster now: started, faulted and healed. False once decommissioned.
    member: bool,
    /// A controller (metadata raft group) voter, as the harness made it.
    voter: bool,
}

impl Node {
    fn kafka_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, KAFKA_PORT)
    }
}

/// The cluster and its network. Dropping it heals and removes everything.
pub struct Lab {
    tag: String,
    bridge: String,
    bridge_made: bool,
    subnet: [u8; 3],
    nodes: Vec<Node>,
    binary: PathBuf,
    faketime: Option<PathBuf>,
    dir: PathBuf,
    cleaned: bool,
    /// The workload's bootstrap list, kept to the members.
    shared_bootstrap: Bootstrap,
}

impl Lab {
    /// Checks the machine, writes every node's config and makes the namespaces.
    pub fn create(opts: &RunOpts, dir: &Path) -> Result<Lab, LabError> {
        if !rustix::process::geteuid().is_root() {
            return Err(LabError::Setup(
                "network namespaces need root (run as root, or with CAP_NET_ADMIN and CAP_SYS_ADMIN)"
                    .into(),
            ));
        }
        run_cmd("ip", &["-V"])?;
        run_cmd("iptables", &["-V"])
            .map_err(|_| LabError::Setup("iptables not found (apt-get install iptables)".into()))?;
        let binary = railyard_binary(opts)?;
        let faketime = if opts.nemesis.contains(&NemesisKind::Clock) {
            Some(libfaketime()?)
        } else {
            None
        };
        let pid = std::process::id();
        let tag = format!("{NAME_PREFIX}{pid}");
        let subnet = [10, 200 + ((pid >> 8) % 50) as u8, (pid & 0xff) as u8];
        let mut lab = Lab {
            bridge: format!("{tag}br"),
            tag,
            bridge_made: false,
            subnet,
            nodes: Vec::new(),
            binary,
            faketime,
            dir: dir.to_path_buf(),
            cleaned: false,
            shared_bootstrap: Bootstrap::from(String::new()),
        };
        lab.make_bridge()?;
        for id in 1..=u64::from(opts.nodes) {
            lab.add_namespace(id)?;
        }
        lab.write_configs(opts)?;
        lab.shared_bootstrap.set(lab.bootstrap());
        Ok(lab)
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], host)
    }

    fn make_bridge(&mut self) -> Result<(), LabError> {
        let hub = format!("{}/24", self.ip(254));
        run_cmd("ip", &["link", "add", &self.bridge, "type", "bridge"])?;
        self.bridge_made = true;
        run_cmd("ip", &["addr", "add", &hub, "dev", &self.bridge])?;
        run_cmd("ip", &["link", "set", &self.bridge, "up"])
    }

    /// Makes node `id`'s namespace and its veth on the bridge; the node is a member, a voter
    /// when it is one of the nodes the cluster forms with.
    fn add_namespace(&mut self, id: u64) -> Result<(), LabError> {
        let host = u8::try_from(id)
            .ok()
            .filter(|_| id <= NODE_ID_MAX)
            .ok_or_else(|| LabError::Setup(format!("node id {id} exceeds {NODE_ID_MAX}")))?;
        let node = Node {
            id,
            ns: format!("{}n{id}", self.tag),
            veth: format!("{}v{id}", self.tag),
            ip: self.ip(host),
            config: self.dir.join(format!("n{id}.toml")),
            log: self.dir.join(format!("n{id}.log")),
            clock: self.dir.join(format!("n{id}.faketime")),
            child: None,
            paused: false,
            member: true,
            voter: true,
        };
        run_cmd("ip", &["netns", "add", &node.ns])?;
        let (ns, veth) = (node.ns.clone(), node.veth.clone());
        self.nodes.push(node);
        let addr = format!("{}/24", self.ip(host));
        run_cmd(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        run_cmd("ip", &["link", "set", &veth, "master", &self.bridge, "up"])?;
        run_cmd("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
        run_cmd("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        run_cmd("ip", &["-n", &ns, "link", "set", "lo", "up"])
    }

    fn write_configs(&self, opts: &RunOpts) -> Result<(), LabError> {
        let replication = opts.nodes.min(3);
        let mut peers = String::new();
        for n in &self.nodes {
            peers.push_str(&peer_toml(n.id, n.ip, n.kafka_addr()));
        }
        for n in &self.nodes {
            let data = self.dir.join("data").join(format!("n{}", n.id));
            let text = format!(
                "id = {}\ndata_dir = \"{}\"\nkafka_listen = \"{}\"\nraft_listen = \"{}:{RAFT_PORT}\"\n\
                 tick_ms = {TICK_MS}\n\n{peers}[[topics]]\nname = \"{TOPIC}\"\npartitions = {}\n\
                 replication_factor = {replication}\n",
                n.id,
                data.display(),
                n.kafka_addr(),
                n.ip,
                opts.keys,
            );
            write_file(&n.config, &text)?;
            write_file(&n.clock, "+0\n")?;
        }
        Ok(())
    }

    /// Adds a broker with the next node id, in a namespace of its own, configured to join the
    /// running cluster through the controller voters (`join = true`), and starts it. Returns
    /// its index once it accepts clients.
    pub async fn add_joiner(&mut self) -> Result<usize, LabError> {
        let id = self.next_id();
        let voters: Vec<&Node> = self.nodes.iter().filter(|n| n.member && n.voter).collect();
        let ids: Vec<u64> = voters.iter().map(|n| n.id).collect();
        let mut peers = String::new();
        for n in &voters {
            peers.push_str(&peer_toml(n.id, n.ip, n.kafka_addr()));
        }
        self.add_namespace(id)?;
        let i = self.nodes.len() - 1;
        let me = &mut self.nodes[i];
        me.voter = false;
        peers.push_str(&peer_toml(me.id, me.ip, me.kafka_addr()));
        let data = self.dir.join("data").join(format!("n{id}"));
        let text = format!(
            "id = {id}\ndata_dir = \"{}\"\nkafka_listen = \"{}\"\nraft_listen = \"{}:{RAFT_PORT}\"\n\
             tick_ms = {TICK_MS}\njoin = true\ncontroller_voters = {ids:?}\n\n{peers}",
            data.display(),
            me.kafka_addr(),
            me.ip,
        );
        write_file(&me.config, &text)?;
        write_file(&me.clock, "+0\n")?;
        self.start(i)?;
        self.wait_listening(i).await?;
        self.shared_bootstrap.set(self.bootstrap());
        Ok(i)
    }

    /// The id the next joiner gets.
    pub fn next_id(&self) -> u64 {
        self.nodes.len() as u64 + 1
    }

    /// Records whether node `i` is a controller voter (the harness changed it).
    pub fn set_voter(&mut self, i: usize, voter: bool) {
        self.nodes[i].voter = voter;
    }

    /// Whether node `i` is a controller voter.
    pub fn is_voter(&self, i: usize) -> bool {
        self.nodes[i].voter
    }

    /// Stops decommissioned node `i` for good (SIGTERM): it is no longer a member, and
    /// nothing starts it again.
    pub async fn retire(&mut self, i: usize) -> Result<(), LabError> {
        self.nodes[i].member = false;
        self.shared_bootstrap.set(self.bootstrap());
        self.terminate(i).await
    }

    /// Starts every member.
    pub fn start_all(&mut self) -> Result<(), LabError> {
        for i in self.members() {
            self.start(i)?;
        }
        Ok(())
    }

    /// Starts node `i` (an index) inside its namespace, its output appended to its log.
    pub fn start(&mut self, i: usize) -> Result<(), LabError> {
        let node = &self.nodes[i];
        if node.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| setup_io(&node.log, e))?;
        let log2 = log.try_clone().map_err(|e| setup_io(&node.log, e))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.ns])
            .arg(&self.binary)
            .args(["--log-level", "info", "start", "--config"])
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if let Some(lib) = &self.faketime {
            // Only CLOCK_REALTIME moves: the core's timers run on the monotonic clock, which
            // the clock nemesis must leave alone to test exactly that.
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", &node.clock)
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        // `ip netns exec` execs the node in place, so the child is the node itself. It dies
        // with the harness even when the harness is killed with -9 and cannot clean up.
        // SAFETY: the closure only makes one async-signal-safe prctl call between fork and
        // exec. The runtime is single-threaded, so the forking thread is the main thread,
        // which lives as long as the harness (the death signal follows the thread).
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|e| LabError::NodeFailed {
            id: node.id,
            why: format!("cannot spawn {}: {e}", self.binary.display()),
        })?;
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
        Ok(())
    }

    /// The clients' bootstrap list: every member.
    pub fn bootstrap(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.member)
            .map(|n| n.kafka_addr().to_string())
            .collect();
        addrs.join(",")
    }

    /// The workload's bootstrap list, which follows the membership.
    pub fn shared_bootstrap(&self) -> Bootstrap {
        self.shared_bootstrap.clone()
    }

    /// The indices of the cluster's members now, in id order.
    pub fn members(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].member)
            .collect()
    }

    /// The node id of index `i`.
    pub fn id(&self, i: usize) -> u64 {
        self.nodes[i].id
    }

    /// The index of node `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Waits until every member accepts clients and every key has a leader.
    pub async fn wait_ready(&mut self, keys: u32) -> Result<(), LabError> {
        for i in self.members() {
            self.wait_listening(i).await?;
        }
        let admin = super::workload::admin(&self.bootstrap()).await?;
        let deadline = Instant::now() + LEADERS_WITHIN;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            self.check_alive()?;
            match admin.cluster().refresh_metadata().await {
                Ok(meta) => {
                    let led = leaders_known(&meta, keys);
                    if led == keys as usize {
                        return Ok(());
                    }
                    last = format!("{led} of {keys} keys have a leader");
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(LabError::NotReady(format!(
            "not every key had a leader within {LEADERS_WITHIN:?}: {last}"
        )))
    }

    async fn wait_listening(&mut self, i: usize) -> Result<(), LabError> {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            self.check_alive()?;
            let addr = self.nodes[i].kafka_addr();
            let attempt = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            if matches!(attempt, Ok(Ok(_))) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::NodeFailed {
                    id: self.nodes[i].id,
                    why: format!("not accepting clients on {addr} after {START_WITHIN:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if a node the harness believes running has exited by itself (a crash).
    pub fn check_alive(&mut self) -> Result<(), LabError> {
        for n in &mut self.nodes {
            let Some(child) = n.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                n.child = None;
                return Err(LabError::NodeFailed {
                    id: n.id,
                    why: format!("exited by itself with {status}"),
                });
            }
        }
        Ok(())
    }

    /// kill -9 node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            signal(&child, rustix::process::Signal::KILL);
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
    }

    /// SIGSTOP node `i`.
    pub fn pause(&mut self, i: usize) {
        if let Some(child) = &self.nodes[i].child {
            signal(child, rustix::process::Signal::STOP);
            self.nodes[i].paused = true;
        }
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) {
        if let Some(child) = &self.nodes[i].child {
            signal(child, rustix::process::Signal::CONT);
        }
        self.nodes[i].paused = false;
    }

    /// Stops node `i` gracefully (SIGTERM), killing it if it takes too long.
    pub async fn terminate(&mut self, i: usize) -> Result<(), LabError> {
        let Some(mut child) = self.nodes[i].child.take() else {
            return Ok(());
        };
        signal(&child, rustix::process::Signal::TERM);
        let deadline = Instant::now() + TERMINATE_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                if status.success() {
                    return Ok(());
                }
                return Err(LabError::NodeFailed {
                    id: self.nodes[i].id,
                    why: format!("exited with {status} on SIGTERM"),
                });
            }
            if Instant::now() >= deadline {
                signal(&child, rustix::process::Signal::KILL);
                let _ = child.wait();
                return Err(LabError::NodeFailed {
                    id: self.nodes[i].id,
                    why: format!("still running {TERMINATE_WITHIN:?} after SIGTERM"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Restarts node `i` gracefully and waits until it accepts clients again.
    pub async fn restart(&mut self, i: usize) -> Result<(), LabError> {
        self.terminate(i).await?;
        self.start(i)?;
        self.wait_listening(i).await
    }

    /// Makes node `i` drop every packet from the nodes in `from` (its INPUT chain); an empty
    /// set lets everything in again.
    pub fn set_grudge(&self, i: usize, from: &BTreeSet<usize>) -> Result<(), LabError> {
        let ns = &self.nodes[i].ns;
        run_cmd(
            "ip",
            &["netns", "exec", ns, "iptables", "-w", "-F", "INPUT"],
        )?;
        for &j in from {
            let src = self.nodes[j].ip.to_string();
            run_cmd(
                "ip",
                &[
                    "netns", "exec", ns, "iptables", "-w", "-A", "INPUT", "-s", &src, "-j", "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Sets node `i`'s wall-clock offset (libfaketime's syntax: `+0`, `+1h`, `-1h`).
    pub fn set_clock(&self, i: usize, offset: &str) -> Result<(), LabError> {
        if self.faketime.is_none() {
            return Err(LabError::Setup(
                "the clock nemesis needs the nodes started under libfaketime".into(),
            ));
        }
        // Written whole and renamed into place: libfaketime rereads the file on every call
        // and must never see it half-written.
        let path = &self.nodes[i].clock;
        let tmp = path.with_extension("tmp");
        write_file(&tmp, &format!("{offset}\n"))?;
        std::fs::rename(&tmp, path).map_err(|e| setup_io(path, e))
    }

    /// Heals every fault: resumes paused nodes, starts stopped members, lets every packet
    /// through and puts every clock back.
    pub async fn heal_all(&mut self) -> Result<(), LabError> {
        self.check_alive()?;
        let none = BTreeSet::new();
        for i in self.members() {
            self.set_grudge(i, &none)?;
            if self.faketime.is_some() {
                self.set_clock(i, "+0")?;
            }
            if self.nodes[i].paused {
                self.resume(i);
            }
            if self.nodes[i].child.is_none() {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// Prints what a person needs to see why the run failed: the tail of the failed node's
    /// log, or of every log when it is not one node's fault.
    pub fn print_failure(&self, error: &super::RunError) {
        let only = match error {
            super::RunError::Lab(LabError::NodeFailed { id, .. }) => Some(*id),
            super::RunError::Lab(_) => None,
            // Interrupted, or the run's own files: the nodes are not at fault.
            super::RunError::Io(_) | super::RunError::Interrupted(_) => return,
        };
        for n in &self.nodes {
            if only.is_some_and(|id| id != n.id) {
                continue;
            }
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!("---- tail of {} ----", n.log.display());
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
    }

    /// Deletes the nodes' data directories (after a valid run; logs and history stay).
    pub fn remove_data(&self) {
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }

    /// Resumes and kills every node, then deletes the namespaces (and with them every
    /// iptables rule) and the bridge. Runs once; `Drop` calls it too.
    pub fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        for i in 0..self.nodes.len() {
            if let Some(child) = &self.nodes[i].child {
                signal(child, rustix::process::Signal::CONT);
            }
            self.kill(i);
        }
        for n in &self.nodes {
            let _ = run_cmd("ip", &["netns", "del", &n.ns]);
            let _ = run_cmd("ip", &["link", "del", &n.veth]);
        }
        if self.bridge_made {
            let _ = run_cmd("ip", &["link", "del", &self.bridge]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// One `[[peers]]` entry of a node's config.
fn peer_toml(id: u64, ip: Ipv4Addr, kafka: SocketAddrV4) -> String {
    format!("[[peers]]\nid = {id}\nraft_addr = \"{ip}:{RAFT_PORT}\"\nkafka_addr = \"{kafka}\"\n\n")
}

/// How many keys have a leader that the metadata also lists as a live broker.
fn leaders_known(meta: &railyard_client::cluster::Metadata, keys: u32) -> usize {
    meta.topics.get(TOPIC).map_or(0, |t| {
        t.partitions
            .iter()
            .filter(|p| p.leader.is_some_and(|l| meta.brokers.contains_key(&l)))
            .filter(|p| u32::try_from(p.partition).is_ok_and(|k| k < keys))
            .count()
    })
}

/// Deletes what runs of harnesses that are no longer alive left behind (a harness killed
/// with -9 cannot clean up): their nodes, namespaces and bridges.
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout);
    let mut dead_tags = BTreeSet::new();
    for line in listing.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = owner_pid(name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                if let Some(pid) = p.parse().ok().and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        let _ = run_cmd("ip", &["netns", "del", name]);
        dead_tags.insert(format!("{NAME_PREFIX}{pid}"));
    }
    for tag in dead_tags {
        let _ = run_cmd("ip", &["link", "del", &format!("{tag}br")]);
        eprintln!("railyard-jepsen: removed namespaces left by an earlier run ({tag})");
    }
}

/// The harness pid in a namespace name `ryj<pid>n<i>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, node) = rest.split_once('n')?;
    node.parse::<u32>().ok()?;
    pid.parse().ok()
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        // The process may have exited already; the caller reaps it either way.
        let _ = rustix::process::kill_process(pid, sig);
    }
}

fn railyard_binary(opts: &RunOpts) -> Result<PathBuf, LabError> {
    let path = match &opts.railyard {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| LabError::Setup(format!("cannot find this binary: {e}")))?
            .with_file_name("railyard"),
    };
    if !path.is_file() {
        return Err(LabError::Setup(format!(
            "no railyard binary at {} (cargo build --release --bin railyard, or --railyard PATH)",
            path.display()
        )));
    }
    // The node runs in another mount namespace's view of the same files: make it absolute.
    std::fs::canonicalize(&path).map_err(|e| setup_io(&path, e))
}

fn libfaketime() -> Result<PathBuf, LabError> {
    LIBFAKETIME
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            LabError::Setup(
                "the clock nemesis needs libfaketime (apt-get install faketime); or leave \
                 `clock` out of --nemesis"
                    .into(),
            )
        })
}

fn run_cmd(program: &str, args: &[&str]) -> Result<(), LabError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Setup(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(LabError::Setup(format!(
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

fn write_file(path: &Path, text: &str) -> Result<(), LabError> {
    let mut f = std::fs::File::create(path).map_err(|e| setup_io(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| setup_io(path, e))
}

fn setup_io(path: &Path, e: std::io::Error) -> LabError {
    LabError::Setup(format!("{}: {e}", path.display()))
}
