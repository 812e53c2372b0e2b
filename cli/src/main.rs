//! `diesel-sharding`: see and steer a cluster from the command line, with the application's
//! own settings file (and its `url_env` variables).
//!
//! ```text
//! diesel-sharding --settings sharding.toml check
//! diesel-sharding --settings sharding.toml status [--json] [--watch SECONDS]
//! diesel-sharding --settings sharding.toml migrate (--group G | --all) [--dir migrations] [--dry-run]
//! diesel-sharding --settings sharding.toml shard --group G KEY
//! diesel-sharding --settings sharding.toml id decode --group G ID
//! ```
//!
//! Exit status: 0 when everything is as declared; 1 when a server is down or not what the
//! settings say, a migration fails, or an argument is wrong; 2 for a usage error (clap's).

mod probe;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use diesel::migration::MigrationSource;
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use diesel_sharding::{Cluster, Settings};

use crate::probe::Probe;

#[derive(Debug, Parser)]
#[command(name = "diesel-sharding", version, about)]
struct Cli {
    /// The settings file (TOML), as the application reads it.
    #[arg(
        long,
        short,
        env = "DIESEL_SHARDING_SETTINGS",
        default_value = "sharding.toml"
    )]
    settings: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validates the settings and connects to every database: one line per database (role,
    /// server version, read-only or not, replication); exits 1 on any problem.
    Check,
    /// Each replica's lag in time and bytes, up or down, paused or not.
    Status {
        /// One JSON document per refresh, for scripts.
        #[arg(long)]
        json: bool,
        /// Refreshes every SECONDS until interrupted.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<f64>,
        /// With --watch: stop after this many refreshes.
        #[arg(long, requires = "watch", hide = true)]
        count: Option<u64>,
    },
    /// Runs the pending migrations of a directory (Diesel's file-based migrations) on every
    /// primary of a shard group or of the cluster, never on replicas; stops at the first
    /// failure and names its database.
    Migrate {
        /// The primaries of this shard group.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        group: Option<String>,
        /// Every primary of the cluster.
        #[arg(long)]
        all: bool,
        /// The migrations directory.
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
        /// Lists what would run, runs nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Prints the shard of a key in a shard group.
    Shard {
        /// The shard group.
        #[arg(long)]
        group: String,
        /// How to read KEY: `int` (an i64 key), `str`, or `auto` (int if it parses).
        #[arg(long, default_value = "auto")]
        key_type: KeyType,
        /// The key.
        key: String,
    },
    /// Global ids.
    Id {
        #[command(subcommand)]
        command: IdCommand,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KeyType {
    Auto,
    Int,
    Str,
}

#[derive(Debug, Subcommand)]
enum IdCommand {
    /// Prints when an id was made, on which shard, and its sequence number.
    Decode {
        /// The shard group whose ids these are (its epoch and shards).
        #[arg(long)]
        group: String,
        /// The id.
        #[arg(allow_negative_numbers = true)]
        id: i64,
    },
}

/// A command's failure: what to print, and that the exit status is 1.
struct Failed(String);

impl<E: std::error::Error> From<E> for Failed {
    /// The error and its causes, `outer: inner: ...`.
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = cause.source();
        }
        Failed(message)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failed(message)) => {
            eprintln!("diesel-sharding: {message}");
            ExitCode::from(1)
        }
    }
}

/// Runs the command on the cluster of the settings' backend; `Ok(false)`: it found problems.
fn run(cli: &Cli) -> Result<bool, Failed> {
    let settings = Settings::from_file(&cli.settings)?;
    // the backend is the one whose URLs the settings hold
    let pg_error = match Cluster::<diesel::pg::PgConnection>::new(settings.clone()) {
        Ok(cluster) => return command(cli, &cluster),
        Err(e) => e,
    };
    #[cfg(feature = "mysql")]
    if let Ok(cluster) = Cluster::<diesel::mysql::MysqlConnection>::new(settings.clone()) {
        return command(cli, &cluster);
    }
    if let Ok(cluster) = Cluster::<diesel::sqlite::SqliteConnection>::new(settings) {
        return command(cli, &cluster);
    }
    Err(Failed(format!("{}: {pg_error}", cli.settings.display())))
}

