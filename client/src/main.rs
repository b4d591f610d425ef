//! `client`: the p2pchat command-line chat client.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use client::api::{ApiHub, Fanout, Limits, Lines};
use client::cli::{Args, Command, OutputMode};
use client::ui::{Event, Output};
use engine::error::ClientError;
use engine::events::InputEvent;

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Log lines pass the terminal filter (tui::LogWriter), which would strip
        // colour codes anyway: write none.
        .with_ansi(false)
        // Log lines wait while the full-screen interface owns the terminal.
        .with_writer(|| client::tui::LogWriter)
        .init();
    let plain = |json: bool| {
        Output::new(if json {
            OutputMode::Json
        } else {
            OutputMode::Line
        })
    };
    let args = match args.command.clone() {
        Some(Command::History(history)) => {
            return finish(
                client::commands::history::run(&history),
                &plain(history.json),
            );
        }
        Some(Command::Id(id)) => return finish(client::commands::id::run(&id), &plain(id.json)),
        Some(Command::Contacts(c)) => {
            return finish(client::commands::contacts::run(&c), &plain(c.json));
        }
        // `client token [--ttl D] FLAGS…`: a chat run with FLAGS that hosts a token.
        Some(Command::Token(token)) => {
            let argv = std::iter::once("client".to_string()).chain(token.rest.iter().cloned());
            let mut chat = Args::parse_from(argv);
            chat.token_ttl = Some(token.ttl);
            chat
        }
        // `client web FLAGS…`: a chat run with FLAGS and the web interface.
        Some(Command::Web(web)) => {
            let argv = std::iter::once("client".to_string()).chain(web.rest.iter().cloned());
            let mut chat = Args::parse_from(argv);
            chat.web = true;
            chat
        }
        None => args,
    };
    let mode = args.output();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let out = Arc::new(Output::with_notify(mode, args.notify));
    let input = out.input(wire::peer::MAX_CHAT_TEXT);
    // Conversations run as local tasks of this thread (their links' tasks on the
    // workers): the engine's state is never shared across threads.
    let local = tokio::task::LocalSet::new();
    let result = runtime.block_on(local.run_until(async {
        if args.web || args.open || args.api {
            serve_and_run(&args, Arc::clone(&out), input).await
        } else {
            engine::messenger::run(args.config(), out.clone(), input).await
        }
    }));
    runtime.shutdown_timeout(Duration::from_secs(1));
    finish(result, &out)
}

/// The messenger with the local API (`--api`) and/or the web interface
/// (`--web`): both are front-ends beside the terminal's, on one engine.
async fn serve_and_run(
    args: &Args,
    out: Arc<Output>,
    terminal: tokio::sync::mpsc::Receiver<InputEvent>,
) -> Result<(), ClientError> {
    let config = args.config();
    // The socket and the uploads live in the profile this process holds.
    let base = engine::identity::profile_dir(config.profile.as_deref())?;
    let claim = engine::identity::claim_profile(&base)?;
    let hub = Arc::new(ApiHub::new(Limits {
        max_clients: usize::from(args.api_max_clients),
        queue_bytes: args.api_queue_bytes,
        ..Limits::default()
    }));
    let (lines, input) = Lines::new(terminal, true);
    let unix = match args.api {
        true => Some(client::api::unix::serve(
            &claim.dir,
            Arc::clone(&hub),
            lines.clone(),
        )?),
        false => None,
    };
    if let Some(unix) = &unix {
        out.show(&Event::Info {
            text: format!(
                "Local API: {} (one JSON object per line; docs/api.md).",
                unix.path().display()
            ),
        });
    }
    let mut _opener = None;
    let web = match args.web || args.open {
        true => {
            let server =
                client::web::serve(args.web_port, &claim.dir, Arc::clone(&hub), lines.clone())
                    .await?;
            // To this output only: API clients never see the secret.
            out.show(&Event::Info {
                text: format!(
                    "Web interface: {} (the address holds a secret: keep it to yourself).",
                    server.url()
                ),
            });
            if args.open {
                _opener = client::web::open_in_browser(&claim.dir, &server)
                    .map_err(|e| {
                        out.show(&Event::Warning {
                            code: "open".into(),
                            text: format!("cannot open a browser ({e}): open the address above"),
                        })
                    })
                    .ok();
            }
            Some(server)
        }
        false => None,
    };
    let front = Arc::new(Fanout { out, hub });
    let result = engine::messenger::run_claimed(config, claim, front, input).await;
    drop(web);
    drop(unix);
    result
}

/// Restores the terminal, reports a failure the way the output mode asks and
/// turns it into the exit code.
fn finish(result: Result<(), ClientError>, out: &Output) -> ExitCode {
    // The terminal is back to normal before anything else is printed.
    out.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out.show(&Event::Error {
                code: e.code().to_string(),
                text: e.to_string(),
            });
            ExitCode::from(e.exit_code())
        }
    }
}
