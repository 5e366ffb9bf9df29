//! Tests of the identity module: real TLS 1.3 handshakes between in-memory rustls connections
//! (no sockets), CSR signing rules, certificate identity parsing, and join tokens.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use rustls::{CertificateError, ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;

use super::ca::{identity_from_uris_for_test, issuer_of, node_params_for_test};
use super::provider::provider;
use super::tls::CaServerVerifier;
use super::*;

const ALPN: &[&[u8]] = &[b"xpod/1"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Runs a full handshake by shuttling TLS records between the two connections. Returns which
/// side failed and why, or the established pair.
fn handshake(
    client_cfg: Arc<ClientConfig>,
    server_cfg: Arc<ServerConfig>,
) -> Result<(ClientConnection, ServerConnection), (Side, rustls::Error)> {
    let name = ServerName::IpAddress(Ipv4Addr::new(127, 0, 0, 1).into());
    let mut client = ClientConnection::new(client_cfg, name).expect("client connection");
    let mut server = ServerConnection::new(server_cfg).expect("server connection");
    for _ in 0..32 {
        let mut moved = false;
        while client.wants_write() {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
            }
            server
                .process_new_packets()
                .map_err(|e| (Side::Server, e))?;
            moved = true;
        }
        while server.wants_write() {
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
            }
            client
                .process_new_packets()
                .map_err(|e| (Side::Client, e))?;
            moved = true;
        }
        if !moved && !client.is_handshaking() && !server.is_handshaking() {
            return Ok((client, server));
        }
    }
    panic!("handshake did not finish");
}

fn cluster() -> (ClusterCa, NodeIdentity, NodeIdentity) {
    cluster_named("test")
}

fn cluster_named(name: &str) -> (ClusterCa, NodeIdentity, NodeIdentity) {
    let ca = ClusterCa::generate(name).unwrap();
    let center = ca
        .issue_node("center-1", NodeRole::Center, &[], &[], 30)
        .unwrap();
    let edge = ca
        .issue_node("edge-1", NodeRole::Edge, &[], &[], 30)
        .unwrap();
    (ca, center, edge)
}

fn peer_of_client(c: &ClientConnection) -> PeerIdentity {
    peer_identity(&c.peer_certificates().expect("server certificate")[0]).unwrap()
}

fn peer_of_server(s: &ServerConnection) -> PeerIdentity {
    peer_identity(&s.peer_certificates().expect("client certificate")[0]).unwrap()
}

/// The identity error carried inside a rustls certificate error, if any.
fn identity_error(e: &rustls::Error) -> Option<IdentityError> {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<IdentityError>().cloned()
        }
        _ => None,
    }
}

#[test]
fn center_and_edge_complete_mutual_tls_and_see_each_others_ids() {
    let (_ca, center, edge) = cluster();
    let (client, server) = handshake(
        client_config(&edge, ALPN).unwrap(),
        server_config(&center, ALPN).unwrap(),
    )
    .unwrap();
    assert_eq!(
        peer_of_server(&server),
        PeerIdentity {
            node_id: "edge-1".into(),
            role: NodeRole::Edge
        }
    );
    assert_eq!(
        peer_of_client(&client),
        PeerIdentity {
            node_id: "center-1".into(),
            role: NodeRole::Center
        }
    );
    assert_eq!(client.alpn_protocol(), Some(&b"xpod/1"[..]));
    assert_eq!(server.alpn_protocol(), Some(&b"xpod/1"[..]));
}

#[test]
fn center_to_center_mutual_tls() {
    let (ca, center, _edge) = cluster();
    let other = ca
        .issue_node(
            "center-2",
            NodeRole::Center,
            &["c2.example.com".into()],
            &[IpAddr::from([10, 0, 0, 2])],
            30,
        )
        .unwrap();
    let (client, server) = handshake(
        client_config(&other, ALPN).unwrap(),
        server_config(&center, ALPN).unwrap(),
    )
    .unwrap();
    assert_eq!(peer_of_server(&server).node_id, "center-2");
    assert_eq!(peer_of_server(&server).role, NodeRole::Center);
    assert_eq!(peer_of_client(&client).node_id, "center-1");
}

