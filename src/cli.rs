//! The command line (clap derive). The contract is DESIGN §6: scripts and tests depend on it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::broker::topology::QueueType;

/// A terminal operations console for RabbitMQ worker fleets.
#[derive(Debug, Parser)]
#[command(name = "hopback", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do (default: the console).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options valid for every command.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Profile from the config file [env: HOPBACK_PROFILE]
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// AMQP URL, e.g. amqp://user:pass@host:5672/%2f [env: HOPBACK_URL]
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Management API URL (default: http://AMQP-HOST:15672)
    #[arg(long, global = true)]
    pub mgmt_url: Option<String>,
    /// Config file (default: the platform config dir's hopback/config.toml) [env: HOPBACK_CONFIG]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Refuse every mutation
    #[arg(long, global = true)]
    pub read_only: bool,
    /// One JSON document on stdout instead of human output
    #[arg(long, global = true)]
    pub json: bool,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connectivity, plugins, permissions, versions — with a hint for every failure
    Check,
    /// Create a namespace by the convention (idempotent)
    Init {
        /// Namespace (task type), e.g. `email`
        namespace: String,
        /// Worker versions, first = where the gate starts
        #[arg(long, default_value = "v1,v2")]
        versions: String,
        /// Queue type of the version queues
        #[arg(long, value_enum, default_value_t = QueueType::Quorum)]
        queue_type: QueueType,
    },
    /// Per namespace and version: ready, unacked, consumers, rates, dead letters, gate
    Status {
        /// Only this namespace
        namespace: Option<String>,
        /// Do not browse DLQs to attribute dead letters to versions
        #[arg(long)]
        no_attribution: bool,
    },
    /// Print shell completions
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}
