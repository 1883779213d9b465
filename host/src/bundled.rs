//! First-party plugins compiled into the binary, so `itsm demo` and
//! `itsm serve` run with no plugins folder set up.

use crate::error::Result;
use crate::manifest::Manifest;

/// A plugin shipped inside the binary.
#[derive(Debug, Clone, Copy)]
pub struct Bundled {
    /// Its `plugin.toml`.
    pub manifest: &'static str,
    /// Its component.
    pub wasm: &'static [u8],
}

impl Bundled {
    /// The parsed manifest.
    pub fn manifest(&self) -> Result<Manifest> {
        Manifest::parse(self.manifest)
    }
}

/// `plugins/scim-deprovision`.
pub const SCIM_DEPROVISION: Bundled = Bundled {
    manifest: include_str!("../../plugins/scim-deprovision/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("ITSM_PLUGIN_WASM_DIR"),
        "/itsm_plugin_scim_deprovision.wasm"
    )),
};

/// `plugins/entra-disable`.
pub const ENTRA_DISABLE: Bundled = Bundled {
    manifest: include_str!("../../plugins/entra-disable/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("ITSM_PLUGIN_WASM_DIR"),
        "/itsm_plugin_entra_disable.wasm"
    )),
};

/// `plugins/intune-wipe`.
pub const INTUNE_WIPE: Bundled = Bundled {
    manifest: include_str!("../../plugins/intune-wipe/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("ITSM_PLUGIN_WASM_DIR"),
        "/itsm_plugin_intune_wipe.wasm"
    )),
};

/// `plugins/mail-hold`.
pub const MAIL_HOLD: Bundled = Bundled {
    manifest: include_str!("../../plugins/mail-hold/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("ITSM_PLUGIN_WASM_DIR"),
        "/itsm_plugin_mail_hold.wasm"
    )),
};

/// `plugins/salesforce-deactivate`.
pub const SALESFORCE_DEACTIVATE: Bundled = Bundled {
    manifest: include_str!("../../plugins/salesforce-deactivate/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("ITSM_PLUGIN_WASM_DIR"),
        "/itsm_plugin_salesforce_deactivate.wasm"
    )),
};

/// `plugins/chat-webhook`: notifications to Slack or Teams.
pub const CHAT_WEBHOOK: Bundled = Bundled {
    manifest: include_str!("../../plugins/chat-webhook/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("ITSM_PLUGIN_WASM_DIR"),
        "/itsm_plugin_chat_webhook.wasm"
    )),
};

/// `plugins/chat-dm`: a direct message to the person a notification is about.
pub const CHAT_DM: Bundled = Bundled {
    manifest: include_str!("../../plugins/chat-dm/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("ITSM_PLUGIN_WASM_DIR"),
        "/itsm_plugin_chat_dm.wasm"
    )),
};

/// `plugins/rest-change`: a change made, proved and rolled back through a
/// REST API described in config.
pub const REST_CHANGE: Bundled = Bundled {
    manifest: include_str!("../../plugins/rest-change/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("ITSM_PLUGIN_WASM_DIR"),
        "/itsm_plugin_rest_change.wasm"
    )),
};

/// `plugins/scim-provision`: a person given access to a SCIM 2.0 service.
pub const SCIM_PROVISION: Bundled = Bundled {
    manifest: include_str!("../../plugins/scim-provision/plugin.toml"),
    wasm: include_bytes!(concat!(
        env!("ITSM_PLUGIN_WASM_DIR"),
        "/itsm_plugin_scim_provision.wasm"
    )),
};

/// Every bundled plugin, loaded by `itsm serve`.
pub const ALL: [Bundled; 9] = [
    SCIM_DEPROVISION,
    ENTRA_DISABLE,
    INTUNE_WIPE,
    MAIL_HOLD,
    SALESFORCE_DEACTIVATE,
    CHAT_WEBHOOK,
    CHAT_DM,
    REST_CHANGE,
    SCIM_PROVISION,
];

/// `workflows/offboarding.toml`: the first-party offboarding workflow, for
/// `itsm serve --sandbox` and `itsm demo` (its settings pointed at the sandbox).
pub const OFFBOARDING_WORKFLOW: &str = include_str!("../../workflows/offboarding.toml");

/// `workflows/emergency-change.toml`, for `itsm demo --scenario outbreak`.
pub const EMERGENCY_CHANGE_WORKFLOW: &str = include_str!("../../workflows/emergency-change.toml");

/// `workflows/slack-access.toml`, for `itsm demo --scenario outbreak`.
pub const SLACK_ACCESS_WORKFLOW: &str = include_str!("../../workflows/slack-access.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_manifests_and_the_offboarding_workflow_validate_together() {
        let names: std::collections::BTreeSet<String> = ALL
            .iter()
            .map(|b| b.manifest().expect("bundled manifest").name)
            .collect();
        let wf = crate::workflow::Workflow::parse(OFFBOARDING_WORKFLOW, "offboarding.toml")
            .expect("offboarding workflow");
        wf.check_plugins(&names).expect("every step has its plugin");
        assert_eq!(wf.sla, Some(std::time::Duration::from_secs(24 * 3600)));
        // Counted from the cut, so a leaver filed days ahead is not late.
        let ms = crate::workflow::time::ms;
        let inputs = serde_json::json!({
            "last_day": "2027-03-05", "time_zone": "Europe/Paris", "cut_off": "17:00",
        });
        let filed = ms("2027-03-01 09:00 in Europe/Paris");
        let (deadline, at_risk) = wf.sla_times(&inputs, filed).unwrap().unwrap();
        assert_eq!(deadline, ms("2027-03-06 17:00 in Europe/Paris"));
        assert_eq!(at_risk, ms("2027-03-06 11:00 in Europe/Paris"));
        // Filed after the last day: from the filing.
        let late = ms("2027-03-10 09:00 in Europe/Paris");
        let (deadline, _) = wf.sla_times(&inputs, late).unwrap().unwrap();
        assert_eq!(deadline, late + 24 * 3_600_000);
        let wipe = wf.step("wipe-laptop").unwrap();
        assert_eq!(wipe.approval.as_ref().unwrap().role, "security");
        assert_eq!(wipe.depends_on, ["find-device"]);
        assert!(wipe.when.is_some(), "only when a managed device exists");
        let cut = wf.step("disable-account").unwrap();
        assert!(
            cut.not_before
                .as_deref()
                .unwrap()
                .contains("${inputs.last_day}")
        );
        assert!(wf.step("collect-equipment").unwrap().task.is_some());
        // The manager is told of their task, and when it is overdue.
        let told = wf.notify.iter().find(|r| r.plugin == "chat-dm").unwrap();
        assert!(told.on.contains(&crate::audit::AuditKind::TaskAssigned));
        assert!(told.on.contains(&crate::audit::AuditKind::TaskOverdue));
        for s in wf
            .steps
            .iter()
            .filter(|s| s.task.is_none() && s.name != "disable-account")
        {
            assert!(
                wf.ancestors(&s.name).contains("disable-account"),
                "{} runs after the directory",
                s.name
            );
        }
    }
}
