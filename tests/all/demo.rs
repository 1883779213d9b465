//! `itsm demo`, the README's first command, as a new user runs it: the
//! whole offboarding of 25 leavers against the sandbox with faults on; and
//! its second scenario, a malware outbreak through to its fixing change.

#[test]
fn the_demo_offboards_every_leaver_through_rate_limits_with_a_verified_trail() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(["demo", "--keep-serving", "false"])
        .env("ITSM_HOME", home.path())
        .output()
        .expect("run itsm demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("25 tickets, one per person"), "{stdout}");
    assert!(
        stdout.contains("tickets            25/25 succeeded"),
        "{stdout}"
    );
    // Every fifth sandbox person has no managed device: no wipe, nobody asked.
    for line in [
        "approvals          20 laptop wipes approved by security-approver",
        "no managed device  5 leavers: wipe skipped, nobody asked",
        "legal holds        9 mailboxes held (asked for by HR)",
        "25 equipment collections done by manager1@example.com from their inbox",
        "25 of 25 cut at or after the end of their last day, none before",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    let retries: u32 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("retries survived"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no retry count in {stdout}"));
    assert!(
        retries > 0,
        "the sandbox rate-limits, so some steps retried: {stdout}"
    );
    assert!(stdout.contains("hash chain verified"), "{stdout}");
    for step in [
        "disable-account",
        "mail-hold",
        "deprovision-slack",
        "deprovision-zoom",
        "deactivate-crm",
        "find-device",
        "wipe-laptop",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("step_verified") && l.contains(step)),
            "{step} verified in the trail: {stdout}"
        );
    }
    for event in ["task_assigned", "task_completed", "step_scheduled"] {
        assert!(
            stdout.lines().any(|l| l.contains(event)),
            "{event} in the trail: {stdout}"
        );
    }
}

/// `itsm demo --scenario outbreak`: 40 antivirus alerts from 30
/// workstations through the signed hook make one problem listing their 40
/// incidents; the emergency change that fixes it is approved by 2 of 3
/// groups after its rollback plan is shown, applied and verified against
/// the firewall double, and reviewed; the problem is resolved; a new
/// joiner's catalog request succeeds.
#[test]
fn the_outbreak_demo_makes_one_problem_fixes_it_with_a_change_and_serves_a_request() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_itsm"))
        .args(["demo", "--scenario", "outbreak", "--keep-serving", "false"])
        .env("ITSM_HOME", home.path())
        .output()
        .expect("run itsm demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "40 alerts of Worm.Win32.Conficker from 30 workstations",
        "40 incidents (one per alert); the 5th within 15 min opened problem T-",
        "which lists 40 of them",
        "rollback plan, read by the committee: step apply undone by DELETE /rules/block-smb",
        "approved by sec-lead",
        "approved by cio",
        "/rules/block-smb answered 201",
        "/health answers as expected",
        "now holds 1 rule(s): block-smb deny 445 from 0.0.0.0/0",
        "reviewed by cab-chair: the change is done",
        "desk-1 contained 40 incidents",
        "(41 relations: its incidents and its change)",
        "(pre-approved): T-",
        "for newhire@example.com, verified: SCIM user",
        "the problem's trail: verified; the request's trail: verified",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
}
