//! `GET /v1/ws`: subscriptions over a WebSocket (protocol in `tidemark_protocol::stream`).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tidemark_protocol::stream::{self, ClientFrame, ServerFrame};
use tokio::sync::broadcast::error::RecvError;

use super::{Outgoing, Session};
use crate::auth::Identity;
use crate::state::AppState;

/// Stream settings, read once per connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A send that makes no progress for this long closes the connection with its cursor.
    pub stall: Duration,
    /// Server pings this often; a peer silent for two intervals is dropped.
    pub ping: Duration,
}

impl Limits {
    pub fn from_state(state: &AppState) -> Limits {
        let secs =
            |key: &str, default: u64| state.settings.raw.get(key).and_then(|v| v.parse().ok()).unwrap_or(default);
        Limits {
            stall: Duration::from_secs(secs("stream_stall_timeout_seconds", 30)),
            ping: Duration::from_secs(secs("stream_ping_interval_seconds", 20)),
        }
    }
}

fn error_frame(id: Option<&str>, err: &tidemark_protocol::ApiError) -> String {
    ServerFrame::error(id, err.status, err.errno as u16, err.message.as_deref().unwrap_or(&err.error)).to_string()
}

/// Serves one socket until the peer leaves, stalls, or goes silent.
pub async fn run(socket: WebSocket, state: AppState, identity: Identity) {
    let limits = Limits::from_state(&state);
    let hub = state.hub();
    let mut changes = hub.subscribe();
    let (mut sink, mut incoming) = socket.split();
    let mut session = Session::new(state.clone(), identity);
    let mut ping = tokio::time::interval(limits.ping);
    ping.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let mut authenticated_by_frame = false;

    macro_rules! send_all {
        ($frames:expr) => {{
            let mut ok = true;
            for frame in $frames {
                let sent =
                    tokio::time::timeout(limits.stall, sink.send(Message::Text(Utf8Bytes::from(frame.text)))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    ok = false;
                    break;
                }
            }
            ok
        }};
    }

    loop {
        let frames: Vec<Outgoing> = tokio::select! {
            message = incoming.next() => {
                let Some(Ok(message)) = message else { break };
                last_heard = tokio::time::Instant::now();
                let text = match message {
                    Message::Text(text) => text.to_string(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                match ClientFrame::parse(&text) {
                    Err(why) => vec![Outgoing { text: ServerFrame::error(None, 400, 107, &why).to_string(), cursor: 0 }],
                    Ok(ClientFrame::Auth { authorization }) => {
                        if authenticated_by_frame || !session.subscriptions.is_empty() {
                            let text = ServerFrame::error(None, 400, 107, "auth must come first, once").to_string();
                            vec![Outgoing { text, cursor: 0 }]
                        } else {
                            authenticated_by_frame = true;
                            session.identity = state.identify(Some(authorization.as_bytes())).await;
                            Vec::new()
                        }
                    }
                    Ok(ClientFrame::Subscribe { id, filter, since, snapshot }) => {
                        let since = stream::parse_since(since.as_ref());
                        match since {
                            Err(why) => vec![Outgoing { text: ServerFrame::error(Some(&id), 400, 107, &why).to_string(), cursor: 0 }],
                            Ok(since) => match session.subscribe(id.clone(), filter, since, snapshot) {
                                Ok(frames) => frames,
                                Err(err) => vec![Outgoing { text: error_frame(Some(&id), &err), cursor: 0 }],
                            },
                        }
                    }
                    Ok(ClientFrame::Unsubscribe { id }) => {
                        if session.unsubscribe(&id) {
                            Vec::new()
                        } else {
                            vec![Outgoing { text: ServerFrame::error(Some(&id), 404, 111, "unknown subscription").to_string(), cursor: 0 }]
                        }
                    }
                    Ok(ClientFrame::Ping { id }) => {
                        let head = state.engine.last_seq().unwrap_or(0);
                        vec![Outgoing { text: ServerFrame::pong(id.as_deref(), &stream::cursor(head)).to_string(), cursor: head }]
                    }
                }
            }
            change = changes.recv() => match change {
                Ok(change) => match session.on_change(&change) {
                    Ok(frames) => frames,
                    Err(_) => break,
                },
                Err(RecvError::Lagged(_)) => {
                    // Tell each subscription it is catching up; the next change fills the gap
                    // from the log.
                    session
                        .subscriptions
                        .iter()
                        .map(|s| Outgoing { text: ServerFrame::lagged(&s.id, &stream::cursor(s.delivered)).to_string(), cursor: s.delivered })
                        .collect()
                }
                Err(RecvError::Closed) => break,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > limits.ping * 2 {
                    break;
                }
                if tokio::time::timeout(limits.stall, sink.send(Message::Ping(Default::default()))).await.is_err() {
                    break;
                }
                continue;
            }
        };
        if !send_all!(frames) {
            // Stalled or gone: close with the cursor so the client can resume.
            let reason = stream::cursor(session.cursor());
            let close = Message::Close(Some(CloseFrame { code: 4008, reason: Utf8Bytes::from(reason) }));
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
            break;
        }
    }
}
