//! Pipeline configuration: a TOML file of `[[steps]]`, validated at load
//! into a [`PipelineSpec`], from which each worker builds its own
//! [`Pipeline`] (with its own de-duplication window and aggregate tables).
//!
//! ```toml
//! [[steps]]
//! kind = "deduplicate"
//! window = 100000
//!
//! [[steps]]
//! kind = "filter"
//! keep = { actions = ["purchase", "refund"] }   # or drop = { … }
//!
//! [[steps]]
//! kind = "enrich"
//! attribute = "category"
//! from = "action"                                # action | user_id | attribute:NAME
//! table = { purchase = "revenue", refund = "revenue" }
//! default = "other"                              # or required = true
//!
//! [[steps]]
//! kind = "rename"
//! from = "ip"
//! to = "client_ip"
//!
//! [[steps]]
//! kind = "aggregate"
//! name = "per_action"
//! by = "action"
//! ```
//!
//! Every error names the step (`steps[2] (enrich)`) and the field.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use domain::{Action, ArcStr};
use serde::Deserialize;

use crate::Pipeline;
use crate::keys::KeyTable;
use crate::steps::{
    Aggregate, Condition, Deduplicate, Enrich, EnrichValue, Filter, KeySource, Rename,
    TransformStep,
};

/// Why a pipeline file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read pipeline file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped fields.
    #[error("invalid pipeline file: {0}")]
    Parse(String),
    /// A step's values break a rule.
    #[error("steps[{index}] ({kind}): {field}: {reason}")]
    Step {
        /// Position in `[[steps]]`.
        index: usize,
        /// The step's kind.
        kind: &'static str,
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A validated pipeline description. Cheap to clone; [`Self::build`] makes
/// a runnable pipeline with fresh state.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    steps: Vec<StepSpec>,
}

