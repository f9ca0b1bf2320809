//! Running one checkpassword helper: handing it the credentials on file
//! descriptor 3, collecting what its next program prints, and waiting for it
//! within a deadline.
//!
//! # File descriptor 3 without `unsafe`
//! The interface wants `user\0password\0timestamp\0` readable on fd 3.
//! `std::process::Command` can only set up fds 0-2 (mapping another needs
//! `pre_exec`, which is `unsafe`). So the helper is started through the
//! shell, which can:
//!
//! ```text
//! /bin/sh -c 'exec "$0" "$@" 3<&0 0</dev/null' PROGRAM ARGS...
//! ```
//!
//! The credentials go into the shell's stdin (a pipe); `3<&0` makes that
//! pipe fd 3, `0</dev/null` gives the helper an empty stdin, and `exec`
//! replaces the shell by the helper in the same process, so the child pid
//! is the helper's own and killing it kills the helper. The program and its
//! arguments are passed as arguments, never pasted into the script, so no
//! quoting can go wrong.

use pop3d_plugin_api::Error;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The shell script that maps stdin to fd 3; see the module docs.
const FD3_WRAPPER: &str = r#"exec "$0" "$@" 3<&0 0</dev/null"#;
/// The shell that runs [`FD3_WRAPPER`]; POSIX systems have it here.
const SHELL: &str = "/bin/sh";
/// Most bytes of the next program's output kept; the rest is read and
/// dropped so the helper never blocks on a full pipe.
const OUTPUT_LIMIT: usize = 64 * 1024;
/// Longest wait between two looks at whether the helper has exited, when
/// its output has already ended (or is held open by something else).
const EXIT_POLL: Duration = Duration::from_millis(2);
/// Longest wait for the output to end before looking at the helper again.
const OUTPUT_POLL: Duration = Duration::from_millis(50);

/// How a helper run ended.
#[derive(Debug)]
pub(crate) enum Ending {
    /// It exited with this status; `output` is what it (that is, its next
    /// program) printed, up to [`OUTPUT_LIMIT`] bytes.
    Exited {
        /// The exit status, code or signal.
        status: ExitStatus,
        /// Standard output, possibly cut short.
        output: Vec<u8>,
    },
    /// It was still running at the deadline and has been killed.
    TimedOut,
}

/// Starts `program args...` with `input` on fd 3 and waits for it until
/// `deadline`. Failures to start or talk to it are `TempFail`s that name the
/// program; a helper still running at the deadline is killed.
pub(crate) fn run(
    program: &Path,
    args: &[String],
    path_env: &str,
    input: &[u8],
    deadline: Instant,
) -> Result<Ending, Error> {
    let mut child = Command::new(SHELL)
        .arg("-c")
        .arg(FD3_WRAPPER)
        .arg(program)
        .args(args)
        // Only what the helper sets reaches its next program, so pop3d's own
        // HOME can never be mistaken for the user's.
        .env_clear()
        .env("PATH", path_env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Helpers report problems on stderr; it goes where pop3d's log goes.
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|err| {
            Error::TempFail(format!(
                "checkpassword: cannot start {SHELL} to run {}: {err}",
                program.display()
            ))
        })?;

    if let Err(err) = send_input(&mut child, input) {
        kill(&mut child);
        return Err(Error::TempFail(format!(
            "checkpassword: cannot pass the credentials to {}: {err}",
            program.display()
        )));
    }
    let output = collect_output(&mut child);
    wait(child, output, deadline).map_err(|err| {
        Error::TempFail(format!(
            "checkpassword: cannot wait for {}: {err}",
            program.display()
        ))
    })
}

/// Writes the credentials into the helper's stdin and closes it. A helper
/// that exits without reading them is not an error here: its exit status
/// says what happened.
fn send_input(child: &mut Child, input: &[u8]) -> io::Result<()> {
    let Some(mut stdin) = child.stdin.take() else {
        return Err(io::Error::other("no pipe to the helper's stdin"));
    };
    // The input is far smaller than a pipe buffer, so this does not block
    // even if the helper never reads.
    match stdin.write_all(input) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => Err(err),
        _ => Ok(()),
    }
}

/// Reads the helper's stdout to its end on a thread of its own, so the
/// wait below can keep time; the result arrives on the channel.
fn collect_output(child: &mut Child) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    if let Some(mut stdout) = child.stdout.take() {
        // If something the helper left behind keeps the pipe open, this
        // thread waits for it; the login does not.
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match stdout.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = OUTPUT_LIMIT - kept.len();
                        kept.extend_from_slice(&chunk[..n.min(room)]);
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = sender.send(kept);
        });
    }
    receiver
}

