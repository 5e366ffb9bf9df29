//! Web Access Control (https://solidproject.org/TR/wac): which modes an ACL document grants
//! an agent on a resource. Pure: the caller finds the effective ACL (the resource's own, else
//! the nearest container's) and says which members apply ([`Applies`]).
//!
//! - An authorization applies through `acl:accessTo <resource>` (the resource's own ACL) or
//!   `acl:default <container>` (inherited).
//! - Subjects: `acl:agent <webid>`, `acl:agentClass foaf:Agent` (everyone) or
//!   `acl:AuthenticatedAgent` (anyone with a WebID), `acl:agentGroup <group>` (a `vcard:Group`
//!   whose `vcard:hasMember` lists the WebID; groups described in the ACL itself or in a
//!   document the caller loaded, see [`Groups`]).
//! - Modes: Read, Write, Append (Write includes it), Control (reads and writes the ACL only).
//! - `acl:origin`: a request from a browser page on another origin (an `Origin` header that is
//!   not the server's) gets a mode that is not public only from an authorization that lists
//!   that origin. (The Community Solid Server ignores `acl:origin`; the specification does not.)

use std::collections::HashSet;

use oxrdf::{Graph, NamedNodeRef, NamedOrBlankNodeRef, TermRef};

const ACL: &str = "http://www.w3.org/ns/auth/acl#";
const FOAF_AGENT: &str = "http://xmlns.com/foaf/0.1/Agent";
const VCARD_HAS_MEMBER: &str = "http://www.w3.org/2006/vcard/ns#hasMember";
const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";

/// A set of access modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Modes {
    pub read: bool,
    pub write: bool,
    pub append: bool,
    pub control: bool,
}

impl Modes {
    pub const READ: Modes = Modes {
        read: true,
        write: false,
        append: false,
        control: false,
    };
    pub const WRITE: Modes = Modes {
        read: false,
        write: true,
        append: true,
        control: false,
    };
    pub const APPEND: Modes = Modes {
        read: false,
        write: false,
        append: true,
        control: false,
    };
    pub const CONTROL: Modes = Modes {
        read: false,
        write: false,
        append: false,
        control: true,
    };
    pub const ALL: Modes = Modes {
        read: true,
        write: true,
        append: true,
        control: true,
    };

    pub fn union(self, o: Modes) -> Modes {
        Modes {
            read: self.read || o.read,
            write: self.write || o.write,
            append: self.append || o.append || o.write || self.write,
            control: self.control || o.control,
        }
    }

    /// Whether every mode of `need` is here.
    pub fn covers(self, need: Modes) -> bool {
        (!need.read || self.read)
            && (!need.write || self.write)
            && (!need.append || self.append || self.write)
            && (!need.control || self.control)
    }

    pub fn is_empty(self) -> bool {
        self == Modes::default()
    }

    /// The `WAC-Allow` words: `read write append control`, in that order.
    pub fn words(self) -> String {
        let mut w = Vec::new();
        if self.read {
            w.push("read");
        }
        if self.write {
            w.push("write");
        }
        if self.append || self.write {
            w.push("append");
        }
        if self.control {
            w.push("control");
        }
        w.join(" ")
    }
}

/// One `acl:Authorization`.
#[derive(Clone, Debug, Default)]
struct Authorization {
    access_to: Vec<String>,
    default: Vec<String>,
    modes: Modes,
    agents: Vec<String>,
    public: bool,
    authenticated: bool,
    groups: Vec<String>,
    origins: Vec<String>,
}

/// A parsed ACL document, plus the group memberships it states itself.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    auths: Vec<Authorization>,
    /// (group, member) pairs stated in the ACL document.
    members: HashSet<(String, String)>,
}

/// How the ACL relates to the resource asked about.
#[derive(Clone, Copy, Debug)]
pub enum Applies<'a> {
    /// The resource's own ACL: `acl:accessTo <url>` authorizations.
    Own(&'a str),
    /// Inherited from container `url`: its `acl:default <url>` authorizations.
    Inherited(&'a str),
}

/// Who asks, and from which web origin.
#[derive(Clone, Copy, Debug, Default)]
pub struct Agent<'a> {
    /// The authenticated WebID (`None`: anonymous).
    pub webid: Option<&'a str>,
    /// The `Origin` of a browser request from another origin than the server's (`None` for
    /// other clients and same-origin pages).
    pub origin: Option<&'a str>,
}

