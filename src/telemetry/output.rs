//! Where log lines go: one in-memory buffer shared by every thread, written
//! out by a background thread every [`FLUSH_INTERVAL`].
//!
//! Appending a line costs an uncontended mutex and a copy: no syscall and no
//! wake-up of another thread. Under load the previous design (a channel to a
//! writer thread, `tracing-appender`) woke the writer for nearly every line
//! and its receive loop spun in `sched_yield`; see docs/performance.md.
//! Nothing is dropped: when the buffer passes [`HIGH_WATER`] the appending
//! thread writes it out itself (back-pressure instead of loss), and the
//! guard's drop writes whatever is left.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// The longest a line waits in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Buffer size at which the appending thread writes the buffer out itself.
pub const HIGH_WATER: usize = 1 << 20;

struct Shared {
    pending: Mutex<Vec<u8>>,
    out: Mutex<Box<dyn Write + Send>>,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    stop: bool,
    finished: bool,
}

/// How long dropping the guard waits for the last write (a stdout that
/// blocks, e.g. a stalled log collector, must not keep the process alive).
const LAST_WRITE_WAIT: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these leaves plain bytes behind; keep going.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn append(&self, line: &[u8]) -> io::Result<()> {
        let mut pending = lock(&self.pending);
        pending.extend_from_slice(line);
        if pending.len() < HIGH_WATER {
            return Ok(());
        }
        let full = std::mem::take(&mut *pending);
        self.write_out(pending, full)
    }

    fn flush(&self) -> io::Result<()> {
        let mut pending = lock(&self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let capacity = pending.capacity();
        let batch = std::mem::replace(&mut *pending, Vec::with_capacity(capacity));
        self.write_out(pending, batch)
    }

    /// The output lock is taken before the buffer lock is released, so
    /// batches reach the output in the order their lines were appended.
    fn write_out(&self, pending: MutexGuard<'_, Vec<u8>>, batch: Vec<u8>) -> io::Result<()> {
        let mut out = lock(&self.out);
        drop(pending);
        out.write_all(&batch)?;
        out.flush()
    }
}

/// The `MakeWriter` for the subscriber. Cheap to clone.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Keeps the background writer alive; dropping it writes what is pending
/// and stops the thread.
pub struct OutputGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer to `out` and the guard that owns its background thread.
pub fn batched(out: impl Write + Send + 'static) -> (BatchWriter, OutputGuard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::with_capacity(64 * 1024)),
        out: Mutex::new(Box::new(out)),
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
    });
    let background = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || flush_loop(&background))
        .expect("cannot start the log writer thread");
    (
        BatchWriter {
            shared: shared.clone(),
        },
        OutputGuard {
            shared,
            thread: Some(thread),
        },
    )
}

fn flush_loop(shared: &Shared) {
    let mut state = lock(&shared.state);
    loop {
        state = shared
            .wake
            .wait_timeout(state, FLUSH_INTERVAL)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        let stopping = state.stop;
        drop(state);
        // Nowhere to report a failing stdout; the next batch tries again.
        let _ = shared.flush();
        state = lock(&shared.state);
        if stopping {
            state.finished = true;
            shared.wake.notify_all();
            return;
        }
    }
}

impl OutputGuard {
    /// Writes what is pending now, on the caller's thread.
    pub fn flush(&self) {
        let _ = self.shared.flush();
    }
}

impl BatchWriter {
    /// Writes what is pending now, on the caller's thread (before an
    /// immediate `std::process::exit`, which skips the guard's drop).
    pub fn flush(&self) {
        let _ = self.shared.flush();
    }
}

impl Drop for OutputGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.stop = true;
        self.shared.wake.notify_all();
        // The background thread writes the rest and says so; wait for that
        // a bounded time only.
        let (state, _) = self
            .shared
            .wake
            .wait_timeout_while(state, LAST_WRITE_WAIT, |s| !s.finished)
            .unwrap_or_else(PoisonError::into_inner);
        let finished = state.finished;
        drop(state);
        if let Some(thread) = self.thread.take() {
            if finished {
                let _ = thread.join();
            }
        }
    }
}

/// One formatted line at a time (the fmt layer writes each event with one
/// `write_all`).
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).clone()).unwrap()
        }
    }

    fn write_line(writer: &BatchWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn lines_from_many_threads_all_arrive_in_per_thread_order() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        std::thread::scope(|s| {
            for t in 0..4 {
                let writer = writer.clone();
                s.spawn(move || {
                    for i in 0..5000 {
                        write_line(&writer, &format!("t{t} {i:05} {}\n", "x".repeat(100)));
                    }
                });
            }
        });
        drop(guard);
        let text = sink.text();
        assert_eq!(text.lines().count(), 20_000);
        for t in 0..4 {
            let seen: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .map(|l| &l[3..8])
                .collect();
            let mut sorted = seen.clone();
            sorted.sort();
            assert_eq!(seen.len(), 5000);
            assert_eq!(seen, sorted, "thread {t} lines out of order");
        }
    }

    #[test]
    fn a_line_is_written_without_waiting_for_the_guard() {
        let sink = Sink::default();
        let (writer, _guard) = batched(sink.clone());
        write_line(&writer, "hello\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.text().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the line never reached the output"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.text(), "hello\n");
    }

    #[test]
    fn past_the_high_water_mark_the_appender_writes_itself() {
        let sink = Sink::default();
        let (writer, _guard) = batched(sink.clone());
        // Hold the background thread off the buffer: only the appender can
        // have written when this returns.
        let state = lock(&writer.shared.state);
        let line = "y".repeat(HIGH_WATER);
        write_line(&writer, &line);
        assert_eq!(sink.text().len(), HIGH_WATER);
        drop(state);
    }

    /// An output that blocks forever.
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            std::thread::park();
            Ok(0)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_output_does_not_keep_the_guard_waiting() {
        let (writer, guard) = batched(Stuck);
        write_line(&writer, "never written\n");
        std::thread::sleep(FLUSH_INTERVAL * 2);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(guard);
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(LAST_WRITE_WAIT * 5).is_ok(),
            "dropping the guard hung on a blocked output"
        );
    }

    #[test]
    fn guard_flush_writes_at_once() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        let state = lock(&writer.shared.state);
        write_line(&writer, "now\n");
        guard.flush();
        assert_eq!(sink.text(), "now\n");
        drop(state);
    }
}
