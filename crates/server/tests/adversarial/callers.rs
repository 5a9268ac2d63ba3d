//! The caller classes (the rows of the matrix) and the ways the suite runs one interaction
//! across them.

#![allow(dead_code)]

use super::fixture::{Viewer, Who, World, DIV_B, DIV_C, ORG_B, ORG_C};
use super::harness::{Auth, Node, Reply, Request};
use super::leak::Matrix;

/// Another resident: bob's `patient/*.cruds` token, attacking alice's records.
pub const OTHER_RESIDENT: &str = "other-resident";
/// A consent-denied organisation: org-c (`user/*.cruds`, 320115), attacking carol's records.
pub const CONSENT_DENIED: &str = "consent-denied-org";
/// An organisation of another division: org-b (`user/*.cruds`, 320115), attacking alice's
/// records held by org-a in 320481.
pub const OTHER_DIVISION: &str = "other-division-org";
/// A user without the scope or role the interaction needs: org-b's `user/Observation.rs`.
pub const MISSING_ROLE: &str = "missing-role";
/// Nobody: no token, and a garbage token.
pub const NOBODY: &str = "nobody";

/// The resident the records are about, with their own token.
pub const RESIDENT_SELF: &str = "resident-self";
/// The organisation holding the records.
pub const HOLDER_ORG: &str = "holder-org";
/// The operator's `system/*.cruds` token without organisation.
pub const OPERATOR: &str = "operator";

/// Every attacking class, in the order of the matrix's rows.
pub const ATTACKERS: &[&str] = &[
    OTHER_RESIDENT,
    CONSENT_DENIED,
    OTHER_DIVISION,
    MISSING_ROLE,
    NOBODY,
];

/// One attacking caller.
pub struct Attacker {
    pub caller: &'static str,
    /// The credentials it tries (nobody tries two).
    pub auths: Vec<Auth>,
    /// What it may see.
    pub viewer: Viewer,
    /// The resident whose records it attacks.
    pub victim: Who,
    /// Its own resident (for writes that need a patient it can see): bob for everyone.
    pub own: Who,
    /// Every secret it must never receive.
    pub hidden: Vec<String>,
    /// Its institution-system (`system/*.cruds`) credentials, for interactions that need a
    /// system scope (bulk export); the same as `auths` where there is none.
    pub system_auths: Vec<Auth>,
}

impl Attacker {
    /// Whether this caller may see a fixture record (by label).
    pub fn sees(&self, world: &World, label: &str) -> bool {
        World::visible(&self.viewer, world.record(label))
    }
}

fn bearer(token: &str) -> Auth {
    Auth::Bearer(token.to_owned())
}

/// The attacking callers of a world.
pub fn attackers(w: &World) -> Vec<Attacker> {
    let org =
        |org: &'static str, division: &'static str, types: Option<Vec<&'static str>>| Viewer::Org {
            org,
            division,
            types,
        };
    let list = vec![
        (
            OTHER_RESIDENT,
            vec![bearer(&w.bob.token)],
            Viewer::Resident(Who::Bob),
            Who::Alice,
            vec![bearer(&w.bob.token)],
        ),
        (
            CONSENT_DENIED,
            vec![bearer(&w.org_c_user)],
            org(ORG_C, DIV_C, None),
            Who::Carol,
            vec![bearer(&w.org_c_system)],
        ),
        (
            OTHER_DIVISION,
            vec![bearer(&w.org_b_user)],
            org(ORG_B, DIV_B, None),
            Who::Alice,
            vec![bearer(&w.org_b_system)],
        ),
        (
            MISSING_ROLE,
            vec![bearer(&w.no_role)],
            org(ORG_B, DIV_B, Some(vec!["Observation"])),
            Who::Alice,
            vec![bearer(&w.no_role)],
        ),
        (
            NOBODY,
            vec![Auth::None, bearer(&w.garbage)],
            Viewer::Nobody,
            Who::Alice,
            vec![Auth::None, bearer(&w.garbage)],
        ),
    ];
    list.into_iter()
        .map(|(caller, auths, viewer, victim, system_auths)| Attacker {
            caller,
            hidden: w.hidden_from(&viewer),
            auths,
            viewer,
            victim,
            own: Who::Bob,
            system_auths,
        })
        .collect()
}

