//! pop3d's checkpassword auth plugin: passwords are checked by an external
//! program speaking D. J. Bernstein's checkpassword interface, the one
//! qmail-popup uses with `checkpassword`, vpopmail's `vchkpw` or
//! `checkpassword-pam`.
//!
//! pop3d links this crate as its built-in `checkpassword` auth backend; the
//! same code builds as `libpop3d_checkpassword.so` (entry symbol
//! `pop3d_plugin_checkpassword`).
//!
//! # The interface
//! The helper is run as `PROGRAM ARGS...` and reads `user\0password\0
//! timestamp\0` from file descriptor 3. If the password is wrong it exits
//! 1; if it was called wrongly, 2; if it cannot check right now, 111. If the
//! password is right it sets up the user's environment (`HOME`, `USER`,
//! often its uid and working directory) and runs `ARGS...` as the *next
//! program*, whose exit status becomes its own. qmail runs
//! `qmail-popup host checkpassword qmail-pop3d Maildir`, so the next program
//! is the POP3 server itself, started in the user's home; pop3d serves the
//! session on its own, so its next program only has to exit 0, and may tell
//! pop3d the user's home on the way:
//!
//! - `args: ["/usr/bin/env"]` (the default) prints the environment the
//!   helper set up; pop3d takes the user's home from its `HOME=` line, so a
//!   maildir root of `~/Maildir` finds the same maildir qmail-pop3d would.
//! - `args: ["/bin/true"]` reports nothing: the user has no home, and the
//!   store must find the maildrop from the name alone (`/var/mail/%u`).
//!
//! pop3d answers by exit status: 0 logs in, 1 (and any code the interface
//! does not define, such as vchkpw's 3 for a wrong password) is a failed
//! login (`-ERR [AUTH]`), 111 a temporary failure (`-ERR [SYS/TEMP]`), 2
//! and 126/127 (the shell could not run the program) a permanent one that
//! needs the operator (`-ERR [SYS/PERM]`). A helper killed by a signal, or
//! still running after `timeout_ms` (it is then killed), is a temporary
//! failure. The timestamp is empty: pop3d only hands over plaintext
//! passwords, and offers no APOP with this backend.
//!
//! The helper runs with an empty environment except `PATH` (so nothing of
//! pop3d's own environment, such as its `HOME`, can be mistaken for the
//! user's) and with pop3d's privileges: helpers that read `/etc/shadow` or
//! change to the user's uid need pop3d to run as root.
//!
//! At most `max_concurrent` helpers run at once; a login that cannot start
//! its helper within `timeout_ms` fails temporarily. The time waited counts
//! against the same `timeout_ms`, so no login takes longer than that.
//!
//! # Layout
//! - this file: the config, the plugin and the meaning of a helper's answer.
//! - `run.rs`: starting a helper with the credentials on fd 3 (through
//!   `/bin/sh`, see there why), its output, the deadline.
//! - `permits.rs`: the bound on helpers running at once.
#![deny(unsafe_code)]

mod permits;
mod run;

use permits::Permits;
use pop3d_plugin_api::{
    export_auth_plugin, log_debug, log_info, log_warn, AuthPlugin, Error, UserInfo,
};
use run::{Ending, Verdict};
use serde::Deserialize;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Longest user name plus password handed to a helper. The interface sets
/// no limit, but helpers read into small fixed buffers (vchkpw keeps 155
/// bytes), and keeping the input under a pipe buffer means writing it can
/// never block.
const MAX_INPUT_LEN: usize = 4096;
/// Most helpers allowed at once; far above a useful count, low enough to
/// catch a typo before it lets a login flood start thousands of processes.
const MAX_CONCURRENT_LIMIT: usize = 1024;
/// Longest `timeout_ms` accepted: a login waiting longer than a minute has
/// long been given up by the client.
const MAX_TIMEOUT_MS: u64 = 60_000;
/// `PATH` for helpers when pop3d itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The `config` section of the checkpassword backend:
/// `(program: "/usr/local/bin/checkpassword", args: ["/usr/bin/env"],
/// timeout_ms: 5000, max_concurrent: 8)`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckpasswordConfig {
    /// The checkpassword program, as an absolute path (no `PATH` search, so
    /// what runs does not depend on the environment pop3d was started in).
    pub program: PathBuf,
    /// The rest of its command line: by the interface, the next program to
    /// run after a successful check, with its arguments. Options the helper
    /// itself takes (`checkpassword-pam -s pop3 --`) come first.
    #[serde(default = "default_args")]
    pub args: Vec<String>,
    /// How long one login may take, waiting for a free slot included,
    /// before the helper is killed and the client told to try later.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How many helpers may run at once.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
}

fn default_args() -> Vec<String> {
    vec!["/usr/bin/env".to_string()]
}

