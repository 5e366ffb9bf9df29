//! Issue 17, Solid-OIDC with real peers: the Community Solid Server (npm) is the identity
//! provider of two accounts, alice and bob; Inrupt's `@inrupt/solid-client-authn-node` logs them
//! in with client credentials and DPoP-bound tokens, and `@inrupt/solid-client` creates, reads,
//! patches and lists alice's xpod pod through the center that owns it and through the other one
//! (two centers on one real PostgreSQL). Bob, signed in but not in the pod's ACL, gets 403 and a
//! `WAC-Allow` that says what he may do (nothing); nobody gets 401 with a DPoP challenge. A
//! DPoP request replayed — to the same center, and to the other one under the same host name —
//! is refused as a replay.
//!
//! Needs Node.js and `integration/js/node_modules` (`npm ci --prefix integration/js`; the test
//! command `integration/run-tests.sh` installs both), PostgreSQL, curl, and the binary built.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xpod_integration::curl::Curl;
use xpod_integration::mesh::start_centers;
use xpod_integration::node::{free_port, TempDir};
use xpod_integration::pg::PgServer;

fn js_dir() -> PathBuf {
    let dir = std::env::var_os("XPOD_TEST_JS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js"));
    assert!(
        dir.join("node_modules/@solid/community-server").is_dir(),
        "the Solid peers are not installed in {}: run `npm ci --prefix integration/js` (integration/run-tests.sh does)",
        dir.display()
    );
    dir
}

/// The Community Solid Server, killed on drop.
struct Css {
    child: Child,
    base: String,
}

impl Drop for Css {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_css(js: &PathBuf, tmp: &TempDir) -> Css {
    let port = free_port();
    let base = format!("http://localhost:{port}/");
    let seed = tmp.path().join("seed.json");
    std::fs::write(
        &seed,
        json!([
            {"email": "alice@example.test", "password": "alice-pass-123", "pods": [{"name": "alice"}]},
            {"email": "bob@example.test", "password": "bob-pass-123", "pods": [{"name": "bob"}]}
        ])
        .to_string(),
    )
    .unwrap();
    let log = std::fs::File::create(tmp.path().join("css.log")).unwrap();
    let child = Command::new("node")
        .current_dir(js)
        .arg("node_modules/@solid/community-server/bin/server.js")
        .args(["-p", &port.to_string(), "-b", &base, "-l", "warn"])
        .arg("--seedConfig")
        .arg(&seed)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("starting the Community Solid Server (node)");
    let css = Css { child, base };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = Curl::get(format!("{}.well-known/openid-configuration", css.base)).send();
        if r.status == 200 {
            return css;
        }
        assert!(
            Instant::now() < deadline,
            "the Community Solid Server did not start within 90 s: {}",
            std::fs::read_to_string(tmp.path().join("css.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn solid_clients_use_a_pod_through_both_centers_with_dpop_tokens() {
    let js = js_dir();
    let tmp = TempDir::new("xpod-oidc");
    let css = start_css(&js, &tmp);
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    // The identity provider runs on localhost: the centers may fetch from it.
    let config = tmp.path().join("xpod.toml");
    std::fs::write(&config, "[solid]\nallow_private_fetch = true\n").unwrap();
    let config_path = config.display().to_string();
    let centers = start_centers(&tmp, &pg, 2, |_| vec![("XPOD_CONFIG", config_path.clone())]);
    let admin = centers[0].admin_key();
    let alice = format!("{}alice/profile/card#me", css.base);
    Curl::new("POST", format!("{}/.cluster/pods", centers[0].url()))
        .bearer(&admin)
        .json(&json!({"podId": "alice", "accountId": alice}))
        .send()
        .expect(201);

    // A group document on another server (this test's), naming bob; alice's `shared/`
    // container grants that group Read.
    let groups = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let group = format!("http://{}/groups#friends", groups.local_addr().unwrap());
    let bob = format!("{}bob/profile/card#me", css.base);
    let group_doc = format!(
        "@prefix vcard: <http://www.w3.org/2006/vcard/ns#>.\n<#friends> a vcard:Group; vcard:hasMember <{bob}>.\n"
    );
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for mut s in groups.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/turtle\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{group_doc}",
                group_doc.len()
            );
        }
    });
    let put = |path: &str, body: String| {
        Curl::new("PUT", format!("{}/alice/{path}", centers[0].url()))
            .bearer(&admin)
            .header("Content-Type: text/turtle")
            .body(body)
            .send()
            .expect(201)
    };
    put(
        "shared/note",
        "<#n> <http://schema.org/text> \"for friends\".".into(),
    );
    put(
        "shared/.acl",
        format!(
            "@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n<#friends> a acl:Authorization; \
             acl:agentGroup <{group}>; acl:accessTo <./>; acl:default <./>; acl:mode acl:Read."
        ),
    );

