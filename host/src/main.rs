//! The `itsm` command.

fn main() -> std::process::ExitCode {
    itsm_host::cli::main()
}
