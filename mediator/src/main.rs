//! The `mediator` binary: parse flags, set up logging, bind, print
//! `listening on ADDR`, run until SIGINT/SIGTERM, exit 0.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mediator::cli::{init_logging, Args};

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_config {
        return match args.config().validate() {
            Ok(()) => {
                println!("configuration ok\n{}", args.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mediator: invalid configuration: {e}");
                ExitCode::from(2)
            }
        };
    }
    init_logging(args.log_format);
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mediator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let listener = mediator::bind(args.listen).with_context(|| {
            format!(
                "cannot listen on {}: is the port in use, or privileged? (try --listen)",
                args.listen
            )
        })?;
        let local = listener.local_addr().context("listener has no address")?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {local}").context("cannot write to stdout")?;
            out.flush().context("cannot write to stdout")?;
        }
        let metrics = match args.metrics {
            Some(addr) => {
                let l = mediator::bind(addr).with_context(|| {
                    format!("cannot serve metrics on {addr}: is the port in use? (try --metrics)")
                })?;
                let local = l.local_addr().context("metrics listener has no address")?;
                tracing::info!(addr = %local, "metrics at /metrics");
                Some(l)
            }
            None => None,
        };
        // On a worker thread, not the main thread that block_on uses: each
        // connection task then starts on the accepting worker's own queue instead
        // of waking another thread through the global queue.
        let server = tokio::spawn(mediator::run_with_metrics(
            listener,
            metrics,
            args.config(),
            shutdown_signal(),
        ));
        server.await.context("the server task failed")?
    });
    // Connection tasks left after the drain are dropped, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

/// Completes on SIGINT or SIGTERM. If the handlers cannot be installed the
/// server still runs; it just cannot be stopped gracefully.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers; Ctrl-C ends the process hard");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("Ctrl-C: shutting down");
    }
}