fn default_timeout_ms() -> u64 {
    5000
}

fn default_max_concurrent() -> usize {
    8
}

/// The checkpassword auth backend.
#[derive(Debug)]
pub struct Checkpassword {
    /// The checked settings.
    config: CheckpasswordConfig,
    /// `PATH` handed to helpers: pop3d's own, so helpers that run other
    /// programs by name find them as they would from a shell.
    path_env: String,
    /// Bounds the helpers running at once.
    permits: Permits,
}

impl Checkpassword {
    /// A backend for `config`, refused with `PermFail` and a message when a
    /// setting cannot work (no such program, not executable, no next
    /// program, a zero timeout or limit).
    pub fn new(config: CheckpasswordConfig) -> Result<Checkpassword, Error> {
        let program = config.program.display().to_string();
        if !config.program.is_absolute() {
            return Err(Error::PermFail(format!(
                "program {program:?} is not an absolute path; write the full path, e.g. \
                 \"/usr/local/bin/checkpassword\""
            )));
        }
        let metadata = std::fs::metadata(&config.program)
            .map_err(|err| Error::PermFail(format!("program {program}: {err}; check the path")))?;
        if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
            return Err(Error::PermFail(format!(
                "program {program} is not an executable file"
            )));
        }
        if config.args.is_empty() {
            return Err(Error::PermFail(
                "args is empty, but the checkpassword interface runs args[0] after a successful \
                 check; use [\"/usr/bin/env\"] (reports the user's home) or [\"/bin/true\"]"
                    .to_string(),
            ));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&config.timeout_ms) {
            return Err(Error::PermFail(format!(
                "timeout_ms is {}; use 1 to {MAX_TIMEOUT_MS} (5000 is a good start)",
                config.timeout_ms
            )));
        }
        if !(1..=MAX_CONCURRENT_LIMIT).contains(&config.max_concurrent) {
            return Err(Error::PermFail(format!(
                "max_concurrent is {}; use 1 to {MAX_CONCURRENT_LIMIT}",
                config.max_concurrent
            )));
        }
        let path_env = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
        Ok(Checkpassword {
            permits: Permits::new(config.max_concurrent),
            path_env,
            config,
        })
    }

    /// The program, for messages.
    fn program(&self) -> String {
        self.config.program.display().to_string()
    }
}

impl AuthPlugin for Checkpassword {
    fn create(config: &str) -> Result<Self, Error> {
        let config: CheckpasswordConfig = pop3d_plugin_api::config::parse(config)?;
        Checkpassword::new(config)
    }

    fn authenticate(&self, user: &str, password: &[u8]) -> Result<UserInfo, Error> {
        // A NUL would end the field early: "secret\0junk" must not be
        // checked as "secret".
        if user.is_empty() || user.contains('\0') || password.contains(&0) {
            return Err(Error::Denied);
        }
        if user.len() + password.len() > MAX_INPUT_LEN {
            log_info!(
                "checkpassword: refused a login with a {}-byte name and password, longer than \
                 {MAX_INPUT_LEN}",
                user.len() + password.len()
            );
            return Err(Error::Denied);
        }
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let deadline = Instant::now() + timeout;
        let Some(_permit) = self.permits.acquire(deadline) else {
            log_warn!(
                "checkpassword: {} helpers were busy for {} ms; raise max_concurrent if logins \
                 are often this slow",
                self.config.max_concurrent,
                self.config.timeout_ms
            );
            return Err(Error::TempFail(format!(
                "checkpassword: no free helper slot within {} ms (max_concurrent {})",
                self.config.timeout_ms, self.config.max_concurrent
            )));
        };

        // user \0 password \0 timestamp \0, with an empty timestamp.
        let mut input = Vec::with_capacity(user.len() + password.len() + 3);
        input.extend_from_slice(user.as_bytes());
        input.push(0);
        input.extend_from_slice(password);
        input.extend_from_slice(&[0, 0]);
        let ending = run::run(
            &self.config.program,
            &self.config.args,
            &self.path_env,
            &input,
            deadline,
        );
        // Leave no copy of the password in freed memory.
        input.fill(0);
        std::hint::black_box(&input);

        let (status, output) = match ending? {
            Ending::Exited { status, output } => (status, output),
            Ending::TimedOut => {
                return Err(Error::TempFail(format!(
                    "checkpassword: {} did not answer within {} ms for user {user}; it was killed",
                    self.program(),
                    self.config.timeout_ms
                )))
            }
        };
        match run::verdict(status) {
            Verdict::Accepted => {
                let home = run::reported_home(&output);
                log_debug!(
                    "checkpassword: {} accepted {user} (home {})",
                    self.program(),
                    home.as_deref().unwrap_or("not reported")
                );
                Ok(UserInfo {
                    name: user.to_string(),
                    home,
                    extra: Vec::new(),
                })
            }
            Verdict::Rejected(1) => Err(Error::Denied),
            Verdict::Rejected(code) => {
                log_debug!(
                    "checkpassword: {} exited {code} for {user}; counted as a failed login",
                    self.program()
                );
                Err(Error::Denied)
            }
            Verdict::Temporary => Err(Error::TempFail(format!(
                "checkpassword: {} could not check {user} right now (exit 111)",
                self.program()
            ))),
            Verdict::Misuse => Err(Error::PermFail(format!(
                "checkpassword: {} says it was called wrongly (exit 2); check `program` and \
                 `args` in the auth config",
                self.program()
            ))),
            Verdict::NotRunnable(code) => Err(Error::PermFail(format!(
                "checkpassword: exit {code} from {}: it, or the next program in `args`, is \
                 missing or not executable (or a script whose interpreter is missing)",
                self.program()
            ))),
            Verdict::Crashed(signal) => Err(Error::TempFail(format!(
                "checkpassword: {} was killed by signal {signal} while checking {user}",
                self.program()
            ))),
        }
    }
}

