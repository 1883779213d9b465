//! `itsm demo`, the README's first command, as a new user runs it: the
//! whole offboarding of 25 leavers against the sandbox with faults on.

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
