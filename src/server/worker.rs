//! The worker pool: threads that run sessions, where blocking is allowed.
//!
//! The event loop sends a [`Job`] carrying a connection's session, its
//! queued lines and its (empty) output buffer; a worker runs the lines in
//! order, then sends everything back in a [`Done`] and wakes the loop.
//! Wake-ups are coalesced twice: a worker announces its replies once per
//! run of queued jobs (see [`run`]), and only pokes the [`mio::Waker`] when
//! the loop has drained every earlier completion, so a busy server makes
//! one wake-up syscall per loop turn, not one per reply.

use super::framer::{Line, LineBatch};
use super::stats::Metrics;
use crate::protocol::session::BODY_PIECE_TARGET;
use crate::protocol::{Directive, Session};
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Identifies a connection across slot reuse: a result for a connection that
/// has since closed (and whose slot was reused) is recognised as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    pub slot: usize,
    pub generation: u64,
}

/// Work for a worker.
pub enum Job {
    /// Handle queued command lines in order.
    Lines {
        conn: ConnId,
        session: Box<Session>,
        lines: LineBatch,
        out: Vec<u8>,
    },
    /// Produce the next piece of a multi-line reply.
    Body {
        conn: ConnId,
        session: Box<Session>,
        out: Vec<u8>,
    },
    /// The connection is gone: release the session's maildrop without
    /// deleting anything.
    Abandon {
        session: Box<Session>,
        reason: &'static str,
    },
}

/// A finished job, back to the event loop.
pub struct Done {
    pub conn: ConnId,
    pub session: Box<Session>,
    /// Reply bytes to send.
    pub out: Vec<u8>,
    /// Lines not handled yet because the directive stopped the batch; they
    /// go back to the head of the connection's queue.
    pub unhandled: LineBatch,
    pub directive: Directive,
}

/// Wakes the event loop at most once per drain.
pub struct Notifier {
    waker: mio::Waker,
    /// Set when a wake-up is on its way and the loop has not yet drained.
    pending: AtomicBool,
}

impl Notifier {
    pub fn new(waker: mio::Waker) -> Self {
        Notifier {
            waker,
            pending: AtomicBool::new(false),
        }
    }

    pub fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the event loop: {e}");
            }
        }
    }

    /// Called by the loop before it drains completions, so a completion sent
    /// after this point wakes it again.
    pub fn rearm(&self) {
        self.pending.store(false, Ordering::Release);
    }
}

/// How long a worker may keep finished replies while more jobs are queued,
/// to hand them to the loop in one wake-up instead of one each.
const HOLD_REPLIES_AT_MOST: Duration = Duration::from_millis(1);

/// Runs jobs until the job channel closes.
///
/// The loop is woken once for a run of jobs rather than once per job:
/// replies are announced when the queue is empty, when the oldest has
/// waited [`HOLD_REPLIES_AT_MOST`], or before a job that may take long (a
/// password hash, opening or updating a maildrop), so a ready reply never
/// waits behind one. A reply can still wait up to that millisecond plus
/// one other job, at most one body piece (a 512 KiB read, which a cold
/// disk can make slow). A worker never blocks while it holds replies. On
/// a busy server this saves a wake-up of the loop, and a context switch,
/// for most jobs.
pub fn run(
    jobs: Receiver<Job>,
    done: Sender<Done>,
    notifier: Arc<Notifier>,
    metrics: Arc<Metrics>,
) {
    // When this worker last sent a reply it has not announced yet.
    let mut holding_since: Option<Instant> = None;
    loop {
        // Never block while holding replies: another worker may have taken
        // the job this one expected, and the replies would wait for the next
        // client to send something.
        let next = if holding_since.is_some() {
            match jobs.try_recv() {
                Ok(job) => Ok(job),
                Err(_) => {
                    notifier.notify();
                    holding_since = None;
                    jobs.recv()
                }
            }
        } else {
            jobs.recv()
        };
        let Ok(job) = next else {
            // The loop has gone away (shutdown).
            return;
        };
        if holding_since.is_some() && job.may_block() {
            notifier.notify();
            holding_since = None;
        }
        if let Some(result) = run_job(job, &metrics) {
            if done.send(result).is_err() {
                // The loop has gone away (shutdown); nothing left to answer.
                return;
            }
            holding_since.get_or_insert_with(Instant::now);
        }
        if let Some(since) = holding_since {
            if jobs.is_empty() || since.elapsed() >= HOLD_REPLIES_AT_MOST {
                notifier.notify();
                holding_since = None;
            }
        }
    }
}

/// Runs one job; what goes back to the loop, if anything.
fn run_job(job: Job, metrics: &Metrics) -> Option<Done> {
    match job {
        Job::Lines {
            conn,
            mut session,
            mut lines,
            mut out,
        } => {
            let (handled, directive) = handle_lines(&mut session, &lines, &mut out, metrics);
            lines.consume(handled);
            Some(Done {
                conn,
                session,
                out,
                unhandled: lines,
                directive,
            })
        }
        Job::Body {
            conn,
            mut session,
            mut out,
        } => {
            let directive = session.continue_body(&mut out);
            Some(Done {
                conn,
                session,
                out,
                unhandled: LineBatch::default(),
                directive,
            })
        }
        Job::Abandon { session, reason } => {
            session.abandon(reason);
            None
        }
    }
}

impl Job {
    /// Whether running this job may take long enough that replies already
    /// finished should go out first.
    fn may_block(&self) -> bool {
        match self {
            Job::Lines { session, lines, .. } => (0..lines.len()).any(
                |i| matches!(lines.get(i), Some(Line::Text(text)) if session.may_block_on(text)),
            ),
            // A body piece reads at most one piece of one file; releasing a
            // maildrop unlocks it.
            Job::Body { .. } | Job::Abandon { .. } => false,
        }
    }
}

/// Handles lines until one needs the connection's attention (a delay, a
/// body to stream, a close) or the output is large enough to send.
fn handle_lines(
    session: &mut Session,
    lines: &LineBatch,
    out: &mut Vec<u8>,
    metrics: &Metrics,
) -> (usize, Directive) {
    for i in 0..lines.len() {
        let directive = match lines.get(i) {
            Some(Line::Text(text)) => {
                metrics.count_command(text);
                session.handle_line(text, out)
            }
            Some(Line::TooLong) => {
                metrics.count_too_long();
                session.line_too_long(out)
            }
            None => Directive::Continue,
        };
        if directive != Directive::Continue || out.len() >= BODY_PIECE_TARGET {
            return (i + 1, directive);
        }
    }
    (lines.len(), Directive::Continue)
}
