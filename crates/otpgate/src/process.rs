//! Facts about this process that the server and `/metrics` both read.

/// This process's soft limit on open files (`RLIMIT_NOFILE`), from
/// `/proc/self/limits`; `None` where that cannot be read or says `unlimited`.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}
