//! `xcore-sandbox-worker`: the process a sandboxed plugin runs in. The host starts it as
//! `xcore-sandbox-worker __sandbox-worker --spec JSON` (the same arguments the `xcore`
//! binary's hidden `__sandbox-worker` command takes) and talks to it over fds 3 and 4.
//!
//! It links only what the worker needs: the loader, the worker protocol, confinement and
//! the worker loop (`xcore_runtime::sandbox::worker`); the HTTP server, the
//! command line and the TLS stack are not part of it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, flag, spec] if cmd == "__sandbox-worker" && flag == "--spec" => {
            // No logger: the worker's stderr is a pipe the host reads into its own log.
            xcore_runtime::sandbox::worker::run(spec)
        }
        _ => {
            eprintln!(
                "xcore-sandbox-worker: expected `__sandbox-worker --spec JSON`; the xcore host starts \
                 this program for a sandboxed plugin, it is not run by hand"
            );
            ExitCode::from(2)
        }
    }
}
