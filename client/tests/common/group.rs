//! Group-room members for the end-to-end tests (docs/protocol.md §19): start
//! real clients in one room and wait until each is linked with the others.

use super::{client_args, Client, TempDir};

/// A group member's arguments: `client_args` plus `--room ROOM --group`.
pub fn member_args(server: &str, name: &str, dir: &TempDir, room: &str) -> Vec<String> {
    client_args(server, name, dir, &["--room", room, "--group"])
}

/// Starts `names` in `room` one after another, then waits until each is linked
/// with all the others.
pub async fn start_members(server: &str, names: &[&str], dir: &TempDir, room: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for name in names {
        let mut c = Client::start(name, &member_args(server, name, dir, room));
        c.expect("group_joined").await;
        clients.push(c);
    }
    for c in &mut clients {
        wait_linked(c, names.len() - 1).await;
    }
    clients
}

/// Waits until `c` has seen `n` `member_joined` events in all.
pub async fn wait_linked(c: &mut Client, n: usize) {
    while c
        .seen
        .iter()
        .filter(|e| e["event"] == "member_joined")
        .count()
        < n
    {
        c.expect("member_joined").await;
    }
}
