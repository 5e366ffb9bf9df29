//! The conformance suite: the semantics of [`MetaStore`] as executable checks, run against every
//! backend, one test per check ([`conformance_tests!`](crate::conformance_tests): SQLite in
//! `tests/meta_sqlite.rs`, PostgreSQL in the integration tests). Compiled only with the
//! `conformance` feature (tests turn it on), never into the shipped binary.
//!
//! Each check panics with a message saying what broke. Each one makes its own nodes, pods, keys
//! and blob keys with a random suffix, so the suite can run twice (or from two processes at
//! once) against the same database, and assertions over shared tables (pod, node, key and
//! audit listings) only look at the rows the check made itself.
//!
//! Paths and ids are chosen so that their order is the same in bytewise and in
//! locale-aware collations.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{
    now_millis, AccessMode, ApiKeyRecord, ChangeFeed, EtagCondition, FeedEvent, Fence,
    JoinTokenRecord, MetaError, MetaResult, MetaStore, MigrationStatus, Millis, NewAudit, NewPod,
    NodeRecord, NodeStatus, NodeType, PodRecord, Precondition, PutOutcome, PutResource,
    ResourceRecord, RETIRED_BLOB,
};
use super::{AdoptPod, MovedRow};

/// How long a feed event may take before the check fails instead of hanging.
const FEED_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every check, one after another (for running the whole suite twice on one database).
pub async fn run_all(store: Arc<dyn MetaStore>) {
    check_ping(&store).await;
    check_nodes(&store).await;
    check_pods(&store).await;
    check_documents_and_containers(&store).await;
    check_parent_etag(&store).await;
    check_preconditions(&store).await;
    check_fencing(&store).await;
    check_fenced_reads(&store).await;
    check_transfer(&store).await;
    check_deletes(&store).await;
    check_clashes(&store).await;
    check_referenced_blobs(&store).await;
    check_retired_blobs(&store).await;
    check_blob_regions(&store).await;
    check_txt(&store).await;
    check_certs_settings_leases(&store).await;
    check_docs(&store).await;
    check_concurrent_doc_updates(&store).await;
    check_api_keys(&store).await;
    check_join_tokens(&store).await;
    check_join_token_uses(&store).await;
    check_audit(&store).await;
    check_change_feed(&store).await;
    check_resource_events(&store).await;
    check_liveness_and_rehome(&store).await;
    check_pod_moves(&store).await;
    check_concurrent_create(&store).await;
    check_concurrent_members(&store).await;
    check_concurrent_join_token_use(&store).await;
    check_concurrent_node_claims(&store).await;
}

/// One `#[tokio::test]` per check. `$make` is an expression evaluated inside each test (it may
/// `.await`) that yields `(guard, store)`: the store to check, and whatever must live as long
/// as the test (a throwaway database server; `()` if nothing). In a backend's test file:
/// `xpod_storage::conformance_tests!(my_store().await);`. Every backend runs every case as its
/// own test, so a failure names it.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make; check_ping, check_nodes, check_pods, check_documents_and_containers, check_parent_etag, check_preconditions, check_fencing, check_fenced_reads, check_transfer, check_deletes, check_clashes, check_referenced_blobs, check_retired_blobs, check_blob_regions, check_txt, check_certs_settings_leases, check_docs, check_concurrent_doc_updates, check_api_keys, check_join_tokens, check_join_token_uses, check_audit, check_change_feed, check_resource_events, check_liveness_and_rehome, check_pod_moves, check_concurrent_create, check_concurrent_members, check_concurrent_join_token_use, check_concurrent_node_claims);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (_guard, store): (_, std::sync::Arc<dyn $crate::meta::MetaStore>) = $make;
                $crate::meta::conformance::$case(&store).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A unique id: `prefix-<16 hex>`.
fn uid(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// A random join token id: 12 lowercase hex digits, as the API makes them.
fn token_id() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

/// A fresh, unused, unrevoked join token created at `now`, valid for an hour.
fn join_token(tag: &str, now: Millis, single_use: bool) -> JoinTokenRecord {
    JoinTokenRecord {
        token_id: token_id(),
        secret_hash: hex::encode(rand::random::<[u8; 32]>()),
        description: format!("{tag} token"),
        created_by: format!("key:{tag}"),
        created_at: now,
        expires_at: now + 3_600_000,
        single_use,
        used_at: None,
        used_by: None,
        use_count: 0,
        revoked_at: None,
    }
}

async fn create_token(store: &Arc<dyn MetaStore>, t: &JoinTokenRecord) {
    ok(
        store.create_join_token(t).await,
        &format!("create join token {}", t.token_id),
    );
}

async fn must_get_token(store: &Arc<dyn MetaStore>, token_id: &str) -> JoinTokenRecord {
    ok(
        store.get_join_token(token_id).await,
        &format!("get join token {token_id}"),
    )
    .unwrap_or_else(|| panic!("join token {token_id} should exist"))
}

/// Asserts a `Conflict` whose message names `token_id` and contains `word`.
fn expect_token_conflict(res: MetaResult<JoinTokenRecord>, token_id: &str, word: &str, what: &str) {
    match res {
        Err(MetaError::Conflict(msg)) => assert!(
            msg.contains(word) && msg.contains(token_id),
            "{what}: the conflict should name the token and say `{word}`, got `{msg}`"
        ),
        other => panic!("{what}: expected Conflict ({word}), got {other:?}"),
    }
}

/// Unwraps a result, panicking with what was being done.
fn ok<T>(res: MetaResult<T>, what: &str) -> T {
    match res {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e:?}"),
    }
}

/// Asserts that a result is the expected error and returns it.
macro_rules! expect_err {
    ($res:expr, $pat:pat, $what:expr) => {
        match $res {
            Err(e @ $pat) => e,
            other => panic!("{}: expected {}, got {:?}", $what, stringify!($pat), other),
        }
    };
}

fn node(node_id: &str, status: NodeStatus) -> NodeRecord {
    NodeRecord {
        node_id: node_id.to_string(),
        node_type: NodeType::Center,
        region: "eu-1".into(),
        internal_address: Some("10.0.0.1:7000".into()),
        public_address: Some("https://n.example".into()),
        quic_address: None,
        status,
        attached_centers: Vec::new(),
        capacity: serde_json::json!({}),
        version: "0.1.0".into(),
        last_heartbeat: now_millis(),
    }
}

/// A pod owned by a fresh online node, with the fence that owner writes under.
struct Fixture {
    node: String,
    pod: String,
    fence: Fence,
}

async fn fixture(store: &Arc<dyn MetaStore>, tag: &str) -> Fixture {
    let node_id = uid(&format!("cf-{tag}-node"));
    ok(
        store.upsert_node(&node(&node_id, NodeStatus::Online)).await,
        "upsert fixture node",
    );
    let pod_id = uid(&format!("cf-{tag}-pod"));
    let pod = ok(
        store.create_pod(&new_pod(&pod_id, &node_id)).await,
        "create fixture pod",
    );
    Fixture {
        fence: Fence {
            node_id: node_id.clone(),
            epoch: pod.epoch,
        },
        node: node_id,
        pod: pod_id,
    }
}

fn new_pod(pod_id: &str, node_id: &str) -> NewPod {
    NewPod {
        pod_id: pod_id.to_string(),
        base_url: format!("https://{pod_id}.example/"),
        account_id: Some(format!("acct-{pod_id}")),
        node_id: node_id.to_string(),
        access_mode: AccessMode::Private,
    }
}

fn doc(pod: &str, path: &str, blob: &str) -> PutResource {
    PutResource {
        pod_id: pod.to_string(),
        path: path.to_string(),
        content_type: Some("text/plain".into()),
        size: 5,
        blob_key: Some(blob.to_string()),
        regions: vec!["eu-1".into()],
    }
}

fn container(pod: &str, path: &str) -> PutResource {
    PutResource {
        pod_id: pod.to_string(),
        path: path.to_string(),
        content_type: None,
        size: 0,
        blob_key: None,
        regions: Vec::new(),
    }
}

fn always() -> Precondition {
    Precondition::default()
}

fn if_match(etag: &str) -> Precondition {
    Precondition {
        if_match: Some(EtagCondition::Tags(vec![etag.to_string()])),
        ..Default::default()
    }
}

fn if_none_match_any() -> Precondition {
    Precondition {
        if_none_match: Some(EtagCondition::Any),
        ..Default::default()
    }
}

async fn put(store: &Arc<dyn MetaStore>, fx: &Fixture, put: PutResource) -> PutOutcome {
    let what = format!("put {}", put.path);
    ok(store.put_resource(&fx.fence, &put, &always()).await, &what)
}

async fn get(store: &Arc<dyn MetaStore>, pod: &str, path: &str) -> Option<ResourceRecord> {
    ok(store.get_resource(pod, path).await, &format!("get {path}"))
}

async fn must_get(store: &Arc<dyn MetaStore>, pod: &str, path: &str) -> ResourceRecord {
    get(store, pod, path)
        .await
        .unwrap_or_else(|| panic!("{path} should be live"))
}

async fn list(store: &Arc<dyn MetaStore>, pod: &str, path: &str) -> Vec<String> {
    ok(
        store.list_container(pod, path).await,
        &format!("list {path}"),
    )
    .into_iter()
    .map(|r| r.path)
    .collect()
}

/// Awaits `fut`, failing the check instead of hanging when it takes longer than `FEED_TIMEOUT`.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(FEED_TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {FEED_TIMEOUT:?}"),
    }
}

