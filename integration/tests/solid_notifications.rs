//! Issue 17, Solid Notifications (WebSocketChannel2023) across two real centers on one real
//! PostgreSQL: a subscriber discovers the subscription endpoint in the storage description,
//! subscribes through the center that does not own the pod, opens its WebSocket there (a real
//! WebSocket client, tokio-tungstenite), and receives the Update of a write made through the
//! other center within a second — the event raised at the owner crosses the cluster through
//! PostgreSQL. A container subscriber gets Add and Remove; a subscription without Read on the
//! topic is refused; an unknown channel is 404. rdflib.js's UpdateManager (npm) patches the
//! document and the subscriber on the other center hears it; a WebhookChannel2023 channel
//! POSTs the notification to a receiver.
//!
//! Needs PostgreSQL, curl, Node.js with `integration/js/node_modules` (run-tests.sh installs
//! them) and the binary built.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use xpod_integration::curl::Curl;
use xpod_integration::mesh::start_centers;
use xpod_integration::node::TempDir;
use xpod_integration::pg::PgServer;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

fn js_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("XPOD_TEST_JS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js"));
    assert!(
        dir.join("node_modules/rdflib").is_dir(),
        "rdflib.js is not installed in {}: run `npm ci --prefix integration/js` (integration/run-tests.sh does)",
        dir.display()
    );
    dir
}

/// Opens a WebSocket to a `ws://host:port/…` URL.
async fn connect(url: &str) -> Result<Ws, String> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .ok_or_else(|| format!("{url} is not ws://"))?;
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    tokio_tungstenite::client_async(url, tcp)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

fn subscribe(center: &str, key: Option<&str>, topic: &str) -> (u16, Value) {
    let mut c = Curl::new(
        "POST",
        format!("{center}/alice/.notifications/WebSocketChannel2023/"),
    )
    .header("Content-Type: application/ld+json")
    .body(
        json!({"@context": ["https://www.w3.org/ns/solid/notification/v1"],
                   "type": "http://www.w3.org/ns/solid/notifications#WebSocketChannel2023",
                   "topic": topic})
        .to_string(),
    );
    if let Some(k) = key {
        c = c.bearer(k);
    }
    let r = c.send();
    (
        r.status,
        serde_json::from_str(&r.text()).unwrap_or(Value::Null),
    )
}

