//! hopback's binary: parse the command line, install error/panic handling and the file logger,
//! dispatch. Nothing else lives here.

use clap::{CommandFactory, Parser};
use hopback::cli::{Cli, Command};
use hopback::commands::{self, Ctx};
use hopback::config::{self, Overrides};
use hopback::error::Failure;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Colours only for a terminal: a piped or logged stderr gets plain text (the backtrace itself
    // is shown only with RUST_BACKTRACE set).
    let hooks = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        color_eyre::config::HookBuilder::default()
    } else {
        color_eyre::config::HookBuilder::default().theme(color_eyre::config::Theme::new())
    };
    let _ = hooks.install();
    let _log_guard = hopback::logging::init();
    let result = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(dispatch(cli)),
        Err(e) => Err(Failure::error(
            format!("cannot start the async runtime: {e}"),
            "",
        )),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(f) => {
            tracing::warn!(code = f.code as u8, "{}", f.message);
            // `errln!` ignores a failed write: after SIGHUP the terminal is gone, and a panic
            // here would replace the exit code that says what happened.
            hopback::errln!("hopback: {}", hopback::text::sanitize(&f.to_string()));
            std::process::ExitCode::from(f.code as u8)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    let g = &cli.global;
    if let Some(Command::Completions { shell }) = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "hopback",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let over = Overrides {
        config_path: g.config.clone(),
        profile: g.profile.first().cloned(),
        // Several `--profile`s: contexts of the console (one is the selected profile).
        contexts: if g.profile.len() > 1 {
            g.profile.clone()
        } else {
            Vec::new()
        },
        // Several `--url`s (the nodes of a cluster) travel as one comma-separated list.
        url: (!g.url.is_empty()).then(|| g.url.join(",")),
        mgmt_url: (!g.mgmt_url.is_empty()).then(|| g.mgmt_url.join(",")),
        read_only: g.read_only,
        ca_file: g.ca_file.clone(),
        cert_file: g.cert_file.clone(),
        key_file: g.key_file.clone(),
        metrics: g.metrics.clone(),
        prometheus_url: (!g.prometheus_url.is_empty()).then(|| g.prometheus_url.join(",")),
        profile_urls_only: false,
    };
    if g.profile.len() > 1 && cli.command.is_some() {
        return Err(Failure::usage(
            "several --profile are for the console only",
            "name one profile for a command; `hopback --profile a --profile b` opens one console over both",
        ));
    }
    let cfg = config::load(&over)?;
    tracing::info!(profile = %cfg.profile.name, broker = %cfg.profile.display_url(), "starting");
    let test_panic = test_panic_stage();
    if test_panic.as_deref() == Some("cli") {
        deliberate_panic(&cfg);
    }
    let profile = cfg.profile.clone();
    let ctx = Ctx { cfg, json: g.json };
    let result = match cli.command {
        Some(Command::Check) => commands::check::run(&ctx).await,
        Some(Command::Init {
            namespace,
            versions,
            queue_type,
            hash_on,
        }) => {
            commands::init::run(&ctx, &namespace, &versions, queue_type, hash_on.as_deref()).await
        }
        Some(Command::Migrate {
            namespace,
            dry_run,
            yes,
        }) => commands::migrate::run(&ctx, &namespace, dry_run, yes).await,
        Some(Command::Status {
            namespace,
            no_attribution,
            window,
        }) => commands::status::run(&ctx, namespace, no_attribution, window).await,
        // `hopback dlq NS` / `hopback gate NS`: the verbs' `list` / `show`.
        Some(Command::Dlq {
            command,
            namespace,
            options,
        }) => match command.map_or_else(|| commands::dlq::list_of(namespace, &options), Ok) {
            Ok(c) => commands::dlq::run(&ctx, c).await,
            Err(f) => Err(f),
        },
        Some(Command::Gate {
            command,
            namespace,
            options,
        }) => match command.map_or_else(|| commands::gate::show_of(namespace, &options), Ok) {
            Ok(c) => commands::gate::run(&ctx, c).await,
            Err(f) => Err(f),
        },
        Some(Command::Timeline(args)) => commands::timeline::run(&ctx, args).await,
        Some(Command::Note(args)) => commands::timeline::note(&ctx, args).await,
        Some(Command::History(args)) => commands::history::history(&ctx, args).await,
        Some(Command::Diff(args)) => commands::history::diff(&ctx, args).await,
        Some(Command::Revert(args)) => commands::history::revert(&ctx, args).await,
        Some(Command::Rollback(args)) => commands::rollback::run(&ctx, args).await,
        Some(Command::Drill(args)) => commands::drill::run(&ctx, args).await,
        Some(Command::Canary(args)) => commands::canary::run(&ctx, args).await,
        Some(Command::Postmortem(args)) => {
            commands::postmortem::run(&ctx, args.incident, args.output).await
        }
        Some(Command::Completions { .. }) => Ok(()),
        None if test_panic.as_deref() == Some("tui") => {
            // Panic on the main thread while the console holds the terminal (raw mode, alternate
            // screen), the way a bug in a view would.
            let cfg = ctx.cfg.clone();
            tokio::select! {
                r = hopback::app::run(ctx.cfg) => r.map_err(Failure::from),
                _ = tokio::time::sleep(std::time::Duration::from_millis(1500)) => deliberate_panic(&cfg),
            }
        }
        None => hopback::app::run(ctx.cfg).await.map_err(Failure::from),
    };
    match result {
        Err(f) if f.timed_out => Err(commands::explain_timeout(&profile, f).await),
        other => other,
    }
}

/// `HOPBACK_TEST_PANIC=cli|tui`: a deliberate panic for the secrets and terminal tests (is the
/// password absent from the panic report? is the terminal restored?). Debug builds only: a
/// release binary ignores the variable.
fn test_panic_stage() -> Option<String> {
    if cfg!(debug_assertions) {
        std::env::var("HOPBACK_TEST_PANIC").ok()
    } else {
        None
    }
}

/// The panic message carries the whole resolved config (`{:?}`), as a careless `expect` might:
/// the password must not be in it.
#[allow(clippy::panic)]
fn deliberate_panic(cfg: &config::Config) -> ! {
    panic!("HOPBACK_TEST_PANIC: a deliberate panic; config = {cfg:?}")
}
