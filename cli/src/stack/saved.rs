//! Saved plans. `up --dry-run --out FILE` writes the plan with what it was
//! computed on: the stack, stage, region and account, chatctl's version, the
//! code it deploys and a fingerprint of the live stack. `up --plan FILE`
//! applies it only when all of that is still true and the plan computed now
//! is the same, so what runs is what was approved, or nothing runs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::actual::Actual;
use super::desired::{Code, Desired};
use super::plan::Plan;
use super::{Function, Names};

/// Bumped when the file's meaning changes (3: the plan holds its values;
/// 4: no secret reference, the token secret is a step of its own).
const FORMAT: u32 = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    pub format: u32,
    pub chatctl_version: String,
    pub stack: String,
    pub stage: String,
    pub region: String,
    pub account: String,
    /// Each function's code (CodeSha256 of its zip).
    pub code: BTreeMap<String, String>,
    /// SHA-256 of the live stack as read when planning.
    pub live_stack: String,
    /// The plan's typed steps and the values they write, as `up --dry-run
    /// --output json` shows them (no secret value: the token secret is
    /// made in Secrets Manager when applied): `up --plan` executes these.
    pub plan: Plan,
}

impl SavedPlan {
    pub fn new(names: &Names, code: &BTreeMap<Function, Code>, actual: &Actual, plan: &Plan) -> Result<SavedPlan> {
        Ok(SavedPlan {
            format: FORMAT,
            chatctl_version: env!("CARGO_PKG_VERSION").to_string(),
            stack: names.stack.clone(),
            stage: names.stage.clone(),
            region: names.region.clone(),
            account: names.account.clone(),
            code: code
                .iter()
                .map(|(function, code)| (function.short_name().to_string(), code.sha256.clone()))
                .collect(),
            live_stack: fingerprint(actual)?,
            plan: plan.clone(),
        })
    }

    pub fn write(&self, file: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(file, text + "\n").with_context(|| format!("cannot write the plan to {}", file.display()))
    }