/// The next `PodOwner` event for `pod_id`, skipping other pods' events and resets.
async fn next_owner_event(feed: &mut ChangeFeed, pod_id: &str) -> i64 {
    within(&format!("feed event for pod {pod_id}"), async {
        loop {
            match feed.next().await {
                Some(FeedEvent::PodOwner { pod_id: p, epoch }) if p == pod_id => return epoch,
                Some(_) => continue,
                None => panic!("change feed closed while waiting for pod {pod_id}"),
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

pub async fn check_ping(store: &Arc<dyn MetaStore>) {
    ok(store.ping().await, "ping");
    assert!(
        matches!(store.backend(), "postgres" | "sqlite"),
        "backend() should be postgres or sqlite, got {}",
        store.backend()
    );
}

/// Nodes: insert, replace, get, list; JSON columns round-trip.
pub async fn check_nodes(store: &Arc<dyn MetaStore>) {
    let base = uid("cf-nodes");
    let (a_id, b_id) = (format!("{base}-a"), format!("{base}-b"));
    let mut a = node(&a_id, NodeStatus::Online);
    a.node_type = NodeType::Edge;
    a.attached_centers = vec!["center-1".into(), "center-2".into()];
    a.capacity = serde_json::json!({ "freeBytes": 1234, "totalBytes": 5678, "disks": [1, 2] });
    a.quic_address = Some("203.0.113.5:4433".into());
    ok(store.upsert_node(&a).await, "insert node a");
    let b = node(&b_id, NodeStatus::Offline);
    ok(store.upsert_node(&b).await, "insert node b");

    let got = ok(store.get_node(&a_id).await, "get node a");
    assert_eq!(
        got.as_ref(),
        Some(&a),
        "node a should round-trip (attached_centers, capacity)"
    );

    let mut a2 = a.clone();
    a2.status = NodeStatus::Inactive;
    a2.attached_centers = Vec::new();
    a2.capacity = serde_json::json!({});
    a2.public_address = None;
    a2.version = "0.2.0".into();
    a2.last_heartbeat += 1000;
    ok(store.upsert_node(&a2).await, "replace node a");
    let got = ok(store.get_node(&a_id).await, "get replaced node a");
    assert_eq!(
        got.as_ref(),
        Some(&a2),
        "upsert should replace every column of node a"
    );

    assert_eq!(
        ok(
            store.get_node(&uid("cf-nodes-none")).await,
            "get unknown node"
        ),
        None
    );

    let all = ok(store.list_nodes().await, "list nodes");
    let mine: Vec<&NodeRecord> = all
        .iter()
        .filter(|n| n.node_id.starts_with(&base))
        .collect();
    assert_eq!(
        mine,
        vec![&a2, &b],
        "list_nodes should hold both nodes, ordered by node_id"
    );
    check_batched_presence(store, &base).await;
}

/// `list_silent_edges` returns only edges not offline and silent since before the bound;
/// `touch_nodes` marks existing rows online at the time given, keeps every other column and
/// creates nothing.
async fn check_batched_presence(store: &Arc<dyn MetaStore>, base: &str) {
    let now = now_millis();
    let edge = |suffix: &str, status: NodeStatus, heartbeat: i64| {
        let mut n = node(&format!("{base}-{suffix}"), status);
        n.node_type = NodeType::Edge;
        n.attached_centers = vec!["center-1".into()];
        n.capacity = serde_json::json!({ "pods": ["p1"] });
        n.last_heartbeat = heartbeat;
        n
    };
    assert!(
        ok(store.list_centers().await, "list centers")
            .iter()
            .all(|n| n.node_type == NodeType::Center),
        "list_centers lists centers only"
    );
    let silent = edge("e-silent", NodeStatus::Inactive, now - 120_000);
    let beating = edge("e-beating", NodeStatus::Online, now);
    let gone = edge("e-gone", NodeStatus::Offline, now - 120_000);
    let mut center = node(&format!("{base}-c-silent"), NodeStatus::Online);
    center.last_heartbeat = now - 120_000;
    for n in [&silent, &beating, &gone, &center] {
        ok(store.upsert_node(n).await, "insert a node for presence");
    }
    let mine = |all: Vec<NodeRecord>| -> Vec<String> {
        all.into_iter()
            .map(|n| n.node_id)
            .filter(|id| id.starts_with(base))
            .collect()
    };
    assert_eq!(
        mine(ok(
            store.list_silent_edges(now - 60_000).await,
            "silent edges"
        )),
        vec![silent.node_id.clone()],
        "only the edge that is neither offline nor beating (and no center) is silent"
    );
    let missing = format!("{base}-e-missing");
    let at = now + 5;
    let changed = ok(
        store
            .touch_nodes(
                &[
                    silent.node_id.clone(),
                    gone.node_id.clone(),
                    missing.clone(),
                ],
                at,
            )
            .await,
        "touch nodes",
    );
    assert_eq!(changed, 2, "the two existing rows were touched");
    let got = ok(store.get_node(&silent.node_id).await, "get touched").expect("still there");
    assert_eq!(
        (
            got.status,
            got.last_heartbeat,
            &got.capacity,
            &got.attached_centers
        ),
        (
            NodeStatus::Online,
            at,
            &silent.capacity,
            &silent.attached_centers
        ),
        "a touched row is online at the time given, its other columns kept"
    );
    assert_eq!(
        ok(store.get_node(&missing).await, "get missing"),
        None,
        "touch creates no row"
    );
    assert!(
        mine(ok(
            store.list_silent_edges(now - 60_000).await,
            "silent edges"
        ))
        .is_empty(),
        "no silent edge is left once touched"
    );
    assert_eq!(ok(store.touch_nodes(&[], at).await, "touch none"), 0);
    let centers: Vec<String> = mine(ok(store.list_centers().await, "list centers"));
    assert!(
        centers.contains(&center.node_id) && !centers.contains(&silent.node_id),
        "list_centers holds the center, not the edges: {centers:?}"
    );
}

/// Pods: create at epoch 1 with a root container, get, list, duplicate.
pub async fn check_pods(store: &Arc<dyn MetaStore>) {
    let node_id = uid("cf-pods-node");
    ok(
        store.upsert_node(&node(&node_id, NodeStatus::Online)).await,
        "upsert node",
    );
    let base = uid("cf-pods");
    let (a_id, b_id) = (format!("{base}-a"), format!("{base}-b"));

    let mut new_b = new_pod(&b_id, &node_id);
    new_b.account_id = None;
    new_b.access_mode = AccessMode::PublicRead;
    let b = ok(store.create_pod(&new_b).await, "create pod b");
    let a = ok(
        store.create_pod(&new_pod(&a_id, &node_id)).await,
        "create pod a",
    );

    assert_eq!(a.pod_id, a_id);
    assert_eq!(a.node_id, node_id, "a new pod is owned by the given node");
    assert_eq!(a.epoch, 1, "a new pod starts at epoch 1");
    assert_eq!(a.access_mode, AccessMode::Private);
    assert_eq!(
        a.account_id.as_deref(),
        Some(format!("acct-{a_id}").as_str())
    );
    assert_eq!(a.base_url, format!("https://{a_id}.example/"));
    assert_eq!(
        (
            a.migration_status,
            a.migration_target_node.clone(),
            a.migration_progress
        ),
        (None, None, None),
        "a new pod has no migration state"
    );
    assert!(a.created_at > 0, "created_at should be set");
    assert_eq!(b.access_mode, AccessMode::PublicRead);
    assert_eq!(b.account_id, None);

    assert_eq!(
        ok(store.get_pod(&a_id).await, "get pod a").as_ref(),
        Some(&a),
        "get_pod == create_pod"
    );
    assert_eq!(
        ok(store.get_pod(&uid("cf-pods-none")).await, "get unknown pod"),
        None
    );

    let all = ok(store.list_pods().await, "list pods");
    let mine: Vec<&PodRecord> = all.iter().filter(|p| p.pod_id.starts_with(&base)).collect();
    assert_eq!(
        mine,
        vec![&a, &b],
        "list_pods should hold both pods, ordered by pod_id"
    );

    let e = expect_err!(
        store.create_pod(&new_pod(&a_id, &node_id)).await,
        MetaError::Conflict(_),
        "duplicate pod"
    );
    assert!(
        e.to_string().contains(&a_id),
        "the conflict should name the pod: {e}"
    );
    assert_eq!(
        ok(store.get_pod(&a_id).await, "get pod a").as_ref(),
        Some(&a),
        "a duplicate create changes nothing"
    );

    let root = ok(store.get_resource(&a_id, "/").await, "get root")
        .expect("a new pod has a root container /");
    assert!(root.is_container, "/ is a container");
    assert_eq!(root.path, "/");
    assert_eq!(root.pod_id, a_id);
    assert_eq!(root.blob_key, None);
    assert!(!root.etag.is_empty(), "the root has an etag");
    assert!(
        ok(store.list_container(&a_id, "/").await, "list root").is_empty(),
        "a new pod's root is empty"
    );
}

/// Documents, intermediate containers, listings of direct members in path order.
pub async fn check_documents_and_containers(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "docs").await;
    let blob = uid("blob");
    let out = put(store, &fx, doc(&fx.pod, "/notes/a.txt", &blob)).await;
    assert!(out.created, "the first put creates");
    assert_eq!(out.replaced_blob, None, "nothing replaced on create");
    let r = &out.record;
    assert_eq!(
        (r.pod_id.as_str(), r.path.as_str()),
        (fx.pod.as_str(), "/notes/a.txt")
    );
    assert!(!r.is_container);
    assert_eq!(r.content_type.as_deref(), Some("text/plain"));
    assert_eq!(r.size, 5);
    assert_eq!(r.blob_key.as_deref(), Some(blob.as_str()));
    assert_eq!(r.regions, vec!["eu-1".to_string()]);
    assert_eq!(r.version, 1, "a new path starts at version 1");
    assert!(!r.etag.is_empty() && r.modified_at > 0);
    assert_eq!(
        get(store, &fx.pod, "/notes/a.txt").await.as_ref(),
        Some(r),
        "get returns what put returned"
    );

    let notes = must_get(store, &fx.pod, "/notes/").await;
    assert!(notes.is_container, "/notes/ was created as a container");
    assert_eq!(notes.blob_key, None);
    assert_eq!(
        list(store, &fx.pod, "/").await,
        vec!["/notes/"],
        "root lists the new container"
    );

    put(store, &fx, doc(&fx.pod, "/notes/c.txt", &uid("blob"))).await;
    let b = put(store, &fx, container(&fx.pod, "/notes/b/")).await;
    assert!(
        b.created && b.record.is_container,
        "an explicit container put creates a container"
    );
    put(store, &fx, doc(&fx.pod, "/notes/b/deep.txt", &uid("blob"))).await;
    assert_eq!(
        list(store, &fx.pod, "/notes/").await,
        vec!["/notes/a.txt", "/notes/b/", "/notes/c.txt"],
        "list_container returns direct members only, ordered by path"
    );
    assert_eq!(
        list(store, &fx.pod, "/notes/b/").await,
        vec!["/notes/b/deep.txt"]
    );

    put(store, &fx, doc(&fx.pod, "/x/y/z/w.txt", &uid("blob"))).await;
    for p in ["/x/", "/x/y/", "/x/y/z/"] {
        let c = get(store, &fx.pod, p)
            .await
            .unwrap_or_else(|| panic!("intermediate container {p} should exist"));
        assert!(c.is_container, "{p} should be a container");
    }
    assert_eq!(list(store, &fx.pod, "/x/").await, vec!["/x/y/"]);

    expect_err!(
        store.list_container(&fx.pod, "/absent/").await,
        MetaError::NotFound(_),
        "list an absent container"
    );
    assert_eq!(
        get(store, &fx.pod, "/absent.txt").await,
        None,
        "get of an absent path is None"
    );
}

/// A container's etag changes when a direct member is added or removed.
pub async fn check_parent_etag(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "etag").await;
    let root0 = must_get(store, &fx.pod, "/").await;
    put(store, &fx, container(&fx.pod, "/c/")).await;
    let root1 = must_get(store, &fx.pod, "/").await;
    assert_ne!(
        root0.etag, root1.etag,
        "adding /c/ should change the etag of /"
    );

    let c0 = must_get(store, &fx.pod, "/c/").await;
    put(store, &fx, doc(&fx.pod, "/c/m.txt", &uid("blob"))).await;
    let c1 = must_get(store, &fx.pod, "/c/").await;
    assert_ne!(
        c0.etag, c1.etag,
        "adding a member should change the container's etag"
    );

    ok(
        store
            .delete_resource(&fx.fence, &fx.pod, "/c/m.txt", &always())
            .await,
        "delete /c/m.txt",
    );
    let c2 = must_get(store, &fx.pod, "/c/").await;
    assert_ne!(
        c1.etag, c2.etag,
        "removing a member should change the container's etag"
    );
}

/// If-Match / If-None-Match, versions, replaced blobs; a failed precondition changes nothing.
pub async fn check_preconditions(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "pre").await;
    let (b1, b2, b3) = (uid("blob"), uid("blob"), uid("blob"));
    let r1 = put(store, &fx, doc(&fx.pod, "/p.txt", &b1)).await.record;

    let stale = if_match("0000000000000000");
    expect_err!(
        store
            .put_resource(&fx.fence, &doc(&fx.pod, "/p.txt", &b2), &stale)
            .await,
        MetaError::PreconditionFailed,
        "put with a stale If-Match"
    );
    assert_eq!(
        get(store, &fx.pod, "/p.txt").await.as_ref(),
        Some(&r1),
        "a failed If-Match must change nothing (etag, version, blob)"
    );

    let out = ok(
        store
            .put_resource(&fx.fence, &doc(&fx.pod, "/p.txt", &b2), &if_match(&r1.etag))
            .await,
        "put with a current If-Match",
    );
    assert!(!out.created, "a replace does not create");
    assert_eq!(
        out.replaced_blob.as_deref(),
        Some(b1.as_str()),
        "a replace returns the old blob"
    );
    assert_eq!(out.record.version, 2, "a replace increments the version");
    assert_ne!(out.record.etag, r1.etag, "a replace changes the etag");
    assert_eq!(out.record.blob_key.as_deref(), Some(b2.as_str()));
    let r2 = out.record;

    expect_err!(
        store
            .put_resource(
                &fx.fence,
                &doc(&fx.pod, "/p.txt", &b3),
                &if_none_match_any()
            )
            .await,
        MetaError::PreconditionFailed,
        "If-None-Match: * on an existing resource"
    );
    assert_eq!(
        get(store, &fx.pod, "/p.txt").await.as_ref(),
        Some(&r2),
        "a failed If-None-Match must change nothing"
    );

    let r3 = put(store, &fx, doc(&fx.pod, "/p.txt", &b3)).await;
    assert_eq!(r3.record.version, 3, "every write increments the version");
    assert_eq!(r3.replaced_blob.as_deref(), Some(b2.as_str()));

    let q = ok(
        store
            .put_resource(
                &fx.fence,
                &doc(&fx.pod, "/q.txt", &uid("blob")),
                &if_none_match_any(),
            )
            .await,
        "If-None-Match: * on an absent resource",
    );
    assert!(q.created, "If-None-Match: * on an absent path creates");

    expect_err!(
        store
            .put_resource(
                &fx.fence,
                &doc(&fx.pod, "/r.txt", &uid("blob")),
                &if_match(&r1.etag)
            )
            .await,
        MetaError::PreconditionFailed,
        "If-Match on an absent resource"
    );
    assert_eq!(
        get(store, &fx.pod, "/r.txt").await,
        None,
        "a failed If-Match must not create"
    );

    expect_err!(
        store
            .delete_resource(&fx.fence, &fx.pod, "/p.txt", &stale)
            .await,
        MetaError::PreconditionFailed,
        "delete with a stale If-Match"
    );
    assert_eq!(
        get(store, &fx.pod, "/p.txt").await.as_ref(),
        Some(&r3.record),
        "a failed conditional delete changes nothing"
    );
}

/// `get_resource_fenced`: the row for the owner at its epoch; `Fenced` (with the current owner
/// and epoch) for anyone else or after a transfer; `Ok(None)` for a missing path; `NotFound`
/// for a missing pod.
pub async fn check_fenced_reads(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "fread").await;
    let other = uid("cf-fread-other");
    ok(
        store.upsert_node(&node(&other, NodeStatus::Online)).await,
        "upsert other node",
    );
    let written = put(store, &fx, doc(&fx.pod, "/r.txt", &uid("blob")))
        .await
        .record;
    let read = ok(
        store
            .get_resource_fenced(&fx.pod, "/r.txt", &fx.fence)
            .await,
        "fenced read by the owner",
    );
    assert_eq!(read.as_ref(), Some(&written), "the owner reads the row");
    assert_eq!(
        ok(
            store
                .get_resource_fenced(&fx.pod, "/none.txt", &fx.fence)
                .await,
            "fenced read of a missing path",
        ),
        None
    );
    let wrong = Fence {
        node_id: other.clone(),
        epoch: fx.fence.epoch,
    };
    match store.get_resource_fenced(&fx.pod, "/r.txt", &wrong).await {
        Err(MetaError::Fenced { owner, epoch, .. }) => {
            assert_eq!((owner.as_str(), epoch), (fx.node.as_str(), fx.fence.epoch))
        }
        other => panic!("fenced read by a non-owner: expected Fenced, got {other:?}"),
    }
    ok(store.transfer_pod(&fx.pod, &other).await, "transfer");
    match store
        .get_resource_fenced(&fx.pod, "/none.txt", &fx.fence)
        .await
    {
        Err(MetaError::Fenced { owner, epoch, .. }) => {
            assert_eq!(
                (owner.as_str(), epoch),
                (other.as_str(), fx.fence.epoch + 1)
            )
        }
        other => panic!("fenced read by the old owner: expected Fenced, got {other:?}"),
    }
    expect_err!(
        store
            .get_resource_fenced(&uid("cf-no-pod"), "/", &fx.fence)
            .await,
        MetaError::NotFound(_),
        "fenced read of a missing pod"
    );
}

/// A write under the wrong owner or a stale epoch is `Fenced` and writes nothing.
pub async fn check_fencing(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "fence").await;
    let other = uid("cf-fence-other");
    ok(
        store.upsert_node(&node(&other, NodeStatus::Online)).await,
        "upsert other node",
    );

    let wrong = Fence {
        node_id: other.clone(),
        epoch: 1,
    };
    let e = store
        .put_resource(&wrong, &doc(&fx.pod, "/f/a.txt", &uid("blob")), &always())
        .await;
    match e {
        Err(MetaError::Fenced {
            pod_id,
            owner,
            epoch,
        }) => {
            assert_eq!(
                (pod_id.as_str(), owner.as_str(), epoch),
                (fx.pod.as_str(), fx.node.as_str(), 1),
                "Fenced should carry the current owner and epoch"
            );
        }
        other => panic!("put from a non-owner: expected Fenced, got {other:?}"),
    }
    assert_eq!(
        get(store, &fx.pod, "/f/a.txt").await,
        None,
        "a fenced put must not write the resource"
    );
    assert_eq!(
        get(store, &fx.pod, "/f/").await,
        None,
        "a fenced put must not create ancestors"
    );

    let future_epoch = Fence {
        node_id: fx.node.clone(),
        epoch: 2,
    };
    expect_err!(
        store
            .put_resource(
                &future_epoch,
                &doc(&fx.pod, "/f/a.txt", &uid("blob")),
                &always()
            )
            .await,
        MetaError::Fenced { .. },
        "put with an epoch the pod has not reached"
    );

    let kept = put(store, &fx, doc(&fx.pod, "/f/a.txt", &uid("blob")))
        .await
        .record;
    let moved = ok(
        store.transfer_pod(&fx.pod, &other).await,
        "transfer to the other node",
    );
    assert_eq!(moved.epoch, 2);

    match store
        .put_resource(
            &fx.fence,
            &doc(&fx.pod, "/f/b.txt", &uid("blob")),
            &always(),
        )
        .await
    {
        Err(MetaError::Fenced { owner, epoch, .. }) => {
            assert_eq!(
                (owner.as_str(), epoch),
                (other.as_str(), 2),
                "Fenced after a transfer names the new owner and epoch"
            );
        }
        other => panic!("put by the old owner after a transfer: expected Fenced, got {other:?}"),
    }
    expect_err!(
        store
            .delete_resource(&fx.fence, &fx.pod, "/f/a.txt", &always())
            .await,
        MetaError::Fenced { .. },
        "delete by the old owner after a transfer"
    );
    let stale_new_owner = Fence {
        node_id: other.clone(),
        epoch: 1,
    };
    expect_err!(
        store
            .put_resource(
                &stale_new_owner,
                &doc(&fx.pod, "/f/b.txt", &uid("blob")),
                &always()
            )
            .await,
        MetaError::Fenced { .. },
        "put by the new owner at the old epoch"
    );
    assert_eq!(
        get(store, &fx.pod, "/f/a.txt").await.as_ref(),
        Some(&kept),
        "fenced writes change nothing"
    );
    assert_eq!(
        get(store, &fx.pod, "/f/b.txt").await,
        None,
        "fenced writes create nothing"
    );

    let new_fence = Fence {
        node_id: other.clone(),
        epoch: 2,
    };
    ok(
        store
            .put_resource(
                &new_fence,
                &doc(&fx.pod, "/f/b.txt", &uid("blob")),
                &always(),
            )
            .await,
        "put by the new owner at the new epoch",
    );

    expect_err!(
        store
            .put_resource(
                &fx.fence,
                &doc(&uid("cf-fence-nopod"), "/a.txt", &uid("blob")),
                &always()
            )
            .await,
        MetaError::NotFound(_),
        "put into an unknown pod"
    );
    expect_err!(
        store
            .delete_resource(&fx.fence, &uid("cf-fence-nopod"), "/a.txt", &always())
            .await,
        MetaError::NotFound(_),
        "delete in an unknown pod"
    );
}

