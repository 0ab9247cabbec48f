//! A live reader of the ledger, from the stream or from the local file fallback.

use super::*;

// One per subscription: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum SubInner {
    Stream {
        consumer: Consumer,
        unacked: u64,
        last_tag: u64,
        /// Message count of the stream when the subscription started.
        end_offset: u64,
        last_offset: Option<u64>,
        first_offset: Option<u64>,
        /// Started at an absolute offset: the count is compared with offsets, not a span.
        absolute_end: bool,
    },
    File {
        path: PathBuf,
        offset: u64,
        pending: std::collections::VecDeque<Event>,
        caught_up: bool,
    },
}

/// A live reader of the ledger. [`Subscription::next`] waits for the next event;
/// [`Subscription::into_channel`] turns it into a tokio channel for the console's event loop.
pub struct Subscription {
    pub(super) from: StreamStart,
    pub(super) inner: SubInner,
    /// A catch-up read (fold): stop as soon as the end is reached instead of waiting for more.
    pub(super) catch_up: bool,
    /// Where [`Subscription::next_within`] reports the records it skipped (the ledger's).
    pub(super) skipped: SkippedSink,
}

/// What a live read yields: an event, or a record it had to skip.
#[derive(Debug, Clone)]
pub enum Live {
    /// The next event.
    Event(Box<Event>),
    /// A record that is not a readable event (skipped, reading goes on).
    Skipped(SkippedRecord),
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("from", &self.from)
            .finish()
    }
}

/// At most this many events are read from the file at a time.
const FILE_BATCH: usize = 1000;
/// How often a file-backed subscription looks for new lines.
const FILE_POLL: Duration = Duration::from_millis(100);

impl Subscription {
    /// The next event (waits as long as it takes; wrap in a timeout or `select!`).
    /// `Ok(None)` means the reader ended (channel closed).
    pub async fn next(&mut self) -> Result<Option<Event>, LedgerError> {
        loop {
            if let Some(e) = self.next_within(Duration::from_secs(3600)).await? {
                return Ok(Some(e));
            }
            if let SubInner::Stream { consumer, .. } = &self.inner
                && !consumer.is_open()
            {
                return Ok(None);
            }
        }
    }

    /// The next raw record of a stream subscription (offsets tracked, acks sent), undecoded:
    /// (offset, body, the AMQP `user_id` the broker let through, why its properties cannot be
    /// read — when they cannot).
    pub(super) async fn next_bytes_within(
        &mut self,
        limit: Duration,
    ) -> Result<Option<RawRecord>, LedgerError> {
        let SubInner::Stream {
            consumer,
            unacked,
            last_tag,
            last_offset,
            first_offset,
            ..
        } = &mut self.inner
        else {
            return Ok(None);
        };
        let d = match consumer.recv(limit).await {
            Ok(Received::Idle | Received::Ended) => return Ok(None),
            Err(e) => return Err(ledger_failure("reading the stream", e)),
            Ok(Received::Delivery(d)) => d,
        };
        *last_tag = d.delivery_tag();
        *unacked += 1;
        let offset = stream::offset_of(&d);
        if let Some(o) = offset {
            *last_offset = Some(o);
            first_offset.get_or_insert(o);
        }
        if *unacked >= ACK_EVERY {
            consumer
                .ack_up_to(*last_tag)
                .await
                .map_err(|e| ledger_failure("acknowledging the stream", e))?;
            *unacked = 0;
        }
        let user_id = d.properties().user_id().as_ref().map(|u| u.to_string());
        let unreadable = crate::broker::headers::unreadable_reason(d.headers());
        Ok(Some((offset, d.into_body(), user_id, unreadable)))
    }

