//! `client`: the p2pchat command-line chat client.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use client::cli::{Args, Command, OutputMode};
use client::ui::{Event, Output};
use engine::error::ClientError;

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
    let out = std::sync::Arc::new(Output::with_notify(mode, args.notify));
    let input = out.input(wire::peer::MAX_CHAT_TEXT);
    // Conversations run as local tasks of this thread (their links' tasks on the
    // workers): the engine's state is never shared across threads.
    let local = tokio::task::LocalSet::new();
    let result = runtime.block_on(local.run_until(engine::messenger::run(
        args.config(),
        out.clone(),
        input,
    )));
    runtime.shutdown_timeout(Duration::from_secs(1));
    finish(result, &out)
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