/// transfer_pod's errors and effects; set_migration_state.
/// A pod moves between stores (issue 21): the source exports every row (tombstones, versions
/// and etags included) and releases the pod to a node it need not know (its writes are fenced
/// from then on); the destination adopts it only while it still records the expected owner
/// and epoch, with the rows' blobs marked as held by the source.
pub async fn check_pod_moves(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "move").await;
    put(store, &fx, doc(&fx.pod, "/notes/a.txt", "blobs/a")).await;
    put(store, &fx, doc(&fx.pod, "/notes/b.txt", "blobs/b")).await;
    put(store, &fx, doc(&fx.pod, "/notes/b.txt", "blobs/b2")).await;
    ok(
        store
            .delete_resource(&fx.fence, &fx.pod, "/notes/a.txt", &always())
            .await,
        "delete a.txt",
    );
    let rows = ok(store.export_pod(&fx.pod).await, "export");
    let paths: Vec<&str> = rows.iter().map(|r| r.record.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/", "/notes/", "/notes/a.txt", "/notes/b.txt"],
        "every row, by path"
    );
    let a = &rows[2];
    assert!(a.deleted_at.is_some(), "the tombstone moves too: {a:?}");
    let b = &rows[3];
    let live_b = must_get(store, &fx.pod, "/notes/b.txt").await;
    assert_eq!(b.record, live_b, "a live row moves as it is");
    assert_eq!(b.deleted_at, None);
    assert_eq!(b.record.version, 2);
    expect_err!(
        store.export_pod(&uid("cf-move-nopod")).await,
        MetaError::NotFound(_),
        "export of an unknown pod"
    );

    // Released to a node this store does not know: the old owner's writes are fenced.
    let cluster = uid("cf-move-center");
    let before = ok(store.get_pod(&fx.pod).await, "get pod").expect("pod");
    let released = ok(store.release_pod(&fx.pod, &cluster).await, "release");
    assert_eq!(released.node_id, cluster);
    assert_eq!(released.epoch, before.epoch + 1);
    assert_eq!(released.migration_status, Some(MigrationStatus::Syncing));
    expect_err!(
        store
            .put_resource(
                &fx.fence,
                &doc(&fx.pod, "/late.txt", "blobs/late"),
                &always()
            )
            .await,
        MetaError::Fenced { .. },
        "a write of the old owner after the release"
    );
    expect_err!(
        store.release_pod(&uid("cf-move-nopod"), &cluster).await,
        MetaError::NotFound(_),
        "release of an unknown pod"
    );

    // Adopted elsewhere: here, a second pod stands for the destination's record of it.
    let edge = uid("cf-move-edge");
    let dest = uid("cf-move-dest");
    ok(
        store.create_pod(&new_pod(&dest, &edge)).await,
        "create the destination's record",
    );
    let epoch = ok(store.get_pod(&dest).await, "get").expect("pod").epoch;
    let moved_rows: Vec<MovedRow> = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.record.pod_id = dest.clone();
            r
        })
        .collect();
    let adopt = |from: &str, epoch: i64| AdoptPod {
        pod_id: dest.clone(),
        from: from.to_string(),
        epoch,
        to: cluster.clone(),
        account_id: Some("https://alice.example/profile#me".into()),
        access_mode: AccessMode::PublicRead,
        rows: moved_rows.clone(),
        source: format!("edge:{edge}"),
    };
    assert_eq!(
        ok(
            store.adopt_pod(&adopt(&edge, epoch + 1)).await,
            "adopt at a wrong epoch"
        ),
        None,
        "a stale epoch adopts nothing"
    );
    assert_eq!(
        ok(
            store.adopt_pod(&adopt("someone-else", epoch)).await,
            "adopt from a wrong owner"
        ),
        None
    );
    let adopted = ok(store.adopt_pod(&adopt(&edge, epoch)).await, "adopt").expect("adopted");
    assert_eq!(adopted.node_id, cluster);
    assert_eq!(adopted.epoch, epoch + 1);
    assert_eq!(adopted.migration_status, Some(MigrationStatus::Syncing));
    assert_eq!(adopted.access_mode, AccessMode::PublicRead);
    assert_eq!(
        adopted.account_id.as_deref(),
        Some("https://alice.example/profile#me")
    );
    let b = must_get(store, &dest, "/notes/b.txt").await;
    assert_eq!(
        (b.etag.as_str(), b.version),
        (live_b.etag.as_str(), 2),
        "etag and version kept"
    );
    assert_eq!(
        b.regions,
        [format!("edge:{edge}")],
        "held by the source until copied"
    );
    assert_eq!(
        get(store, &dest, "/notes/a.txt").await,
        None,
        "a tombstone stays one"
    );
    assert_eq!(list(store, &dest, "/notes/").await, ["/notes/b.txt"]);
    let key = b.blob_key.clone().expect("b has a blob");
    let found = ok(store.blob_record(&dest, &key).await, "blob_record").expect("found");
    assert_eq!(
        (found.path.as_str(), found.size, found.regions.clone()),
        ("/notes/b.txt", b.size, vec![format!("edge:{edge}")]),
        "a blob's row: its size and holders"
    );
    assert_eq!(
        ok(
            store.blob_record(&dest, "blobs/nobody/none").await,
            "blob_record of an unknown key"
        ),
        None
    );
    assert_eq!(
        ok(
            store.blob_record(&uid("cf-move-other"), &key).await,
            "blob_record of another pod"
        ),
        None,
        "only the named pod's rows answer"
    );
    assert!(
        must_get(store, &dest, "/").await.regions.is_empty(),
        "containers hold no blob"
    );
    let again = ok(store.export_pod(&dest).await, "export the adopted pod");
    assert_eq!(
        again.len(),
        4,
        "the tombstone is a row of the destination too"
    );
    // The new owner writes at the new epoch; it continues the versions.
    let fence = Fence {
        node_id: cluster.clone(),
        epoch: adopted.epoch,
    };
    let next = ok(
        store
            .put_resource(&fence, &doc(&dest, "/notes/b.txt", "blobs/b3"), &always())
            .await,
        "write after the adoption",
    );
    assert_eq!(next.record.version, 3);

    // A copy of a pod that moved away is dropped once the new owner has every byte; only the
    // owner named may be dropped, and the blobs are retired for the GC.
    assert_eq!(
        ok(
            store.drop_pod_rows(&dest, &edge).await,
            "drop under another owner"
        ),
        0,
        "the owner differs: nothing dropped"
    );
    assert_eq!(
        ok(
            store.drop_pod_rows(&uid("cf-move-none"), &cluster).await,
            "drop unknown"
        ),
        0
    );
    let rows = ok(store.export_pod(&dest).await, "export").len() as u64;
    assert_eq!(ok(store.drop_pod_rows(&dest, &cluster).await, "drop"), rows);
    assert!(ok(store.export_pod(&dest).await, "export after the drop").is_empty());
    assert!(
        ok(store.get_pod(&dest).await, "pod after the drop").is_some(),
        "the pod record stays"
    );
    assert!(
        ok(store.get_doc(RETIRED_BLOB, "blobs/b3").await, "retired").is_some(),
        "the dropped rows' blobs are retired"
    );
}