/// Group memberships known besides the ACL's own statements (documents of the same pod).
pub trait Groups {
    fn has_member(&self, group: &str, webid: &str) -> bool;
}

/// No groups beyond those stated in the ACL.
pub struct NoGroups;

impl Groups for NoGroups {
    fn has_member(&self, _: &str, _: &str) -> bool {
        false
    }
}

fn iri(t: TermRef<'_>) -> Option<String> {
    match t {
        TermRef::NamedNode(n) => Some(n.as_str().to_string()),
        _ => None,
    }
}

impl Acl {
    /// Reads the authorizations of `graph` (subjects typed `acl:Authorization`, or with an
    /// `acl:mode`). An authorization without a mode, a target or a subject grants nothing.
    pub fn from_graph(graph: &Graph) -> Acl {
        let p = |local: &str| format!("{ACL}{local}");
        let (access_to, default, mode, agent, agent_class, agent_group, origin) = (
            p("accessTo"),
            p("default"),
            p("mode"),
            p("agent"),
            p("agentClass"),
            p("agentGroup"),
            p("origin"),
        );
        let authorization = p("Authorization");
        let mut subjects: Vec<NamedOrBlankNodeRef<'_>> = Vec::new();
        for t in graph.iter() {
            let typed = t.predicate.as_str() == RDF_TYPE
                && matches!(t.object, TermRef::NamedNode(o) if o.as_str() == authorization);
            if (typed || t.predicate.as_str() == mode) && !subjects.contains(&t.subject) {
                subjects.push(t.subject);
            }
        }
        let mut auths = Vec::new();
        for s in subjects {
            let mut a = Authorization::default();
            for t in graph.triples_for_subject(s) {
                let pred = t.predicate.as_str();
                let obj = iri(t.object);
                let Some(obj) = obj else { continue };
                if pred == access_to {
                    a.access_to.push(obj);
                } else if pred == default {
                    a.default.push(obj);
                } else if pred == agent {
                    a.agents.push(obj);
                } else if pred == agent_group {
                    a.groups.push(obj);
                } else if pred == origin {
                    a.origins.push(obj.trim_end_matches('/').to_string());
                } else if pred == agent_class {
                    if obj == FOAF_AGENT {
                        a.public = true;
                    } else if obj == p("AuthenticatedAgent") {
                        a.authenticated = true;
                    }
                } else if pred == mode {
                    a.modes = a.modes.union(match obj.strip_prefix(ACL) {
                        Some("Read") => Modes::READ,
                        Some("Write") => Modes::WRITE,
                        Some("Append") => Modes::APPEND,
                        Some("Control") => Modes::CONTROL,
                        _ => Modes::default(),
                    });
                }
            }
            auths.push(a);
        }
        let has_member = NamedNodeRef::new_unchecked(VCARD_HAS_MEMBER);
        let members = graph
            .triples_for_predicate(has_member)
            .filter_map(|t| {
                let g = match t.subject {
                    NamedOrBlankNodeRef::NamedNode(n) => n.as_str().to_string(),
                    _ => return None,
                };
                Some((g, iri(t.object)?))
            })
            .collect();
        Acl { auths, members }
    }

    /// The groups named by authorizations that apply to `applies` (to load their documents).
    pub fn groups(&self, applies: Applies<'_>) -> Vec<String> {
        self.auths
            .iter()
            .filter(|a| a.applies(applies))
            .flat_map(|a| a.groups.iter().cloned())
            .collect()
    }

