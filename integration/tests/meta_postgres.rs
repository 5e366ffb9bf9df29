//! The PostgreSQL metadata backend (`xpod_storage::meta::postgres::PgStore`) against a real server.
//!
//! Why a real server: the backend's correctness rests on PostgreSQL behaviour that a mock cannot
//! reproduce — row locks serializing a pod's writers, the advisory lock around migrations, and
//! LISTEN/NOTIFY delivered on commit to other connections. Each test gets its own database from
//! [`xpod_integration::pg::PgServer`] (a throwaway cluster, or `XPOD_TEST_PG_URL`); without
//! PostgreSQL the tests fail loudly instead of skipping.
//!
//! Covered:
//! - the shared conformance suite, one test per check (`xpod_storage::conformance_tests!`), the
//!   same one SQLite passes;
//! - migrations: four nodes connecting at once to an empty database all succeed, each version is
//!   recorded once, and a later connect re-applies nothing;
//! - the change feed across stores (two "nodes" on one database): Reset once live, then
//!   `PodOwner` for a created (epoch 1) and a transferred (epoch 2) pod;
//! - feed reconnect: killing a store's LISTEN backend yields a new Reset (reload) and later
//!   notifications still arrive; dropping the store ends its subscriptions.
//! - concurrent `If-None-Match: *` puts on one path: exactly one wins.
//!
//! Every wait has a timeout, so a hang fails with a message instead of stalling the run.

use std::sync::Arc;
use std::time::Duration;

use xpod_integration::pg::PgServer;
use xpod_storage::meta::parts::*;
use xpod_storage::meta::postgres::{PgStore, MIGRATIONS};
use xpod_storage::meta::{
    now_millis, AccessMode, ChangeFeed, EtagCondition, FeedEvent, Fence, MetaError, MetaStore,
    NewPod, NodeRecord, NodeStatus, NodeType, Precondition, PutResource,
};

const WAIT: Duration = Duration::from_secs(15);

async fn next_event(feed: &mut ChangeFeed, what: &str) -> FeedEvent {
    match tokio::time::timeout(WAIT, feed.next()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("change feed closed while waiting for {what}"),
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Skips events until one matches; fails on timeout.
async fn wait_for(feed: &mut ChangeFeed, want: &FeedEvent) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, feed.next()).await {
            Ok(Some(ev)) if &ev == want => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("change feed closed while waiting for {want:?}"),
            Err(_) => panic!("timed out after {WAIT:?} waiting for {want:?}"),
        }
    }
}

async fn store(url: &str) -> PgStore {
    match tokio::time::timeout(WAIT, PgStore::connect(url, 4)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => panic!("PgStore::connect failed: {e}"),
        Err(_) => panic!("PgStore::connect timed out"),
    }
}

fn server() -> PgServer {
    PgServer::start().unwrap_or_else(|e| panic!("{e:#}"))
}

fn node(id: &str) -> NodeRecord {
    NodeRecord {
        node_id: id.into(),
        node_type: NodeType::Center,
        region: "eu".into(),
        internal_address: Some("10.0.0.1:7000".into()),
        public_address: None,
        quic_address: None,
        status: NodeStatus::Online,
        attached_centers: vec![],
        capacity: serde_json::json!({}),
        version: "test".into(),
        last_heartbeat: now_millis(),
    }
}

fn new_pod(id: &str, node: &str) -> NewPod {
    NewPod {
        pod_id: id.into(),
        base_url: format!("https://{id}.example.test/"),
        account_id: None,
        node_id: node.into(),
        access_mode: AccessMode::Private,
    }
}

/// Every conformance check as its own test, each on its own database (`PgServer`: dropped,
/// and so stopped or removed, when the test ends).
mod conformance_suite {
    use super::*;

    async fn pg_store() -> (PgServer, Arc<dyn MetaStore>) {
        let pg = server();
        let s: Arc<dyn MetaStore> = Arc::new(store(pg.url()).await);
        assert_eq!(s.backend(), "postgres");
        (pg, s)
    }