export_auth_plugin!(checkpassword, Checkpassword);

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    /// A scratch directory for helper scripts, removed when dropped.
    struct TestDir(
        /// The directory.
        PathBuf,
    );

    impl TestDir {
        fn new(tag: &str) -> TestDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "pop3d-test-checkpassword-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TestDir(path)
        }

        /// Writes an executable shell script.
        fn script(&self, name: &str, body: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            path
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A checkpassword in shell: reads fd 3, accepts alice/secret (home
    /// /home/alice) and "bad home" user bob/pw (home relative), else
    /// exits 1. Other outcomes are chosen by the password.
    const CHECKER: &str = r#"
input=$(tr '\0' '\n' <&3)
user=$(printf '%s\n' "$input" | sed -n 1p)
pass=$(printf '%s\n' "$input" | sed -n 2p)
stamp=$(printf '%s\n' "$input" | sed -n 3p)
[ -z "$stamp" ] || exit 2
case "$pass" in
  tempfail) exit 111 ;;
  misuse) exit 2 ;;
  vchkpw-wrong) exit 3 ;;
  crash) kill -SEGV $$ ;;
  hang) exec sleep 30 ;;
esac
if [ "$user" = alice ] && [ "$pass" = secret ]; then
  HOME=/home/alice USER=alice
  export HOME USER
  exec "$@"