/// One legitimate caller of the victim's records.
pub struct Legit {
    pub caller: &'static str,
    pub auth: Auth,
}

/// Who may see `victim`'s records: the resident, the holding organisation, the operator.
pub fn legit(w: &World, victim: Who) -> Vec<Legit> {
    let holder = match victim {
        Who::Alice => &w.org_a_user,
        Who::Bob | Who::Carol => &w.org_b_user,
    };
    vec![
        Legit {
            caller: RESIDENT_SELF,
            auth: bearer(&w.resident(victim).token),
        },
        Legit {
            caller: HOLDER_ORG,
            auth: bearer(holder),
        },
        Legit {
            caller: OPERATOR,
            auth: bearer(&w.operator),
        },
    ]
}

/// A request about a hidden target and the same request about an absent one.
pub struct Pair {
    pub hidden: Request,
    pub absent: Request,
    /// What differs between the two (ids, values), scrubbed before comparing.
    pub names: Vec<String>,
    /// Statuses the hidden request may answer with (`None`: any, as long as it equals the
    /// absent one's).
    pub expect: Option<Vec<u16>>,
}

impl Pair {
    pub fn new(hidden: Request, absent: Request, names: &[&str]) -> Self {
        Self {
            hidden,
            absent,
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            expect: None,
        }
    }

    pub fn expect(mut self, statuses: &[u16]) -> Self {
        self.expect = Some(statuses.to_vec());
        self
    }
}

/// A fresh id no record has.
pub fn absent_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The status a hidden record's read gets under `docs/security.md`: 404 as if absent, 403
/// when the token does not grant the type at all, 401 without a valid token.
pub fn hidden_read_status(attacker: &Attacker, resource_type: &str) -> Vec<u16> {
    match (&attacker.viewer, attacker.caller) {
        (Viewer::Nobody, _) => vec![401],
        (
            Viewer::Org {
                types: Some(types), ..
            },
            _,
        ) if !types.contains(&resource_type) => {
            vec![403]
        }
        _ => vec![404],
    }
}

/// Runs `pairs` for every attacker and credential: the hidden reply leaks nothing, says what
/// the absent reply says, and has an expected status.
pub async fn run_pairs(
    m: &mut Matrix,
    node: &Node,
    w: &World,
    interaction: &str,
    build: impl Fn(&Attacker) -> Vec<Pair>,
) {
    for attacker in attackers(w) {
        let pairs = build(&attacker);
        for auth in &attacker.auths {
            for pair in &pairs {
                let hidden = node.send(auth, &pair.hidden).await;
                let absent = node.send(auth, &pair.absent).await;
                check_pair(m, interaction, &attacker, pair, &hidden, &absent);
            }
        }
    }
}

/// The checks of one pair's replies.
pub fn check_pair(
    m: &mut Matrix,
    interaction: &str,
    attacker: &Attacker,
    pair: &Pair,
    hidden: &Reply,
    absent: &Reply,
) {
    m.no_leak(
        interaction,
        attacker.caller,
        &pair.hidden,
        hidden,
        &attacker.hidden,
    );
    m.no_leak(
        interaction,
        attacker.caller,
        &pair.absent,
        absent,
        &attacker.hidden,
    );
    let names: Vec<&str> = pair.names.iter().map(String::as_str).collect();
    m.same_as_absent(
        interaction,
        attacker.caller,
        (&pair.hidden, hidden),
        (&pair.absent, absent),
        &names,
    );
    if let Some(expected) = &pair.expect {
        m.status(interaction, attacker.caller, &pair.hidden, hidden, expected);
    }
}

