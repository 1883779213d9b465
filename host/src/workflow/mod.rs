//! Workflow files: a named, versioned DAG of steps, each run by a plugin.
//!
//! ```toml
//! name = "offboarding"
//! version = "1"
//! sla = "24h"
//! on_failure = "stop"            # or "compensate"
//!
//! [[steps]]
//! name = "disable-slack"
//! plugin = "scim-deprovision"
//! config = { base_url = "https://api.slack.com/scim/v2" }
//! depends_on = []
//! timeout = "30s"
//! verify = true
//! retry = { max_attempts = 5, initial_backoff = "1s", max_backoff = "5m", jitter = 0.2 }
//! approval = { role = "security" }
//! when = "inputs.legal_hold"     # a CEL condition; see `condition`
//! not_before = "${inputs.last_day} 17:00 in ${inputs.time_zone}"   # see `time`
//! delay = "15m"
//! ```
//!
//! Declared inputs (`subject`, `[inputs.NAME]`) are in [`inputs`];
//! conditions (`when`) in [`condition`].
//!
//! A ticket pins the exact definition it was created with (by content hash),
//! so editing a file makes a new version and running tickets finish on theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

pub mod calendar;
pub mod catalog;
pub mod committee;
pub mod condition;
pub mod inputs;
pub mod notify;
pub mod priority;
pub mod relate;
pub mod rollback;
pub mod task;
pub mod time;
pub mod triage;
pub mod window;

pub use committee::Approval;
pub use inputs::{InputDef, InputType, SubjectKind};

/// `settings.toml`: `[settings]` overrides by workflow name.
pub type Settings = BTreeMap<String, BTreeMap<String, String>>;

/// A workflow definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Name tickets refer to, e.g. `offboarding`.
    pub name: String,
    /// The author's version label; the content hash is what pins.
    #[serde(default)]
    pub version: String,
    /// What the workflow is for.
    #[serde(default)]
    pub description: String,
    /// The kind of work: request (the default), incident, problem, change.
    #[serde(default, skip_serializing_if = "priority::Kind::is_request")]
    pub kind: priority::Kind,
    /// Impact x urgency -> priority, and SLAs by priority (see [`priority`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<priority::Priority>,
    /// Deadline per ticket from its creation (or from `sla_from`); a
    /// breach is recorded in the trail.
    #[serde(default, with = "opt_duration")]
    pub sla: Option<Duration>,
    /// Where the SLA starts counting, when not at creation: an instant with
    /// the ticket's inputs in it, as a step's `not_before` takes
    /// (`"${inputs.last_day} ${inputs.cut_off} in ${inputs.time_zone}"`).
    /// A leaver filed days ahead is then not late before access is due to
    /// be cut. An instant already past counts from creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_from: Option<String>,
    /// The business-hours calendar the SLA counts on (`[calendars.NAME]`);
    /// none: the SLA counts every hour of the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,
    /// The share of the SLA after which the ticket is at risk (default 0.75).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_at_risk: Option<f64>,
    /// Business-hours calendars by name (see [`calendar`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub calendars: BTreeMap<String, calendar::Calendar>,
    /// What a fatal step failure does to the ticket.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Deployment values (tenant, endpoints, ...) that step configs use as
    /// `${settings.KEY}`; a deployment overrides them without editing steps
    /// (`settings.toml` in the home, or the sandbox). A ticket pins the
    /// definition with the values filled in.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// What a ticket's subject must be (`"email"`, or `"any"`, the default).
    #[serde(default, skip_serializing_if = "SubjectKind::is_any")]
    pub subject: SubjectKind,
    /// The inputs a ticket takes, by name, with their types; none declared
    /// means any object (see [`inputs`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputDef>,
    /// Change windows by name, which steps may wait for (see [`window`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub windows: BTreeMap<String, window::Window>,
    /// Trail events announced through notification plugins (see [`notify`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<notify::NotifyRule>,
    /// Its entry in the service catalog, if people may request it for
    /// themselves (see [`catalog`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<catalog::CatalogItem>,
    /// Relations its tickets make when created, to tickets their inputs
    /// name (see [`relate`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relate: Vec<relate::RelateRule>,
    /// Rules routing a ticket to a group when it is created (see [`triage`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triage: Vec<triage::TriageRule>,
    /// The steps, a DAG by `depends_on`.
    pub steps: Vec<StepDef>,
}