    /// The modes `agent` has on the resource.
    pub fn modes(&self, applies: Applies<'_>, agent: Agent<'_>, groups: &dyn Groups) -> Modes {
        let mut granted = Modes::default();
        for a in self.auths.iter().filter(|a| a.applies(applies)) {
            if a.public {
                granted = granted.union(a.modes);
                continue;
            }
            let Some(webid) = agent.webid else { continue };
            let subject = a.authenticated
                || a.agents.iter().any(|x| x == webid)
                || a.groups.iter().any(|g| {
                    self.members.contains(&(g.clone(), webid.to_string()))
                        || groups.has_member(g, webid)
                });
            if !subject {
                continue;
            }
            // A page on another origin acts for the agent only where an authorization
            // lists that origin.
            if let Some(origin) = agent.origin {
                if !a.origins.iter().any(|o| o == origin.trim_end_matches('/')) {
                    continue;
                }
            }
            granted = granted.union(a.modes);
        }
        granted
    }
}

impl Authorization {
    fn applies(&self, applies: Applies<'_>) -> bool {
        match applies {
            Applies::Own(url) => self.access_to.iter().any(|x| x == url),
            Applies::Inherited(container) => self.default.iter().any(|x| x == container),
        }
    }
}

/// The ACL a pod has when none is stored at its root: its owner (a WebID given when it was
/// created) has every mode; the pod's access mode (`public-read`, `public-read-write`) becomes
/// a public authorization. Turtle, relative to the root container.
pub fn default_root_acl(owner_webid: Option<&str>, public: Modes) -> String {
    let mut out = String::from(
        "@prefix acl: <http://www.w3.org/ns/auth/acl#>.\n@prefix foaf: <http://xmlns.com/foaf/0.1/>.\n",
    );
    if let Some(owner) = owner_webid {
        out.push_str(&format!(
            "\n<#owner> a acl:Authorization;\n    acl:agent <{owner}>;\n    acl:accessTo <./>;\n    acl:default <./>;\n    acl:mode acl:Read, acl:Write, acl:Control.\n"
        ));
    }
    if !public.is_empty() {
        let mut modes = Vec::new();
        if public.read {
            modes.push("acl:Read");
        }
        if public.write {
            modes.push("acl:Write");
        } else if public.append {
            modes.push("acl:Append");
        }
        out.push_str(&format!(
            "\n<#public> a acl:Authorization;\n    acl:agentClass foaf:Agent;\n    acl:accessTo <./>;\n    acl:default <./>;\n    acl:mode {}.\n",
            modes.join(", ")
        ));
    }
    out
}

