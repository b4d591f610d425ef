//! Connection tokens on loopback with no mediator running (docs/protocol.md §16):
//! dial and chat, a typo, an expired token, a denial, and a holder whose
//! identity is not the token's.

mod common;

use common::{client_args, Client, TempDir};
use serde_json::Value;

/// A client's flags with no mediator at all.
fn direct_args(name: &str, dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut args = client_args("unused", name, dir, &[]);
    let at = args.iter().position(|a| a == "--server").expect("--server");
    args.drain(at..at + 2);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `client token --ttl TTL FLAGS…` for `name`; returns it and its token.
async fn holder(name: &str, dir: &TempDir, ttl: &str, extra: &[&str]) -> (Client, String) {
    let mut args = vec!["token".to_string(), "--ttl".into(), ttl.into()];
    args.extend(direct_args(name, dir, extra));
    let mut c = Client::start(name, &args);
    let event = c.expect("token").await;
    let token = event["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("p2pchat:1:"), "{event}");
    assert!(event["command"].as_str().unwrap().contains(&token));
    (c, token)
}

fn dialer(dir: &TempDir, token: &str) -> Client {
    Client::start("bob", &direct_args("bob", dir, &["--connect", token]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_dialed_on_loopback_with_no_mediator_connects_after_accept_and_chats() {
    let dir = TempDir::new("token-chat");
    let (mut alice, token) = holder("alice", &dir, "1h", &[]).await;
    let mut bob = dialer(&dir, &token);
    let ask: Value = alice.expect("admission").await;
    assert_eq!(ask["peer"], "bob", "{ask}");
    alice.say("/accept").await;
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    assert_eq!(a["sas"], b["sas"]);
    // Bob reached the identity the token names.
    let named = dhke::IdentityKey(wire::token::Token::parse(&token).unwrap().identity);
    assert_eq!(b["fingerprint"], named.fingerprint().to_string().as_str());
    bob.say("hello through a token").await;
    let m = alice.expect("message").await;
    assert_eq!(m["text"], "hello through a token");
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
    // Bob is now one of Alice's contacts: the next dial needs no /accept.
    let (mut alice, token) = holder("alice", &dir, "1h", &[]).await;
    let mut bob = dialer(&dir, &token);
    alice.expect("connected").await;
    bob.expect("connected").await;
    assert!(
        !alice.seen.iter().any(|e| e["event"] == "admission"),
        "a known contact is let in at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_one_changed_character_is_a_typo() {
    let dir = TempDir::new("token-typo");
    let (_alice, token) = holder("alice", &dir, "1h", &[]).await;
    let mut typo = token.clone();
    let i = token.len() - 10;
    let c = if &token[i..=i] == "a" { "b" } else { "a" };
    typo.replace_range(i..=i, c);
    let mut bob = dialer(&dir, &typo);
    let err = bob.expect("error").await;
    assert!(err["text"].as_str().unwrap().contains("typo"), "{err}");
    assert_eq!(bob.exit_code().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_with_its_own_exit_code_on_both_sides() {
    let dir = TempDir::new("token-expired");
    let (mut alice, token) = holder("alice", &dir, "1s", &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut bob = dialer(&dir, &token);
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "token_expired", "{err}");
    assert!(err["text"].as_str().unwrap().contains("expired"));
    assert_eq!(bob.exit_code().await, 16);
    let err = alice.expect("error").await;
    assert_eq!(err["code"], "token_expired", "{err}");
    assert_eq!(alice.exit_code().await, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_dialer_is_told_so_and_exits_with_its_own_code() {
    let dir = TempDir::new("token-deny");
    let (mut alice, token) = holder("alice", &dir, "1h", &[]).await;
    let mut bob = dialer(&dir, &token);
    alice.expect("admission").await;
    alice.say("/deny").await;
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "denied", "{err}");
    assert!(err["text"].as_str().unwrap().contains("denied"), "{err}");
    assert_eq!(bob.exit_code().await, 17);
    // Alice keeps waiting for others.
    alice.expect("info").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_identity_is_not_the_tokens_is_refused() {
    let dir = TempDir::new("token-identity");
    let (_alice, token) = holder("alice", &dir, "1h", &[]).await;
    // The same address and secret, but another identity key: someone else at
    // the address (or a lying copy of the token).
    let mut forged = wire::token::Token::parse(&token).unwrap();
    forged.identity = dhke::Identity::from_seed(&[0x4d; 32]).public().0;
    let mut bob = dialer(&dir, &forged.encode());
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "wrong_identity", "{err}");
    assert_eq!(bob.exit_code().await, 15);
}