/// What happens when a step fails for good.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The ticket fails; completed steps stay done.
    #[default]
    Stop,
    /// Completed steps are compensated in reverse order, then the ticket fails.
    Compensate,
}

/// One step of a workflow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Unique within the workflow.
    pub name: String,
    /// The plugin that runs it (empty for a human task).
    #[serde(default)]
    pub plugin: String,
    /// A human task instead of a plugin (see [`task`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<task::TaskDef>,
    /// Config handed to the plugin.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Steps that must succeed first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Retries of retryable failures.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Wall time per call; the plugin's own limit applies when shorter.
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Call `verify` after a successful `run`; a failed verify fails the step.
    #[serde(default = "yes")]
    pub verify: bool,
    /// A human decision needed before the step runs.
    #[serde(default)]
    pub approval: Option<Approval>,
    /// Which deployment secret stands for each secret the plugin's manifest
    /// names, e.g. `{ scim_token = "slack_scim_token" }`: two steps of one
    /// plugin (two SCIM apps) each get their own credential.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// A CEL condition over `subject`, `inputs` and the outputs of steps it
    /// depends on (`steps["find-device"].outputs.managed`): the step runs
    /// when it is true and is skipped, as done, when it is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The step starts no earlier than this instant, e.g.
    /// `"${inputs.last_day} 17:00 in ${inputs.time_zone}"` (see [`time`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// The step starts this long after its dependencies are done.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay: Option<Duration>,
    /// A change window (`[windows.NAME]`) the step starts inside: at its
    /// time if the window is open, else at the next opening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

fn yes() -> bool {
    true
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    #[serde(default = "RetryPolicy::default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the second attempt.
    #[serde(default = "RetryPolicy::default_initial", with = "duration")]
    pub initial_backoff: Duration,
    /// Ceiling for the wait.
    #[serde(default = "RetryPolicy::default_max", with = "duration")]
    pub max_backoff: Duration,
    /// Fraction of the wait randomised, 0 to 1.
    #[serde(default = "RetryPolicy::default_jitter")]
    pub jitter: f64,
    /// How long after a step's first attempt a wait the service asked for
    /// (a retryable failure with `Retry-After`, e.g. a 429) is free: until
    /// then such a failure uses none of `max_attempts`, since the service
    /// said when to come back, not that the step is failing. Past it they
    /// count like any failure, so a service that never lets up still ends
    /// the step.
    #[serde(
        default = "RetryPolicy::default_deadline",
        with = "duration",
        skip_serializing_if = "RetryPolicy::is_default_deadline"
    )]
    pub deadline: Duration,
}

impl RetryPolicy {
    fn default_max_attempts() -> u32 {
        5
    }
    fn default_initial() -> Duration {
        Duration::from_secs(1)
    }
    fn default_max() -> Duration {
        Duration::from_secs(300)
    }
    fn default_jitter() -> f64 {
        0.2
    }
    fn default_deadline() -> Duration {
        Duration::from_secs(3600)
    }
    /// Left out of the stored definition when default, so workflows
    /// written before the field keep their content hash.
    fn is_default_deadline(d: &Duration) -> bool {
        *d == Self::default_deadline()
    }

    /// The wait before attempt `next` (2 for the first retry), given a
    /// random `unit` in [0, 1). A `Retry-After` from the service wins: it
    /// knows when its rate-limit window reopens, and guessing longer only
    /// delays the leaver's offboarding (`deadline`, then `max_attempts`,
    /// still bound retries).
    pub fn backoff(&self, next: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let exp = next.saturating_sub(2).min(30);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let spread = base.as_secs_f64() * self.jitter.clamp(0.0, 1.0);
        let wait =
            Duration::from_secs_f64((base.as_secs_f64() - spread / 2.0 + spread * unit).max(0.0));
        retry_after.unwrap_or(wait)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::default_max_attempts(),
            initial_backoff: Self::default_initial(),
            max_backoff: Self::default_max(),
            jitter: Self::default_jitter(),
            deadline: Self::default_deadline(),
        }
    }
}