fn command<C>(cli: &Cli, cluster: &Cluster<C>) -> Result<bool, Failed>
where
    C: Probe + diesel_migrations::MigrationHarness<C::Backend>,
    diesel_sharding::PooledConnection<C>: MigrationHarness<C::Backend>,
    FileBasedMigrations: MigrationSource<C::Backend>,
{
    match &cli.command {
        Command::Check => Ok(check(cluster)),
        Command::Status { json, watch, count } => {
            let mut refreshes = 0;
            loop {
                let rows = status(cluster);
                if *json {
                    println!("{}", serde_json::to_string(&rows)?);
                } else {
                    print_status(&rows);
                }
                refreshes += 1;
                let Some(every) = watch else {
                    return Ok(rows.iter().all(|r| r.up));
                };
                if count.is_some_and(|c| refreshes >= c) {
                    return Ok(rows.iter().all(|r| r.up));
                }
                std::thread::sleep(Duration::from_secs_f64(every.max(0.1)));
                if !*json {
                    println!();
                }
            }
        }
        Command::Migrate {
            group,
            all,
            dir,
            dry_run,
        } => migrate(cluster, group.as_deref(), *all, dir, *dry_run),
        Command::Shard {
            group,
            key_type,
            key,
        } => {
            let as_int = match key_type {
                KeyType::Int => Some(
                    key.parse::<i64>()
                        .map_err(|e| Failed(format!("`{key}` is not an i64 key: {e}")))?,
                ),
                KeyType::Auto => key.parse::<i64>().ok(),
                KeyType::Str => None,
            };
            let shard = match as_int {
                Some(k) => cluster.shard_for_key(group, &k)?,
                None => cluster.shard_for_key(group, key.as_str())?,
            };
            println!(
                "{} {} -> shard {} on {}",
                if as_int.is_some() { "int" } else { "str" },
                key,
                shard.shard_id,
                shard.database
            );
            Ok(true)
        }
        Command::Id {
            command: IdCommand::Decode { group, id },
        } => {
            let decoded = cluster.decode_id(group, *id)?;
            println!("id       {id}");
            println!(
                "made     {}",
                humantime::format_rfc3339_millis(decoded.made)
            );
            println!(
                "shard    {} on {}",
                decoded.shard.shard_id, decoded.shard.database
            );
            println!("sequence {}", decoded.sequence);
            Ok(true)
        }
    }
}

/// `check`: one line per server; false when any is down or not what the settings declare.
fn check<C: Probe>(cluster: &Cluster<C>) -> bool {
    let servers = cluster.servers();
    let width = servers.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut ok = true;
    for server in &servers {
        let role = if server.replica { "replica" } else { "primary" };
        let described = cluster
            .connect_to(&server.name)
            .map_err(|e| e.to_string())
            .and_then(|mut conn| C::describe(&mut conn).map_err(|e| e.to_string()));
        match described {
            Ok(d) => {
                let problem = match (server.replica, d.in_recovery, d.read_only) {
                    (false, true, _) => {
                        Some("declared a primary, but it replays another server (a replica)")
                    }
                    (false, false, true) => Some("declared a primary, but it is read-only"),
                    (true, false, false) if C::BACKEND != "SQLite" => Some(
                        "declared a replica, but it takes writes and replays nothing (a primary?)",
                    ),
                    _ => None,
                };
                println!(
                    "{:<width$}  {role:<7}  {:<18}  {:<10}  {}{}",
                    server.name,
                    d.version,
                    if d.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    d.replication,
                    match problem {
                        Some(p) => format!("  PROBLEM: {p}"),
                        None => String::new(),
                    }
                );
                ok &= problem.is_none();
            }
            Err(e) => {
                println!("{:<width$}  {role:<7}  DOWN: {}", server.name, one_line(&e));
                ok = false;
            }
        }
    }
    ok
}

/// A driver's message on one line (libpq's have a hint on a second).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One replica in `status`.
#[derive(Debug, serde::Serialize)]
struct ReplicaStatus {
    replica: String,
    primary: String,
    up: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten)]
    lag: Option<probe::Lag>,
}

