//! `client id [--json]`: prints the profile's fingerprint and identity key,
//! creating the identity on first use.

use engine::error::ClientError;
use engine::identity::{load_or_create, profile_dir};

use crate::cli::IdArgs;

/// Runs `client id`.
pub fn run(args: &IdArgs) -> Result<(), ClientError> {
    let dir = profile_dir(args.profile.as_deref())?;
    let (identity, created) = load_or_create(&dir)?;
    let key = identity.public();
    if args.json {
        let line = serde_json::json!({
            "fingerprint": key.fingerprint().to_string(),
            "identity": key.to_hex(),
            "profile": dir.display().to_string(),
            "created": created,
        });
        println!("{line}");
    } else {
        if created {
            println!("Created a new identity in {}.", dir.display());
        }
        println!("fingerprint {}", key.fingerprint());
        println!("identity key {}", key.to_hex());
    }
    Ok(())
}
