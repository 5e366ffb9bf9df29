//! Two centers sharing one real PostgreSQL database (a throwaway cluster, or `XPOD_TEST_PG_URL`):
//! they register themselves, share pods and API keys, never serve a pod the other node owns from
//! their own data (without node certificates there is no mesh, so the answer is a fast 503
//! naming the owner; `mesh_centers.rs` has the meshed cluster), and a stopped node is marked
//! offline. This is the cluster mode the README describes; it fails if PostgreSQL is missing.

use serde_json::{json, Value};
use xpod_integration::curl::Curl;
use xpod_integration::node::NodeProcess;
use xpod_integration::pg::PgServer;

fn center(pg: &PgServer, region: &str) -> NodeProcess {
    NodeProcess::builder()
        .env("XPOD_DATABASE_URL", pg.url())
        .env("XPOD_REGION", region)
        .start()
}

fn node_status(nodes: &Value, id: &str) -> String {
    nodes["nodes"]
        .as_array()
        .expect("nodes array")
        .iter()
        .find(|n| n["nodeId"] == id)
        .unwrap_or_else(|| panic!("node {id} missing from {nodes}"))["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn two_centers_share_postgres() {
    let pg = PgServer::start().expect("PostgreSQL is required for this test");
    let mut a = center(&pg, "bj");
    let b = center(&pg, "gz");
    let key = a.admin_key();
    assert!(
        !b.data_dir().join("admin.key").exists(),
        "a center joining a database that already holds keys must not mint another bootstrap key"
    );
    let (a_id, b_id) = (a.node_id(), b.node_id());
    assert_ne!(a_id, b_id);

    // Keys live in the shared database: A's key works on B.
    let nodes = Curl::get(format!("{}/.cluster/nodes", b.url()))
        .bearer(&key)
        .send()
        .expect(200)
        .json();
    assert_eq!(node_status(&nodes, &a_id), "online");
    assert_eq!(node_status(&nodes, &b_id), "online");
    let regions: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["region"].as_str())
        .collect();
    assert!(
        regions.contains(&"bj") && regions.contains(&"gz"),
        "{nodes}"
    );

    // A pod created on A is owned by A; B knows it from the database.
    Curl::new("POST", format!("{}/.cluster/pods", a.url()))
        .bearer(&key)
        .json(&json!({"podId": "alice"}))
        .send()
        .expect(201);
    Curl::new("PUT", format!("{}/alice/a.txt", a.url()))
        .bearer(&key)
        .header("Content-Type: text/plain")
        .body(b"on a".to_vec())
        .send()
        .expect(201);
    let pod = Curl::get(format!("{}/.cluster/pods/alice", b.url()))
        .bearer(&key)
        .send()
        .expect(200)
        .json();
    assert_eq!(pod["nodeId"], a_id.as_str());
    assert_eq!(pod["epoch"], 1);
    // Creating it again on B is a conflict, not a second pod.
    Curl::new("POST", format!("{}/.cluster/pods", b.url()))
        .bearer(&key)
        .json(&json!({"podId": "alice"}))
        .send()
        .expect(409);

    // B does not serve A's pod: a clear error naming the owner, never stale or local data.
    let r = Curl::get(format!("{}/alice/a.txt", b.url()))
        .bearer(&key)
        .send()
        .expect(503);
    let body = r.json();
    assert_eq!(body["code"], "owner_unavailable");
    assert_eq!(body["details"]["owner"], a_id.as_str());
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no QUIC endpoint"),
        "{body}"
    );
    assert_eq!(r.header("x-xpod-node"), Some(b_id.as_str()));
    let r = Curl::new("PUT", format!("{}/alice/b.txt", b.url()))
        .bearer(&key)
        .header("Content-Type: text/plain")
        .body(b"on b".to_vec())
        .send()
        .expect(503);
    assert_eq!(r.json()["code"], "owner_unavailable");
    Curl::get(format!("{}/alice/b.txt", a.url()))
        .bearer(&key)
        .send()
        .expect(404);

    // A graceful stop marks A offline for everyone.
    assert!(a.terminate().success(), "node A should exit 0 on SIGTERM");
    let nodes = Curl::get(format!("{}/.cluster/nodes", b.url()))
        .bearer(&key)
        .send()
        .expect(200)
        .json();
    assert_eq!(node_status(&nodes, &a_id), "offline");
    assert_eq!(node_status(&nodes, &b_id), "online");
}
