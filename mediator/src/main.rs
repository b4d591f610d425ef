//! The `mediator` binary: parse flags, set up logging, bind, print
//! `listening on ADDR`, run until SIGINT/SIGTERM, exit 0.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mediator::cli::{init_logging, Args};

/// mimalloc rather than glibc's malloc: a pairing allocates and frees many small
/// buffers across worker threads (frames, Redis values, JSON), and glibc's arenas
/// showed at 12% of a Redis-backed instance's CPU in `perf`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_config {
        return match args.config_listening_on(args.listen).validate() {
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
        let shutdown = shutdown_signal()?;
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
            args.config_listening_on(local),
            shutdown,
        ));
        server.await.context("the server task failed")?
    });
    // Connection tasks left after the drain are dropped, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

/// Installs the SIGINT/SIGTERM handlers now (so a signal that comes right after
/// the `listening on` line is not missed) and returns a future that completes on
/// the first of them. Call it inside the runtime.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            tracing::info!("Ctrl-C: shutting down");
        })
    }
}