fi
exit 1
"#;

    /// Settings running the script `checker` with `next` as its next
    /// program. The script is run as `/bin/sh checker next...` rather than
    /// executed itself: executing a file this process just wrote can fail
    /// with "text file busy" while another test thread is forking.
    fn config(checker: &Path, next: &[&str]) -> CheckpasswordConfig {
        let mut args = vec![checker.display().to_string()];
        args.extend(next.iter().map(|arg| arg.to_string()));
        CheckpasswordConfig {
            program: PathBuf::from("/bin/sh"),
            args,
            timeout_ms: 5000,
            max_concurrent: 4,
        }
    }

    fn checker(dir: &TestDir, next: &[&str]) -> Checkpassword {
        Checkpassword::new(config(&dir.script("checker", CHECKER), next)).unwrap()
    }

    #[test]
    fn a_right_password_logs_in_with_the_home_the_next_program_reports() {
        let dir = TestDir::new("ok");
        let auth = checker(&dir, &["/usr/bin/env"]);
        assert_eq!(
            auth.authenticate("alice", b"secret").unwrap(),
            UserInfo {
                name: "alice".into(),
                home: Some("/home/alice".into()),
                extra: vec![],
            }
        );
        let quiet = checker(&dir, &["/bin/true"]);
        assert_eq!(quiet.authenticate("alice", b"secret").unwrap().home, None);
    }

    #[test]
    fn wrong_passwords_and_unknown_users_are_denied() {
        let dir = TestDir::new("denied");
        let auth = checker(&dir, &["/usr/bin/env"]);
        for (user, password) in [
            ("alice", &b"wrong"[..]),
            ("alice", b""),
            ("mallory", b"secret"),
            ("alice", b"vchkpw-wrong"),
        ] {
            assert_eq!(
                auth.authenticate(user, password),
                Err(Error::Denied),
                "{user}"
            );
        }
    }

    #[test]
    fn a_nul_cannot_cut_a_password_short() {
        let dir = TestDir::new("nul");
        let auth = checker(&dir, &["/usr/bin/env"]);
        assert_eq!(auth.authenticate("alice", b"secret\0x"), Err(Error::Denied));
        assert_eq!(auth.authenticate("alice\0x", b"secret"), Err(Error::Denied));
        assert_eq!(auth.authenticate("", b"secret"), Err(Error::Denied));
        let long = vec![b'a'; MAX_INPUT_LEN];
        assert_eq!(auth.authenticate("alice", &long), Err(Error::Denied));
    }

    #[test]
    fn temporary_and_permanent_failures_are_told_apart() {
        let dir = TestDir::new("fail");
        let auth = checker(&dir, &["/usr/bin/env"]);
        assert!(matches!(
            auth.authenticate("alice", b"tempfail"),
            Err(Error::TempFail(m)) if m.contains("exit 111")
        ));
        assert!(matches!(
            auth.authenticate("alice", b"misuse"),
            Err(Error::PermFail(m)) if m.contains("exit 2")
        ));
        let crashed = auth.authenticate("alice", b"crash");
        assert!(
            matches!(&crashed, Err(Error::TempFail(m)) if m.contains("signal 11")),
            "{crashed:?}"
        );
        // A next program that is missing makes the helper's exec fail.
        let no_next = checker(&dir, &["/nonexistent/next"]);
        assert!(matches!(
            no_next.authenticate("alice", b"secret"),
            Err(Error::PermFail(_))
        ));
    }

    #[test]
    fn a_helper_that_hangs_is_killed_at_the_timeout() {
        let dir = TestDir::new("hang");
        let mut settings = config(&dir.script("checker", CHECKER), &["/usr/bin/env"]);
        settings.timeout_ms = 300;
        let auth = Checkpassword::new(settings).unwrap();
        let result = auth.authenticate("alice", b"hang");
        assert!(
            matches!(&result, Err(Error::TempFail(m)) if m.contains("did not answer within 300 ms")),
            "{result:?}"
        );
        // The slot was given back.
        assert!(auth.authenticate("alice", b"secret").is_ok());
    }

    #[test]
    fn no_more_helpers_run_than_allowed() {
        let dir = TestDir::new("busy");
        let mut settings = config(&dir.script("checker", CHECKER), &["/bin/true"]);
        settings.max_concurrent = 1;
        settings.timeout_ms = 100;
        let auth = Checkpassword::new(settings).unwrap();
        // Take the only slot, as a login whose helper is still running would.
        let held = auth.permits.acquire(Instant::now()).unwrap();
        let result = auth.authenticate("alice", b"secret");
        assert!(
            matches!(&result, Err(Error::TempFail(m)) if m.contains("no free helper slot")),
            "{result:?}"
        );
        drop(held);
        assert!(auth.authenticate("alice", b"secret").is_ok());
    }

    #[test]
    fn logins_from_many_threads_each_get_their_own_answer() {
        let dir = TestDir::new("threads");
        let auth = std::sync::Arc::new(checker(&dir, &["/usr/bin/env"]));
        let workers: Vec<_> = (0..6)
            .map(|i| {
                let auth = std::sync::Arc::clone(&auth);
                std::thread::spawn(move || {
                    let password: &[u8] = if i % 2 == 0 { b"secret" } else { b"nope" };
                    (i, auth.authenticate("alice", password))
                })
            })
            .collect();
        for worker in workers {
            let (i, result) = worker.join().unwrap();
            assert_eq!(result.is_ok(), i % 2 == 0, "{i}: {result:?}");
        }
    }

    fn create_error(text: &str) -> String {
        match Checkpassword::create(text) {
            Ok(_) => panic!("{text} was accepted"),
            Err(Error::PermFail(message)) => message,
            Err(other) => panic!("{text}: expected PermFail, got {other:?}"),
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_at_start() {
        let dir = TestDir::new("config");
        let program = dir.script("checker", CHECKER);
        let with = |rest: &str| format!("(program: {:?}{rest})", program.display().to_string());
        let auth = Checkpassword::create(&with("")).unwrap();
        assert_eq!(auth.config.args, ["/usr/bin/env"]);
        assert_eq!(auth.config.timeout_ms, 5000);
        assert_eq!(auth.config.max_concurrent, 8);

        assert_eq!(create_error("()"), "config: missing field `program`");
        assert!(create_error(&with(", timeout: 5")).starts_with("config: unknown field `timeout`"));
        assert!(create_error("(program: \"checkpassword\")").contains("not an absolute path"));
        assert!(
            create_error("(program: \"/nonexistent/checkpassword\")").contains("check the path")
        );
        let not_executable = dir.0.join("plain");
        fs::write(&not_executable, "").unwrap();
        assert!(create_error(&format!(
            "(program: {:?})",
            not_executable.display().to_string()
        ))
        .contains("not an executable file"));
        assert!(create_error(&with(", args: []")).contains("args is empty"));
        assert!(create_error(&with(", timeout_ms: 0")).contains("timeout_ms is 0"));
        assert!(create_error(&with(", max_concurrent: 0")).contains("max_concurrent is 0"));
    }
}
