//! A local cache of the ledger stream's events (`DATA_DIR/ledger-cache/*.jsonl`, one
//! `{"o": offset, "e": event}` per line), so a full read (timeline, history, drift) costs a file
//! read plus the stream's new tail instead of draining the whole stream over AMQP every time.
//!
//! The cache is only a copy: before it is used, the stream is asked for the event at the cache's
//! last offset and its id must match (a deleted and re-created stream, or a foreign file, fails
//! that and the cache is discarded). Lines are written in offset order by one process at a time
//! (a lock file); readers skip anything out of order, so a torn write can only cost a re-read.
//! `HOPBACK_LEDGER_CACHE=0` disables it.

use std::io::{BufRead, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

use crate::ledger::Event;

/// A lock older than this is from a crashed process and is taken over.
const STALE_LOCK: Duration = Duration::from_secs(60);
/// How much of the file's end is read to find the last line.
const TAIL_BYTES: u64 = 1 << 20;

#[derive(Deserialize)]
struct Line {
    o: u64,
    e: Event,
    /// The record's verified author (its AMQP `user_id`), when it had one.
    #[serde(default)]
    u: Option<String>,
}

#[derive(Deserialize)]
struct Head {
    o: u64,
    e: HeadEvent,
}

#[derive(Deserialize)]
struct HeadEvent {
    id: Uuid,
}

/// The offset and event id of the cache's last line.
pub fn last_entry(path: &Path) -> Option<(u64, Uuid)> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    tail.split(|b| *b == b'\n')
        .rev()
        .filter(|l| !l.is_empty())
        .find_map(|l| serde_json::from_slice::<Head>(l).ok())
        .map(|h| (h.o, h.e.id))
}

/// Feed every cached event to `f` in offset order; returns how many.
pub fn replay<F: FnMut(Event)>(path: &Path, f: &mut F) -> u64 {
    let Ok(file) = std::fs::File::open(path) else {
        return 0;
    };
    let mut n = 0;
    let mut last: Option<u64> = None;
    for line in std::io::BufReader::new(file)
        .split(b'\n')
        .map_while(Result::ok)
    {
        let Ok(l) = serde_json::from_slice::<Line>(&line) else {
            continue;
        };
        if last.is_some_and(|o| l.o <= o) {
            continue;
        }
        last = Some(l.o);
        n += 1;
        let mut e = l.e;
        e.author = l.u;
        f(e);
    }
    n
}

/// Remove a cache that no longer matches the stream.
pub fn discard(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Appends new events to the cache while this process holds its lock.
pub struct Writer {
    out: BufWriter<std::fs::File>,
    lock: PathBuf,
    last: Option<u64>,
}

impl Writer {
    /// Take the lock and open the cache (`fresh` = start it over). `None` when another process
    /// is writing it or the data dir is not writable: the read goes on without caching.
    pub fn open(path: &Path, fresh: bool) -> Option<Writer> {
        let lock = path.with_extension("lock");
        if let Ok(meta) = std::fs::metadata(&lock)
            && meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > STALE_LOCK)
        {
            let _ = std::fs::remove_file(&lock);
        }
        // Private, like every file hopback writes (the directory too: `crate::files`).
        crate::files::create_new(&lock).ok()?;
        let file = if fresh {
            crate::files::create(path)
        } else {
            crate::files::append(path)
        };
        let Ok(file) = file else {
            let _ = std::fs::remove_file(&lock);
            return None;
        };
        Some(Writer {
            out: BufWriter::new(file),
            last: if fresh {
                None
            } else {
                last_entry(path).map(|(o, _)| o)
            },
            lock,
        })
    }

    /// Append one event (its raw JSON as read from the stream) at `offset`, with its verified
    /// author.
    pub fn push(&mut self, offset: u64, event_json: &[u8], author: Option<&str>) {
        if self.last.is_some_and(|o| offset <= o) {
            return;
        }
        self.last = Some(offset);
        let _ = write!(self.out, "{{\"o\":{offset},");
        if let Some(a) = author
            && let Ok(a) = serde_json::to_string(a)
        {
            let _ = write!(self.out, "\"u\":{a},");
        }
        let _ = self.out.write_all(b"\"e\":");
        let _ = self.out.write_all(event_json);
        let _ = self.out.write_all(b"}\n");
    }

    /// Flush and release the lock.
    pub fn finish(mut self) {
        let _ = self.out.flush();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.out.flush();
        let _ = std::fs::remove_file(&self.lock);
    }
}