impl Workflow {
    /// Parse and validate; errors name `source` and the step.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        Self::parse_with(text, source, &BTreeMap::new())
    }

    /// [`Workflow::parse`], with `overrides` replacing declared settings
    /// before they are filled into step configs.
    pub fn parse_with(
        text: &str,
        source: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut wf: Workflow = toml::from_str(text)
            .map_err(|e| Error::Workflow(format!("{source}: {}", e.to_string().trim_end())))?;
        wf.apply_settings(overrides)
            .and_then(|()| wf.validate())
            .map_err(|e| Error::Workflow(format!("{source}: {e}")))?;
        Ok(wf)
    }

    /// Override settings, then fill `${settings.KEY}` into step configs.
    fn apply_settings(
        &mut self,
        overrides: &BTreeMap<String, String>,
    ) -> std::result::Result<(), String> {
        for (k, v) in overrides {
            match self.settings.get_mut(k) {
                Some(slot) => *slot = v.clone(),
                None => {
                    return Err(format!(
                        "setting `{k}` is overridden but the workflow declares no such setting"
                    ));
                }
            }
        }
        for (i, rule) in self.notify.iter_mut().enumerate() {
            for (key, value) in rule.config.iter_mut() {
                let settings = &self.settings;
                *value =
                    inputs::substitute(value, "${settings.", |name| settings.get(name).cloned())
                        .map_err(|e| {
                            format!(
                                "notify #{}: config `{key}` {}",
                                i + 1,
                                match e {
                                    None => "has an unclosed `${settings.`".to_string(),
                                    Some(name) => format!(
                                        "uses setting `{name}`, which [settings] does not declare"
                                    ),
                                }
                            )
                        })?;
            }
        }
        for step in &mut self.steps {
            for (key, value) in step.config.iter_mut() {
                let settings = &self.settings;
                *value = inputs::substitute(value, "${settings.", |name| {
                    settings.get(name).cloned()
                })
                .map_err(|e| match e {
                    None => format!(
                        "step `{}`: config `{key}` has an unclosed `${{settings.`",
                        step.name
                    ),
                    Some(name) => format!(
                        "step `{}`: config `{key}` uses setting `{name}`, which [settings] does not declare",
                        step.name
                    ),
                })?;
            }
        }
        Ok(())
    }

    /// Read one workflow file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &BTreeMap::new())
    }

    fn load_with(path: &Path, settings: &Settings) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        // The overrides are looked up by the name inside the file.
        let name = toml::from_str::<toml::Table>(&text)
            .ok()
            .and_then(|t| t.get("name").and_then(|n| n.as_str()).map(str::to_string))
            .unwrap_or_default();
        let empty = BTreeMap::new();
        Self::parse_with(
            &text,
            &path.display().to_string(),
            settings.get(&name).unwrap_or(&empty),
        )
    }

    /// A home's `settings.toml`: one table of `[settings]` overrides per
    /// workflow name. A missing file overrides nothing.
    pub fn load_settings(path: &Path) -> Result<Settings> {
        match crate::error::read_optional(path)? {
            Some(text) => toml::from_str(&text)
                .map_err(|e| Error::Workflow(format!("{}: {}", path.display(), e.message()))),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Every `*.toml` in a folder, by name; two files with one name is an error.
    pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Workflow>> {
        Self::load_dir_with(dir, &BTreeMap::new())
    }

    /// [`Workflow::load_dir`] with `settings.toml` overrides.
    pub fn load_dir_with(dir: &Path, settings: &Settings) -> Result<BTreeMap<String, Workflow>> {
        let mut out = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let wf = Self::load_with(&path, settings)?;
            if out.contains_key(&wf.name) {
                return Err(Error::Workflow(format!(
                    "{}: workflow name `{}` is already used by another file",
                    path.display(),
                    wf.name
                )));
            }
            out.insert(wf.name.clone(), wf);
        }
        Ok(out)
    }

    /// Names, references and the DAG.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "`name` {:?}: names are 1-64 letters, digits, - and _",
                self.name
            ));
        }
        if self.steps.is_empty() {
            return Err("a workflow needs at least one step".into());
        }
        let mut names = BTreeSet::new();
        for s in &self.steps {
            if s.name.is_empty()
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "step {:?}: names are letters, digits, - and _",
                    s.name
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(format!("step `{}` is defined twice", s.name));
            }
            if s.retry.max_attempts == 0 {
                return Err(format!(
                    "step `{}`: retry.max_attempts must be at least 1",
                    s.name
                ));
            }
            if !(0.0..=1.0).contains(&s.retry.jitter) {
                return Err(format!(
                    "step `{}`: retry.jitter must be between 0 and 1",
                    s.name
                ));
            }
            if s.retry.initial_backoff > s.retry.max_backoff {
                return Err(format!(
                    "step `{}`: retry.initial_backoff exceeds max_backoff",
                    s.name
                ));
            }
        }
        for s in &self.steps {
            for d in &s.depends_on {
                if !names.contains(d.as_str()) {
                    return Err(format!("step `{}` depends on unknown step `{d}`", s.name));
                }
                if d == &s.name {
                    return Err(format!("step `{}` depends on itself", s.name));
                }
            }
        }
        if let Some(cycle) = self.find_cycle() {
            return Err(format!("steps form a cycle: {}", cycle.join(" -> ")));
        }
        self.validate_inputs()?;
        for (i, n) in self.notify.iter().enumerate() {
            n.check().map_err(|e| format!("notify #{}: {e}", i + 1))?;
        }
        for (name, c) in &self.calendars {
            c.check().map_err(|e| format!("calendar `{name}`: {e}"))?;
        }
        if let Some(name) = &self.calendar
            && !self.calendars.contains_key(name)
        {
            let known: Vec<&str> = self.calendars.keys().map(String::as_str).collect();
            return Err(format!(
                "calendar `{name}` is not declared; [calendars] has: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        let has_sla =
            self.sla.is_some() || self.priority.as_ref().is_some_and(|p| !p.sla.is_empty());
        if self.calendar.is_some() && !has_sla {
            return Err("`calendar` is set but there is no `sla` to count on it".into());
        }
        if let Some(p) = &self.priority {
            p.check(self)?;
        }
        if let Some(from) = &self.sla_from {
            if !has_sla {
                return Err("`sla_from` is set but there is no `sla` to count from it".into());
            }
            time::check_instant(self, from).map_err(|e| format!("sla_from{e}"))?;
        }
        if let Some(r) = self.sla_at_risk
            && !(r > 0.0 && r < 1.0)
        {
            return Err(format!(
                "sla_at_risk {r} must be between 0 and 1 (e.g. 0.75)"
            ));
        }
        for (name, w) in &self.windows {
            w.check().map_err(|e| format!("window `{name}`: {e}"))?;
        }
        triage::check(self)?;
        relate::check(self)?;
        if let Some(c) = &self.catalog {
            c.check(self)?;
        }
        for s in &self.steps {
            match (&s.task, s.plugin.is_empty()) {
                (Some(_), false) => {
                    return Err(format!(
                        "step `{}`: give a `plugin` or a `task`, not both",
                        s.name
                    ));
                }
                (None, true) => {
                    return Err(format!(
                        "step `{}`: give a `plugin` or a `task` (a person's work)",
                        s.name
                    ));
                }
                (Some(t), true) => {
                    t.check(self)
                        .map_err(|e| format!("step `{}`: {e}", s.name))?;
                    if s.approval.is_some() || !s.config.is_empty() || !s.secrets.is_empty() {
                        return Err(format!(
                            "step `{}`: a task takes no approval, config or secrets",
                            s.name
                        ));
                    }
                }
                (None, false) => {}
            }
            if let Some(a) = &s.approval {
                a.check()
                    .map_err(|e| format!("step `{}`: approval: {e}", s.name))?;
            }
            if let Some(w) = &s.window
                && !self.windows.contains_key(w)
            {
                let known: Vec<&str> = self.windows.keys().map(String::as_str).collect();
                return Err(format!(
                    "step `{}`: window `{w}` is not declared; [windows] has: {}",
                    s.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            for (key, value) in &s.config {
                inputs::substitute(value, "${inputs.", |name| {
                    self.inputs.get(name).map(|_| String::new())
                })
                .map_err(|e| match e {
                    None => format!(
                        "step `{}`: config `{key}` has an unclosed `${{inputs.`",
                        s.name
                    ),
                    Some(name) => format!(
                        "step `{}`: config `{key}` uses input `{name}`, which [inputs] does not declare",
                        s.name
                    ),
                })?;
            }
            if let Some(when) = &s.when {
                condition::check(self, s, when)
                    .map_err(|e| format!("step `{}`: when: {e}", s.name))?;
            }
            time::check(self, s).map_err(|e| format!("step `{}`: {e}", s.name))?;
        }
        Ok(())
    }

    /// Every step `name` depends on, directly or through others.
    pub fn ancestors(&self, name: &str) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<&str> = self.step(name).map_or(Vec::new(), |s| {
            s.depends_on.iter().map(String::as_str).collect()
        });
        while let Some(n) = todo.pop() {
            if out.insert(n)
                && let Some(s) = self.step(n)
            {
                todo.extend(s.depends_on.iter().map(String::as_str));
            }
        }
        out
    }

    fn find_cycle(&self) -> Option<Vec<String>> {
        // Depth-first search with colours; returns the path around the cycle.
        fn visit<'a>(
            wf: &'a Workflow,
            name: &'a str,
            colour: &mut BTreeMap<&'a str, u8>,
            path: &mut Vec<&'a str>,
        ) -> Option<Vec<String>> {
            match colour.get(name) {
                Some(2) => return None,
                Some(1) => {
                    let start = path.iter().position(|n| *n == name).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(name.to_string());
                    return Some(cycle);
                }
                _ => {}
            }
            colour.insert(name, 1);
            path.push(name);
            let step = wf.step(name)?;
            for d in &step.depends_on {
                if let Some(c) = visit(wf, d, colour, path) {
                    return Some(c);
                }
            }
            path.pop();
            colour.insert(name, 2);
            None
        }
        let mut colour = BTreeMap::new();
        for s in &self.steps {
            if let Some(c) = visit(self, &s.name, &mut colour, &mut Vec::new()) {
                return Some(c);
            }
        }
        None
    }

    /// A step by name.
    pub fn step(&self, name: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The plugins the workflow calls: its notifiers' and its steps' (a
    /// human task calls none).
    pub fn plugins(&self) -> impl Iterator<Item = &str> {
        self.notify.iter().map(|n| n.plugin.as_str()).chain(
            self.steps
                .iter()
                .filter(|s| s.task.is_none())
                .map(|s| s.plugin.as_str()),
        )
    }

    /// Check every step's plugin is among `known`.
    pub fn check_plugins(&self, known: &BTreeSet<String>) -> Result<()> {
        for n in &self.notify {
            if !known.contains(&n.plugin) {
                return Err(Error::Workflow(format!(
                    "workflow `{}` notify: unknown plugin `{}`",
                    self.name, n.plugin
                )));
            }
        }
        for s in self.steps.iter().filter(|s| s.task.is_none()) {
            if !known.contains(&s.plugin) {
                return Err(Error::Workflow(format!(
                    "workflow `{}` step `{}`: unknown plugin `{}`",
                    self.name, s.name, s.plugin
                )));
            }
        }
        Ok(())
    }

    /// The SLA's deadline and at-risk instant for a ticket with `inputs`
    /// created at `now_ms`: counted from `sla_from` when that is later,
    /// in business time when the workflow has a calendar.
    pub fn sla_times(
        &self,
        inputs: &serde_json::Value,
        now_ms: u64,
    ) -> std::result::Result<Option<(u64, u64)>, String> {
        let by_priority = self
            .priority
            .as_ref()
            .and_then(|p| p.sla.get(p.of(inputs)?).copied());
        let Some(sla) = by_priority.or(self.sla) else {
            return Ok(None);
        };
        let now_ms = match &self.sla_from {
            Some(from) => time::instant(from, inputs)
                .map_err(|e| format!("sla_from: {e}"))?
                .at_ms
                .max(now_ms),
            None => now_ms,
        };
        let total = sla.as_millis() as u64;
        let risk = (total as f64 * self.sla_at_risk.unwrap_or(0.75)) as u64;
        match self.calendar.as_ref().and_then(|c| self.calendars.get(c)) {
            Some(c) => Ok(Some((c.add(now_ms, total)?, c.add(now_ms, risk)?))),
            None => Ok(Some((now_ms + total, now_ms + risk))),
        }
    }

    /// The SLA's calendar, if it counts business time.
    pub fn sla_calendar(&self) -> Option<&calendar::Calendar> {
        self.calendar.as_ref().and_then(|c| self.calendars.get(c))
    }

    /// Content hash: what a ticket pins. Canonical JSON of the parsed definition.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("workflow serializes");
        crate::digest::sha256_hex(&json)[..16].to_string()
    }
}

/// Durations as humantime strings ("30s", "24h"), for `#[serde(with)]`.
pub(crate) mod duration {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "bad duration {text:?}: {e} (use e.g. \"30s\", \"5m\", \"24h\")"
            ))
        })
    }
}

