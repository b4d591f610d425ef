//! No code: this crate exists for its `Cargo.toml`, which makes every binary
//! member build its dependencies with the features the whole workspace uses
//! (see the comment there).