/// The next notification of `ws` (skipping pings), within `limit`.
async fn next(ws: &mut Ws, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, ws.next())
            .await
            .expect("a notification within the limit")
            .expect("the socket is open")
            .expect("a WebSocket message");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_through_one_center_notify_subscribers_on_the_other() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let tmp = TempDir::new("xpod-notify");
    // Webhook channels deliver to this test's receiver on 127.0.0.1.
    let config = tmp.path().join("xpod.toml");
    std::fs::write(&config, "[sandbox]\nwebhooks_allow_private = true\n").unwrap();
    let config = config.display().to_string();
    let centers = start_centers(&tmp, &pg, 2, |_| vec![("XPOD_CONFIG", config.clone())]);
    let (owner, other) = (centers[0].url(), centers[1].url());
    let key = centers[0].admin_key();
    Curl::new("POST", format!("{owner}/.cluster/pods"))
        .bearer(&key)
        .json(&json!({"podId": "alice"}))
        .send()
        .expect(201);
    let (put_owner, put_key) = (owner.clone(), key.clone());
    let put = std::sync::Arc::new(move |body: &str| {
        Curl::new("PUT", format!("{put_owner}/alice/notes/today"))
            .bearer(&put_key)
            .header("Content-Type: text/turtle")
            .body(body.to_string())
            .send()
    });
    put("<#a> <http://e/p> 1.").expect(201);

    // Discovery: the storage description names the endpoint.
    let d = Curl::get(format!("{other}/alice/.well-known/solid"))
        .send()
        .expect(200)
        .text();
    assert!(
        d.contains("notify:subscription")
            && d.contains("/alice/.notifications/WebSocketChannel2023/"),
        "{d}"
    );

    // A topic path that steps out of where it points is refused (the request path rules).
    let (status, _) = subscribe(
        &other,
        Some(&key),
        &format!("{other}/alice/public/../notes/today"),
    );
    assert_eq!(status, 400);

    // Without Read on the topic: refused, no channel.
    let (status, _) = subscribe(&other, None, &format!("{other}/alice/notes/today"));
    assert_eq!(status, 401);

    // Subscribe through the center that does not own the pod, to the document and to its
    // container; open both sockets there.
    let (status, doc_ch) = subscribe(&other, Some(&key), &format!("{other}/alice/notes/today"));
    assert_eq!(status, 200, "{doc_ch}");
    assert_eq!(
        doc_ch["type"],
        "http://www.w3.org/ns/solid/notifications#WebSocketChannel2023"
    );
    let receive = doc_ch["receiveFrom"].as_str().unwrap();
    assert!(
        receive.starts_with(&other.replace("http://", "ws://")),
        "{doc_ch}"
    );
    let mut doc_ws = connect(receive).await.expect("WebSocket");
    let (status, dir_ch) = subscribe(&other, Some(&key), &format!("{other}/alice/notes/"));
    assert_eq!(status, 200, "{dir_ch}");
    let mut dir_ws = connect(dir_ch["receiveFrom"].as_str().unwrap())
        .await
        .expect("WebSocket");
    // Let the registrations settle before the write.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A write through the owner: the subscriber on the other center hears it within a second.
    let started = Instant::now();
    let first = put.clone();
    let r = tokio::task::spawn_blocking(move || first("<#a> <http://e/p> 2."))
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    let etag = r.header("etag").unwrap().to_string();
    let m = next(&mut doc_ws, Duration::from_secs(1)).await;
    println!(
        "Update reached the other center's subscriber after {:?}",
        started.elapsed()
    );
    assert_eq!(m["type"], "Update", "{m}");
    assert_eq!(m["object"], format!("{other}/alice/notes/today"), "{m}");
    assert_eq!(m["state"], etag, "{m}");

    // rdflib.js's UpdateManager patches the document through the owner (it learns from the
    // answer's headers that the document takes SPARQL Update); the subscriber on the other
    // center hears the Update within a second.
    let js = js_dir();
    let doc_url = format!("{owner}/alice/notes/today");
    let k = key.clone();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .current_dir(&js)
            .args(["rdflib-patch.mjs", &doc_url, &k, "from rdflib"])
            .output()
            .expect("running node")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "rdflib: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let m = next(&mut doc_ws, Duration::from_secs(1)).await;
    println!(
        "rdflib's patch reached the other center's subscriber after {:?} (node start included)",
        started.elapsed()
    );
    assert_eq!(m["type"], "Update", "{m}");
    let body = Curl::get(format!("{owner}/alice/notes/today"))
        .bearer(&key)
        .send()
        .expect(200)
        .text();
    assert!(body.contains("from rdflib"), "{body}");

    // A new member: Add on the container; its deletion: Remove.
    let owner2 = owner.clone();
    let key2 = key.clone();
    tokio::task::spawn_blocking(move || {
        Curl::new("PUT", format!("{owner2}/alice/notes/tomorrow"))
            .bearer(&key2)
            .header("Content-Type: text/plain")
            .body("later")
            .send()
            .expect(201);
        Curl::new("DELETE", format!("{owner2}/alice/notes/tomorrow"))
            .bearer(&key2)
            .send()
            .expect(204);
    })
    .await
    .unwrap();
    let add = next(&mut dir_ws, Duration::from_secs(2)).await;
    assert_eq!(
        (add["type"].as_str(), add["object"].as_str()),
        (
            Some("Add"),
            Some(format!("{other}/alice/notes/tomorrow").as_str())
        ),
        "{add}"
    );
    assert_eq!(add["target"], format!("{other}/alice/notes/"), "{add}");
    let remove = next(&mut dir_ws, Duration::from_secs(2)).await;
    assert_eq!(remove["type"], "Remove", "{remove}");

    // A webhook channel (subscribed through the other center): the write's notification is
    // POSTed to the receiver as JSON-LD by the webhook machinery.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let send_to = format!("http://{}/inbox", receiver.local_addr().unwrap());
    let r = Curl::new(
        "POST",
        format!("{other}/alice/.notifications/WebhookChannel2023/"),
    )
    .bearer(&key)
    .header("Content-Type: application/ld+json")
    .body(
        json!({"type": "WebhookChannel2023", "topic": format!("{other}/alice/notes/today"),
                   "sendTo": send_to})
        .to_string(),
    )
    .send();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["sendTo"], send_to.as_str());
    let put_again = put.clone();
    tokio::task::spawn_blocking(move || put_again("<#a> <http://e/p> 3.").expect(204))
        .await
        .unwrap();
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), receiver.accept())
        .await
        .expect("the webhook delivery within 10 s")
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, String)>(1);
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let ct = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .unwrap()
                .to_bytes();
            let _ = tx
                .send((ct, String::from_utf8_lossy(&body).to_string()))
                .await;
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        }
    });
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc),
    );
    let (ct, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ct, "application/ld+json");
    let m: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(m["type"], "Update", "{m}");
    assert_eq!(m["object"], format!("{other}/alice/notes/today"), "{m}");
    // A private destination is refused unless allowed (it is, here); a bad URL never.
    let r = Curl::new("POST", format!("{other}/alice/.notifications/WebhookChannel2023/"))
        .bearer(&key)
        .body(json!({"type": "WebhookChannel2023", "topic": format!("{other}/alice/notes/today"), "sendTo": "ftp://x"}).to_string())
        .send();
    assert_eq!(r.status, 422, "{}", r.text());

    // An unknown channel.
    let bogus =
        receive.rsplit_once('/').unwrap().0.to_string() + "/0123456789abcdef0123456789abcdef";
    assert!(connect(&bogus).await.is_err());
}
