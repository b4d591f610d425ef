//! The p2pchat client binary's front-ends over the [`engine`]: the command line
//! ([`cli`]), the full-screen interface ([`tui`]), plain lines and `--json`
//! ([`ui`]), standard input ([`input`]), the local API ([`api`]) and the web
//! page ([`web`]), and the subcommands that are not a chat ([`commands`]).

pub mod api;
pub mod cli;
pub mod commands;
pub mod input;
pub mod tui;
pub mod ui;
pub mod web;
