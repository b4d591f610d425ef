//! `mediator` binary.
fn main() {}
