//! The subcommands other than chatting (`client history`, `client contacts`,
//! `client id`): each opens the store or the profile through the engine's
//! library, prints to standard output, and asks on the terminal before deleting.

pub mod confirm;
pub mod contacts;
pub mod history;
pub mod id;
