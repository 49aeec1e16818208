//! Calls against real SIP peers: Debian's `baresip` (package `baresip-core`) as an
//! auto-answering callee that records what it hears, and `sipp` (package `sip-tester`)
//! running the scenarios in `tests/scenarios/`. Speech comes from `espeak-ng` through the
//! `tts` crate. A missing program fails the test with the install command; nothing is
//! skipped. All traffic stays on 127.0.0.1.

mod baresip;
mod helpers;
mod scripted;
mod sipp;
