//! The `xcore` binary: the command line and the composition root over the host's crates. This is the
//! binary's edge, the one place where errors are `anyhow`.

mod cli;

fn main() -> std::process::ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
