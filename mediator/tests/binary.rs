//! The real `mediator` binary: its help, the flags deploy/ uses, the
//! `listening on` line, environment variables, SIGTERM, and behaviour past the
//! open-file limit.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use clap::CommandFactory;
use common::{hello, Binary, Client};
use wire::{ErrorCode, MediatorMsg};

fn mediator() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mediator"));
    for (key, _) in std::env::vars() {
        if key.starts_with("MEDIATOR_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn deploy_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn help_documents_every_flag() {
    let out = mediator().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let required = [
        "--listen",
        "--hello-timeout",
        "--room-ttl",
        "--idle-timeout",
        "--max-rooms",
        "--max-connections",
        "--per-ip-connections",
        "--per-ip-hellos-per-min",
        "--metrics",
        "--log-format",
        "--check-config",
    ];
    for flag in required {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    // And every flag the parser knows, with its environment variable.
    for arg in mediator::cli::Args::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" || long == "version" {
            continue;
        }
        assert!(help.contains(&format!("--{long}")), "--help lacks --{long}");
        let env = format!("MEDIATOR_{}", long.to_uppercase().replace('-', "_"));
        assert!(help.contains(&env), "--help lacks {env}");
    }
}

/// `KEY=VALUE` lines of an env file, comments and blanks skipped.
fn env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// Runs `mediator --check-config` with `flags` and `env`; panics unless accepted.
fn check_config(origin: &str, flags: &[String], env: &HashMap<String, String>) {
    let out = mediator()
        .args(flags)
        .arg("--check-config")
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{origin}: mediator refused {flags:?} with {env:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("configuration ok"));
}

#[test]
fn deploy_flags_and_variables_are_accepted() {
    let env = env_file(&deploy_file("mediator.env.example"));
    assert!(env.keys().any(|k| k == "MEDIATOR_LISTEN"));
    for key in env.keys() {
        if let Some(flag) = key.strip_prefix("MEDIATOR_") {
            let flag = format!("--{}", flag.to_lowercase().replace('_', "-"));
            assert!(
                mediator::cli::Args::command()
                    .get_arguments()
                    .any(|a| a.get_long().is_some_and(|l| format!("--{l}") == flag)),
                "env file sets {key}, but there is no {flag}"
            );
        }
    }
    // Every variable, commented-out ones too, must be understood.
    let all_vars: HashMap<String, String> = deploy_file("mediator.env.example")
        .lines()
        .filter_map(|l| l.trim().trim_start_matches('#').split_once('='))
        .filter(|(k, _)| k.starts_with("MEDIATOR_"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    check_config("mediator.env.example", &[], &all_vars);

    let unit = deploy_file("mediator.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart in the unit");
    let mut words = exec.split_whitespace();
    assert!(words.next().unwrap().ends_with("/mediator"));
    let flags: Vec<String> = words.map(str::to_owned).collect();
    check_config("mediator.service ExecStart", &flags, &env);
    for key in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|l| l == key), "unit lacks {key}");
    }
    for prefix in [
        "RestrictAddressFamilies=",
        "LimitNOFILE=",
        "EnvironmentFile=",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(prefix)),
            "unit lacks {prefix}"
        );
    }

    let container = deploy_file("Containerfile");
    let json_array = |directive: &str| -> Vec<String> {
        let line = container
            .lines()
            .find_map(|l| l.strip_prefix(directive))
            .unwrap_or_else(|| panic!("{directive} in the Containerfile"));
        let inner = line.trim().trim_start_matches('[').trim_end_matches(']');
        inner
            .split(',')
            .map(|w| w.trim().trim_matches('"').to_owned())
            .filter(|w| !w.is_empty())
            .collect()
    };
    let entrypoint = json_array("ENTRYPOINT ");
    assert!(entrypoint[0].ends_with("/mediator"));
    let mut flags: Vec<String> = entrypoint[1..].to_vec();
    flags.extend(json_array("CMD "));
    let container_env: HashMap<String, String> = container
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    check_config("Containerfile", &flags, &container_env);
    assert!(container
        .lines()
        .any(|l| l.starts_with("USER ") && !l.contains("root")));
}

#[test]
fn bad_configuration_is_refused() {
    for flags in [
        &["--hello-timeout", "soon"][..],
        &["--max-rooms", "0"],
        &["--listen", "not-an-address"],
        &["--log-format", "xml"],
    ] {
        let out = mediator()
            .args(flags)
            .arg("--check-config")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flags:?} accepted");
    }
}