    pub fn read(file: &Path) -> Result<SavedPlan> {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read the plan {}", file.display()))?;
        // A plan of another format says so before its fields are read.
        let format = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|plan| plan.get("format")?.as_u64());
        if let Some(format) = format.filter(|f| *f != u64::from(FORMAT)) {
            bail!(
                "{} is a plan of format {format}, from another version of chatctl; this one applies format {FORMAT}. \
                 Nothing was changed; make a new plan with `chatctl up --dry-run --out {}`",
                file.display(),
                file.display()
            );
        }
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a plan saved by `chatctl up --dry-run --out FILE`",
                file.display()
            )
        })
    }

    /// Why this plan, saved earlier, cannot be applied where `now` was just
    /// computed; `None` when it applies exactly.
    pub fn mismatch(&self, now: &SavedPlan) -> Option<String> {
        if self.format != now.format || self.chatctl_version != now.chatctl_version {
            return Some(format!(
                "it was made by chatctl {} and this is chatctl {}",
                self.chatctl_version, now.chatctl_version
            ));
        }
        for (what, saved, here) in [
            ("stack", &self.stack, &now.stack),
            ("stage", &self.stage, &now.stage),
            ("region", &self.region, &now.region),
            ("account", &self.account, &now.account),
        ] {
            if saved != here {
                return Some(format!("it was made for {what} {saved}, not {here}"));
            }
        }
        if self.code != now.code {
            let changed: Vec<&str> = now
                .code
                .iter()
                .filter(|(function, sha)| self.code.get(*function) != Some(sha))
                .map(|(function, _)| function.as_str())
                .collect();
            return Some(format!(
                "the functions' code changed since (the zip of {})",
                changed.join(", ")
            ));
        }
        if self.live_stack != now.live_stack {
            return Some("the live stack changed since it was made".into());
        }
        let (saved_values, now_values) = (
            without_zip_paths(&self.plan.values),
            without_zip_paths(&now.plan.values),
        );
        if saved_values != now_values {
            let saved = serde_json::to_value(&saved_values).unwrap_or_default();
            let here = serde_json::to_value(&now_values).unwrap_or_default();
            let mut changed = vec![];
            differences(&saved, &here, "", &mut changed);
            let shown: Vec<&str> = changed.iter().take(MAX_DIFFERENCES_SHOWN).map(String::as_str).collect();
            let more = changed.len().saturating_sub(MAX_DIFFERENCES_SHOWN);
            return Some(format!(
                "the settings (chatctl.toml or options) changed since it was made: {}{}",
                shown.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        if super::plan::pending_differ(&self.plan, &now.plan)
            || self.plan.conflicts != now.plan.conflicts
            || self.plan.problems != now.plan.problems
        {
            return Some("the settings (chatctl.toml or options) changed since it was made".into());
        }
        None
    }
}

/// The values without where the zips lie: a plan made in one checkout (a CI
/// job) applies in another with the same code, which the hashes check.
fn without_zip_paths(values: &Desired) -> Desired {
    let mut values = values.clone();
    for function in &mut values.functions {
        if let Some(code) = &mut function.code {
            code.zip = Default::default();
        }
    }
    values
}

/// How many of the changed values a refusal lists.
const MAX_DIFFERENCES_SHOWN: usize = 6;

/// The values that differ between a saved plan's and the current one, as
/// `path: saved → now`. A list of objects with a `name` is addressed by the
/// names (`functions.chat-join.memory_mb`), so a user sees which resource.
fn differences(saved: &serde_json::Value, now: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    let at = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (saved, now) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let (x, y) = (a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                differences(x, y, &at(key), out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let key = match (x.get("name"), y.get("name")) {
                    (Some(Value::String(n)), Some(Value::String(m))) if n == m => n.clone(),
                    _ => i.to_string(),
                };
                differences(x, y, &at(&key), out);
            }
        }
        (a, b) if a != b => {
            let shown = |v: &Value| {
                if v.is_null() {
                    "(none)".to_string()
                } else {
                    v.to_string()
                }
            };
            out.push(format!("{path} {} → {}", shown(a), shown(b)));
        }
        _ => {}
    }
}

/// SHA-256 of what was read of the live stack, independent of the order in
/// which API Gateway lists an API's parts.
fn fingerprint(actual: &Actual) -> Result<String> {
    let mut actual = actual.clone();
    // The lock's bucket is made by the lock, before a saved plan is checked.
    actual.bucket = super::actual::Found::Missing;
    if let super::actual::Found::Ours(api) = &mut actual.api {
        api.routes.sort_by(|a, b| a.id.cmp(&b.id));
        api.integrations.sort_by(|a, b| a.id.cmp(&b.id));
        api.authorizers.sort_by(|a, b| a.id.cmp(&b.id));
        api.duplicates.sort();
    }
    let bytes = serde_json::to_vec(&actual)?;
    Ok(Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the plan in `file` and checks it against `current`, the plan
/// computed now from the same live stack; returns the saved plan to execute,
/// its zips found where they are now (the same code: the hashes were checked).
pub fn check(file: &Path, now: &SavedPlan, code: &BTreeMap<Function, Code>) -> Result<Plan> {
    let saved = SavedPlan::read(file)?;
    if let Some(why) = saved.mismatch(now) {
        bail!(
            "cannot apply the plan in {}: {why}. Nothing was changed; make a new plan with `chatctl up --dry-run --out {}`",
            file.display(),
            file.display()
        );
    }
    let mut plan = saved.plan;
    for function in &mut plan.values.functions {
        if let (Some(planned), Some(here)) = (&mut function.code, code.get(&function.function)) {
            planned.zip = here.zip.clone();
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved() -> SavedPlan {
        SavedPlan {
            format: FORMAT,
            chatctl_version: "0.1.0".into(),
            stack: "chat".into(),
            stage: "dev".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
            code: BTreeMap::from([("join".to_string(), "A".to_string())]),
            live_stack: "L".into(),
            plan: Plan {
                values: crate::stack::scripted::desired(&BTreeMap::new()),
                changes: vec![],
                conflicts: vec![],
                problems: vec![],
            },
        }
    }

    #[test]
    fn a_plan_applies_only_where_and_as_it_was_made() {
        let plan = saved();
        assert_eq!(plan.mismatch(&saved()), None);
        let differs = |change: fn(&mut SavedPlan)| {
            let mut now = saved();
            change(&mut now);
            plan.mismatch(&now).unwrap()
        };
        assert_eq!(
            differs(|p| p.region = "us-east-1".into()),
            "it was made for region eu-west-1, not us-east-1"
        );
        assert_eq!(
            differs(|p| p.account = "210987654321".into()),
            "it was made for account 123456789012, not 210987654321"
        );
        assert!(differs(|p| p.chatctl_version = "0.2.0".into()).contains("chatctl 0.1.0"));
        assert!(
            differs(|p| {
                p.code.insert("join".into(), "B".into());
            })
            .contains("the zip of join")
        );
        assert!(differs(|p| p.live_stack = "M".into()).contains("live stack changed"));
        assert!(differs(|p| p.plan.conflicts.push("table t is someone else's".into())).contains("settings"));
    }

    #[test]
    fn a_plan_of_another_format_says_so() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), r#"{"format": 2, "plan": {"changes": []}}"#).unwrap();
        let why = format!("{:#}", SavedPlan::read(file.path()).unwrap_err());
        assert!(
            why.contains("is a plan of format 2, from another version of chatctl; this one applies format 4"),
            "{why}"
        );
    }

    #[test]
    fn a_plan_refuses_other_values_even_when_its_steps_read_the_same() {
        // The case of issue 21: every step a `+ create`, the values edited.
        let plan = saved();
        let mut now = saved();
        for function in &mut now.plan.values.functions {
            function.memory_mb = 512;
        }
        let why = plan.mismatch(&now).unwrap();
        assert!(
            why.starts_with("the settings (chatctl.toml or options) changed since it was made: functions.chat-authorizer.memory_mb 128 → 512;"),
            "{why}"
        );
        assert!(why.ends_with("; and 1 more"), "seven functions, six shown: {why}");

        let mut moved = saved();
        for function in &mut moved.plan.values.functions {
            function.code = Some(Code {
                zip: "/elsewhere/bootstrap.zip".into(),
                sha256: "A".into(),
            });
        }
        let mut here = moved.clone();
        for function in &mut here.plan.values.functions {
            function.code.as_mut().unwrap().zip = "/here/bootstrap.zip".into();
        }
        assert_eq!(moved.mismatch(&here), None, "the same code in another checkout");
    }

    #[test]
    fn a_saved_plan_reads_back_exactly_rates_included() {
        use crate::settings::Throttling;
        use crate::stack::plan::{Action, Change, Detail, Kind};
        let mut plan = saved();
        plan.plan.changes.push(Change {
            kind: Kind::Stage,
            name: "dev".into(),
            id: None,
            action: Action::Update {
                changes: vec![Detail::Throttling {
                    route: Some("sendmessage".into()),
                    from: None,
                    to: Throttling {
                        burst: 7,
                        rate: 0.1 + 0.2,
                    },
                }],
            },
        });
        let file = tempfile::NamedTempFile::new().unwrap();
        plan.write(file.path()).unwrap();
        let back = SavedPlan::read(file.path()).unwrap();
        assert_eq!(back, plan);
        assert_eq!(plan.mismatch(&back), None);
    }
}