/// Waits for the helper to exit and its output to end, until `deadline`.
fn wait(
    mut child: Child,
    output: mpsc::Receiver<Vec<u8>>,
    deadline: Instant,
) -> io::Result<Ending> {
    let mut collected: Option<Vec<u8>> = None;
    let mut output_open = true;
    loop {
        if let Some(status) = child.try_wait()? {
            // Usually the output ended with the exit; if a leftover process
            // still holds the pipe, what arrived so far is not worth a wait.
            if collected.is_none() && output_open {
                let left = deadline.saturating_duration_since(Instant::now());
                collected = output.recv_timeout(left.min(OUTPUT_POLL)).ok();
            }
            return Ok(Ending::Exited {
                status,
                output: collected.unwrap_or_default(),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            kill(&mut child);
            return Ok(Ending::TimedOut);
        }
        let left = deadline - now;
        if output_open && collected.is_none() {
            // The end of the output is the usual sign the helper is done.
            match output.recv_timeout(left.min(OUTPUT_POLL)) {
                Ok(bytes) => collected = Some(bytes),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => output_open = false,
            }
        } else {
            std::thread::sleep(left.min(EXIT_POLL));
        }
    }
}

/// Kills the helper and reaps it, so no zombie is left behind.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// What an exit status means by the checkpassword interface.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Exit 0: the password is right (and the next program succeeded).
    Accepted,
    /// Exit 1, or a code the interface does not define (vpopmail's vchkpw
    /// exits 3 for a wrong password, 12 or 13 for an empty name or password).
    Rejected(i32),
    /// Exit 2: the helper says it was called wrongly.
    Misuse,
    /// Exit 111: the helper could not check right now.
    Temporary,
    /// Exit 126 or 127: the shell could not run the program at all.
    NotRunnable(i32),
    /// Killed by a signal: the helper crashed or was killed.
    Crashed(i32),
}

/// Classifies an exit status; see [`Verdict`].
pub(crate) fn verdict(status: ExitStatus) -> Verdict {
    match (status.code(), status.signal()) {
        (Some(0), _) => Verdict::Accepted,
        (Some(2), _) => Verdict::Misuse,
        (Some(111), _) => Verdict::Temporary,
        (Some(code @ (126 | 127)), _) => Verdict::NotRunnable(code),
        (Some(code), _) => Verdict::Rejected(code),
        (None, Some(signal)) => Verdict::Crashed(signal),
        // Neither code nor signal (stopped or continued): never a success.
        (None, None) => Verdict::Crashed(0),
    }
}

/// The home directory the next program reported: the first `HOME=` line
/// (or NUL-separated entry, as `env -0` prints) whose value is an absolute
/// path. `env` prints the environment the helper set up, which has a HOME
/// when the helper is a real checkpassword.
pub(crate) fn reported_home(output: &[u8]) -> Option<String> {
    output
        .split(|&byte| byte == b'\n' || byte == b'\0')
        .filter_map(|entry| entry.strip_prefix(b"HOME="))
        .find(|value| value.starts_with(b"/"))
        .and_then(|value| std::str::from_utf8(value).ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_follow_the_interface() {
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(verdict(exited(0)), Verdict::Accepted);
        assert_eq!(verdict(exited(1)), Verdict::Rejected(1));
        assert_eq!(verdict(exited(3)), Verdict::Rejected(3));
        assert_eq!(verdict(exited(2)), Verdict::Misuse);
        assert_eq!(verdict(exited(111)), Verdict::Temporary);
        assert_eq!(verdict(exited(127)), Verdict::NotRunnable(127));
        assert_eq!(verdict(ExitStatus::from_raw(11)), Verdict::Crashed(11));
    }

    #[test]
    fn home_comes_from_an_absolute_home_entry() {
        assert_eq!(
            reported_home(b"PATH=/bin\nHOME=/home/alice\nUSER=alice\n"),
            Some("/home/alice".into())
        );
        assert_eq!(
            reported_home(b"USER=a\0HOME=/var/vpopmail/domains/x/a\0"),
            Some("/var/vpopmail/domains/x/a".into())
        );
        assert_eq!(
            reported_home(b"HOME=relative\nHOME=/abs\n"),
            Some("/abs".into())
        );
        assert_eq!(reported_home(b""), None);
        assert_eq!(reported_home(b"NOTHOME=/x\n XHOME=/y"), None);
        assert_eq!(reported_home(b"HOME=/\xff\n"), None);
    }
}