mod opt_duration {
    use super::*;
    pub fn serialize<S: Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Duration>, D::Error> {
        // `null` comes back from stored (JSON) definitions; TOML has no null.
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => humantime::parse_duration(&text).map(Some).map_err(|e| {
                serde::de::Error::custom(format!(
                    "bad duration {text:?}: {e} (use e.g. \"30s\", \"5m\", \"24h\")"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WF: &str = r#"
        name = "offboarding"
        version = "1"
        sla = "24h"
        [[steps]]
        name = "directory"
        plugin = "noop"
        [[steps]]
        name = "saas"
        plugin = "noop"
        depends_on = ["directory"]
        retry = { max_attempts = 3, initial_backoff = "100ms" }
        [[steps]]
        name = "wipe"
        plugin = "noop"
        depends_on = ["directory"]
        approval = { role = "security" }
        timeout = "10s"
    "#;

    #[test]
    fn parses_a_dag_with_defaults() {
        let wf = Workflow::parse(WF, "wf.toml").unwrap();
        assert_eq!(wf.sla, Some(Duration::from_secs(86400)));
        assert!(wf.step("saas").unwrap().verify);
        assert_eq!(wf.step("saas").unwrap().retry.max_attempts, 3);
        assert_eq!(
            wf.step("wipe").unwrap().approval.as_ref().unwrap().role,
            "security"
        );
        assert_eq!(wf.hash(), Workflow::parse(WF, "again").unwrap().hash());
        assert_ne!(
            wf.hash(),
            Workflow::parse(&WF.replace("10s", "11s"), "x")
                .unwrap()
                .hash()
        );
        // Stored definitions are JSON and must read back identical.
        let json = serde_json::to_string(&wf).unwrap();
        assert_eq!(serde_json::from_str::<Workflow>(&json).unwrap(), wf);
        let no_sla = Workflow::parse(&WF.replace("sla = \"24h\"", ""), "x").unwrap();
        let back: Workflow =
            serde_json::from_str(&serde_json::to_string(&no_sla).unwrap()).unwrap();
        assert_eq!(back, no_sla);
    }

    #[test]
    fn errors_name_the_file_and_step() {
        let cases = [
            (WF.replace("depends_on = [\"directory\"]\n        retry", "depends_on = [\"nope\"]\n        retry"), "step `saas` depends on unknown step `nope`"),
            (WF.replace("name = \"wipe\"", "name = \"saas\""), "step `saas` is defined twice"),
            (WF.replace("\"10s\"", "\"ten seconds\""), "bad duration"),
            (WF.replace("name = \"directory\"\n        plugin = \"noop\"", "name = \"directory\"\n        plugin = \"noop\"\n        depends_on = [\"wipe\"]"), "cycle: directory -> wipe -> directory"),
            (WF.replace("sla = \"24h\"", "sla = \"24h\"\nowner = \"x\""), "unknown field `owner`"),
            (WF.replace("sla = \"24h\"", "sla_from = \"2026-12-04 17:00\""), "`sla_from` is set but there is no `sla`"),
            (WF.replace("sla = \"24h\"", "sla = \"24h\"\nsla_from = \"${inputs.last_day} 17:00\""), "sla_from uses input `last_day`, which [inputs] does not declare"),
        ];
        for (text, want) in cases {
            let err = Workflow::parse(&text, "wf.toml").unwrap_err().to_string();
            assert!(
                err.contains("wf.toml") && err.contains(want),
                "want {want:?} in {err}"
            );
        }
        let wf = Workflow::parse(WF, "wf.toml").unwrap();
        let err = wf
            .check_plugins(&BTreeSet::from(["other".to_string()]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("step `directory`: unknown plugin `noop`"),
            "{err}"
        );
    }

    #[test]
    fn backoff_grows_caps_and_follows_retry_after() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            jitter: 0.0,
            deadline: Duration::from_secs(3600),
        };
        assert_eq!(p.backoff(2, 0.5, None), Duration::from_secs(1));
        assert_eq!(p.backoff(3, 0.5, None), Duration::from_secs(2));
        assert_eq!(p.backoff(9, 0.5, None), Duration::from_secs(10));
        assert_eq!(
            p.backoff(2, 0.5, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.backoff(9, 0.5, Some(Duration::from_secs(1))),
            Duration::from_secs(1),
            "the server's Retry-After wins over a longer guess"
        );
        let j = RetryPolicy { jitter: 0.5, ..p };
        assert_eq!(j.backoff(2, 0.0, None), Duration::from_millis(750));
        assert_eq!(j.backoff(2, 0.999_999, None).as_millis(), 1249);
    }

    #[test]
    fn settings_fill_step_configs_and_overrides_must_be_declared() {
        let text = r#"
            name = "offboarding"
            [settings]
            tenant = "contoso.onmicrosoft.com"
            graph = "https://graph.microsoft.com"
            [[steps]]
            name = "disable"
            plugin = "entra-disable"
            config = { tenant_id = "${settings.tenant}", graph_url = "${settings.graph}/" }
        "#;
        let wf = Workflow::parse(text, "t").unwrap();
        assert_eq!(wf.steps[0].config["tenant_id"], "contoso.onmicrosoft.com");
        let overrides = BTreeMap::from([("graph".to_string(), "http://127.0.0.1:9".to_string())]);
        let local = Workflow::parse_with(text, "t", &overrides).unwrap();
        assert_eq!(local.steps[0].config["graph_url"], "http://127.0.0.1:9/");
        assert_eq!(local.settings["graph"], "http://127.0.0.1:9");
        assert_ne!(
            wf.hash(),
            local.hash(),
            "the filled-in values are what a ticket pins"
        );
        let unknown = BTreeMap::from([("nope".to_string(), "x".to_string())]);
        let err = Workflow::parse_with(text, "t", &unknown).unwrap_err();
        assert!(
            err.to_string().contains("setting `nope` is overridden"),
            "{err}"
        );
        let undeclared = text.replace("${settings.tenant}", "${settings.missing}");
        let err = Workflow::parse(&undeclared, "t").unwrap_err();
        assert!(err.to_string().contains("uses setting `missing`"), "{err}");
    }
}