fn status<C: Probe>(cluster: &Cluster<C>) -> Vec<ReplicaStatus> {
    let servers = cluster.servers();
    let mut rows = Vec::new();
    for primary in servers.iter().filter(|s| !s.replica) {
        // the primary's position, for the lag in bytes (unknown if it is down)
        let position = cluster
            .connect_to(&primary.name)
            .ok()
            .and_then(|mut conn| C::written_bytes(&mut conn).ok().flatten());
        for replica in servers
            .iter()
            .filter(|s| s.replica && s.primary == primary.name)
        {
            let lag = cluster
                .connect_to(&replica.name)
                .map_err(|e| e.to_string())
                .and_then(|mut conn| C::lag(&mut conn, position).map_err(|e| e.to_string()));
            rows.push(match lag {
                Ok(lag) => ReplicaStatus {
                    replica: replica.name.clone(),
                    primary: primary.name.clone(),
                    up: true,
                    error: None,
                    lag: Some(lag),
                },
                Err(e) => ReplicaStatus {
                    replica: replica.name.clone(),
                    primary: primary.name.clone(),
                    up: false,
                    error: Some(one_line(&e)),
                    lag: None,
                },
            });
        }
    }
    rows
}

fn print_status(rows: &[ReplicaStatus]) {
    if rows.is_empty() {
        println!("no replicas");
        return;
    }
    let width = rows.iter().map(|r| r.replica.len()).max().unwrap_or(0);
    println!(
        "{:<width$}  {:<12}  {:<5}  {:>10}  {:>12}  paused",
        "replica", "primary", "state", "lag", "lag bytes"
    );
    for r in rows {
        match &r.lag {
            Some(lag) => println!(
                "{:<width$}  {:<12}  {:<5}  {:>10}  {:>12}  {}",
                r.replica,
                r.primary,
                "up",
                lag.lag_ms.map_or("?".to_owned(), |ms| format!("{ms} ms")),
                lag.lag_bytes.map_or("?".to_owned(), |b| b.to_string()),
                if lag.paused { "yes" } else { "no" },
            ),
            None => println!(
                "{:<width$}  {:<12}  {:<5}  {}",
                r.replica,
                r.primary,
                "DOWN",
                r.error.as_deref().unwrap_or("")
            ),
        }
    }
}

/// `migrate`: per primary, its pending migrations with a progress bar; stops at the first
/// failure, naming its database.
fn migrate<C>(
    cluster: &Cluster<C>,
    group: Option<&str>,
    all: bool,
    dir: &std::path::Path,
    dry_run: bool,
) -> Result<bool, Failed>
where
    C: Probe,
    diesel_sharding::PooledConnection<C>: MigrationHarness<C::Backend>,
    FileBasedMigrations: MigrationSource<C::Backend>,
{
    let source = FileBasedMigrations::from_path(dir)
        .map_err(|e| Failed(format!("migrations directory {}: {e}", dir.display())))?;
    let databases: Vec<String> = match (group, all) {
        (Some(group), _) => cluster
            .shards(group)?
            .into_iter()
            .map(|s| s.database)
            .collect(),
        (None, true) => cluster.primaries().map(str::to_owned).collect(),
        (None, false) => return Err(Failed("say --group G or --all".into())),
    };
    let mut total = 0;
    for database in &databases {
        let mut conn = cluster.get(database)?;
        // the harness reads its table right after creating it: all of it on the primary
        conn.stick_to_primary();
        let pending = conn
            .pending_migrations(source.clone())
            .map_err(|e| Failed(format!("{database}: {e}")))?;
        if dry_run {
            println!("{database}: {} pending", pending.len());
            for m in &pending {
                println!("  {}", m.name());
            }
            continue;
        }
        let bar = indicatif::ProgressBar::new(pending.len() as u64).with_style(
            indicatif::ProgressStyle::with_template("{prefix:<16} [{bar:30}] {pos}/{len} {msg}")
                .map_err(|e| Failed(e.to_string()))?
                .progress_chars("=> "),
        );
        bar.set_prefix(database.clone());
        for m in &pending {
            bar.set_message(m.name().to_string());
            if let Err(e) = conn.run_migration(&**m) {
                bar.abandon_with_message(format!("FAILED at {}", m.name()));
                return Err(Failed(format!(
                    "migration {} failed on `{database}`: {e} (the databases after it were not migrated)",
                    m.name()
                )));
            }
            bar.inc(1);
        }
        bar.finish_with_message("done");
        println!("{database}: {} applied", pending.len());
        total += pending.len();
    }
    if !dry_run {
        println!("{total} migration(s) on {} database(s)", databases.len());
    }
    Ok(true)
}