    xpod_storage::conformance_tests!(pg_store().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_version_once() {
    let pg = server();
    let url = pg.url().to_string();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::connect(&url, 2).await })
        })
        .collect();
    let mut stores = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(WAIT, t).await {
            Ok(Ok(Ok(s))) => stores.push(s),
            Ok(Ok(Err(e))) => panic!("concurrent connect {i} failed: {e}"),
            Ok(Err(e)) => panic!("concurrent connect {i} panicked: {e}"),
            Err(_) => panic!("concurrent connect {i} timed out"),
        }
    }

    let versions = || async {
        let (client, conn) = tokio_postgres::connect(pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT version, applied_at FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
            .collect::<Vec<_>>()
    };
    let applied = versions().await;
    let expected: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        applied.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        expected
    );

    // Every store works on the migrated schema.
    for (i, s) in stores.iter().enumerate() {
        s.upsert_node(&node(&format!("n{i}"))).await.unwrap();
    }
    assert_eq!(stores[0].list_nodes().await.unwrap().len(), 4);
    drop(stores);

    // A later start applies nothing: same versions, same applied_at.
    let again = store(pg.url()).await;
    again.ping().await.unwrap();
    assert_eq!(versions().await, applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_across_stores_and_reconnect() {
    let pg = server();
    let a = store(pg.url()).await;
    let b = store(pg.url()).await;
    let mut feed = b.subscribe();
    assert_eq!(
        next_event(&mut feed, "the initial Reset").await,
        FeedEvent::Reset
    );

    a.upsert_node(&node("n1")).await.unwrap();
    a.upsert_node(&node("n2")).await.unwrap();
    a.create_pod(&new_pod("alice", "n1")).await.unwrap();
    wait_for(
        &mut feed,
        &FeedEvent::PodOwner {
            pod_id: "alice".into(),
            epoch: 1,
        },
    )
    .await;
    let moved = a.transfer_pod("alice", "n2").await.unwrap();
    assert_eq!(moved.epoch, 2);
    wait_for(
        &mut feed,
        &FeedEvent::PodOwner {
            pod_id: "alice".into(),
            epoch: 2,
        },
    )
    .await;

    // A rolled-back ownership change notifies nobody: transferring to the owner is a Conflict.
    assert!(matches!(
        a.transfer_pod("alice", "n2").await,
        Err(MetaError::Conflict(_))
    ));

    // Kill B's LISTEN connection: B reconnects, and its subscriber must reload (Reset).
    let killed = pg
        .terminate_application(b.feed_application_name())
        .await
        .unwrap();
    assert_eq!(
        killed, 1,
        "expected exactly one feed connection for store B"
    );
    assert_eq!(
        next_event(&mut feed, "a Reset after the feed reconnects").await,
        FeedEvent::Reset
    );

    // A later notification from A still reaches B.
    let back = a.transfer_pod("alice", "n1").await.unwrap();
    assert_eq!(back.epoch, 3);
    assert_eq!(
        next_event(&mut feed, "PodOwner epoch 3 after the reconnect").await,
        FeedEvent::PodOwner {
            pod_id: "alice".into(),
            epoch: 3
        }
    );

    // The SQL-only way (as operators would do it) also works: every LISTEN backend goes.
    let mut feed_a = a.subscribe();
    assert_eq!(
        next_event(&mut feed_a, "A's initial Reset").await,
        FeedEvent::Reset
    );
    let killed = pg.terminate_listeners().await.unwrap();
    assert_eq!(killed, 2, "expected the feed connections of A and B");
    assert_eq!(
        next_event(&mut feed, "B's Reset after terminate_listeners").await,
        FeedEvent::Reset
    );
    // A's own earlier NOTIFY (epoch 3) may reach A's listener after `feed_a` subscribed.
    wait_for(&mut feed_a, &FeedEvent::Reset).await;
    a.create_pod(&new_pod("bob", "n1")).await.unwrap();
    wait_for(
        &mut feed,
        &FeedEvent::PodOwner {
            pod_id: "bob".into(),
            epoch: 1,
        },
    )
    .await;

    // Dropping the store stops its feed task, which ends its subscriptions.
    drop(b);
    match tokio::time::timeout(WAIT, async { while feed.next().await.is_some() {} }).await {
        Ok(()) => {}
        Err(_) => panic!("the subscription did not end after its store was dropped"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_create_only_puts_have_one_winner() {
    let pg = server();
    let s = Arc::new(store(pg.url()).await);
    s.upsert_node(&node("n1")).await.unwrap();
    s.create_pod(&new_pod("carol", "n1")).await.unwrap();
    let fence = Fence {
        node_id: "n1".into(),
        epoch: 1,
    };
    let create_only = Precondition {
        if_none_match: Some(EtagCondition::Any),
        ..Default::default()
    };

    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (s, fence, pre) = (s.clone(), fence.clone(), create_only.clone());
            tokio::spawn(async move {
                let put = PutResource {
                    pod_id: "carol".into(),
                    path: "/deep/dir/race.txt".into(),
                    content_type: Some("text/plain".into()),
                    size: 1,
                    blob_key: Some(format!("blob-{i}")),
                    regions: vec!["eu".into()],
                };
                s.put_resource(&fence, &put, &pre).await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match tokio::time::timeout(WAIT, t)
            .await
            .expect("put timed out")
            .expect("put panicked")
        {
            Ok(out) => {
                assert!(out.created);
                wins += 1;
            }
            Err(MetaError::PreconditionFailed) => {}
            Err(e) => panic!("unexpected error from a racing put: {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one If-None-Match:* put must win");
    let listing = s.list_container("carol", "/deep/dir/").await.unwrap();
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0].version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_unavailable() {
    // A port nobody listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://postgres:s3cret@127.0.0.1:{port}/postgres");
    match tokio::time::timeout(Duration::from_secs(30), PgStore::connect(&url, 1)).await {
        Ok(Err(MetaError::Unavailable(msg))) => {
            assert!(
                !msg.contains("s3cret"),
                "the error leaks the password: {msg}"
            )
        }
        Ok(Err(e)) => panic!("expected Unavailable, got {e:?}"),
        Ok(Ok(_)) => panic!("connected to a closed port?"),
        Err(_) => panic!("connect to a closed port did not fail in time"),
    }
}
