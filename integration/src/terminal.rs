//! A terminal WebSocket client for the tests (`/api/v1/sandboxes/{id}/terminal`): a script
//! of steps (send keys, resize, wait for output), then what the server said — the output,
//! the exit code and how the socket was closed. Synchronous: it runs its own small runtime.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

/// One step of a session.
pub enum Step {
    /// Bytes typed into the terminal.
    Keys(&'static [u8]),
    /// A text message as it is (a resize, or something the server must refuse).
    Text(String),
    /// Wait until the output so far contains this (at most 20 s).
    Expect(&'static str),
    /// Wait this long.
    Sleep(Duration),
}

/// A resize control message.
pub fn resize(rows: u16, cols: u16) -> Step {
    Step::Text(format!(r#"{{"resize":{{"rows":{rows},"cols":{cols}}}}}"#))
}

/// What the server sent.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Everything the terminal printed.
    pub output: String,
    /// From the `{"exit":{"code":N}}` message.
    pub exit: Option<i64>,
    /// The close frame's code and reason (`None`: no close frame).
    pub close: Option<(u16, String)>,
}

/// A refused upgrade: the HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// Runs `steps` on the terminal at `url` (`http://…/terminal?…`), then reads until the server
/// closes (at most 30 s).
pub fn session(url: &str, key: Option<&str>, steps: Vec<Step>) -> Result<Outcome, Refused> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run(url, key, steps))
}

async fn run(url: &str, key: Option<&str>, steps: Vec<Step>) -> Result<Outcome, Refused> {
    let ws_url = url.replacen("http://", "ws://", 1);
    let authority = ws_url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .expect("an authority")
        .to_string();
    let mut req = ws_url.as_str().into_client_request().expect("a URL");
    if let Some(k) = key {
        req.headers_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("the node listens");
    let ws = match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            return Err(Refused {
                status: resp.status().as_u16(),
                body: String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
                    .into_owned(),
            })
        }
        Err(e) => panic!("the terminal handshake failed: {e}"),
    };
    let (mut tx, mut rx) = ws.split();
    let mut out = Outcome::default();
    let mut bytes = Vec::new();
    let read = |m: Message, out: &mut Outcome, bytes: &mut Vec<u8>| -> bool {
        match m {
            Message::Binary(b) => bytes.extend_from_slice(&b),
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("JSON text");
                out.exit = v["exit"]["code"].as_i64();
            }
            Message::Close(f) => {
                out.close = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                return false;
            }
            _ => {}
        }
        true
    };
    let mut open = true;
    for step in steps {
        match step {
            Step::Keys(k) => {
                let _ = tx.send(Message::Binary(k.to_vec().into())).await;
            }
            Step::Text(t) => {
                let _ = tx.send(Message::Text(t.into())).await;
            }
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::Expect(want) => {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while open && !String::from_utf8_lossy(&bytes).contains(want) {
                    match tokio::time::timeout_at(deadline, rx.next()).await {
                        Ok(Some(Ok(m))) => open = read(m, &mut out, &mut bytes),
                        Ok(_) => open = false,
                        Err(_) => panic!(
                            "no {want:?} within 20 s; the terminal printed {:?}",
                            String::from_utf8_lossy(&bytes)
                        ),
                    }
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while open {
        match tokio::time::timeout_at(deadline, rx.next()).await {
            Ok(Some(Ok(m))) => open = read(m, &mut out, &mut bytes),
            Ok(_) => open = false,
            Err(_) => panic!(
                "the terminal did not end within 30 s; it printed {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    out.output = String::from_utf8_lossy(&bytes).into_owned();
    Ok(out)
}
