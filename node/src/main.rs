//! The `railyard` binary: `railyard start --config node.toml` runs one node and logs to
//! stderr; `railyard dev` runs a local 3-node cluster in one process, shows a banner and the
//! cluster's events in the terminal (`railyard_node::dev_console`) and writes its logs to
//! `railyard.log` in the data directory. raft-rs's own INFO lines (every vote and term) are
//! left out below `--log-level debug`.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use railyard_node::broker::Broker;
use railyard_node::cli;
use railyard_node::config::{parse_topic_flag, LogFormat, NodeConfig, PeerConfig, TopicConfig};
use railyard_node::dev_console::{self, Banner, Snapshot};
use railyard_node::server::{start_node, RunningNode};
use slog::{error, info, o, Drain, Level, Logger, OwnedKVList, Record};

#[derive(Parser, Debug)]
#[command(
    name = "railyard",
    version,
    about = "Railyard: a Kafka-compatible event streaming platform"
)]
struct Cli {
    /// Log level: trace, debug, info, warning, error.
    #[arg(long, global = true, env = "RAILYARD_LOG", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, global = true, env = "RAILYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Term)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node from a TOML config file; flags and RAILYARD_* variables override it.
    Start {
        #[arg(long, env = "RAILYARD_CONFIG")]
        config: PathBuf,
        #[arg(long, env = "RAILYARD_ID")]
        id: Option<u64>,
        #[arg(long, env = "RAILYARD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long, env = "RAILYARD_KAFKA_LISTEN")]
        kafka_listen: Option<SocketAddr>,
        #[arg(long, env = "RAILYARD_RAFT_LISTEN")]
        raft_listen: Option<SocketAddr>,
        /// Admin HTTP endpoint (/metrics, /health, /v1/cluster).
        #[arg(long, env = "RAILYARD_ADMIN_LISTEN")]
        admin_listen: Option<SocketAddr>,
        /// Extra static topics, `name:partitions[:replication]`.
        #[arg(long = "topic", value_parser = parse_topic_flag)]
        topics: Vec<TopicConfig>,
        /// Create topics that clients use but that do not exist (Kafka's
        /// auto.create.topics.enable).
        #[arg(long, env = "RAILYARD_AUTO_CREATE_TOPICS")]
        auto_create_topics: Option<bool>,
        /// Join a running cluster: ask its controller quorum (`controller_voters` and their
        /// `peers` entries in the config) to admit this node.
        #[arg(long)]
        join: bool,
    },
    /// Run a local cluster in this process (Kafka listeners on consecutive ports).
    Dev(DevOptions),
    /// Benchmark the cluster with the Rust client: produce, consume or e2e latency.
    Bench(Box<railyard_node::bench::BenchArgs>),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn default_dev_topics() -> Vec<TopicConfig> {
    vec![TopicConfig {
        name: "events".into(),
        partitions: 3,
        replication_factor: 3,
    }]
}

/// The log file of `railyard dev`, in its data directory.
const DEV_LOG_FILE: &str = "railyard.log";

/// Where the logs go: stderr (`railyard start`) or a file (`railyard dev`).
enum LogTarget {
    Stderr,
    File(std::fs::File),
}

impl LogTarget {
    fn writer(self) -> Box<dyn Write + Send> {
        match self {
            LogTarget::Stderr => Box::new(std::io::stderr()),
            LogTarget::File(f) => Box::new(f),
        }
    }
}

fn logger(level: &str, format: LogFormat, target: LogTarget) -> Logger {
    let level = level.parse::<Level>().unwrap_or(Level::Info);
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = match (format, target) {
        (LogFormat::Term, LogTarget::Stderr) => {
            let decorator = slog_term::TermDecorator::new().stderr().build();
            Box::new(slog_term::FullFormat::new(decorator).build().fuse())
        }
        (LogFormat::Term, target) => {
            let decorator = slog_term::PlainDecorator::new(target.writer());
            Box::new(slog_term::FullFormat::new(decorator).build().fuse())
        }
        (LogFormat::Json, target) => Box::new(slog_json::Json::default(target.writer()).fuse()),
    };
    let drain = QuietRaft { drain, level }.fuse();
    let drain = slog_async::Async::new(drain).build().fuse();
    Logger::root(drain.filter_level(level).fuse(), o!())
}

/// Drops raft-rs's records below WARNING unless the level asked for is debug or trace: it logs
/// every pre-vote, vote and term change of every partition at INFO, which buries the lines an
/// operator needs. Its warnings and errors always pass.
struct QuietRaft<D> {
    drain: D,
    level: Level,
}

impl<D: Drain<Ok = (), Err = slog::Never>> Drain for QuietRaft<D> {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let from_raft = record.module().starts_with("raft::");
        let verbose = !self.level.is_at_least(Level::Info);
        if from_raft && !verbose && !record.level().is_at_least(Level::Warning) {
            return Ok(());
        }
        self.drain.log(record, values)
    }
}