    let out = Command::new("node")
        .current_dir(&js)
        .arg("solid-oidc.mjs")
        .args([&css.base, &centers[0].url(), &centers[1].url()])
        .output()
        .expect("running node");
    assert!(
        out.status.success(),
        "the Solid client script failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(tmp.path().join("css.log")).unwrap_or_default()
    );
    let seen: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| l.starts_with(b"{"))
            .expect("the script prints its observations"),
    )
    .unwrap();

    assert_eq!(seen["readViaOther"], "hello", "{seen}");
    assert_eq!(seen["afterPatch"], "changed", "{seen}");
    assert_eq!(
        seen["patchSent"], true,
        "solid-client changed the document with PATCH: {seen}"
    );
    assert_eq!(seen["listed"], json!(["/alice/notes/first"]), "{seen}");
    assert_eq!(seen["bob"]["status"], 403, "{seen}");
    assert_eq!(seen["bob"]["wacAllow"], "user=\"\",public=\"\"", "{seen}");
    assert_eq!(
        seen["bobShared"]["status"], 200,
        "a member of a group on another server reads: {seen}"
    );
    assert_eq!(
        seen["bobShared"]["wacAllow"], "user=\"read\",public=\"\"",
        "{seen}"
    );
    assert_eq!(seen["anonymous"]["status"], 401, "{seen}");
    assert!(
        seen["anonymous"]["challenge"]
            .as_str()
            .is_some_and(|c| c.contains("DPoP")),
        "{seen}"
    );
    let last = &seen["lastGet"];
    assert_eq!(last["status"], 200, "{seen}");
    assert_eq!(
        last["wacAllow"], "user=\"read write append control\",public=\"\"",
        "the owner's WebID has every mode: {seen}"
    );

    // The audit log names the WebID that wrote.
    let audit = Curl::get(format!("{}/api/v1/audit", centers[0].url()))
        .bearer(&admin)
        .send()
        .expect(200);
    assert!(
        audit.text().contains(&format!("webid:{alice}")),
        "{}",
        audit.text()
    );

    // The same DPoP request again: refused as a replay, at the owner and through the other
    // center under the owner's host name (as it would be behind one DNS name).
    let url = last["url"].as_str().unwrap();
    let replay = |base: &str| {
        Curl::get(url.replace(&centers[0].url(), base))
            .header(format!("Host: {}", centers[0].addr()))
            .header(format!(
                "Authorization: {}",
                last["authorization"].as_str().unwrap()
            ))
            .header(format!("DPoP: {}", last["dpop"].as_str().unwrap()))
            .send()
    };
    for base in [centers[0].url(), centers[1].url()] {
        let r = replay(&base);
        assert_eq!(r.status, 401, "a replay via {base}: {}", r.text());
        assert_eq!(r.json()["details"]["reason"], "replayed", "{}", r.text());
        assert!(
            r.header("www-authenticate")
                .is_some_and(|c| c.contains("invalid_dpop_proof")),
            "{:?}",
            r.headers
        );
    }
}
