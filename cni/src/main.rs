//! `warden-cni`: the CNI plugin binary (see the crate docs). Reads the CNI_* environment and
//! the network configuration on stdin, writes the result or error JSON on stdout, log lines
//! on stderr, and exits 0 or 1.

use std::io::{IsTerminal, Read, Write};

fn main() {
    let mut stdin = Vec::new();
    // A person running the binary by hand gets the usage line instead of a wait on the
    // terminal; runtimes always write the configuration and close stdin.
    let read = if std::io::stdin().is_terminal() { Ok(0) } else { std::io::stdin().read_to_end(&mut stdin) };
    let out = match read {
        Ok(_) => warden_cni::run(|k| std::env::var(k).ok(), &stdin),
        Err(e) => {
            let err = warden_cni::error::CniError::new(
                warden_cni::error::Code::Io,
                "error reading from stdin",
                e.to_string(),
            );
            warden_cni::Outcome { stdout: err.to_json() + "\n", stderr: format!("warden-cni: {err}\n"), status: 1 }
        }
    };
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    let mut so = std::io::stdout();
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.flush();
    std::process::exit(out.status);
}