#[test]
fn ca_reloaded_from_pem_issues_certificates_that_interoperate() {
    let (ca, center, _) = cluster();
    let (cert_pem, key_pem) = ca.to_pem();
    let reloaded = ClusterCa::from_pem(&cert_pem, &key_pem).unwrap();
    assert_eq!(reloaded.fingerprint(), ca.fingerprint());
    assert_eq!(reloaded.to_pem(), (cert_pem, key_pem));
    let edge = reloaded
        .issue_node("edge-7", NodeRole::Edge, &[], &[], 30)
        .unwrap();
    let (_, server) = handshake(
        client_config(&edge, ALPN).unwrap(),
        server_config(&center, ALPN).unwrap(),
    )
    .unwrap();
    assert_eq!(peer_of_server(&server).node_id, "edge-7");
}

#[test]
fn ca_from_pem_rejects_wrong_key_and_non_ca() {
    let (ca, center, _) = cluster();
    let other = ClusterCa::generate("other").unwrap();
    let (cert_pem, _) = ca.to_pem();
    let (_, other_key) = other.to_pem();
    assert_eq!(
        ClusterCa::from_pem(&cert_pem, &other_key).unwrap_err(),
        IdentityError::KeyMismatch
    );
    assert_eq!(
        ClusterCa::from_pem(&center.cert_pem, &center.key_pem).unwrap_err(),
        IdentityError::NotCa
    );
}

#[test]
fn ca_certificate_is_a_constrained_ca() {
    let (ca, ..) = cluster();
    let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let years = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
        / 86_400
        / 365;
    assert!((9..=10).contains(&years), "{years}");
    assert!(ca.fingerprint().starts_with("sha256:"));
    assert_eq!(ca.fingerprint().len(), 7 + 64);
    assert!(!format!("{ca:?}").contains("PRIVATE"));
}

#[test]
fn client_certificate_from_another_ca_is_refused_by_the_server() {
    let (_ca, center, _) = cluster();
    // Another cluster with a different name (unknown issuer), and one with the *same* name, so
    // the issuer DN matches and only the signature tells them apart.
    for (other_name, want) in [
        ("elsewhere", CertificateError::UnknownIssuer),
        ("test", CertificateError::BadSignature),
    ] {
        let (_other_ca, _, foreign_edge) = cluster_named(other_name);
        // The foreign edge trusts our CA (so it gets as far as presenting its certificate).
        let mut edge = foreign_edge.clone();
        edge.ca_pem = center.ca_pem.clone();
        let (side, err) = handshake(
            client_config(&edge, ALPN).unwrap(),
            server_config(&center, ALPN).unwrap(),
        )
        .unwrap_err();
        assert_eq!(side, Side::Server);
        assert_eq!(err, rustls::Error::InvalidCertificate(want));
    }
}

#[test]
fn server_certificate_from_another_ca_is_refused_by_the_client() {
    let (_ca, _, edge) = cluster();
    for (other_name, want) in [
        ("elsewhere", CertificateError::UnknownIssuer),
        ("test", CertificateError::BadSignature),
    ] {
        let (_other_ca, foreign_center, _) = cluster_named(other_name);
        let (side, err) = handshake(
            client_config(&edge, ALPN).unwrap(),
            server_config(&foreign_center, ALPN).unwrap(),
        )
        .unwrap_err();
        assert_eq!(side, Side::Client);
        assert_eq!(err, rustls::Error::InvalidCertificate(want));
    }
}

#[test]
fn client_without_a_certificate_is_refused() {
    let (_ca, center, edge) = cluster();
    let p = provider();
    let verifier = Arc::new(CaServerVerifier {
        roots: {
            let mut r = rustls::RootCertStore::empty();
            r.add(edge.ca_der().unwrap()).unwrap();
            Arc::new(r)
        },
        algs: p.signature_verification_algorithms,
        role: None,
    });
    let no_cert = ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let (side, err) =
        handshake(Arc::new(no_cert), server_config(&center, ALPN).unwrap()).unwrap_err();
    assert_eq!(side, Side::Server);
    assert_eq!(err, rustls::Error::NoCertificatesPresented,);
}

