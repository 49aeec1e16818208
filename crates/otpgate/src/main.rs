//! The `otpgate` binary: everything is in the library; see `otpgate::cli`.
//!
//! Memory comes from jemalloc, not glibc's malloc: allocation and freeing
//! were about a sixth of the server's CPU under the send load, and with
//! jemalloc the same build took less CPU per send (82-100 µs against 98-111
//! µs in three pairs of `bench/api.sh`) for 3-5 MiB more resident memory
//! (BENCHMARKS.md, "Issue 15: PostgreSQL keeps its generic plans, and
//! jemalloc").

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    otpgate::cli::main()
}
