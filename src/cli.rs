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
    /// Profile from the config file [env: HOPBACK_PROFILE]; the console takes it more than
    /// once (`--profile a --profile b`): one context per profile, an overview across them
    #[arg(long, global = true)]
    pub profile: Vec<String>,
    /// AMQP URL, e.g. amqp://user:pass@host:5672/%2f; repeat it (or separate with commas) for
    /// every node of a cluster [env: HOPBACK_URL]
    #[arg(long, global = true)]
    pub url: Vec<String>,
    /// Management API URL (default: http://AMQP-HOST:15672); repeat it for every node
    /// [env: HOPBACK_MGMT_URL]
    #[arg(long, global = true)]
    pub mgmt_url: Vec<String>,
    /// Where rates and unacked counts come from: auto (Prometheus when it answers, else the
    /// management API's statistics), prometheus, management [env: HOPBACK_METRICS]
    #[arg(long, global = true, value_parser = ["auto", "prometheus", "management"])]
    pub metrics: Option<String>,
    /// rabbitmq_prometheus endpoint (default: http://AMQP-HOST:15692); repeat it for every node
    /// [env: HOPBACK_PROMETHEUS_URL]
    #[arg(long, global = true)]
    pub prometheus_url: Vec<String>,
    /// Config file (default: the platform config dir's hopback/config.toml) [env: HOPBACK_CONFIG]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// PEM file of a CA to trust for amqps/https, on top of the system store (and
    /// SSL_CERT_FILE / SSL_CERT_DIR) [env: HOPBACK_CA_FILE]
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_file: Option<String>,
    /// PEM client certificate, for brokers that require one [env: HOPBACK_CERT_FILE]
    #[arg(long, global = true, value_name = "PEM")]
    pub cert_file: Option<String>,
    /// PEM private key of --cert-file [env: HOPBACK_KEY_FILE]
    #[arg(long, global = true, value_name = "PEM")]
    pub key_file: Option<String>,
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
        #[arg(long, value_parser = table_parser::<QueueType>(QueueType::TABLE), default_value = "quorum")]
        queue_type: QueueType,
        /// What the gate hashes to split tasks: message_id | correlation_id | header:NAME |
        /// routing-key (Celery: correlation_id). Default: chosen from tasks already in the
        /// namespace's queues, else message_id
        #[arg(long, value_name = "FIELD")]
        hash_on: Option<String>,
    },
    /// Move a quorum namespace built by an earlier hopback to the cluster-safe convention
    /// (quorum DLQ and unrouted queue, at-least-once dead lettering) without losing a dead letter
    Migrate {
        /// Namespace
        namespace: String,
        /// Show what would change and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Per namespace and version: ready, unacked, consumers, rates, dead letters, gate
    Status {
        /// Only this namespace
        namespace: Option<String>,
        /// Do not browse DLQs to attribute dead letters to versions
        #[arg(long)]
        no_attribution: bool,
        /// How long to measure error rates (default 10s, or HOPBACK_ERROR_RATE_WINDOW)
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        window: Option<std::time::Duration>,
    },
    /// Dead letters: list (grouped), show/export, replay/move, purge (with an export first)
    #[command(args_conflicts_with_subcommands = true, arg_required_else_help = true)]
    Dlq {
        /// What to do
        #[command(subcommand)]
        command: Option<crate::commands::dlq::DlqCommand>,
        /// `hopback dlq NS` lists NS's dead letters (`hopback dlq list NS`)
        namespace: Option<String>,
        /// `hopback dlq NS --group-by reason …`: the options of `dlq list`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        options: Vec<String>,
    },
    /// Show or flip a namespace's feature gate (weighted bindings of its entry exchange)
    #[command(args_conflicts_with_subcommands = true, arg_required_else_help = true)]
    Gate {
        /// show | set
        #[command(subcommand)]
        command: Option<crate::commands::gate::GateCommand>,
        /// `hopback gate NS` shows NS's gate (`hopback gate show NS`)
        namespace: Option<String>,
        /// `hopback gate NS --…`: the options of `gate show`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        options: Vec<String>,
    },
    /// The incident timeline from the ledger (text, Markdown or JSON; --follow for live)
    Timeline(crate::commands::timeline::TimelineArgs),
    /// Add an operator note to the ledger (it shows in the timeline and the post-mortem)
    Note(crate::commands::timeline::NoteArgs),
    /// Gate states of a namespace recorded in the ledger, and drift from the broker
    History(crate::commands::history::HistoryArgs),
    /// Compare two recorded gate states (event ids from `history`, or `current`)
    Diff(crate::commands::history::DiffArgs),
    /// Re-apply an earlier gate state through the gate operation (verified, journaled)
    Revert(crate::commands::history::RevertArgs),
    /// Guided, journaled rollback of a namespace to an older version (resumable)
    Rollback(crate::commands::rollback::RollbackArgs),
    /// A self-driving canary: raise the new version step by step while its analysis passes,
    /// roll back on its own when it fails; pause|resume|promote|abort|list
    Canary(crate::commands::canary::CanaryArgs),
    /// A scored incident drill on a throwaway namespace with a simulated fleet
    Drill(crate::commands::drill::DrillArgs),
    /// A Markdown post-mortem draft of a rollback or drill, from the ledger
    Postmortem(crate::commands::postmortem::PostmortemArgs),
    /// Print shell completions
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

/// A clap parser for an enum of a lower layer (the layers below the CLI have no clap): its
/// names with their one-line help, parsed by its own `FromStr`.
pub fn table_parser<T>(
    table: &'static [(&'static str, &'static str)],
) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(
        table
            .iter()
            .map(|(name, help)| clap::builder::PossibleValue::new(*name).help(*help)),
    )
    .try_map(|s| s.parse::<T>())
}