/// Runs one request for every attacker: it leaks nothing.
pub async fn run_each(
    m: &mut Matrix,
    node: &Node,
    w: &World,
    interaction: &str,
    build: impl Fn(&Attacker) -> Vec<Request>,
) -> Vec<(String, Reply)> {
    let mut replies = Vec::new();
    for attacker in attackers(w) {
        for auth in &attacker.auths {
            for request in build(&attacker) {
                let reply = node.send(auth, &request).await;
                m.no_leak(
                    interaction,
                    attacker.caller,
                    &request,
                    &reply,
                    &attacker.hidden,
                );
                replies.push((attacker.caller.to_owned(), reply));
            }
        }
    }
    replies
}

/// A legitimate caller's request gets `value`.
pub async fn legit_gets(
    m: &mut Matrix,
    node: &Node,
    interaction: &str,
    caller: &Legit,
    request: &Request,
    value: &str,
) -> Reply {
    let reply = node.send(&caller.auth, request).await;
    m.gets(interaction, caller.caller, request, &reply, value);
    reply
}

/// Every legitimate caller of alice's records gets `value` from `request`.
pub async fn legit_all(
    m: &mut Matrix,
    node: &Node,
    w: &World,
    interaction: &str,
    request: &Request,
    value: &str,
) {
    for caller in legit(w, Who::Alice) {
        legit_gets(m, node, interaction, &caller, request, value).await;
    }
}

/// Every fixture record a reply carries (as a Bundle entry or as the body) is one `viewer`
/// may see; records the fixture does not know (the caller's own writes) are not judged here.
pub fn check_visible_only(
    m: &mut Matrix,
    interaction: &str,
    caller: &str,
    viewer: &Viewer,
    w: &World,
    request: &Request,
    reply: &Reply,
) {
    let mut carried = reply.all_resources();
    if reply.body["resourceType"].is_string() && reply.body["resourceType"] != "Bundle" {
        carried.push(reply.body.clone());
    }
    let shown: Vec<String> = carried
        .iter()
        .filter_map(|r| {
            let rt = r["resourceType"].as_str()?;
            let id = r["id"].as_str()?;
            let record = w
                .records
                .iter()
                .find(|x| x.resource_type == rt && x.id == id)?;
            (!World::visible(viewer, record)).then(|| record.label.clone())
        })
        .collect();
    m.check(interaction, caller, shown.is_empty(), || {
        format!(
            "{} {} returned records the caller may not see: {}",
            request.method,
            request.path,
            shown.join(", ")
        )
    });
}

/// Follows a search's `next` links to the end (at most 100 pages), checking every page for
/// leaks; returns (every page, the ids of the matches seen, the first page's total).
pub async fn walk(
    m: &mut Matrix,
    node: &Node,
    interaction: &str,
    caller: &str,
    auth: &Auth,
    first: &str,
    hidden: &[String],
) -> (Vec<Reply>, Vec<String>, Option<u64>) {
    let mut pages = Vec::new();
    let mut seen = Vec::new();
    let mut url = first.to_owned();
    let mut total = None;
    for page in 0..100 {
        let request = Request::get(url.clone());
        let reply = node.send(auth, &request).await;
        m.no_leak(interaction, caller, &request, &reply, hidden);
        if page == 0 {
            total = reply.total();
        }
        for entry in reply.body["entry"].as_array().into_iter().flatten() {
            if entry["search"]["mode"].as_str().unwrap_or("match") == "match" {
                let id = format!(
                    "{}/{}/{}",
                    entry["resource"]["resourceType"]
                        .as_str()
                        .unwrap_or_default(),
                    entry["resource"]["id"].as_str().unwrap_or_default(),
                    entry["resource"]["meta"]["versionId"]
                        .as_str()
                        .unwrap_or_default(),
                );
                seen.push(id);
            }
        }
        let next = reply.link("next");
        pages.push(reply);
        match next {
            Some(next) if !next.is_empty() => url = next,
            _ => break,
        }
    }
    (pages, seen, total)
}