/// What `railyard dev` was asked for.
#[derive(clap::Args, Debug)]
struct DevOptions {
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    #[arg(long, default_value = "./railyard-data")]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = 9092)]
    kafka_port: u16,
    #[arg(long, default_value_t = 19092)]
    raft_port: u16,
    /// First admin HTTP port (/metrics, /health, /v1/cluster); 0 turns the endpoint off.
    #[arg(long, default_value_t = 9644)]
    admin_port: u16,
    /// Static topics, `name:partitions[:replication]` (replication is capped at --nodes).
    #[arg(long = "topic", value_parser = parse_topic_flag, default_values_t = default_dev_topics())]
    topics: Vec<TopicConfig>,
    /// How many nodes (the first ones) form the controller quorum; the others follow the
    /// metadata log as learners. Default: min(3, nodes).
    #[arg(long)]
    controllers: Option<u64>,
    /// Create topics that clients use but that do not exist.
    #[arg(long)]
    auto_create_topics: bool,
}

fn dev_configs(o: DevOptions) -> Vec<NodeConfig> {
    let DevOptions {
        nodes,
        data_dir,
        host,
        kafka_port,
        raft_port,
        admin_port,
        mut topics,
        controllers,
        auto_create_topics,
    } = o;
    let controllers = controllers.unwrap_or(3).clamp(1, nodes);
    for t in topics.iter_mut() {
        t.replication_factor = t.replication_factor.min(nodes as u32);
    }
    let peers: Vec<PeerConfig> = (1..=nodes)
        .map(|id| PeerConfig {
            id,
            raft_addr: SocketAddr::new(host, raft_port + id as u16 - 1),
            kafka_addr: SocketAddr::new(host, kafka_port + id as u16 - 1),
            rack: None,
        })
        .collect();
    peers
        .iter()
        .map(|p| NodeConfig {
            id: p.id,
            data_dir: data_dir.join(format!("node-{}", p.id)),
            kafka_listen: p.kafka_addr,
            raft_listen: p.raft_addr,
            admin_listen: (admin_port != 0)
                .then(|| SocketAddr::new(host, admin_port + p.id as u16 - 1)),
            peers: peers.clone(),
            topics: topics.clone(),
            controller_voters: (1..=controllers).collect(),
            join: false,
            heartbeat_ms: 500,
            session_timeout_ms: 4_000,
            auto_create_topics,
            default_partitions: 1,
            default_replication_factor: None,
            tick_ms: 100,
            min_free_bytes: 256 << 20,
            log_format: LogFormat::Term,
            log_level: "info".into(),
            // Fewer than Kafka's 50: each is a raft group on every node, idle or not.
            offsets_topic_num_partitions: DEV_OFFSETS_PARTITIONS,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_retention_minutes: 7 * 24 * 60,
            producer_id_expiration_ms: 86_400_000,
            topic_defaults: Default::default(),
        })
        .collect()
}

/// `__consumer_offsets` partitions of a `railyard dev` cluster.
const DEV_OFFSETS_PARTITIONS: u32 = 10;

