//! What the node reads from a sandbox's supervisor, which it does not trust (issue 15): lines
//! of at most [`MAX_LINE`] bytes, at most [`MAX_EVENTS_PER_SEC`] events a second per command,
//! a bounded channel to the caller; a command with a `timeout` that has not ended
//! [`TIMEOUT_GRACE`] after it gets an `error` and the sandbox is killed from outside; a ping or
//! connect answer must come within [`ANSWER_WITHIN`]. Used by [`super::runtime`].

use std::time::Duration;

use tokio::io::{AsyncWriteExt as _, BufReader};

use super::killer::Killer;
use super::proto::Event;

/// Longest line the node reads from a supervisor (an output event carries at most 32 KiB,
/// about 44 KiB in base64).
pub const MAX_LINE: usize = 64 * 1024;
/// Events per second the node takes from one exec at most (more wait in the socket).
pub const MAX_EVENTS_PER_SEC: u32 = 2_000;
/// How long past its `timeout` an exec may go without `end` before the node kills the sandbox.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(5);
/// How long the node waits for a supervisor's answer to a ping or a port connection.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Reads the supervisor's answer to a ping, a port connection or a terminal.
pub async fn answer<R: tokio::io::AsyncRead + Unpin>(conn: &mut R) -> anyhow::Result<Event> {
    Ok(serde_json::from_slice::<Event>(
        &crate::netio::answer_line(conn, "the sandbox's supervisor", ANSWER_WITHIN).await?,
    )?)
}

/// Sends `out` (the request and stdin) on `w` while reading `r`'s events into `tx`, within the
/// bounds above, until `end` or `error` (then the connection is dropped).
pub async fn pump(
    r: tokio::net::unix::OwnedReadHalf,
    mut w: tokio::net::unix::OwnedWriteHalf,
    out: Vec<u8>,
    deadline: Option<tokio::time::Instant>,
    killer: Killer,
    tx: tokio::sync::mpsc::Sender<Event>,
) {
    // Stdin goes in while events come out (a supervisor that does not read cannot
    // block the node); the write half stays open until the end, or stdin ends early.
    let write = async {
        let _ = w.write_all(&out).await;
        std::future::pending::<()>().await
    };
    let read = async {
        let mut r = BufReader::new(r);
        let mut window = (tokio::time::Instant::now(), 0u32);
        let overdue = || async {
            killer.kill();
            let message =
                "the command did not end at its timeout; the node stopped the sandbox".to_string();
            let _ = tx.send(Event::Error { message }).await;
        };
        loop {
            // (A supervisor that always has a line ready must not outrun the deadline.)
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return overdue().await;
            }
            let line = crate::netio::read_line_bounded(&mut r, MAX_LINE);
            let line = match deadline {
                Some(d) => match tokio::time::timeout_at(d, line).await {
                    Ok(line) => line,
                    Err(_) => return overdue().await,
                },
                None => line.await,
            };
            let ev = match line {
                Ok(Some(line)) => match serde_json::from_slice::<Event>(&line) {
                    Ok(ev @ (Event::Connected | Event::Ready)) => Event::Error {
                        message: format!("unexpected event from the sandbox's supervisor: {ev:?}"),
                    },
                    Ok(ev) => ev,
                    Err(e) => Event::Error {
                        message: format!("bad event from the sandbox's supervisor: {e}"),
                    },
                },
                Ok(None) => Event::Error {
                    message: "the sandbox's supervisor went away during the command".into(),
                },
                Err(e) => Event::Error {
                    message: format!(
                        "the sandbox's supervisor sent {e}; the command's stream is closed"
                    ),
                },
            };
            let last = matches!(ev, Event::End { .. } | Event::Error { .. });
            if tx.send(ev).await.is_err() || last {
                return;
            }
            // At most MAX_EVENTS_PER_SEC: a flood waits in the socket, not in the node.
            window.1 += 1;
            if window.1 >= MAX_EVENTS_PER_SEC {
                tokio::time::sleep_until(window.0 + Duration::from_secs(1)).await;
                window = (tokio::time::Instant::now(), 0);
            }
        }
    };
    tokio::select! {
        () = read => {}
        () = write => {}
    }
}
