//! Empty on purpose: cargo resolves `[build-dependencies]` only for a package
//! that has a build script, and this crate's are there to unify `syn`'s features.

fn main() {}