/// The config of a node joining the dev cluster `configs` describes: the next id, the next
/// ports, `join = true` and the controller quorum's peer entries.
fn dev_join_config(configs: &[NodeConfig]) -> Option<String> {
    let last = configs.last()?;
    let id = last.id + 1;
    let next = |a: SocketAddr| SocketAddr::new(a.ip(), a.port() + 1);
    let (kafka, raft) = (next(last.kafka_listen), next(last.raft_listen));
    let voters = last.controller_voters();
    let data_dir = last.data_dir.with_file_name(format!("node-{id}"));
    let mut t = format!(
        "# A node joining the `railyard dev` cluster: `railyard start --config <this file>`.\n\
         id = {id}\ndata_dir = {:?}\nkafka_listen = \"{kafka}\"\nraft_listen = \"{raft}\"\n\
         join = true\ncontroller_voters = {voters:?}\n",
        data_dir.display().to_string()
    );
    let quorum = last.peers.iter().filter(|p| voters.contains(&p.id));
    for (pid, r, k) in quorum
        .map(|p| (p.id, p.raft_addr, p.kafka_addr))
        .chain([(id, raft, kafka)])
    {
        t += &format!("\n[[peers]]\nid = {pid}\nraft_addr = \"{r}\"\nkafka_addr = \"{k}\"\n");
    }
    Some(t)
}

/// What the dev console shows of what `railyard dev` was asked for.
struct DevShow {
    data_dir: PathBuf,
    topics: Vec<TopicConfig>,
    controllers: u64,
    auto_create_topics: bool,
    /// Where the config of a joining node was written.
    join_config: Option<PathBuf>,
}

async fn run(cli: Cli, log: Logger) -> Result<(), String> {
    let mut dev = None;
    let configs = match cli.command {
        Command::Client(_) => unreachable!("main runs client commands without a node"),
        Command::Start {
            config,
            id,
            data_dir,
            kafka_listen,
            raft_listen,
            admin_listen,
            topics,
            auto_create_topics,
            join,
        } => {
            let mut c = NodeConfig::from_file(&config).map_err(|e| e.to_string())?;
            if let Some(v) = id {
                c.id = v;
            }
            if let Some(v) = data_dir {
                c.data_dir = v;
            }
            if let Some(v) = kafka_listen {
                c.kafka_listen = v;
            }
            if let Some(v) = raft_listen {
                c.raft_listen = v;
            }
            if let Some(v) = admin_listen {
                c.admin_listen = Some(v);
            }
            c.topics.extend(topics);
            if let Some(v) = auto_create_topics {
                c.auto_create_topics = v;
            }
            c.join |= join;
            vec![c]
        }
        Command::Bench(_) => unreachable!("main runs railyard bench without starting a node"),
        Command::Dev(o) => {
            let data_dir = o.data_dir.clone();
            let mut show = DevShow {
                data_dir: o.data_dir.clone(),
                topics: o.topics.clone(),
                controllers: o.controllers.unwrap_or(3).clamp(1, o.nodes),
                auto_create_topics: o.auto_create_topics,
                join_config: None,
            };
            let configs = dev_configs(o);
            if let Some(text) = dev_join_config(&configs) {
                let path = data_dir.join(format!("join-node-{}.toml", configs.len() + 1));
                if std::fs::create_dir_all(&data_dir)
                    .and_then(|()| std::fs::write(&path, text))
                    .is_ok()
                {
                    show.join_config = Some(path);
                }
            }
            dev = Some(show);
            configs
        }
    };
    let mut running = Vec::new();
    for c in configs {
        running.push(start_node(c, &log).await.map_err(|e| e.to_string())?);
    }
    let bootstrap: Vec<String> = running.iter().map(|n| n.kafka_addr.to_string()).collect();
    info!(log, "railyard is up"; "bootstrap" => bootstrap.join(","));
    match dev {
        Some(d) => show_dev(&d, &running),
        None => {
            println!("bootstrap.servers={}", bootstrap.join(","));
            for n in &running {
                if let Some(a) = n.admin_addr {
                    println!("admin: http://{a}/metrics http://{a}/health http://{a}/v1/cluster");
                }
            }
        }
    }
    let stopped =
        futures_util::future::select_all(running.iter().map(|n| Box::pin(n.handle.stopped())));
    tokio::select! {
        () = wait_for_signal() => {}
        _ = stopped => {
            let why = running.iter().find_map(|n| n.handle.fatal_error());
            return Err(why.unwrap_or_else(|| "a node stopped".into()));
        }
    }
    info!(log, "shutting down");
    for n in &running {
        n.handle.shutdown();
    }
    // Let each core hand over its leaderships and finish its last fsync before the process
    // exits (a kill -9 instead loses nothing acknowledged either; this only spares clients an
    // election timeout).
    tokio::task::block_in_place(|| {
        for n in &running {
            n.handle.wait_stopped(std::time::Duration::from_secs(5));
        }
    });
    Ok(())
}