/// The `WAC-Allow` header value.
pub fn wac_allow(user: Modes, public: Modes) -> String {
    format!("user=\"{}\",public=\"{}\"", user.words(), public.words())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solid::rdf::{parse, Format};

    const ROOT: &str = "https://pod.example/alice/";
    const ALICE: &str = "https://alice.example/profile#me";
    const BOB: &str = "https://bob.example/profile#me";

    fn acl(ttl: &str, at: &str) -> Acl {
        let g = parse(
            format!("@prefix acl: <http://www.w3.org/ns/auth/acl#>. @prefix foaf: <http://xmlns.com/foaf/0.1/>. @prefix vcard: <http://www.w3.org/2006/vcard/ns#>.\n{ttl}").as_bytes(),
            Format::Turtle,
            at,
        )
        .unwrap();
        Acl::from_graph(&g)
    }

    fn who(webid: Option<&'static str>) -> Agent<'static> {
        Agent {
            webid,
            origin: None,
        }
    }

    #[test]
    fn own_acl_uses_access_to_and_inherited_uses_default() {
        let a = acl(
            &format!("<#o> acl:agent <{ALICE}>; acl:accessTo <./>; acl:mode acl:Read. <#d> acl:agent <{ALICE}>; acl:default <./>; acl:mode acl:Write."),
            &format!("{ROOT}.acl"),
        );
        let own = a.modes(Applies::Own(ROOT), who(Some(ALICE)), &NoGroups);
        assert_eq!(own, Modes::READ);
        let inherited = a.modes(Applies::Inherited(ROOT), who(Some(ALICE)), &NoGroups);
        assert!(inherited.write && inherited.append && !inherited.read);
        assert!(a
            .modes(Applies::Own(ROOT), who(Some(BOB)), &NoGroups)
            .is_empty());
    }

    #[test]
    fn agent_classes() {
        let a = acl(
            "<#p> acl:agentClass foaf:Agent; acl:default <./>; acl:mode acl:Read. <#a> acl:agentClass acl:AuthenticatedAgent; acl:default <./>; acl:mode acl:Append.",
            &format!("{ROOT}.acl"),
        );
        let anon = a.modes(Applies::Inherited(ROOT), who(None), &NoGroups);
        assert_eq!(anon, Modes::READ);
        let bob = a.modes(Applies::Inherited(ROOT), who(Some(BOB)), &NoGroups);
        assert!(bob.read && bob.append && !bob.write);
        assert!(bob.covers(Modes::APPEND) && !bob.covers(Modes::WRITE));
    }

    #[test]
    fn groups_in_the_acl_and_from_outside() {
        let a = acl(
            &format!("<#g> acl:agentGroup <#friends>; acl:default <./>; acl:mode acl:Read. <#friends> a vcard:Group; vcard:hasMember <{BOB}>."),
            &format!("{ROOT}.acl"),
        );
        assert_eq!(
            a.modes(Applies::Inherited(ROOT), who(Some(BOB)), &NoGroups),
            Modes::READ
        );
        assert!(a
            .modes(Applies::Inherited(ROOT), who(Some(ALICE)), &NoGroups)
            .is_empty());
        struct AliceIn;
        impl Groups for AliceIn {
            fn has_member(&self, g: &str, w: &str) -> bool {
                g.ends_with("/.acl#friends") && w == ALICE
            }
        }
        assert_eq!(
            a.modes(Applies::Inherited(ROOT), who(Some(ALICE)), &AliceIn),
            Modes::READ
        );
        assert_eq!(
            a.groups(Applies::Inherited(ROOT)),
            vec![format!("{ROOT}.acl#friends")]
        );
    }

    #[test]
    fn origin_limits_what_a_page_on_another_origin_may_do() {
        let a = acl(
            &format!("<#o> acl:agent <{ALICE}>; acl:origin <https://app.example>; acl:default <./>; acl:mode acl:Read, acl:Write.
                      <#n> acl:agent <{ALICE}>; acl:default <./>; acl:mode acl:Control.
                      <#p> acl:agentClass foaf:Agent; acl:default <./>; acl:mode acl:Append."),
            &format!("{ROOT}.acl"),
        );
        let from = |origin| Agent {
            webid: Some(ALICE),
            origin,
        };
        let trusted = a.modes(
            Applies::Inherited(ROOT),
            from(Some("https://app.example")),
            &NoGroups,
        );
        assert!(trusted.read && trusted.write && !trusted.control);
        let evil = a.modes(
            Applies::Inherited(ROOT),
            from(Some("https://evil.example")),
            &NoGroups,
        );
        assert_eq!(evil, Modes::APPEND, "only the public mode");
        let direct = a.modes(Applies::Inherited(ROOT), from(None), &NoGroups);
        assert_eq!(direct, Modes::ALL);
    }

    #[test]
    fn append_is_not_write_and_write_includes_append() {
        assert!(Modes::WRITE.covers(Modes::APPEND));
        assert!(!Modes::APPEND.covers(Modes::WRITE));
        assert!(!Modes::ALL.union(Modes::default()).is_empty());
        assert!(!Modes::WRITE.covers(Modes::CONTROL));
        assert_eq!(
            wac_allow(Modes::WRITE.union(Modes::READ), Modes::READ),
            "user=\"read write append\",public=\"read\""
        );
    }

    #[test]
    fn the_default_root_acl_follows_the_access_mode() {
        let ttl = default_root_acl(Some(ALICE), Modes::READ);
        let a = acl(&ttl, &format!("{ROOT}.acl"));
        assert_eq!(
            a.modes(Applies::Own(ROOT), who(Some(ALICE)), &NoGroups),
            Modes::ALL
        );
        assert_eq!(
            a.modes(Applies::Inherited(ROOT), who(None), &NoGroups),
            Modes::READ
        );
        let private = acl(
            &default_root_acl(None, Modes::default()),
            &format!("{ROOT}.acl"),
        );
        assert!(private
            .modes(Applies::Inherited(ROOT), who(Some(BOB)), &NoGroups)
            .is_empty());
    }
}
