//! Service catalog items: a workflow people request for themselves.
//!
//! ```toml
//! [catalog]
//! title = "Access to Zoom"
//! description = "A Zoom licence for your work account."
//! groups = ["staff"]          # who may request it; empty: anyone signed in
//! preapproved = false         # true: a standard request, with no approval
//! ```
//!
//! A person signed in lists the items their groups may request
//! (`GET /v1/catalog`), each with its form (the workflow's declared
//! inputs), and requests one (`POST /v1/catalog/{name}`): the ticket's
//! subject is the person (their e-mail, else their name), its inputs are
//! checked as an import's are (a bad field is refused with 422 naming it),
//! and its requester is the person, who follows it and sees only their
//! own. A pre-approved item is a standard request: its workflow may ask
//! for no approval, and that is checked at load.

use serde::{Deserialize, Serialize};

use super::Workflow;
use crate::principal::Principal;

/// A workflow's catalog entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    /// What people see.
    pub title: String,
    /// What it gives, for people.
    #[serde(default)]
    pub description: String,
    /// Who may request it: people in any of these groups (roles); empty:
    /// anyone signed in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// A standard request: no approval in its workflow.
    #[serde(default)]
    pub preapproved: bool,
}

impl CatalogItem {
    /// Check at load: a title, named groups, and no approval in a
    /// pre-approved item's workflow.
    pub(super) fn check(&self, wf: &Workflow) -> Result<(), String> {
        if self.title.trim().is_empty() {
            return Err("catalog: `title` is empty".into());
        }
        if self.groups.iter().any(|g| g.trim().is_empty()) {
            return Err("catalog: a group in `groups` is empty".into());
        }
        if self.preapproved
            && let Some(s) = wf.steps.iter().find(|s| s.approval.is_some())
        {
            return Err(format!(
                "catalog: the item is `preapproved`, but step `{}` asks for an approval",
                s.name
            ));
        }
        Ok(())
    }

    /// Whether `who` may request it.
    pub fn may_request(&self, who: &Principal) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| who.roles.contains(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WF: &str = r#"
        name = "zoom"
        [catalog]
        title = "Access to Zoom"
        groups = ["staff"]
        preapproved = true
        [[steps]]
        name = "grant"
        plugin = "scim-provision"
    "#;

    #[test]
    fn an_item_names_who_may_request_it_and_a_preapproved_one_has_no_approval() {
        let wf = Workflow::parse(WF, "zoom.toml").unwrap();
        let item = wf.catalog.as_ref().unwrap();
        let who = |roles: &[&str]| Principal {
            name: "ann".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            email: Some("ann@example.com".into()),
        };
        assert!(item.may_request(&who(&["staff"])));
        assert!(!item.may_request(&who(&["contractor"])));
        let approved = WF.replace(
            "plugin = \"scim-provision\"",
            "plugin = \"scim-provision\"\napproval = { role = \"owners\" }",
        );
        let e = Workflow::parse(&approved, "zoom.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("preapproved") && e.contains("grant"), "{e}");
        let untitled = WF.replace("title = \"Access to Zoom\"", "title = \" \"");
        assert!(Workflow::parse(&untitled, "zoom.toml").is_err());
    }
}