#[test]
fn client_refuses_an_edge_posing_as_server() {
    let (ca, _, edge) = cluster();
    let other_edge = ca
        .issue_node("edge-2", NodeRole::Edge, &[], &[], 30)
        .unwrap();
    let (side, err) = handshake(
        client_config(&edge, ALPN).unwrap(),
        server_config(&other_edge, ALPN).unwrap(),
    )
    .unwrap_err();
    assert_eq!(side, Side::Client);
    assert_eq!(
        identity_error(&err),
        Some(IdentityError::WrongRole {
            expected: NodeRole::Center,
            actual: NodeRole::Edge
        })
    );
}

#[test]
fn ca_signed_certificate_without_node_identity_is_refused_both_ways() {
    let (ca, center, edge) = cluster();
    // A certificate from the right CA but with only a DNS name: not a node certificate.
    let mut params = node_params_for_test("plain", NodeRole::Edge).unwrap();
    params.subject_alt_names = vec![SanType::DnsName("plain.example.com".try_into().unwrap())];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer_of(&ca)).unwrap();
    let plain = NodeIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: ca.cert_pem().to_string(),
    };
    let (side, err) = handshake(
        client_config(&plain, ALPN).unwrap(),
        server_config(&center, ALPN).unwrap(),
    )
    .unwrap_err();
    assert_eq!(side, Side::Server);
    assert_eq!(identity_error(&err), Some(IdentityError::MissingNodeId));

    let (side, err) = handshake(
        client_config(&edge, ALPN).unwrap(),
        server_config(&plain, ALPN).unwrap(),
    )
    .unwrap_err();
    assert_eq!(side, Side::Client);
    assert_eq!(identity_error(&err), Some(IdentityError::MissingNodeId));
}

#[test]
fn bootstrap_accepts_the_right_fingerprint_and_refuses_a_wrong_one() {
    let (ca, center, _) = cluster();
    let (client, _) = handshake(
        bootstrap_client_config(&ca.fingerprint(), &[b"http/1.1"]).unwrap(),
        join_server_config(&center, &[b"http/1.1"]).unwrap(),
    )
    .unwrap();
    assert_eq!(peer_of_client(&client).node_id, "center-1");
    // Bare hex works too (the form inside a token).
    let bare = ca.fingerprint()["sha256:".len()..].to_string();
    handshake(
        bootstrap_client_config(&bare, &[]).unwrap(),
        join_server_config(&center, &[]).unwrap(),
    )
    .unwrap();

    let other = ClusterCa::generate("other").unwrap();
    let (side, err) = handshake(
        bootstrap_client_config(&other.fingerprint(), &[]).unwrap(),
        join_server_config(&center, &[]).unwrap(),
    )
    .unwrap_err();
    assert_eq!(side, Side::Client);
    assert_eq!(
        identity_error(&err),
        Some(IdentityError::FingerprintMismatch)
    );

    assert!(matches!(
        bootstrap_client_config("sha256:abcd", &[]),
        Err(IdentityError::InvalidFingerprint(_))
    ));
}

#[test]
fn bootstrap_refuses_an_impostor_that_replays_the_real_ca_certificate() {
    // The CA certificate is public: an impostor can send it in its chain, but its own leaf is
    // not signed by that CA, so verification against the pinned CA must fail.
    let (ca, _, _) = cluster();
    let (_, impostor, _) = cluster();
    let mut replaying = impostor.clone();
    replaying.ca_pem = ca.cert_pem().to_string();
    let (side, err) = handshake(
        bootstrap_client_config(&ca.fingerprint(), &[]).unwrap(),
        join_server_config(&replaying, &[]).unwrap(),
    )
    .unwrap_err();
    assert_eq!(side, Side::Client);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            )
        ),
        "{err:?}"
    );
}

