//! Spawns worker processes from one thread that lives as long as the host.
//!
//! `PR_SET_PDEATHSIG` kills a worker when the *thread* that forked it exits, not the
//! process. Spawning from tokio's blocking pool (whose threads retire after being idle)
//! would kill healthy workers at random; spawning from this thread ties every worker's
//! life to the host's.

use std::process::{Child, Command};
use std::sync::OnceLock;

use crossbeam_channel::{Receiver, Sender};

type Request = (Command, Sender<std::io::Result<Child>>);

fn spawner() -> &'static Sender<Request> {
    static SPAWNER: OnceLock<Sender<Request>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx): (Sender<Request>, Receiver<Request>) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("sandbox-spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the sandbox spawner thread");
        tx
    })
}

/// Spawns `cmd` from the long-lived spawner thread.
pub fn spawn(cmd: Command) -> std::io::Result<Child> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    spawner().send((cmd, tx)).map_err(|_| std::io::Error::other("sandbox spawner thread is gone"))?;
    rx.recv().map_err(|_| std::io::Error::other("sandbox spawner thread is gone"))?
}
