//! cargo-fuzz entry for `fuzzcheck::lan_presence`: the input and the invariants are
//! documented there, and the stable corpus test replays the same function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzcheck::lan_presence(data));