#[test]
fn bootstrap_refuses_an_edge_certificate() {
    let (ca, _, edge) = cluster();
    let (side, err) = handshake(
        bootstrap_client_config(&ca.fingerprint(), &[]).unwrap(),
        join_server_config(&edge, &[]).unwrap(),
    )
    .unwrap_err();
    assert_eq!(side, Side::Client);
    assert!(matches!(
        identity_error(&err),
        Some(IdentityError::WrongRole { .. })
    ));
}

#[test]
fn joined_edge_gets_a_working_identity_from_its_csr() {
    let (ca, center, _) = cluster();
    let (csr_pem, key_pem) = NodeIdentity::generate_csr("edge-9").unwrap();
    assert!(csr_pem.contains("CERTIFICATE REQUEST"));
    let cert_pem = ca.sign_csr(&csr_pem, "edge-9", NodeRole::Edge, 30).unwrap();
    let edge = NodeIdentity::from_pem(&cert_pem, &key_pem, ca.cert_pem()).unwrap();
    assert_eq!(
        edge.identity().unwrap(),
        PeerIdentity {
            node_id: "edge-9".into(),
            role: NodeRole::Edge
        }
    );
    let (_, server) = handshake(
        client_config(&edge, ALPN).unwrap(),
        server_config(&center, ALPN).unwrap(),
    )
    .unwrap();
    assert_eq!(peer_of_server(&server).node_id, "edge-9");

    // A key that isn't the certificate's, or a certificate from another CA, is refused on load.
    let (_, other_key) = NodeIdentity::generate_csr("edge-9").unwrap();
    assert_eq!(
        NodeIdentity::from_pem(&cert_pem, &other_key, ca.cert_pem()).unwrap_err(),
        IdentityError::KeyMismatch
    );
    let other = ClusterCa::generate("other").unwrap();
    assert!(matches!(
        NodeIdentity::from_pem(&cert_pem, &key_pem, other.cert_pem()),
        Err(IdentityError::InvalidCertificate(_))
    ));
}

#[test]
fn sign_csr_refuses_a_csr_for_another_node_id() {
    let (ca, ..) = cluster();
    let (csr_pem, _) = NodeIdentity::generate_csr("edge-2").unwrap();
    assert_eq!(
        ca.sign_csr(&csr_pem, "edge-1", NodeRole::Edge, 30)
            .unwrap_err(),
        IdentityError::CsrIdentityMismatch {
            expected: "edge-1".into(),
            requested: "edge-2".into()
        }
    );
}