pub async fn check_transfer(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "xfer").await;
    let target = uid("cf-xfer-target");
    ok(
        store.upsert_node(&node(&target, NodeStatus::Online)).await,
        "upsert target",
    );
    let offline = uid("cf-xfer-offline");
    ok(
        store
            .upsert_node(&node(&offline, NodeStatus::Offline))
            .await,
        "upsert offline node",
    );
    let before = ok(store.get_pod(&fx.pod).await, "get pod").expect("pod exists");

    expect_err!(
        store.transfer_pod(&uid("cf-xfer-nopod"), &target).await,
        MetaError::NotFound(_),
        "transfer of an unknown pod"
    );
    expect_err!(
        store.transfer_pod(&fx.pod, &uid("cf-xfer-nonode")).await,
        MetaError::NotFound(_),
        "transfer to an unknown node"
    );
    expect_err!(
        store.transfer_pod(&fx.pod, &offline).await,
        MetaError::Conflict(_),
        "transfer to an offline node"
    );
    expect_err!(
        store.transfer_pod(&fx.pod, &fx.node).await,
        MetaError::Conflict(_),
        "transfer to the current owner"
    );
    assert_eq!(
        ok(store.get_pod(&fx.pod).await, "get pod").as_ref(),
        Some(&before),
        "failed transfers change nothing"
    );

    let moved = ok(store.transfer_pod(&fx.pod, &target).await, "transfer");
    assert_eq!(moved.node_id, target, "the target becomes the owner");
    assert_eq!(
        moved.epoch,
        before.epoch + 1,
        "a transfer increments the epoch"
    );
    assert_eq!(moved.migration_status, Some(MigrationStatus::Syncing));
    assert_eq!(
        moved.migration_target_node.as_deref(),
        Some(target.as_str())
    );
    assert_eq!(moved.migration_progress, Some(0));
    assert_eq!(
        ok(store.get_pod(&fx.pod).await, "get pod").as_ref(),
        Some(&moved),
        "get_pod reflects the transfer"
    );

    ok(
        store
            .set_migration_state(&fx.pod, Some(MigrationStatus::Syncing), Some(40))
            .await,
        "set progress",
    );
    let p = ok(store.get_pod(&fx.pod).await, "get pod").expect("pod exists");
    assert_eq!(
        (p.migration_status, p.migration_progress),
        (Some(MigrationStatus::Syncing), Some(40))
    );
    ok(
        store
            .set_migration_state(&fx.pod, Some(MigrationStatus::Done), Some(100))
            .await,
        "set done",
    );
    let p = ok(store.get_pod(&fx.pod).await, "get pod").expect("pod exists");
    assert_eq!(
        (p.migration_status, p.migration_progress),
        (Some(MigrationStatus::Done), Some(100))
    );
    assert_eq!(
        (p.node_id.as_str(), p.epoch),
        (target.as_str(), moved.epoch),
        "set_migration_state leaves owner and epoch alone"
    );
    assert_eq!(
        p.migration_target_node.as_deref(),
        Some(target.as_str()),
        "set_migration_state leaves the target alone"
    );
    expect_err!(
        store
            .set_migration_state(
                &uid("cf-xfer-nopod"),
                Some(MigrationStatus::Failed),
                Some(0)
            )
            .await,
        MetaError::NotFound(_),
        "set_migration_state of an unknown pod"
    );
}