    /// The next event, or `Ok(None)` if none arrived within `limit`. Records it cannot read
    /// are skipped and reported to the ledger's [`super::Ledger::take_skipped`].
    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<Event>, LedgerError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_live_within(left).await? {
                Some(Live::Event(e)) => return Ok(Some(*e)),
                Some(Live::Skipped(r)) => note_skipped(&self.skipped, r),
                None => return Ok(None),
            }
        }
    }

    /// The next event or skipped record, or `Ok(None)` if none arrived within `limit`.
    pub async fn next_live_within(&mut self, limit: Duration) -> Result<Option<Live>, LedgerError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match &mut self.inner {
                SubInner::Stream { .. } => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let Some(record) = self.next_bytes_within(left).await? else {
                        return Ok(None);
                    };
                    match read_record(record) {
                        Ok(e) if self.from.admits(&e) => return Ok(Some(Live::Event(Box::new(e)))),
                        Ok(_) => continue,
                        Err(r) => return Ok(Some(Live::Skipped(r))),
                    }
                }
                SubInner::File {
                    path,
                    offset,
                    pending,
                    caught_up,
                } => {
                    if let Some(e) = pending.pop_front() {
                        return Ok(Some(Live::Event(Box::new(e))));
                    }
                    let skipped = &self.skipped;
                    let new = read_file_from(path, offset, &mut |r| note_skipped(skipped, r))
                        .map_err(|e| {
                            LedgerError::new(
                                format!("ledger: cannot read {}: {e}", path.display()),
                                "",
                            )
                        })?;
                    let from = self.from;
                    pending.extend(new.into_iter().filter(|e| from.admits(e)));
                    if pending.is_empty() {
                        *caught_up = true;
                        if self.catch_up || tokio::time::Instant::now() >= deadline {
                            return Ok(None);
                        }
                        tokio::time::sleep(FILE_POLL.min(limit)).await;
                    }
                }
            }
        }
    }

    /// The stream's message count when the subscription started (diagnostics; `None` for files).
    pub fn end_hint(&self) -> Option<u64> {
        match &self.inner {
            SubInner::Stream { end_offset, .. } => Some(*end_offset),
            SubInner::File { .. } => None,
        }
    }

    /// Has a catch-up read reached the count the ledger reported when the subscription started?
    /// (A lower bound: readers then wait [`END_GRACE`] for stragglers.)
    pub fn at_end(&self) -> bool {
        match &self.inner {
            SubInner::Stream {
                end_offset,
                last_offset,
                first_offset,
                absolute_end: true,
                ..
            } => first_offset.is_some() && last_offset.is_some_and(|l| l + 1 >= *end_offset),
            SubInner::Stream {
                end_offset,
                last_offset,
                first_offset,
                ..
            } => match (first_offset, last_offset) {
                // Counted as a span from the first delivered offset, so a stream whose head was
                // dropped by retention can only make us wait for the idle timeout, never stop early.
                (Some(first), Some(last)) => {
                    *end_offset > 0 && last.saturating_sub(*first) + 1 >= *end_offset
                }
                _ => false,
            },
            SubInner::File {
                pending, caught_up, ..
            } => *caught_up && pending.is_empty(),
        }
    }

    /// Turn into a channel fed by a background task (for the console): events and the records
    /// it skipped, in stream order. The task ends when the receiver is dropped or the
    /// subscription fails (the last message is the error).
    pub fn into_channel(mut self) -> tokio::sync::mpsc::Receiver<Result<Live, LedgerError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let next = loop {
                    match self.next_live_within(Duration::from_secs(3600)).await {
                        Ok(None) => {
                            if let SubInner::Stream { consumer, .. } = &self.inner
                                && !consumer.is_open()
                            {
                                break Ok(None);
                            }
                        }
                        other => break other,
                    }
                };
                match next {
                    Ok(Some(item)) => {
                        if tx.send(Ok(item)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => {
                        let _ = tx
                            .send(Err(LedgerError::new(
                                "ledger: the live feed ended (connection lost)",
                                "the console reconnects; restart it if the feed stays silent",
                            )))
                            .await;
                        break;
                    }
                    Err(f) => {
                        let _ = tx.send(Err(f)).await;
                        break;
                    }
                }
            }
            self.close().await;
        });
        rx
    }

    /// Stop reading (ack what was read, cancel, close the channel; bounded).
    pub async fn close(self) {
        if let SubInner::Stream {
            consumer,
            unacked,
            last_tag,
            ..
        } = self.inner
        {
            if unacked > 0 {
                let _ = consumer.ack_up_to(last_tag).await;
            }
            consumer.close().await;
        }
    }
}

/// Read complete lines of the JSONL file from `offset`, advancing it past them.
pub(super) fn read_file_from(
    path: &Path,
    offset: &mut u64,
    skipped: &mut dyn FnMut(SkippedRecord),
) -> std::io::Result<Vec<Event>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    f.seek(std::io::SeekFrom::Start(*offset))?;
    let mut r = std::io::BufReader::new(f);
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // a half-written last line is read next time
        }
        *offset += n as u64;
        match serde_json::from_slice::<Event>(&line) {
            Ok(mut e) => {
                // Only this OS user can write the fallback file (0600 in a 0700 data dir).
                e.author = Some(crate::ledger::event::LOCAL_FILE_AUTHOR.into());
                out.push(e)
            }
            Err(err) => skipped(SkippedRecord {
                offset: None,
                why: format!(
                    "line at byte {} of {} is not a hopback event ({err})",
                    *offset - n as u64,
                    path.display()
                ),
            }),
        }
        if out.len() >= FILE_BATCH {
            break; // bounded memory: the rest is read on the next call
        }
    }
    Ok(out)
}

/// One stream record as read: offset, body, the AMQP `user_id` property, and why its
/// properties cannot be read (when they cannot).
pub(super) type RawRecord = (Option<u64>, Vec<u8>, Option<String>, Option<String>);

/// The event in a stream record, or why it was skipped: properties the client cannot read
/// (its author is then unknown, and the record is not trusted), or a body that is not an event.
pub(super) fn read_record(
    (offset, bytes, user_id, unreadable): RawRecord,
) -> Result<Event, SkippedRecord> {
    if let Some(why) = unreadable {
        return Err(SkippedRecord {
            offset,
            why: format!("its AMQP properties cannot be read ({why})"),
        });
    }
    decode(&bytes, user_id).map_err(|err| SkippedRecord {
        offset,
        why: format!("not a hopback event ({} bytes: {err})", bytes.len()),
    })
}

/// Decode a stream record; its author is the `user_id` the broker verified on publish, unless
/// the record is larger than [`crate::ledger::event::MAX_VERIFIED_EVENT_BYTES`].
pub(super) fn decode(bytes: &[u8], user_id: Option<String>) -> Result<Event, serde_json::Error> {
    let mut e = serde_json::from_slice::<Event>(bytes)?;
    e.author = user_id
        .filter(|u| !u.is_empty())
        .filter(|_| bytes.len() <= crate::ledger::event::MAX_VERIFIED_EVENT_BYTES);
    Ok(e)
}