#[test]
fn sign_csr_refuses_mismatched_common_name_and_missing_identity() {
    let (ca, ..) = cluster();
    let key = KeyPair::generate().unwrap();

    // Right URI SAN, but the CN names another node.
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "center-1");
    params.subject_alt_names = vec![SanType::URI("xpod://node/edge-1".try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    assert!(matches!(
        ca.sign_csr(&csr, "edge-1", NodeRole::Edge, 30),
        Err(IdentityError::CsrIdentityMismatch { .. })
    ));

    // No node id at all.
    let mut params = CertificateParams::new(vec!["edge-1.example.com".to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    assert_eq!(
        ca.sign_csr(&csr, "edge-1", NodeRole::Edge, 30).unwrap_err(),
        IdentityError::CsrNoIdentity
    );

    // Garbage.
    assert!(matches!(
        ca.sign_csr("not a csr", "edge-1", NodeRole::Edge, 30),
        Err(IdentityError::InvalidCsr(_))
    ));
}

#[test]
fn csr_asking_for_ca_and_extra_names_gets_a_plain_node_certificate() {
    let (ca, center, _) = cluster();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "edge-1");
    params
        .subject_alt_names
        .push(SanType::URI("xpod://node/edge-1".try_into().unwrap()));
    params
        .subject_alt_names
        .push(SanType::URI("xpod://role/center".try_into().unwrap()));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let cert_pem = ca.sign_csr(&csr, "edge-1", NodeRole::Edge, 30).unwrap();
    let edge = NodeIdentity::from_pem(&cert_pem, &key.serialize_pem(), ca.cert_pem()).unwrap();
    let der = edge.cert_der().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(!bc.ca, "CSR's CA request must be ignored");
    assert!(!cert.is_ca());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(!ku.key_cert_sign());
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(!sans.iter().any(|s| s.contains("evil")), "{sans:?}");
    // The center decided the role, not the CSR.
    assert_eq!(
        peer_identity(&der).unwrap(),
        PeerIdentity {
            node_id: "edge-1".into(),
            role: NodeRole::Edge
        }
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);

    // The issued certificate cannot sign: a "node" certificate minted with the edge's key is
    // refused by the center.
    let mut forged = node_params_for_test("center-9", NodeRole::Center).unwrap();
    forged.use_authority_key_identifier_extension = false;
    let edge_issuer =
        rcgen::Issuer::from_ca_cert_der(&der, KeyPair::from_pem(&edge.key_pem).unwrap()).unwrap();
    let forged_key = KeyPair::generate().unwrap();
    let forged_cert = forged.signed_by(&forged_key, &edge_issuer).unwrap();
    let forged_chain = NodeIdentity {
        cert_pem: forged_cert.pem(),
        key_pem: forged_key.serialize_pem(),
        ca_pem: ca.cert_pem().to_string(),
    };
    let client = {
        let p = provider();
        let mut r = rustls::RootCertStore::empty();
        r.add(center.ca_der().unwrap()).unwrap();
        let verifier = Arc::new(CaServerVerifier {
            roots: Arc::new(r),
            algs: p.signature_verification_algorithms,
            role: None,
        });
        ClientConfig::builder_with_provider(p)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            // The edge certificate goes along as an "intermediate", as an attacker would send it.
            .with_client_auth_cert(
                vec![forged_chain.cert_der().unwrap(), der.clone()],
                forged_chain.key_der().unwrap(),
            )
            .unwrap()
    };
    let (side, err) =
        handshake(Arc::new(client), server_config(&center, ALPN).unwrap()).unwrap_err();
    assert_eq!(side, Side::Server);
    // webpki reports EndEntityUsedAsCa: the edge certificate is CA:false.
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}

#[test]
fn node_certificates_carry_uri_sans_and_both_ekus() {
    let (_, center, _) = cluster();
    let der = center.cert_der().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(
        sans.iter().any(|s| s.contains("xpod://node/center-1")),
        "{sans:?}"
    );
    assert!(
        sans.iter().any(|s| s.contains("xpod://role/center")),
        "{sans:?}"
    );
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert_eq!(
        center.ca_fingerprint().unwrap(),
        fingerprint_of(&center.ca_der().unwrap())
    );
}

#[test]
fn peer_identity_rejects_absent_duplicated_and_malformed_identities() {
    use IdentityError::*;
    let ok = identity_from_uris_for_test(["xpod://node/a-1", "xpod://role/edge"]).unwrap();
    assert_eq!(ok.node_id, "a-1");
    assert_eq!(ok.role, NodeRole::Edge);
    // Unrelated URIs are ignored.
    assert!(
        identity_from_uris_for_test(["https://x", "xpod://node/a", "xpod://role/center"]).is_ok()
    );

    let cases: &[(&[&str], IdentityError)] = &[
        (&["xpod://role/edge"], MissingNodeId),
        (&["xpod://node/a"], MissingRole),
        (
            &["xpod://node/a", "xpod://node/b", "xpod://role/edge"],
            DuplicateNodeId,
        ),
        (
            &["xpod://node/a", "xpod://node/a", "xpod://role/edge"],
            DuplicateNodeId,
        ),
        (
            &["xpod://node/a", "xpod://role/edge", "xpod://role/center"],
            DuplicateRole,
        ),
        (
            &["xpod://node/A", "xpod://role/edge"],
            InvalidNodeId("A".into()),
        ),
        (
            &["xpod://node/", "xpod://role/edge"],
            InvalidNodeId("".into()),
        ),
        (
            &["xpod://node/-a", "xpod://role/edge"],
            InvalidNodeId("-a".into()),
        ),
        (
            &["xpod://node/a/b", "xpod://role/edge"],
            InvalidNodeId("a/b".into()),
        ),
        (
            &["xpod://node/a", "xpod://role/admin"],
            InvalidRole("admin".into()),
        ),
        (
            &["xpod://node/a", "xpod://role/edge", "XPOD://node/b"],
            UnknownXpodUri("XPOD://node/b".into()),
        ),
    ];
    for (uris, want) in cases {
        assert_eq!(
            &identity_from_uris_for_test(uris.iter().copied()).unwrap_err(),
            want,
            "{uris:?}"
        );
    }

    // Through real certificates: a CA certificate is never a node, garbage is refused.
    let (ca, ..) = cluster();
    assert!(peer_identity(ca.cert_der()).is_err());
    assert!(matches!(
        peer_identity(b"garbage"),
        Err(InvalidCertificate(_))
    ));
    let mut params = node_params_for_test("dup", NodeRole::Edge).unwrap();
    params
        .subject_alt_names
        .push(SanType::URI("xpod://node/other".try_into().unwrap()));
    let cert = params
        .signed_by(&KeyPair::generate().unwrap(), issuer_of(&ca))
        .unwrap();
    assert_eq!(peer_identity(cert.der()).unwrap_err(), DuplicateNodeId);
    let mut params = node_params_for_test("x", NodeRole::Edge).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let cert = params
        .signed_by(&KeyPair::generate().unwrap(), issuer_of(&ca))
        .unwrap();
    assert_eq!(peer_identity(cert.der()).unwrap_err(), NodeCertIsCa);
}

#[test]
fn node_ids_are_validated() {
    for good in ["a", "edge-1", "0", &"a".repeat(63), "a-b-c"] {
        assert!(validate_node_id(good).is_ok(), "{good}");
    }
    for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "é"] {
        assert!(validate_node_id(bad).is_err(), "{bad}");
    }
    let (ca, ..) = cluster();
    assert!(ca.issue_node("Bad", NodeRole::Edge, &[], &[], 30).is_err());
    assert!(NodeIdentity::generate_csr("bad_id").is_err());
    assert_eq!(
        ca.issue_node("ok", NodeRole::Edge, &[], &[], 0)
            .unwrap_err(),
        IdentityError::InvalidValidity(0)
    );
    assert!(ca
        .issue_node("ok", NodeRole::Center, &["bad name".into()], &[], 30)
        .is_err());
    assert_eq!("center".parse::<NodeRole>().unwrap(), NodeRole::Center);
    assert!("Center".parse::<NodeRole>().is_err());
}

#[test]
fn debug_output_never_shows_private_keys() {
    let (ca, center, _) = cluster();
    let shown = format!("{center:?} {ca:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(!shown.contains(&center.key_pem[30..60]), "{shown}");
    assert!(shown.contains("center-1"));
}

// ---- join tokens ----

fn fp() -> String {
    format!("sha256:{}", "ab".repeat(32))
}

#[test]
fn token_round_trips_through_text() {
    let token = JoinToken::generate(&fp()).unwrap();
    assert_eq!(token.id.len(), 12);
    assert_eq!(token.secret.len(), 64);
    assert_eq!(token.ca_fingerprint, fp());
    let text = token.to_text();
    assert!(text.starts_with("xpt_"));
    assert_eq!(text.len(), 4 + 12 + 1 + 64 + 1 + 64);
    let parsed = JoinToken::parse(&text).unwrap();
    assert_eq!(parsed.id, token.id);
    assert_eq!(parsed.secret, token.secret);
    assert_eq!(parsed.ca_fingerprint, token.ca_fingerprint);
    assert_eq!(parsed.to_text(), text);
    // Whitespace around a pasted token and upper-case hex are tolerated.
    let upper = JoinToken::parse(&format!("  xpt_{}\n", text[4..].to_uppercase())).unwrap();
    assert_eq!(upper.to_text(), text);
    // Two tokens differ.
    let other = JoinToken::generate(&fp()).unwrap();
    assert_ne!(other.id, token.id);
    assert_ne!(other.secret, token.secret);
    // The token's fingerprint drives the bootstrap config directly.
    assert!(bootstrap_client_config(&parsed.ca_fingerprint, &[]).is_ok());
}

#[test]
fn malformed_tokens_name_the_wrong_part() {
    let id = "0123456789ab";
    let secret = "cd".repeat(32);
    let f = "ef".repeat(32);
    let cases: Vec<(String, TokenError)> = vec![
        (format!("xpx_{id}.{secret}.{f}"), TokenError::Prefix),
        (format!("{id}.{secret}.{f}"), TokenError::Prefix),
        (String::new(), TokenError::Prefix),
        (format!("xpt_0123.{secret}.{f}"), TokenError::Id),
        (format!("xpt_0123456789xy.{secret}.{f}"), TokenError::Id),
        ("xpt_".to_string(), TokenError::Id),
        (format!("xpt_{id}"), TokenError::Secret),
        (format!("xpt_{id}.abc.{f}"), TokenError::Secret),
        (
            format!("xpt_{id}.{}.{f}", "zz".repeat(32)),
            TokenError::Secret,
        ),
        (format!("xpt_{id}.{secret}"), TokenError::Fingerprint),
        (format!("xpt_{id}.{secret}.abcd"), TokenError::Fingerprint),
        (
            format!("xpt_{id}.{secret}.{f}.extra"),
            TokenError::Fingerprint,
        ),
        (
            format!("xpt_{id}.{secret}.sha256:{f}"),
            TokenError::Fingerprint,
        ),
    ];
    for (text, want) in cases {
        assert_eq!(JoinToken::parse(&text).unwrap_err(), want, "{text}");
    }
    assert_eq!(
        JoinToken::generate("sha256:12").unwrap_err(),
        TokenError::Fingerprint
    );
    assert!(JoinToken::parse(&format!("xpt_{id}.{secret}.{f}")).is_ok());
}

#[test]
fn secret_is_verified_against_its_hash() {
    let token = JoinToken::generate(&fp()).unwrap();
    let stored = token.secret_hash();
    assert_eq!(stored.len(), 64);
    assert!(!stored.contains(&token.secret));
    assert!(token.verify_secret(&stored));
    let mut wrong = token.clone();
    wrong.secret = "00".repeat(32);
    assert!(!wrong.verify_secret(&stored));
    assert!(!token.verify_secret("not hex"));
    assert!(!token.verify_secret(&stored[..62]));
    assert!(!token.verify_secret(""));
}

#[test]
fn token_records_refuse_expired_and_reused_tokens() {
    let token = JoinToken::generate(&fp()).unwrap();
    let now = 1_700_000_000_000;
    let mut single = TokenRecord::new(&token, now, 60_000, true);
    assert_eq!(single.check(now), Ok(()));
    assert_eq!(single.verify(&token, now + 1), Ok(()));
    assert_eq!(single.check(now + 60_000), Err(TokenError::Expired));
    assert_eq!(
        single.verify(&token, now + 120_000),
        Err(TokenError::Expired)
    );
    single.mark_used(now + 5);
    assert_eq!(single.check(now + 10), Err(TokenError::AlreadyUsed));
    assert_eq!(
        single.verify(&token, now + 10),
        Err(TokenError::AlreadyUsed)
    );

    let mut multi = TokenRecord::new(&token, now, 60_000, false);
    multi.mark_used(now + 5);
    assert_eq!(multi.check(now + 10), Ok(()));

    let other = JoinToken::generate(&fp()).unwrap();
    assert_eq!(multi.verify(&other, now), Err(TokenError::Mismatch));
    let mut same_id_wrong_secret = other.clone();
    same_id_wrong_secret.id = token.id.clone();
    assert_eq!(
        multi.verify(&same_id_wrong_secret, now),
        Err(TokenError::Mismatch)
    );

    // Records serialize (the node stores them) without the secret.
    let json = serde_json::to_string(&single).unwrap();
    assert!(!json.contains(&token.secret));
    let back: TokenRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back, single);
}

#[test]
fn token_debug_redacts_the_secret() {
    let token = JoinToken::generate(&fp()).unwrap();
    let shown = format!("{token:?}");
    assert!(!shown.contains(&token.secret), "{shown}");
    assert!(shown.contains(&token.id));
}