/// Tombstones: invisible, revived by a later put with a higher version; delete's errors.
pub async fn check_deletes(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "del").await;
    let blob = uid("blob");
    let x1 = put(store, &fx, doc(&fx.pod, "/d/x.txt", &blob))
        .await
        .record;

    expect_err!(
        store
            .delete_resource(&fx.fence, &fx.pod, "/d/", &always())
            .await,
        MetaError::Conflict(_),
        "delete of a non-empty container"
    );
    expect_err!(
        store
            .delete_resource(&fx.fence, &fx.pod, "/", &always())
            .await,
        MetaError::Conflict(_),
        "delete of the root container"
    );
    assert!(
        get(store, &fx.pod, "/d/").await.is_some(),
        "a refused delete changes nothing"
    );

    let freed = ok(
        store
            .delete_resource(&fx.fence, &fx.pod, "/d/x.txt", &always())
            .await,
        "delete /d/x.txt",
    );
    assert_eq!(
        freed.as_deref(),
        Some(blob.as_str()),
        "delete returns the blob the row pointed to"
    );
    assert_eq!(
        get(store, &fx.pod, "/d/x.txt").await,
        None,
        "a tombstone is invisible to get"
    );
    assert!(
        list(store, &fx.pod, "/d/").await.is_empty(),
        "a tombstone is invisible to listings"
    );
    expect_err!(
        store
            .delete_resource(&fx.fence, &fx.pod, "/d/x.txt", &always())
            .await,
        MetaError::NotFound(_),
        "delete of a tombstone"
    );
    expect_err!(
        store
            .delete_resource(&fx.fence, &fx.pod, "/never.txt", &always())
            .await,
        MetaError::NotFound(_),
        "delete of an absent path"
    );

    let none = ok(
        store
            .delete_resource(&fx.fence, &fx.pod, "/d/", &always())
            .await,
        "delete the now empty /d/",
    );
    assert_eq!(none, None, "a container has no blob");
    expect_err!(
        store.list_container(&fx.pod, "/d/").await,
        MetaError::NotFound(_),
        "list of a deleted container"
    );
    assert!(
        list(store, &fx.pod, "/").await.is_empty(),
        "the deleted container is gone from /"
    );

    let again = put(store, &fx, doc(&fx.pod, "/d/x.txt", &uid("blob"))).await;
    assert!(again.created, "a put over a tombstone creates");
    assert_eq!(
        again.replaced_blob, None,
        "a tombstone's blob is not replaced again"
    );
    assert!(
        again.record.version > x1.version,
        "a revived path gets a higher version ({} > {})",
        again.record.version,
        x1.version
    );
    assert_ne!(again.record.etag, x1.etag, "a revived path gets a new etag");
    assert!(
        get(store, &fx.pod, "/d/")
            .await
            .is_some_and(|c| c.is_container),
        "the deleted container is revived as an ancestor"
    );
    assert_eq!(list(store, &fx.pod, "/d/").await, vec!["/d/x.txt"]);
}

/// `/a` vs `/a/` clashes and documents as ancestors are conflicts that write nothing.
pub async fn check_clashes(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "clash").await;
    put(store, &fx, doc(&fx.pod, "/a", &uid("blob"))).await;
    expect_err!(
        store
            .put_resource(&fx.fence, &container(&fx.pod, "/a/"), &always())
            .await,
        MetaError::Conflict(_),
        "container /a/ over document /a"
    );
    let e = expect_err!(
        store
            .put_resource(
                &fx.fence,
                &doc(&fx.pod, "/a/b/c.txt", &uid("blob")),
                &always()
            )
            .await,
        MetaError::Conflict(_),
        "a document as an ancestor"
    );
    assert!(
        e.to_string().contains("/a"),
        "the conflict should name the document: {e}"
    );
    assert_eq!(
        get(store, &fx.pod, "/a/").await,
        None,
        "a conflicting put creates nothing"
    );
    assert_eq!(
        get(store, &fx.pod, "/a/b/").await,
        None,
        "a conflicting put creates no ancestors"
    );

    put(store, &fx, container(&fx.pod, "/k/")).await;
    expect_err!(
        store
            .put_resource(&fx.fence, &doc(&fx.pod, "/k", &uid("blob")), &always())
            .await,
        MetaError::Conflict(_),
        "document /k over container /k/"
    );
    assert_eq!(
        get(store, &fx.pod, "/k").await,
        None,
        "a conflicting put creates nothing"
    );
    assert_eq!(list(store, &fx.pod, "/").await, vec!["/a", "/k/"]);
}

/// Only live rows count as references.
pub async fn check_referenced_blobs(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "gc").await;
    let (k1, k2, k3, k4) = (uid("blob-1"), uid("blob-2"), uid("blob-3"), uid("blob-4"));
    put(store, &fx, doc(&fx.pod, "/one.txt", &k1)).await;
    put(store, &fx, doc(&fx.pod, "/one.txt", &k3)).await;
    put(store, &fx, doc(&fx.pod, "/two.txt", &k2)).await;
    ok(
        store
            .delete_resource(&fx.fence, &fx.pod, "/two.txt", &always())
            .await,
        "delete /two.txt",
    );

    let keys = vec![k1.clone(), k2.clone(), k3.clone(), k4.clone()];
    let found = ok(store.referenced_blobs(&keys).await, "referenced_blobs");
    assert_eq!(
        found,
        HashSet::from([k3]),
        "only the live row's blob is referenced (not replaced, deleted or unknown ones)"
    );
    assert!(ok(
        store.referenced_blobs(&[]).await,
        "referenced_blobs of nothing"
    )
    .is_empty());
}

/// A replaced or deleted blob is retired (a `blob.retired` document owned by the pod) by the
/// write that unreferenced it, in the same transaction; a refused write retires nothing.
pub async fn check_retired_blobs(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "retire").await;
    let (b1, b2, b3) = (uid("blob"), uid("blob"), uid("blob"));
    let retired = |key: String| async move {
        ok(
            store.get_doc(RETIRED_BLOB, &key).await,
            "get_doc blob.retired",
        )
    };
    let r1 = put(store, &fx, doc(&fx.pod, "/r.txt", &b1)).await;
    assert_eq!(
        retired(b1.clone()).await,
        None,
        "a created blob is not retired"
    );

    let before = now_millis();
    let r2 = put(store, &fx, doc(&fx.pod, "/r.txt", &b2)).await;
    let after = now_millis();
    let d = retired(b1.clone())
        .await
        .expect("a replace retires the old blob");
    assert_eq!(
        d.owner, fx.pod,
        "the retired blob's document belongs to the pod"
    );
    assert_eq!(d.doc["path"], "/r.txt");
    assert!(
        (before..=after).contains(&d.updated_at),
        "retired at the write's time: {} not in {before}..={after}",
        d.updated_at
    );

    // A refused write (stale If-Match) retires nothing, nor does a failed delete.
    expect_err!(
        store
            .put_resource(
                &fx.fence,
                &doc(&fx.pod, "/r.txt", &b3),
                &if_match(&r1.record.etag)
            )
            .await,
        MetaError::PreconditionFailed,
        "put with a stale If-Match"
    );
    expect_err!(
        store
            .delete_resource(&fx.fence, &fx.pod, "/r.txt", &if_match(&r1.record.etag))
            .await,
        MetaError::PreconditionFailed,
        "delete with a stale If-Match"
    );
    assert_eq!(
        retired(b2.clone()).await,
        None,
        "a refused write retires nothing"
    );

    // A container put and a container delete retire nothing.
    put(store, &fx, container(&fx.pod, "/c/")).await;
    ok(
        store
            .delete_resource(&fx.fence, &fx.pod, "/c/", &always())
            .await,
        "delete /c/",
    );

    let freed = ok(
        store
            .delete_resource(&fx.fence, &fx.pod, "/r.txt", &if_match(&r2.record.etag))
            .await,
        "delete /r.txt",
    );
    assert_eq!(freed.as_deref(), Some(b2.as_str()));
    let d2 = retired(b2.clone())
        .await
        .expect("a delete retires the blob");
    assert_eq!((d2.owner.as_str(), d2.version), (fx.pod.as_str(), 1));
    assert!(
        ok(
            store.referenced_blobs(&[b1.clone(), b2.clone()]).await,
            "refs"
        )
        .is_empty(),
        "retired blobs are unreferenced"
    );
    let mine: HashSet<String> = ok(store.list_docs(RETIRED_BLOB, Some(&fx.pod)).await, "list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        mine,
        HashSet::from([b1.clone(), b2.clone()]),
        "the pod's retired blobs"
    );
    for k in [&b1, &b2] {
        assert!(ok(store.delete_doc(RETIRED_BLOB, k, 0).await, "delete_doc"));
    }
}

/// TXT records: add, renew, list sorted and unexpired, delete.
pub async fn check_txt(store: &Arc<dyn MetaStore>) {
    let name = format!("_acme-challenge.{}.example.com", uid("n"));
    let later = crate::meta::now_millis() + 60_000;
    ok(store.put_txt(&name, "b-token", later).await, "put b");
    ok(store.put_txt(&name, "a-token", later).await, "put a");
    ok(store.put_txt(&name, "a-token", later + 1).await, "renew a");
    ok(
        store
            .put_txt(&name, "gone", crate::meta::now_millis() - 1)
            .await,
        "put expired",
    );
    assert_eq!(
        ok(store.list_txt(&name).await, "list"),
        ["a-token", "b-token"],
        "sorted, renewals not duplicated, expired ones hidden"
    );
    assert!(ok(store.delete_txt(&name, "a-token").await, "delete a"));
    assert!(!ok(
        store.delete_txt(&name, "a-token").await,
        "delete a again"
    ));
    assert_eq!(ok(store.list_txt(&name).await, "list"), ["b-token"]);
    let all = ok(store.list_all_txt().await, "list all");
    assert!(
        all.contains(&(name.clone(), "b-token".to_string())),
        "{all:?}"
    );
    assert!(
        !all.iter().any(|(n, v)| *n == name && v != "b-token"),
        "only live ones: {all:?}"
    );
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert!(ok(
        store.list_txt("_acme-challenge.none.example.com").await,
        "none"
    )
    .is_empty());
}