#[tokio::test]
async fn environment_configures_and_sigterm_exits_cleanly() {
    let mut bin = Binary::spawn_script(
        "MEDIATOR_LISTEN=127.0.0.1:0 MEDIATOR_HELLO_TIMEOUT=300ms exec \"$MEDIATOR\"",
    );
    assert!(bin.addr.ip().is_loopback());
    // MEDIATOR_HELLO_TIMEOUT took effect: a silent client is cut quickly.
    let mut silent = Client::connect(bin.addr).await;
    silent.expect_error(ErrorCode::Timeout).await;

    common::pair(bin.addr, 1).await;
    let mut waiting = Client::connect(bin.addr).await;
    waiting.send(&hello(2, "w")).await;
    waiting.expect_waiting().await;
    bin.signal("TERM");
    waiting.expect_error(ErrorCode::ShuttingDown).await;
    let code = tokio::task::spawn_blocking(move || bin.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn sigint_exits_cleanly() {
    let mut bin = Binary::spawn("");
    bin.signal("INT");
    let code = tokio::task::spawn_blocking(move || bin.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

/// Past the open-file limit the mediator refuses politely and keeps serving.
#[tokio::test]
async fn past_the_open_file_limit_it_refuses_and_keeps_serving() {
    const LIMIT: usize = 64;
    const CLIENTS: usize = 100;
    let bin = Binary::spawn_script(&format!(
        "ulimit -n {LIMIT} && exec \"$MEDIATOR\" --listen 127.0.0.1:0 --hello-timeout 30s --per-ip-connections 1000"
    ));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(Client::connect(bin.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut refused, mut held, mut polite) = (0, 0, 0);
    for c in &mut clients {
        match tokio::time::timeout(Duration::from_millis(20), c.recv()).await {
            Err(_) => held += 1,
            Ok(None) => refused += 1,
            Ok(Some(MediatorMsg::Error {
                code: ErrorCode::TooManyConnections,
                ..
            })) => {
                refused += 1;
                polite += 1;
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(held > 0 && held < LIMIT, "held {held}");
    assert_eq!(held + refused, CLIENTS);
    assert!(polite > 0, "refused without a word: {refused}");
    eprintln!("held {held}, refused {refused} ({polite} with TooManyConnections)");
    drop(clients);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still serving.
    common::pair(bin.addr, 3).await;
    common::pair(bin.addr, 4).await;
}

/// Logs (even at debug, in JSON) carry at most an 8-hex room prefix: never the
/// full tag, a name or a public value.
#[tokio::test]
async fn logs_keep_rooms_names_and_public_values_private() {
    let log = std::env::temp_dir().join(format!("mediator-log-{}.jsonl", std::process::id()));
    let mut bin = Binary::spawn_script(&format!(
        "RUST_LOG=debug exec \"$MEDIATOR\" --listen 127.0.0.1:0 --log-format json 2> '{}'",
        log.display()
    ));
    let name = "Zebediah-Quux";
    let tag: [u8; 32] = std::array::from_fn(|i| 0xc3u8.wrapping_add((i as u8).wrapping_mul(37)));
    let in_room = |mut msg: wire::ClientMsg| {
        if let wire::ClientMsg::Hello { room, .. } = &mut msg {
            *room = tag;
        }
        msg
    };
    let mut host = Client::connect(bin.addr).await;
    host.send(&in_room(hello(0, name))).await;
    host.expect_waiting().await;
    let mut joiner = Client::connect(bin.addr).await;
    joiner.send(&in_room(hello(0, "Ignatius-Vole"))).await;
    joiner.expect_matched(wire::Role::Joiner).await;
    host.expect_matched(wire::Role::Host).await;
    let mut bad = Client::connect(bin.addr).await;
    let mut msg = hello(78, "Bartholomew");
    common::edit(&mut msg, |_, _, _, p| p.truncate(10));
    bad.send(&msg).await;
    bad.expect_error(ErrorCode::BadPublic).await;
    bin.signal("TERM");
    let code = tokio::task::spawn_blocking(move || bin.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(!text.is_empty());
    for line in text.lines() {
        assert!(line.starts_with('{'), "not JSON: {line}");
    }
    let tag_hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let public_hex: String = common::public(dhke::Group::Modp3072)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for secret in [
        name,
        "Ignatius-Vole",
        "Bartholomew",
        &tag_hex[..10],
        &public_hex,
    ] {
        assert!(!text.contains(secret), "log contains {secret:?}:\n{text}");
    }
    // The short prefix is there, so the check above is not vacuous.
    assert!(text.contains(&tag_hex[..8]), "no room prefix in:\n{text}");
}
