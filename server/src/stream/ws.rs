//! `GET /v1/ws`: subscriptions over a WebSocket (protocol in `tidemark_protocol::stream`).
//!
//! Two tasks per socket: this session task (client frames, hub changes, keepalive) and a
//! writer task fed through a bounded queue (`stream_queue_size`, default 256 frames) that
//! coalesces frames into few socket writes. A busy session takes the hub's changes once per
//! coalescing window, all together, rather than waking for each. When the queue is full the
//! session stops taking changes from the hub (the publisher never waits on anyone), and once
//! the peer has drained it, says `lagged` and catches up from the log. A peer that drains
//! nothing for `stream_stall_timeout_seconds` (30) gets its cursor in a close frame.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tidemark_protocol::stream::{self, ClientFrame, ServerFrame};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Outgoing, Session};
use crate::auth::Identity;
use crate::state::AppState;

/// How often a lagging socket that is being fed from the log is offered more.
const CATCH_UP_PACE: Duration = Duration::from_millis(2);

/// Stream settings, read once per connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames queued per socket before it counts as lagging.
    pub queue: usize,
    /// A socket that drains nothing for this long is closed with its cursor.
    pub stall: Duration,
    /// Server pings this often; a peer silent for two intervals is dropped.
    pub ping: Duration,
    /// A busy socket is written at most once per this window (see `write_loop`).
    pub coalesce: Duration,
}

impl Limits {
    pub fn from_state(state: &AppState) -> Limits {
        let streams = &state.settings.streams;
        Limits {
            queue: streams.queue_size,
            stall: streams.stall_timeout,
            ping: streams.ping_interval,
            coalesce: streams.coalesce,
        }
    }
}

fn error_frame(id: Option<&str>, err: &tidemark_protocol::ApiError) -> Outgoing {
    let text =
        ServerFrame::error(id, err.status, err.errno as u16, err.message.as_deref().unwrap_or(&err.error)).to_string();
    Outgoing::control(text, 0)
}

/// Writes queued frames, feeding every frame already waiting before one flush. A socket flushed
/// less than `linger` ago first waits out the rest of that window, taking what else arrives: a
/// busy socket gets one write per window rather than one per change (each loopback or network
/// write costs far more than a frame), an idle one is written at once.
async fn write_loop(mut sink: SplitSink<WebSocket, Message>, mut queue: mpsc::Receiver<Message>, linger: Duration) {
    let mut last_flush: Option<Instant> = None;
    while let Some(first) = queue.recv().await {
        let mut closing = matches!(first, Message::Close(_));
        if sink.feed(first).await.is_err() {
            return;
        }
        // Sleeping rather than receiving: the frames wait in the queue without waking this task.
        if let Some(until) = last_flush.map(|at| at + linger).filter(|until| !closing && Instant::now() < *until) {
            tokio::time::sleep_until(until).await;
        }
        while let Ok(next) = queue.try_recv() {
            closing |= matches!(next, Message::Close(_));
            if sink.feed(next).await.is_err() {
                return;
            }
            if closing {
                break;
            }
        }
        if sink.flush().await.is_err() || closing {
            return;
        }
        last_flush = Some(Instant::now());
    }
}

fn handle_frame(session: &mut Session, state: &AppState, text: &str, by_frame: &mut bool) -> FrameAction {
    match ClientFrame::parse(text) {
        Err(why) => FrameAction::Send(vec![Outgoing::control(ServerFrame::error(None, 400, 107, &why).to_string(), 0)]),
        Ok(ClientFrame::Auth { authorization }) => {
            if *by_frame || !session.subscriptions.is_empty() {
                let text = ServerFrame::error(None, 400, 107, "auth must come first, once").to_string();
                FrameAction::Send(vec![Outgoing::control(text, 0)])
            } else {
                *by_frame = true;
                FrameAction::Authenticate(authorization)
            }
        }
        Ok(ClientFrame::Subscribe { id, filter, since, snapshot }) => {
            FrameAction::Send(match stream::parse_since(since.as_ref()) {
                Err(why) => vec![Outgoing::control(ServerFrame::error(Some(&id), 400, 107, &why).to_string(), 0)],
                Ok(since) => match session.subscribe(id.clone(), *filter, since, snapshot) {
                    Ok(frames) => frames,
                    Err(err) => vec![error_frame(Some(&id), &err)],
                },
            })
        }
        Ok(ClientFrame::Unsubscribe { id }) => FrameAction::Send(if session.unsubscribe(&id) {
            Vec::new()
        } else {
            vec![Outgoing::control(ServerFrame::error(Some(&id), 404, 111, "unknown subscription").to_string(), 0)]
        }),
        Ok(ClientFrame::Ping { id }) => {
            let head = state.engine.last_seq().unwrap_or(0);
            FrameAction::Send(vec![Outgoing::control(
                ServerFrame::pong(id.as_deref(), &stream::cursor(head)).to_string(),
                head,
            )])
        }
    }
}