/// Certificate sets (replace by id), cluster settings, and leases (one holder at a time,
/// taken over after expiry, extended by the holder, released only by the holder).
/// Versioned documents: create once, update only at the expected version, list by kind and
/// owner in creation order, delete (at a version or any).
pub async fn check_docs(store: &Arc<dyn MetaStore>) {
    use crate::meta::DocRecord;
    let kind = uid("kind");
    let (id, owner) = (uid("doc"), uid("owner"));
    let mut d = DocRecord {
        kind: kind.clone(),
        id: id.clone(),
        owner: owner.clone(),
        version: 0,
        updated_at: 0,
        doc: serde_json::json!({"status": "pending", "n": 1, "text": "ü \"q\""}),
    };
    assert_eq!(ok(store.get_doc(&kind, &id).await, "absent"), None);
    assert!(ok(store.put_doc(&d, 0, 100).await, "create"));
    assert!(
        !ok(store.put_doc(&d, 0, 101).await, "create twice"),
        "a second create must fail"
    );
    let got = ok(store.get_doc(&kind, &id).await, "get").expect("created");
    assert_eq!((got.version, got.updated_at), (1, 100));
    assert_eq!(got.doc, d.doc);
    d.doc["status"] = "running".into();
    assert!(
        !ok(store.put_doc(&d, 7, 102).await, "stale"),
        "wrong version must not write"
    );
    assert!(ok(store.put_doc(&d, 1, 103).await, "update"));
    let got = ok(store.get_doc(&kind, &id).await, "get").expect("there");
    assert_eq!((got.version, got.updated_at), (2, 103));
    assert_eq!(got.doc["status"], "running");
    // Listing: creation order, owner filter, other kinds invisible.
    let id2 = uid("doc");
    let other_owner = uid("owner");
    let d2 = DocRecord {
        id: id2.clone(),
        owner: other_owner.clone(),
        ..d.clone()
    };
    assert!(ok(store.put_doc(&d2, 0, 200).await, "create 2"));
    let ids = |v: Vec<DocRecord>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ok(store.list_docs(&kind, None).await, "list")),
        vec![id.clone(), id2.clone()]
    );
    assert_eq!(
        ids(ok(store.list_docs(&kind, Some(&owner)).await, "by owner")),
        vec![id.clone()]
    );
    assert!(ok(store.list_docs(&uid("kind"), None).await, "other kind").is_empty());
    assert!(!ok(store.delete_doc(&kind, &id, 1).await, "stale delete"));
    assert!(ok(
        store.delete_doc(&kind, &id, 2).await,
        "delete at version"
    ));
    assert!(ok(store.delete_doc(&kind, &id2, 0).await, "delete any"));
    assert!(!ok(store.delete_doc(&kind, &id2, 0).await, "gone"));
    assert!(ok(store.list_docs(&kind, None).await, "empty").is_empty());
}

/// 16 writers racing from the same version: exactly one wins.
pub async fn check_concurrent_doc_updates(store: &Arc<dyn MetaStore>) {
    use crate::meta::DocRecord;
    let d = DocRecord {
        kind: uid("kind"),
        id: uid("doc"),
        owner: "o".into(),
        version: 0,
        updated_at: 0,
        doc: serde_json::json!({"w": -1}),
    };
    assert!(ok(store.put_doc(&d, 0, 1).await, "create"));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (store, mut d) = (store.clone(), d.clone());
        d.doc = serde_json::json!({ "w": w });
        tasks.push(tokio::spawn(async move { store.put_doc(&d, 1, 2).await }));
    }
    let mut wins = 0;
    for t in tasks {
        if ok(t.await.expect("task"), "racing update") {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one update from version 1 wins");
    let got = ok(store.get_doc(&d.kind, &d.id).await, "get").expect("there");
    assert_eq!(got.version, 2);
}

pub async fn check_certs_settings_leases(store: &Arc<dyn MetaStore>) {
    use crate::meta::CertRecord;
    let id = uid("cert");
    assert_eq!(ok(store.get_cert(&id).await, "get absent"), None);
    let mut cert = CertRecord {
        id: id.clone(),
        names: vec!["example.test".into(), "*.pods.example.test".into()],
        cert_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
        key_sealed: "v1.sealed".into(),
        not_before: 1_000,
        not_after: 2_000,
        issued_by: "c1".into(),
        issued_at: 1_001,
    };
    ok(store.put_cert(&cert).await, "put cert");
    assert_eq!(ok(store.get_cert(&id).await, "get"), Some(cert.clone()));
    cert.not_after = 3_000;
    cert.issued_by = "c2".into();
    cert.names.push("extra.example.test".into());
    ok(store.put_cert(&cert).await, "replace cert");
    assert_eq!(
        ok(store.get_cert(&id).await, "get replaced"),
        Some(cert.clone())
    );
    let listed = ok(store.list_certs().await, "list certs");
    assert_eq!(
        listed.iter().filter(|c| c.id == id).count(),
        1,
        "replaced, not added"
    );

    let setting = uid("setting");
    assert_eq!(ok(store.get_setting(&setting).await, "absent"), None);
    ok(store.put_setting(&setting, "one").await, "put setting");
    ok(store.put_setting(&setting, "two").await, "replace setting");
    assert_eq!(
        ok(store.get_setting(&setting).await, "get").as_deref(),
        Some("two")
    );

    let lease = uid("lease");
    assert!(ok(
        store.try_lease(&lease, "a", 100, 200).await,
        "a takes it"
    ));
    assert!(!ok(
        store.try_lease(&lease, "b", 150, 250).await,
        "b: held by a"
    ));
    assert!(ok(
        store.try_lease(&lease, "a", 150, 300).await,
        "a extends"
    ));
    assert!(!ok(
        store.try_lease(&lease, "b", 250, 350).await,
        "b: a extended to 300"
    ));
    assert!(ok(
        store.try_lease(&lease, "b", 300, 400).await,
        "b: a's expired"
    ));
    assert!(!ok(
        store.release_lease(&lease, "a").await,
        "a no longer holds it"
    ));
    assert!(!ok(
        store.try_lease(&lease, "a", 350, 450).await,
        "a: b holds it"
    ));
    assert!(ok(store.release_lease(&lease, "b").await, "b releases"));
    assert!(ok(
        store.try_lease(&lease, "a", 360, 460).await,
        "free again"
    ));

    // Racing takers of one free lease: exactly one wins.
    let race = uid("lease-race");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (store, race) = (store.clone(), race.clone());
        tasks.push(tokio::spawn(async move {
            store.try_lease(&race, &format!("h{i}"), 1_000, 2_000).await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if ok(t.await.expect("lease task"), "race") {
            winners += 1;
        }
    }
    assert_eq!(
        winners, 1,
        "exactly one of 16 racing takers holds the lease"
    );
}

/// The migration sync's view: a pod's live blobs, and regions added to a blob's rows once.
pub async fn check_blob_regions(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "regions").await;
    let (k1, k2, k3) = (uid("blob-1"), uid("blob-2"), uid("blob-3"));
    put(store, &fx, doc(&fx.pod, "/a.txt", &k1)).await;
    put(store, &fx, doc(&fx.pod, "/d/b.txt", &k2)).await;
    put(store, &fx, doc(&fx.pod, "/gone.txt", &k3)).await;
    ok(
        store
            .delete_resource(&fx.fence, &fx.pod, "/gone.txt", &always())
            .await,
        "delete /gone.txt",
    );
    let blobs = ok(store.list_pod_blobs(&fx.pod).await, "list_pod_blobs");
    let paths: Vec<&str> = blobs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/a.txt", "/d/b.txt"],
        "live documents only, no containers, by path"
    );
    assert_eq!(blobs[0].blob_key.as_deref(), Some(k1.as_str()));

    assert_eq!(
        ok(store.add_blob_region(&k1, "us-2").await, "add region"),
        1
    );
    assert_eq!(
        ok(store.add_blob_region(&k1, "us-2").await, "add region again"),
        0,
        "adding a region twice changes nothing"
    );
    assert_eq!(
        must_get(store, &fx.pod, "/a.txt").await.regions,
        ["eu-1", "us-2"]
    );
    assert_eq!(must_get(store, &fx.pod, "/d/b.txt").await.regions, ["eu-1"]);
    assert_eq!(
        ok(
            store.add_blob_region(&uid("none"), "us-2").await,
            "unknown blob"
        ),
        0
    );
}

/// API keys: create, get, list order, duplicate, revoke (idempotent), touch.
pub async fn check_api_keys(store: &Arc<dyn MetaStore>) {
    let base = uid("cf-key");
    let now = now_millis();
    let key = |suffix: &str, created_at: i64| ApiKeyRecord {
        key_id: format!("{base}-{suffix}"),
        secret_hash: "ab".repeat(32),
        name: format!("key {suffix}"),
        owner: "acct-1".into(),
        scopes: vec!["admin".into(), format!("pod:{base}:read")],
        created_at,
        expires_at: Some(now + 86_400_000),
        revoked_at: None,
        last_used_at: None,
    };
    // Created out of order: the list is ordered by created_at, then key_id.
    let b = key("b", now);
    let a = key("a", now + 1);
    let mut c = key("c", now);
    c.expires_at = None;
    for k in [&a, &b, &c] {
        ok(
            store.create_api_key(k).await,
            &format!("create api key {}", k.key_id),
        );
    }
    assert_eq!(
        ok(store.get_api_key(&a.key_id).await, "get key a").as_ref(),
        Some(&a),
        "an api key round-trips"
    );
    assert_eq!(
        ok(store.get_api_key(&c.key_id).await, "get key c").as_ref(),
        Some(&c)
    );
    assert_eq!(
        ok(
            store.get_api_key(&uid("cf-key-none")).await,
            "get unknown key"
        ),
        None
    );
    expect_err!(
        store.create_api_key(&a).await,
        MetaError::Conflict(_),
        "duplicate api key"
    );

    let all = ok(store.list_api_keys().await, "list api keys");
    let mine: Vec<&ApiKeyRecord> = all.iter().filter(|k| k.key_id.starts_with(&base)).collect();
    assert_eq!(
        mine,
        vec![&b, &c, &a],
        "list_api_keys is ordered by created_at, then key_id"
    );

    ok(
        store.revoke_api_key(&a.key_id, now + 10).await,
        "revoke key a",
    );
    ok(
        store.revoke_api_key(&a.key_id, now + 20).await,
        "revoke key a again",
    );
    let got = ok(store.get_api_key(&a.key_id).await, "get key a").expect("key a exists");
    assert_eq!(
        got.revoked_at,
        Some(now + 10),
        "revoking again keeps the first time"
    );
    expect_err!(
        store.revoke_api_key(&uid("cf-key-none"), now).await,
        MetaError::NotFound(_),
        "revoke of an unknown key"
    );

    ok(
        store.touch_api_key(&b.key_id, now + 30).await,
        "touch key b",
    );
    let got = ok(store.get_api_key(&b.key_id).await, "get key b").expect("key b exists");
    assert_eq!(got.last_used_at, Some(now + 30), "touch sets last_used_at");
    assert_eq!(got.revoked_at, None);
    ok(
        store.touch_api_key(&uid("cf-key-none"), now).await,
        "touch of an unknown key is best effort",
    );
}

/// Audit: increasing ids, newest first, limit, `before`.
pub async fn check_audit(store: &Arc<dyn MetaStore>) {
    let actor = uid("cf-audit");
    let mut ids = Vec::new();
    for i in 0..3 {
        let entry = NewAudit {
            at: now_millis(),
            actor: actor.clone(),
            action: "resource.put".into(),
            target: format!("pod:/{i}.txt"),
            details: serde_json::json!({ "i": i, "tags": ["a", "b"] }),
            trace_id: format!("trace-{i}"),
        };
        ids.push(ok(store.append_audit(&entry).await, "append audit"));
    }
    assert!(
        ids[0] < ids[1] && ids[1] < ids[2],
        "audit ids increase: {ids:?}"
    );

    let mine = ok(store.list_audit(1000, Some(ids[2] + 1)).await, "list audit");
    let mine: Vec<_> = mine.into_iter().filter(|e| e.actor == actor).collect();
    assert_eq!(
        mine.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1], ids[0]],
        "newest first"
    );
    assert_eq!(mine[0].target, "pod:/2.txt");
    assert_eq!(
        mine[0].details,
        serde_json::json!({ "i": 2, "tags": ["a", "b"] }),
        "details round-trip"
    );
    assert_eq!(mine[0].trace_id, "trace-2");
    assert_eq!(mine[0].action, "resource.put");

    let page = ok(
        store.list_audit(2, Some(ids[2] + 1)).await,
        "list audit page",
    );
    assert_eq!(page.len(), 2, "limit caps the page");
    assert_eq!(
        page[0].id, ids[2],
        "the newest entry below `before` comes first"
    );
    assert!(page[1].id < page[0].id, "descending ids");

    let older = ok(
        store.list_audit(1000, Some(ids[1])).await,
        "list audit before",
    );
    assert!(
        older.iter().all(|e| e.id < ids[1]),
        "`before` excludes ids at or above it"
    );
    assert!(
        older.iter().any(|e| e.id == ids[0]),
        "`before` keeps older entries"
    );

    let newest = ok(store.list_audit(3, None).await, "list newest audit");
    assert!(
        !newest.is_empty() && newest.len() <= 3,
        "limit caps the page"
    );
    assert!(
        newest[0].id >= ids[2],
        "without `before` the newest entries come"
    );
    assert!(newest.windows(2).all(|w| w[0].id > w[1].id), "newest first");
}