/// Prints the dev banner, then one line per cluster event until the process exits.
fn show_dev(d: &DevShow, running: &[RunningNode]) {
    let kafka: Vec<SocketAddr> = running.iter().map(|n| n.kafka_addr).collect();
    let admin: Vec<SocketAddr> = running.iter().filter_map(|n| n.admin_addr).collect();
    let banner = Banner {
        kafka: &kafka,
        admin: &admin,
        controllers: d.controllers,
        data_dir: &d.data_dir,
        log_file: &d.data_dir.join(DEV_LOG_FILE),
        topics: &d.topics,
        auto_create_topics: d.auto_create_topics,
        join_config: d.join_config.as_deref(),
    };
    print!("{}", banner.render());
    let _ = std::io::stdout().flush();
    // Every node of a dev cluster publishes the same view; the first one's serves.
    let Some(node) = running.first().map(|n| n.handle.clone()) else {
        return;
    };
    tokio::spawn(async move {
        let mut last = Snapshot::default();
        let mut tick =
            tokio::time::interval(std::time::Duration::from_millis(dev_console::POLL_MS));
        loop {
            tick.tick().await;
            let now = Snapshot::of(&node.cluster());
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            for line in dev_console::events(&last, &now) {
                println!("{} {line}", dev_console::clock_utc(unix));
            }
            let _ = std::io::stdout().flush();
            last = now;
        }
    });
}

/// Opens (appending) `railyard dev`'s log file, creating the data directory first.
fn open_dev_log(data_dir: &Path) -> Result<std::fs::File, String> {
    let path = data_dir.join(DEV_LOG_FILE);
    std::fs::create_dir_all(data_dir)
        .and_then(|()| OpenOptions::new().create(true).append(true).open(&path))
        .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A benchmark is a client: no node logger, its own runtime, one-line errors.
    if let Command::Bench(args) = &cli.command {
        return railyard_node::bench::cli_main(args);
    }
    if let Command::Client(command) = cli.command {
        return run_client(command);
    }
    let target = match &cli.command {
        Command::Dev(o) => match open_dev_log(&o.data_dir) {
            Ok(f) => LogTarget::File(f),
            Err(e) => {
                eprintln!("railyard: {e}");
                return ExitCode::FAILURE;
            }
        },
        Command::Start { .. } | Command::Bench(_) | Command::Client(_) => LogTarget::Stderr,
    };
    let log = logger(&cli.log_level, cli.log_format, target);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match rt.block_on(run(cli, log.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(log, "railyard stopped"; "error" => %e);
            eprintln!("railyard: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a client subcommand (`topic`, `produce`, ...): no node, no log, one error line.
fn run_client(command: cli::ClientCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("railyard: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(cli::run(command));
    // Background tasks of the client (metadata refresh, heartbeats) end with the runtime.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("railyard: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config `railyard dev` writes for one more node parses, validates, joins, and names
    /// the quorum with the dev cluster's own addresses.
    #[test]
    fn test_dev_join_config_is_a_valid_joiner() {
        let Command::Dev(o) = Cli::parse_from(["railyard", "dev", "--nodes", "3"]).command else {
            panic!("parsed as dev");
        };
        let configs = dev_configs(o);
        let text = dev_join_config(&configs).expect("a config");
        let c: NodeConfig = toml::from_str(&text).expect("it parses");
        c.validate().expect("it validates");
        assert!(c.join);
        assert_eq!(c.id, 4);
        assert_eq!(c.controller_voters, vec![1, 2, 3]);
        assert_eq!(c.kafka_listen.port(), 9095);
        let quorum: Vec<SocketAddr> = c.peers.iter().take(3).map(|p| p.raft_addr).collect();
        let dev: Vec<SocketAddr> = configs.iter().map(|n| n.raft_listen).collect();
        assert_eq!(quorum, dev);
    }
}
