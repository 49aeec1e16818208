//! The `otpgate` binary: everything is in the library; see `otpgate::cli`.

fn main() -> std::process::ExitCode {
    otpgate::cli::main()
}