/// The feed starts with Reset; create and transfer announce the pod's epoch.
pub async fn check_change_feed(store: &Arc<dyn MetaStore>) {
    let mut feed = store.subscribe();
    let first = within("the first feed event", feed.next()).await;
    assert_eq!(
        first,
        Some(FeedEvent::Reset),
        "a subscription starts with Reset"
    );

    let node_a = uid("cf-feed-a");
    let node_b = uid("cf-feed-b");
    ok(
        store.upsert_node(&node(&node_a, NodeStatus::Online)).await,
        "upsert node a",
    );
    ok(
        store.upsert_node(&node(&node_b, NodeStatus::Online)).await,
        "upsert node b",
    );
    let pod = uid("cf-feed-pod");
    ok(
        store.create_pod(&new_pod(&pod, &node_a)).await,
        "create pod",
    );
    assert_eq!(
        next_owner_event(&mut feed, &pod).await,
        1,
        "create_pod announces epoch 1"
    );
    ok(store.transfer_pod(&pod, &node_b).await, "transfer pod");
    assert_eq!(
        next_owner_event(&mut feed, &pod).await,
        2,
        "transfer_pod announces the new epoch"
    );
}

/// Liveness leases run on the store's clock; a pod is rehomed by one compare-and-set that only
/// the first of racing centers wins, announced on the feed; a stale (owner, epoch) moves
/// nothing.
pub async fn check_liveness_and_rehome(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "live").await;
    let other = uid("cf-live-other");
    ok(
        store.upsert_node(&node(&other, NodeStatus::Online)).await,
        "upsert other",
    );
    ok(store.renew_liveness(&fx.node, 60_000).await, "renew");
    ok(store.renew_liveness(&other, 1).await, "renew short");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let all = ok(store.liveness().await, "liveness");
    let mine = all.iter().find(|l| l.node_id == fx.node).expect("listed");
    assert!(
        (-60_000..-50_000).contains(&mine.expired_for_ms),
        "a lease renewed for 60 s runs for about 60 s more: {mine:?}"
    );
    assert_eq!(mine.region, "eu-1", "the region comes from the nodes row");
    let theirs = all.iter().find(|l| l.node_id == other).expect("listed");
    assert!(
        theirs.expired_for_ms >= 40,
        "a 1 ms lease has ended: {theirs:?}"
    );
    // Renewal extends the same row.
    ok(store.renew_liveness(&other, 60_000).await, "renew again");
    let all = ok(store.liveness().await, "liveness");
    assert_eq!(all.iter().filter(|l| l.node_id == other).count(), 1);
    assert!(all
        .iter()
        .any(|l| l.node_id == other && l.expired_for_ms < 0));

    let owned = ok(store.pods_owned_by(&fx.node).await, "pods owned");
    assert_eq!(
        owned.iter().map(|p| p.pod_id.as_str()).collect::<Vec<_>>(),
        [fx.pod.as_str()]
    );
    let mut feed = store.subscribe();
    within("the first feed event", feed.next()).await;
    // A stale epoch or owner moves nothing.
    assert_eq!(
        ok(
            store
                .rehome_pod(&fx.pod, &fx.node, fx.fence.epoch + 1, &other)
                .await,
            "rehome at a wrong epoch"
        ),
        None
    );
    assert_eq!(
        ok(
            store
                .rehome_pod(&fx.pod, &other, fx.fence.epoch, &other)
                .await,
            "rehome from a wrong owner"
        ),
        None
    );
    // Racing centers: exactly one moves it.
    let (a, b) = tokio::join!(
        store.rehome_pod(&fx.pod, &fx.node, fx.fence.epoch, &other),
        store.rehome_pod(&fx.pod, &fx.node, fx.fence.epoch, &fx.node),
    );
    let (a, b) = (ok(a, "rehome a"), ok(b, "rehome b"));
    assert!(
        a.is_some() != b.is_some(),
        "one of two racing rehomes wins: {a:?} {b:?}"
    );
    let moved = a.or(b).unwrap();
    assert_eq!(moved.epoch, fx.fence.epoch + 1);
    assert_eq!(moved.migration_status, Some(MigrationStatus::Syncing));
    assert_eq!(
        ok(store.get_pod(&fx.pod).await, "get").as_ref(),
        Some(&moved)
    );
    assert_eq!(next_owner_event(&mut feed, &fx.pod).await, moved.epoch);
    // The old fence is refused from now on.
    expect_err!(
        store
            .put_resource(&fx.fence, &doc(&fx.pod, "/late", "b-late"), &always())
            .await,
        MetaError::Fenced { .. },
        "a write under the old owner's fence"
    );
}

/// An announced resource event reaches subscribers (through PostgreSQL's NOTIFY: another
/// node's store would see it the same way), with its fields intact.
pub async fn check_resource_events(store: &Arc<dyn MetaStore>) {
    // PostgreSQL: the LISTEN connection must be live before an event can arrive.
    let mut feed = store.subscribe();
    within("the feed going live", feed.next()).await;
    let mut events = store.resource_events();
    let ev = super::ResourceEvent {
        pod_id: uid("re-pod"),
        path: "/notes/a b:c.ttl".into(),
        change: super::Change::Created,
        etag: Some("e1".into()),
        at: 42,
    };
    ok(store.announce(&ev).await, "announce");
    let got = within("the resource event", async {
        loop {
            match events.recv().await {
                Ok(e) if e.pod_id == ev.pod_id => return e,
                Ok(_) => continue,
                Err(e) => panic!("resource events: {e}"),
            }
        }
    })
    .await;
    assert_eq!(got, ev);
}

