//! The SQLite backend against the conformance suite (one test per check in memory; the whole
//! suite twice on disk), plus reopening.

use std::path::PathBuf;
use std::sync::Arc;

use xpod_storage::meta::parts::*;
use xpod_storage::meta::sqlite::SqliteStore;
use xpod_storage::meta::{
    conformance, AccessMode, EtagCondition, Fence, MetaError, MetaStore, NewPod, NodeRecord,
    NodeStatus, NodeType, Precondition, PutResource,
};

/// A fresh directory under the system temp dir, removed on drop (also when a test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xpod-{tag}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// A database path one level down, so `open` has to create the parent directory.
    fn db_path(&self) -> String {
        self.0
            .join("meta")
            .join("xpod.db")
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every conformance check as its own test, each on a fresh in-memory database.
mod conformance_in_memory {
    use super::*;

    xpod_storage::conformance_tests!((
        (),
        Arc::new(SqliteStore::open_in_memory().await.expect("open in memory"))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_disk_twice() {
    let dir = TempDir::new("meta-conf");
    let store: Arc<dyn MetaStore> =
        Arc::new(SqliteStore::open(&dir.db_path()).await.expect("open file"));
    conformance::run_all(Arc::clone(&store)).await;
    // Again on the same database: the checks must not trip over their own earlier rows.
    conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_by_url() {
    let store = xpod_storage::meta::open("sqlite::memory:", 1)
        .await
        .expect("open sqlite::memory:");
    assert_eq!(store.backend(), "sqlite");
    store.ping().await.expect("ping");
    let dir = TempDir::new("meta-url");
    let store = xpod_storage::meta::open(&format!("sqlite://{}", dir.db_path()), 1)
        .await
        .expect("open sqlite://PATH");
    store.ping().await.expect("ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data() {
    let dir = TempDir::new("meta-reopen");
    let path = dir.db_path();
    let node = NodeRecord {
        node_id: "n1".into(),
        node_type: NodeType::Edge,
        region: "eu-1".into(),
        internal_address: None,
        public_address: None,
        quic_address: None,
        status: NodeStatus::Online,
        attached_centers: vec!["c1".into()],
        capacity: serde_json::json!({ "freeBytes": 10 }),
        version: "0.1.0".into(),
        last_heartbeat: 1,
    };
    let fence = Fence {
        node_id: "n1".into(),
        epoch: 1,
    };
    let put = PutResource {
        pod_id: "alice".into(),
        path: "/notes/a.txt".into(),
        content_type: Some("text/plain".into()),
        size: 3,
        blob_key: Some("blobs/alice/1".into()),
        regions: vec!["eu-1".into()],
    };

    let written = {
        let store = SqliteStore::open(&path).await.expect("first open");
        store.upsert_node(&node).await.expect("upsert node");
        store
            .create_pod(&NewPod {
                pod_id: "alice".into(),
                base_url: "https://alice.example/".into(),
                account_id: None,
                node_id: "n1".into(),
                access_mode: AccessMode::Private,
            })
            .await
            .expect("create pod");
        store
            .put_resource(&fence, &put, &Precondition::default())
            .await
            .expect("put")
            .record
        // The store (and its connection) is dropped here.
    };

    let migrations_before = applied_migrations(&path);
    assert!(
        !migrations_before.is_empty(),
        "the first open applies the migrations"
    );

    for round in 0..2 {
        let store = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(
            store.get_node("n1").await.expect("get node"),
            Some(node.clone()),
            "round {round}"
        );
        let pod = store
            .get_pod("alice")
            .await
            .expect("get pod")
            .expect("pod survives reopen");
        assert_eq!(pod.epoch, 1);
        let expected_version = written.version + round;
        let got = store
            .get_resource("alice", "/notes/a.txt")
            .await
            .expect("get")
            .expect("resource survives reopen");
        assert_eq!(got.version, expected_version, "round {round}");
        if round == 0 {
            assert_eq!(got, written, "the resource survives reopen unchanged");
        }
        // Writes still work after reopen, and versions carry on.
        let again = store
            .put_resource(&fence, &put, &Precondition::default())
            .await
            .expect("put again");
        assert_eq!(again.record.version, expected_version + 1);
    }

    assert_eq!(
        applied_migrations(&path),
        migrations_before,
        "reopening must not re-apply migrations (same versions, same applied_at)"
    );
}

/// `(version, applied_at)` of every applied migration, read from the file directly.
fn applied_migrations(path: &str) -> Vec<(i64, i64)> {
    let conn = rusqlite::Connection::open(path).expect("open the database file directly");
    let mut stmt = conn
        .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query");
    rows.collect::<Result<_, _>>()
        .expect("read schema_migrations")
}

/// Two stores (two connections, as two processes would have) on one file race to create the
/// same path: exactly one wins, the others see `PreconditionFailed`, never a busy error. This is
/// what `BEGIN IMMEDIATE` plus `busy_timeout` buy; a single store cannot show it, because its
/// mutex already serializes its own calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_race_on_one_file() {
    let dir = TempDir::new("meta-race");
    let path = dir.db_path();
    let a: Arc<dyn MetaStore> = Arc::new(SqliteStore::open(&path).await.expect("open a"));
    let b: Arc<dyn MetaStore> = Arc::new(SqliteStore::open(&path).await.expect("open b"));
    a.create_pod(&NewPod {
        pod_id: "race".into(),
        base_url: "https://race.example/".into(),
        account_id: None,
        node_id: "n1".into(),
        access_mode: AccessMode::Private,
    })
    .await
    .expect("create pod");
    let fence = Fence {
        node_id: "n1".into(),
        epoch: 1,
    };
    let if_none_match_any = Precondition {
        if_none_match: Some(EtagCondition::Any),
        ..Default::default()
    };

    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        let (fence, pre) = (fence.clone(), if_none_match_any.clone());
        let put = PutResource {
            pod_id: "race".into(),
            path: "/r/one.txt".into(),
            content_type: Some("text/plain".into()),
            size: 1,
            blob_key: Some(format!("blobs/race/{i}")),
            regions: Vec::new(),
        };
        tasks.push(tokio::spawn(async move {
            store.put_resource(&fence, &put, &pre).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.expect("task panicked") {
            Ok(_) => won += 1,
            Err(MetaError::PreconditionFailed) => {}
            Err(e) => panic!("expected success or PreconditionFailed, got {e:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one racing create wins across connections");
    assert_eq!(
        b.list_container("race", "/r/").await.expect("list").len(),
        1
    );
}