enum FrameAction {
    Send(Vec<Outgoing>),
    Authenticate(String),
}

/// Serves one socket until the peer leaves, stalls, or goes silent.
pub async fn run(socket: WebSocket, state: AppState, identity: Identity) {
    let _connection = crate::metrics::StreamConnection::open(&state.stream_connections);
    let limits = Limits::from_state(&state);
    let hub = state.hub();
    let mut changes = hub.subscribe();
    let (sink, mut incoming) = socket.split();
    let (queue, queued) = mpsc::channel::<Message>(limits.queue);
    let writer = tokio::spawn(write_loop(sink, queued, limits.coalesce));
    let mut session = Session::new(state.clone(), identity);
    // Timers only where needed: an idle socket wakes for keepalive alone.
    let mut ping = tokio::time::interval_at(Instant::now() + limits.ping, limits.ping);
    let lag_check_every = Duration::from_millis(100).min(limits.stall / 2).max(Duration::from_millis(10));
    let mut last_heard = Instant::now();
    let mut by_frame = false;
    // Since when the queue has been too full to take changes (or the log feeding it made
    // progress), and whether the client was told.
    let mut lagging: Option<Instant> = None;
    let mut told_lagged = false;

    // Queues frames without waiting; returns false when the queue is full (the rest dropped,
    // their subscriptions rewound so the log redelivers them).
    let push = |session: &mut Session, frames: Vec<Outgoing>| -> bool {
        let mut full = false;
        for frame in frames {
            if full {
                if let Some(index) = frame.subscription {
                    session.rewind(index, frame.cursor);
                }
                continue;
            }
            if queue.try_send(Message::Text(Utf8Bytes::from(frame.text))).is_err() {
                crate::metrics::STREAM_QUEUE_FULL.fetch_add(1, Ordering::Relaxed);
                full = true;
                if let Some(index) = frame.subscription {
                    session.rewind(index, frame.cursor);
                }
            }
        }
        let depth = limits.queue.saturating_sub(queue.capacity());
        crate::metrics::STREAM_QUEUE_DEEPEST.fetch_max(i64::try_from(depth).unwrap_or(i64::MAX), Ordering::Relaxed);
        !full
    };

    // When hub changes were last taken (see the coalescing in the change branch).
    let mut last_taken: Option<Instant> = None;
    let mut stopping = state.shutdown.subscribe();

    'serve: loop {
        tokio::select! {
            message = incoming.next() => {
                let Some(Ok(message)) = message else { break };
                last_heard = Instant::now();
                let Message::Text(text) = message else {
                    if matches!(message, Message::Close(_)) { break }
                    continue;
                };
                let frames = match handle_frame(&mut session, &state, text.as_str(), &mut by_frame) {
                    FrameAction::Send(frames) => frames,
                    FrameAction::Authenticate(authorization) => match state.identify(Some(authorization.as_bytes()), None).await {
                        Ok(mut identity) => {
                            // The socket's application is the upgrade's.
                            identity.namespace = std::mem::take(&mut session.identity.namespace);
                            session.identity = identity;
                            Vec::new()
                        }
                        Err(err) => vec![error_frame(None, &err)],
                    },
                };
                // Answers to the client wait for room rather than being dropped.
                for frame in frames {
                    if tokio::time::timeout(limits.stall, queue.send(Message::Text(Utf8Bytes::from(frame.text)))).await.is_err() {
                        break;
                    }
                }
            }
            change = changes.recv(), if lagging.is_none() => {
                let mut next = change;
                // Taken less than a window ago: let the rest of the window's changes gather in
                // the hub's ring (this task asleep, not woken once per change), then take them
                // all and hand the writer one batch.
                if let Some(until) = last_taken.map(|at| at + limits.coalesce).filter(|until| Instant::now() < *until) {
                    tokio::time::sleep_until(until).await;
                }
                loop {
                    match next {
                        Ok(change) => match session.on_change(&change) {
                            Ok(frames) => {
                                if !push(&mut session, frames) {
                                    lagging = Some(Instant::now());
                                    break;
                                }
                            }
                            Err(_) => break 'serve,
                        },
                        // Fell behind the hub's ring: the next change fills the gap from the log.
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => break 'serve,
                    }
                    next = match changes.try_recv() {
                        Ok(change) => Ok(change),
                        Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                        Err(TryRecvError::Closed) => Err(RecvError::Closed),
                        Err(TryRecvError::Empty) => break,
                    };
                }
                last_taken = Some(Instant::now());
            },
            _ = tokio::time::sleep(if told_lagged { CATCH_UP_PACE } else { lag_check_every }), if lagging.is_some() => {
                let Some(since) = lagging else { continue };
                if queue.capacity() * 2 >= limits.queue {
                    // Drained: say so (once per lag), then feed it from the log, as much as the
                    // queue takes, until it reaches the head. Subscribing again first means any
                    // change past the head read below comes through the hub: none is missed.
                    changes = changes.resubscribe();
                    let mut frames: Vec<Outgoing> = Vec::new();
                    if !told_lagged {
                        told_lagged = true;
                        frames.extend(session.subscriptions.iter().map(|s| {
                            Outgoing::control(ServerFrame::lagged(&s.id, &stream::cursor(s.delivered)).to_string(), s.delivered)
                        }));
                    }
                    let head = state.engine.last_seq().unwrap_or(0);
                    let budget = queue.capacity().saturating_sub(frames.len()).max(1);
                    let Ok((more, caught_up)) = session.catch_up_all(head, budget) else { break };
                    frames.extend(more);
                    let fitted = push(&mut session, frames);
                    lagging = if fitted && caught_up { None } else { Some(Instant::now()) };
                    told_lagged &= lagging.is_some();
                } else if since.elapsed() > limits.stall {
                    close_with_cursor(&queue, &session, limits).await;
                    break;
                }
            }
            _ = stopping.changed() => {
                // The server is going away: "going away" (1001), with the cursor to resume from.
                let reason = Utf8Bytes::from(stream::cursor(session.cursor()));
                let close = Message::Close(Some(CloseFrame { code: 1001, reason }));
                let _ = tokio::time::timeout(Duration::from_secs(1), queue.send(close)).await;
                break;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > limits.ping * 2 {
                    break;
                }
                let _ = queue.try_send(Message::Ping(Default::default()));
            }
        }
    }
    drop(queue);
    // Give the writer a moment to deliver what it holds (a close frame with the cursor).
    let _ = tokio::time::timeout(goodbye_deadline(limits), writer).await;
}

/// How long a stalled peer's task waits for room to say goodbye before it drops the socket.
fn goodbye_deadline(limits: Limits) -> Duration {
    (limits.stall * 4).max(Duration::from_secs(30))
}

/// A stalled peer: tell each subscription it lagged, then close with the resume cursor.
async fn close_with_cursor(queue: &mpsc::Sender<Message>, session: &Session, limits: Limits) {
    let deadline = goodbye_deadline(limits);
    for sub in &session.subscriptions {
        let note = ServerFrame::lagged(&sub.id, &stream::cursor(sub.delivered)).to_string();
        if tokio::time::timeout(deadline, queue.send(Message::Text(Utf8Bytes::from(note)))).await.is_err() {
            return;
        }
    }
    let reason = Utf8Bytes::from(stream::cursor(session.cursor()));
    let close = Message::Close(Some(CloseFrame { code: 4008, reason }));
    let _ = tokio::time::timeout(deadline, queue.send(close)).await;
}