/// 20 racing If-None-Match: * creates of one path: exactly one wins, nothing else happens.
pub async fn check_concurrent_create(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "race").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(store);
        let fence = fx.fence.clone();
        let put = doc(&fx.pod, "/race/one.txt", &format!("{}-{i}", uid("blob")));
        tasks.push(tokio::spawn(async move {
            let res = store.put_resource(&fence, &put, &if_none_match_any()).await;
            (put.blob_key, res)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (blob, res) = t.await.expect("racing put task panicked");
        match res {
            Ok(out) => winners.push((blob, out)),
            Err(MetaError::PreconditionFailed) => {}
            Err(e) => panic!(
                "racing If-None-Match put: expected success or PreconditionFailed, got {e:?}"
            ),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one racing If-None-Match: * put should succeed"
    );
    let (blob, out) = &winners[0];
    assert!(out.created);
    let r = must_get(store, &fx.pod, "/race/one.txt").await;
    assert_eq!(&r.blob_key, blob, "the winner's blob is stored");
    assert_eq!(r.version, 1, "losers wrote nothing");
}

/// 20 concurrent puts of different paths under one new container all succeed.
pub async fn check_concurrent_members(store: &Arc<dyn MetaStore>) {
    let fx = fixture(store, "many").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(store);
        let fence = fx.fence.clone();
        let put = doc(&fx.pod, &format!("/many/f{i:02}.txt"), &uid("blob"));
        tasks.push(tokio::spawn(async move {
            store.put_resource(&fence, &put, &always()).await
        }));
    }
    for t in tasks {
        ok(
            t.await.expect("concurrent put task panicked"),
            "concurrent put under a new container",
        );
    }
    let expected: Vec<String> = (0..20).map(|i| format!("/many/f{i:02}.txt")).collect();
    assert_eq!(
        list(store, &fx.pod, "/many/").await,
        expected,
        "all 20 members are listed, in order"
    );
    assert_eq!(
        list(store, &fx.pod, "/").await,
        vec!["/many/"],
        "the container was created once"
    );
}

/// Join tokens: create, get, list order, duplicate, the secret hash is never serialized,
/// revoke (idempotent), unknown ids.
pub async fn check_join_tokens(store: &Arc<dyn MetaStore>) {
    let tag = uid("cf-jt");
    let now = now_millis();
    // Created out of order: the list is ordered by created_at, then token_id.
    let mut x = join_token(&tag, now, true);
    let mut y = join_token(&tag, now, false);
    if x.token_id > y.token_id {
        std::mem::swap(&mut x.token_id, &mut y.token_id);
    }
    let mut later = join_token(&tag, now + 1, false);
    later.description = String::new();
    for t in [&later, &y, &x] {
        create_token(store, t).await;
    }
    assert_eq!(
        ok(store.get_join_token(&x.token_id).await, "get join token x").as_ref(),
        Some(&x),
        "a join token round-trips"
    );
    assert_eq!(
        ok(
            store.get_join_token(&later.token_id).await,
            "get join token later"
        )
        .as_ref(),
        Some(&later),
        "a join token with an empty description round-trips"
    );
    assert_eq!(
        ok(
            store.get_join_token("000000000000x").await,
            "get unknown join token"
        ),
        None
    );

    let mut dup = join_token(&tag, now + 5, false);
    dup.token_id = x.token_id.clone();
    let e = expect_err!(
        store.create_join_token(&dup).await,
        MetaError::Conflict(_),
        "duplicate join token"
    );
    assert!(
        e.to_string().contains(&x.token_id),
        "the conflict names the token: {e}"
    );
    assert_eq!(
        must_get_token(store, &x.token_id).await,
        x,
        "a duplicate create changes nothing"
    );

    let mine_ids: HashSet<&str> = [&x, &y, &later]
        .iter()
        .map(|t| t.token_id.as_str())
        .collect();
    let all = ok(store.list_join_tokens().await, "list join tokens");
    let mine: Vec<&JoinTokenRecord> = all
        .iter()
        .filter(|t| mine_ids.contains(t.token_id.as_str()))
        .collect();
    assert_eq!(
        mine,
        vec![&x, &y, &later],
        "list_join_tokens is ordered by created_at, then token_id"
    );
    assert!(
        all.windows(2)
            .all(|w| (w[0].created_at, &w[0].token_id) <= (w[1].created_at, &w[1].token_id)),
        "the whole listing is ordered by created_at, then token_id"
    );

    // The secret hash never leaves the store in JSON.
    let json = serde_json::to_value(&x).expect("serialize a join token");
    let text = json.to_string();
    assert!(
        !text.contains(&x.secret_hash),
        "the serialized token must not contain the secret hash: {text}"
    );
    let obj = json
        .as_object()
        .expect("a join token serializes as an object");
    assert!(
        !obj.contains_key("secretHash") && !obj.contains_key("secret_hash"),
        "no secret hash field: {text}"
    );
    assert_eq!(
        obj.get("tokenId"),
        Some(&serde_json::json!(x.token_id)),
        "camelCase: {text}"
    );
    assert_eq!(
        obj.get("singleUse"),
        Some(&serde_json::json!(true)),
        "camelCase: {text}"
    );
    assert_eq!(
        obj.get("useCount"),
        Some(&serde_json::json!(0)),
        "camelCase: {text}"
    );

    // Revoke: idempotent, keeps the first time, touches nothing else.
    ok(
        store.revoke_join_token(&y.token_id, now + 10).await,
        "revoke join token y",
    );
    ok(
        store.revoke_join_token(&y.token_id, now + 20).await,
        "revoke join token y again",
    );
    let got = must_get_token(store, &y.token_id).await;
    assert_eq!(
        got.revoked_at,
        Some(now + 10),
        "revoking again keeps the first time"
    );
    assert_eq!(
        JoinTokenRecord {
            revoked_at: None,
            ..got
        },
        y,
        "revoke changes only revoked_at"
    );
    assert_eq!(
        must_get_token(store, &x.token_id).await.revoked_at,
        None,
        "revoke touches only its token"
    );
    expect_err!(
        store.revoke_join_token(&token_id(), now).await,
        MetaError::NotFound(_),
        "revoke of an unknown join token"
    );
}

/// Join token uses: multi-use counts and keeps the first user, single-use once, expired,
/// revoked and unknown tokens fail without changing anything.
pub async fn check_join_token_uses(store: &Arc<dyn MetaStore>) {
    let tag = uid("cf-jtu");
    let now = now_millis();
    let node_a = uid("cf-jtu-node-a");
    let node_b = uid("cf-jtu-node-b");

    // Multi-use: every use counts; used_at/used_by record the first one.
    let multi = join_token(&tag, now, false);
    create_token(store, &multi).await;
    let first = ok(
        store
            .use_join_token(&multi.token_id, &node_a, now + 1)
            .await,
        "first use of a multi-use token",
    );
    assert_eq!(first.use_count, 1);
    assert_eq!(first.used_at, Some(now + 1));
    assert_eq!(first.used_by.as_deref(), Some(node_a.as_str()));
    let second = ok(
        store
            .use_join_token(&multi.token_id, &node_b, now + 2)
            .await,
        "second use of a multi-use token",
    );
    assert_eq!(second.use_count, 2, "a multi-use token counts every use");
    assert_eq!(second.used_at, Some(now + 1), "used_at stays the first use");
    assert_eq!(
        second.used_by.as_deref(),
        Some(node_a.as_str()),
        "used_by stays the first node"
    );
    assert_eq!(
        must_get_token(store, &multi.token_id).await,
        second,
        "use_join_token returns the stored row"
    );
    assert_eq!(
        JoinTokenRecord {
            used_at: None,
            used_by: None,
            use_count: 0,
            ..second.clone()
        },
        multi,
        "a use changes only used_at, used_by and use_count"
    );

    // Single-use: once.
    let single = join_token(&tag, now, true);
    create_token(store, &single).await;
    let used = ok(
        store
            .use_join_token(&single.token_id, &node_a, now + 1)
            .await,
        "first use of a single-use token",
    );
    assert_eq!(used.use_count, 1);
    assert_eq!(used.used_at, Some(now + 1));
    assert_eq!(used.used_by.as_deref(), Some(node_a.as_str()));
    expect_token_conflict(
        store
            .use_join_token(&single.token_id, &node_b, now + 2)
            .await,
        &single.token_id,
        "already used",
        "second use of a single-use token",
    );
    assert_eq!(
        must_get_token(store, &single.token_id).await,
        used,
        "a refused use changes nothing"
    );

    // Expiry: usable until just before expires_at, refused at and after it.
    let expiring = join_token(&tag, now, false);
    create_token(store, &expiring).await;
    let before_expiry = ok(
        store
            .use_join_token(&expiring.token_id, &node_a, expiring.expires_at - 1)
            .await,
        "use just before expiry",
    );
    assert_eq!(before_expiry.use_count, 1);
    for at in [expiring.expires_at, expiring.expires_at + 60_000] {
        expect_token_conflict(
            store.use_join_token(&expiring.token_id, &node_b, at).await,
            &expiring.token_id,
            "expired",
            "use at or after expires_at",
        );
    }
    assert_eq!(
        must_get_token(store, &expiring.token_id).await,
        before_expiry,
        "an expired use changes nothing (use_count unchanged)"
    );
    let expired = JoinTokenRecord {
        expires_at: now - 1,
        ..join_token(&tag, now - 10, true)
    };
    create_token(store, &expired).await;
    expect_token_conflict(
        store.use_join_token(&expired.token_id, &node_a, now).await,
        &expired.token_id,
        "expired",
        "use of an expired single-use token",
    );
    let got = must_get_token(store, &expired.token_id).await;
    assert_eq!(got, expired, "an expired use changes nothing");
    assert_eq!(got.use_count, 0);
    assert_eq!(got.used_at, None);

    // Revoked: refused, and revocation is reported before expiry.
    let revoked = join_token(&tag, now, false);
    create_token(store, &revoked).await;
    ok(
        store.revoke_join_token(&revoked.token_id, now + 1).await,
        "revoke a token",
    );
    expect_token_conflict(
        store
            .use_join_token(&revoked.token_id, &node_a, now + 2)
            .await,
        &revoked.token_id,
        "revoked",
        "use of a revoked token",
    );
    expect_token_conflict(
        store
            .use_join_token(&revoked.token_id, &node_a, revoked.expires_at + 1)
            .await,
        &revoked.token_id,
        "revoked",
        "use of a revoked and expired token",
    );
    let got = must_get_token(store, &revoked.token_id).await;
    assert_eq!(got.use_count, 0, "a revoked use changes nothing");
    assert_eq!(got.used_at, None);
    assert_eq!(got.used_by, None);
    // Revoking a used token stops further uses too.
    ok(
        store.revoke_join_token(&multi.token_id, now + 3).await,
        "revoke the multi-use token",
    );
    expect_token_conflict(
        store
            .use_join_token(&multi.token_id, &node_b, now + 4)
            .await,
        &multi.token_id,
        "revoked",
        "use of a revoked multi-use token",
    );
    assert_eq!(must_get_token(store, &multi.token_id).await.use_count, 2);

    // Unknown.
    expect_err!(
        store.use_join_token(&token_id(), &node_a, now).await,
        MetaError::NotFound(_),
        "use of an unknown join token"
    );
}

/// 20 racing uses of one single-use token: exactly one wins, 19 see "already used".
pub async fn check_concurrent_join_token_use(store: &Arc<dyn MetaStore>) {
    let tag = uid("cf-jtrace");
    let now = now_millis();
    let token = join_token(&tag, now, true);
    create_token(store, &token).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(store);
        let id = token.token_id.clone();
        let node_id = format!("{tag}-node-{i:02}");
        tasks.push(tokio::spawn(async move {
            let res = store.use_join_token(&id, &node_id, now + 1).await;
            (node_id, res)
        }));
    }
    let mut winners = Vec::new();
    let mut losers = 0;
    for t in tasks {
        let (node_id, res) = t.await.expect("racing join token use panicked");
        match res {
            Ok(rec) => winners.push((node_id, rec)),
            Err(MetaError::Conflict(msg)) if msg.contains("already used") => losers += 1,
            Err(e) => panic!(
                "racing single-use join token: expected success or Conflict (already used), \
                 got {e:?}"
            ),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one racing use of a single-use token should succeed"
    );
    assert_eq!(losers, 19, "the other 19 racing uses are refused");
    let (winner, rec) = &winners[0];
    assert_eq!(rec.use_count, 1);
    assert_eq!(rec.used_by.as_ref(), Some(winner));
    let stored = must_get_token(store, &token.token_id).await;
    assert_eq!(
        &stored, rec,
        "the winner's use is stored, the losers wrote nothing"
    );
}

/// `insert_node`: inserts only a free id, leaves an existing row alone, and of 20 racing
/// claims of one id exactly one wins (the join path reserves an edge's id with it).
pub async fn check_concurrent_node_claims(store: &Arc<dyn MetaStore>) {
    let id = uid("cf-claim");
    let mut first = node(&id, NodeStatus::Offline);
    first.version = "first".into();
    assert!(ok(store.insert_node(&first).await, "claim a free id"));
    let mut second = node(&id, NodeStatus::Online);
    second.version = "second".into();
    assert!(
        !ok(store.insert_node(&second).await, "claim a taken id"),
        "a taken id must not be claimed again"
    );
    assert_eq!(
        ok(store.get_node(&id).await, "get claimed node"),
        Some(first),
        "a refused claim changes nothing"
    );
    let raced = uid("cf-claim-race");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(store);
        let mut n = node(&raced, NodeStatus::Offline);
        n.version = format!("claimant-{i}");
        tasks.push(tokio::spawn(async move {
            (n.version.clone(), store.insert_node(&n).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (who, res) = t.await.expect("racing claim panicked");
        if ok(res, "racing claim") {
            winners.push(who);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one racing claim wins: {winners:?}"
    );
    let stored = ok(store.get_node(&raced).await, "get raced node").expect("a row");
    assert_eq!(stored.version, winners[0], "the winner's row is stored");
}