#[derive(Debug, Clone, PartialEq)]
enum StepSpec {
    Enrich {
        attribute: ArcStr,
        value: EnrichSpec,
    },
    Filter {
        condition: Condition,
        keep_matching: bool,
    },
    Rename {
        from: ArcStr,
        to: ArcStr,
        required: bool,
    },
    Aggregate {
        name: Arc<str>,
        by: KeySource,
        max_keys: usize,
    },
    Deduplicate {
        window: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum EnrichSpec {
    Constant(ArcStr),
    Lookup {
        from: KeySource,
        table: BTreeMap<String, ArcStr>,
        default: Option<ArcStr>,
        required: bool,
    },
}

/// Default de-duplication window: 100,000 ids is a few minutes of traffic at
/// a few hundred events per second, in about 2.5 MB of hashes per worker.
pub const DEFAULT_DEDUP_WINDOW: usize = 100_000;
/// Default bound on aggregation keys per worker.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

impl Default for PipelineSpec {
    /// The built-in pipeline: drop repeated event ids, count and sum per
    /// action. It never changes an event, so stored events are exactly what
    /// producers sent.
    fn default() -> Self {
        Self {
            steps: vec![
                StepSpec::Deduplicate {
                    window: DEFAULT_DEDUP_WINDOW,
                },
                StepSpec::Aggregate {
                    name: Arc::from("per_action"),
                    by: KeySource::Action,
                    max_keys: DEFAULT_MAX_KEYS,
                },
            ],
        }
    }
}

impl PipelineSpec {
    /// Reads and validates a pipeline file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates pipeline TOML.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let steps = file
            .steps
            .into_iter()
            .enumerate()
            .map(|(index, step)| step.validate(index))
            .collect::<Result<_, _>>()?;
        Ok(Self { steps })
    }

    /// How many steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether there are none (every event passes unchanged).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// A runnable pipeline with fresh state.
    pub fn build(&self) -> Pipeline {
        Pipeline::new(self.steps.iter().map(StepSpec::build).collect())
    }
}

impl StepSpec {
    fn build(&self) -> TransformStep {
        match self {
            Self::Enrich { attribute, value } => TransformStep::Enrich(Enrich {
                attribute: attribute.clone(),
                value: match value {
                    EnrichSpec::Constant(v) => EnrichValue::Constant(v.clone()),
                    EnrichSpec::Lookup {
                        from,
                        table,
                        default,
                        required,
                    } => {
                        let map: KeyTable<ArcStr> = table
                            .iter()
                            .map(|(k, v)| (Arc::from(k.as_str()), v.clone()))
                            .collect();
                        let by_action = Action::KNOWN.each_ref().map(|action| {
                            map.find_text(action.as_str())
                                .and_then(|at| map.get(at))
                                .map(|(_, value)| value.clone())
                        });
                        EnrichValue::Lookup {
                            from: from.clone(),
                            table: map,
                            by_action,
                            default: default.clone(),
                            required: *required,
                        }
                    }
                },
            }),
            Self::Filter {
                condition,
                keep_matching,
            } => TransformStep::Filter(Filter {
                condition: condition.clone(),
                keep_matching: *keep_matching,
            }),
            Self::Rename { from, to, required } => TransformStep::Rename(Rename {
                from: from.clone(),
                to: to.clone(),
                required: *required,
            }),
            Self::Aggregate { name, by, max_keys } => {
                TransformStep::Aggregate(Aggregate::new(Arc::clone(name), by.clone(), *max_keys))
            }
            Self::Deduplicate { window } => TransformStep::Deduplicate(Deduplicate::new(*window)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    steps: Vec<StepConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum StepConfig {
    Enrich {
        attribute: String,
        value: Option<String>,
        from: Option<String>,
        table: Option<BTreeMap<String, String>>,
        default: Option<String>,
        #[serde(default)]
        required: bool,
    },
    Filter {
        keep: Option<ConditionConfig>,
        drop: Option<ConditionConfig>,
    },
    Rename {
        from: String,
        to: String,
        #[serde(default)]
        required: bool,
    },
    Aggregate {
        name: String,
        by: String,
        max_keys: Option<usize>,
    },
    Deduplicate {
        window: Option<usize>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionConfig {
    actions: Option<Vec<String>>,
    amount_at_least: Option<i64>,
    amount_below: Option<i64>,
    has_attribute: Option<String>,
    attribute: Option<String>,
    equals: Option<String>,
}

impl StepConfig {
    fn kind(&self) -> &'static str {
        match self {
            Self::Enrich { .. } => "enrich",
            Self::Filter { .. } => "filter",
            Self::Rename { .. } => "rename",
            Self::Aggregate { .. } => "aggregate",
            Self::Deduplicate { .. } => "deduplicate",
        }
    }

    fn validate(self, index: usize) -> Result<StepSpec, ConfigError> {
        let kind = self.kind();
        let bad = |field: &'static str, reason: String| ConfigError::Step {
            index,
            kind,
            field,
            reason,
        };
        let name = |field: &'static str, value: String| -> Result<ArcStr, ConfigError> {
            if value.trim().is_empty() {
                Err(bad(field, "must not be empty".to_owned()))
            } else {
                Ok(configured(&value))
            }
        };
        Ok(match self {
            Self::Enrich {
                attribute,
                value,
                from,
                table,
                default,
                required,
            } => {
                let attribute = name("attribute", attribute)?;
                let value = match (value, from, table) {
                    (Some(value), None, None) => {
                        if default.is_some() || required {
                            return Err(bad(
                                "default",
                                "only applies to a lookup (`from` + `table`)".to_owned(),
                            ));
                        }
                        EnrichSpec::Constant(configured(&value))
                    }
                    (None, Some(from), Some(table)) => {
                        if required && default.is_some() {
                            return Err(bad(
                                "required",
                                "a lookup with a `default` never fails; drop one".to_owned(),
                            ));
                        }
                        EnrichSpec::Lookup {
                            from: key_source(&from).map_err(|reason| bad("from", reason))?,
                            table: table
                                .into_iter()
                                .map(|(k, v)| (k, configured(&v)))
                                .collect(),
                            default: default.as_deref().map(configured),
                            required,
                        }
                    }
                    (None, Some(_), None) => {
                        return Err(bad("table", "a lookup needs a `table`".to_owned()));
                    }
                    (None, None, Some(_)) => {
                        return Err(bad("from", "a lookup needs `from`".to_owned()));
                    }
                    (None, None, None) => {
                        return Err(bad(
                            "value",
                            "set `value`, or `from` and `table`".to_owned(),
                        ));
                    }
                    (Some(_), _, _) => {
                        return Err(bad(
                            "value",
                            "set `value` or `from` + `table`, not both".to_owned(),
                        ));
                    }
                };
                StepSpec::Enrich { attribute, value }
            }
            Self::Filter { keep, drop } => match (keep, drop) {
                (Some(c), None) => StepSpec::Filter {
                    condition: condition(c).map_err(|r| bad("keep", r))?,
                    keep_matching: true,
                },
                (None, Some(c)) => StepSpec::Filter {
                    condition: condition(c).map_err(|r| bad("drop", r))?,
                    keep_matching: false,
                },
                (Some(_), Some(_)) => {
                    return Err(bad("keep", "set `keep` or `drop`, not both".to_owned()));
                }
                (None, None) => return Err(bad("keep", "set `keep` or `drop`".to_owned())),
            },
            Self::Rename { from, to, required } => {
                let (from, to) = (name("from", from)?, name("to", to)?);
                if from == to {
                    return Err(bad("to", format!("renames {from:?} to itself")));
                }
                StepSpec::Rename { from, to, required }
            }
            Self::Aggregate {
                name: agg,
                by,
                max_keys,
            } => {
                let max_keys = max_keys.unwrap_or(DEFAULT_MAX_KEYS);
                if max_keys == 0 {
                    return Err(bad("max_keys", "must be at least 1".to_owned()));
                }
                StepSpec::Aggregate {
                    name: Arc::from(name("name", agg)?.as_str()),
                    by: key_source(&by).map_err(|r| bad("by", r))?,
                    max_keys,
                }
            }
            Self::Deduplicate { window } => {
                let window = window.unwrap_or(DEFAULT_DEDUP_WINDOW);
                if window == 0 || window > 10_000_000 {
                    return Err(bad("window", format!("is {window}, must be 1..=10000000")));
                }
                StepSpec::Deduplicate { window }
            }
        })
    }
}

/// A configured attribute name or value, made static: a pipeline is built
/// from configuration at start-up and its strings live as long as the
/// process, so copying one into an event (every enrich and rename does, for
/// every event) touches no reference count. Interned, so the same text
/// parsed again (tests, the fuzzer) is not leaked again; past
/// [`MAX_INTERNED`] distinct strings the rest stay reference-counted (only
/// slower), so memory stays bounded whatever is parsed.
fn configured(text: &str) -> ArcStr {
    static INTERNED: LazyLock<Mutex<HashSet<ArcStr>>> = LazyLock::new(Mutex::default);
    // Only configuration parsing takes this lock, never across an await.
    let mut interned = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = interned.get(text) {
        return known.clone();
    }
    let new = ArcStr::from(text);
    if interned.len() < MAX_INTERNED {
        new.leak();
        interned.insert(new.clone());
    }
    new
}

/// Most distinct configured strings made static (a pipeline has a few
/// dozen; this bounds what a stream of different configurations can pin).
const MAX_INTERNED: usize = 10_000;

fn key_source(text: &str) -> Result<KeySource, String> {
    match text {
        "action" => Ok(KeySource::Action),
        "user_id" => Ok(KeySource::UserId),
        other => match other.strip_prefix("attribute:") {
            Some(name) if !name.is_empty() => Ok(KeySource::Attribute(configured(name))),
            _ => Err(format!(
                "{other:?} is not `action`, `user_id` or `attribute:NAME`"
            )),
        },
    }
}

fn condition(config: ConditionConfig) -> Result<Condition, String> {
    let ConditionConfig {
        actions,
        amount_at_least,
        amount_below,
        has_attribute,
        attribute,
        equals,
    } = config;
    let mut set = Vec::new();
    if let Some(actions) = actions {
        if actions.is_empty() {
            return Err("`actions` must list at least one action".to_owned());
        }
        let parsed = actions
            .iter()
            .map(|a| Action::parse(a).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        set.push(Condition::ActionIn(parsed));
    }
    if let Some(min) = amount_at_least {
        set.push(Condition::AmountAtLeast(min));
    }
    if let Some(max) = amount_below {
        set.push(Condition::AmountBelow(max));
    }
    if let Some(name) = has_attribute {
        set.push(Condition::HasAttribute(configured(&name)));
    }
    match (attribute, equals) {
        (Some(name), Some(value)) => set.push(Condition::AttributeEquals(
            configured(&name),
            configured(&value),
        )),
        (None, None) => {}
        _ => return Err("`attribute` and `equals` go together".to_owned()),
    }
    let mut set = set.into_iter();
    match (set.next(), set.next()) {
        (Some(only), None) => Ok(only),
        (None, _) => Err("give one condition: actions, amount_at_least, amount_below, has_attribute, or attribute + equals".to_owned()),
        (Some(_), Some(_)) => Err("give exactly one condition per filter; chain filters for more".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_strings_are_static_and_shared() {
        let spec = PipelineSpec::from_toml(
            r#"
            [[steps]]
            kind = "enrich"
            attribute = "tier"
            value = "gold"
            "#,
        )
        .unwrap();
        let Some(StepSpec::Enrich {
            attribute,
            value: EnrichSpec::Constant(value),
        }) = spec.steps.first()
        else {
            panic!("not the enrich step: {spec:?}");
        };
        // Static: cloning them into an event touches no reference count.
        assert!(ArcStr::is_static(attribute) && ArcStr::is_static(value));
        // Interned: the same text again is the same string, not a new leak.
        assert!(ArcStr::ptr_eq(attribute, &configured("tier")));
    }
}
