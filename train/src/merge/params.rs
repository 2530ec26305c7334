//! Merge parameters as mergekit spells them: a value per parameter name at three levels (a
//! source model inside a slice, the slice, the whole config), each either a scalar, a gradient
//! list interpolated over the layers of a slice, or a list of `{filter, value}` entries chosen by
//! tensor-name substring. Lookup follows mergekit's `ConfigReader.parameter`: the model's own
//! setting, then the slice's, then the global one, skipping a level whose filters all miss.

use std::collections::BTreeMap;

/// A parameter's value for one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    Num(f64),
    Bool(bool),
}

/// One parameter setting, before a tensor and layer position pick its value.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    Scalar(Scalar),
    /// Values spread evenly over a slice's layers, interpolated linearly in between.
    Gradient(Vec<f64>),
    /// `{filter, value}` entries in order; the first whose filter is a substring of the tensor
    /// name (or that has no filter, or `*`) gives the value. None matching means "not set here".
    Conditional(Vec<(Option<String>, Setting)>),
}

/// Parameters by name at one level.
pub type Params = BTreeMap<String, Setting>;

/// Where a tensor sits: its name (for filters) and its position `t` in [0, 1] along its slice
/// (for gradients). Non-layer tensors (embeddings, final norm, lm_head) use t = 0, as mergekit
/// plans them, so they take a gradient's first value.
#[derive(Clone, Copy, Debug)]
pub struct At<'a> {
    pub tensor: &'a str,
    pub t: f64,
}

/// mergekit's gradient rule: position t * (n - 1) on the list, linear between neighbours.
pub fn gradient_at(values: &[f64], t: f64) -> f64 {
    let Some(&last) = values.last() else { return f64::NAN };
    let scaled = t * (values.len() - 1) as f64;
    let i0 = scaled.max(0.0) as usize;
    if i0 >= values.len() - 1 {
        return last;
    }
    let frac = scaled - i0 as f64;
    (1.0 - frac) * values[i0] + frac * values[i0 + 1]
}

impl Setting {
    pub fn evaluate(&self, at: At<'_>) -> Option<Scalar> {
        match self {
            Setting::Scalar(s) => Some(*s),
            Setting::Gradient(values) => Some(Scalar::Num(gradient_at(values, at.t))),
            Setting::Conditional(entries) => entries
                .iter()
                .find(|(filter, _)| match filter.as_deref() {
                    None | Some("*") => true,
                    Some(f) => at.tensor.contains(f),
                })
                .and_then(|(_, value)| value.evaluate(at)),
        }
    }

    /// Every number this setting can produce, for range checks before any tensor is read.
    pub fn numbers(&self) -> Vec<f64> {
        match self {
            Setting::Scalar(Scalar::Num(x)) => vec![*x],
            Setting::Scalar(Scalar::Bool(_)) => Vec::new(),
            Setting::Gradient(values) => values.clone(),
            Setting::Conditional(entries) => entries.iter().flat_map(|(_, v)| v.numbers()).collect(),
        }
    }

    /// Parses a YAML value: a number or boolean, a list of numbers (a gradient), or a list of
    /// `{filter, value}` mappings. `at` says where in the file, for the error.
    pub fn from_yaml(v: &serde_norway::Value, at: &str) -> Result<Setting, String> {
        use serde_norway::Value;
        match v {
            Value::Bool(b) => Ok(Setting::Scalar(Scalar::Bool(*b))),
            Value::Number(n) => number(n, at).map(|x| Setting::Scalar(Scalar::Num(x))),
            Value::Sequence(items) if items.is_empty() => Err(format!("{at}: an empty list")),
            Value::Sequence(items) if items.iter().all(|i| matches!(i, Value::Number(_))) => {
                let mut values = Vec::with_capacity(items.len());
                for (k, item) in items.iter().enumerate() {
                    if let Value::Number(n) = item {
                        values.push(number(n, &format!("{at}[{k}]"))?);
                    }
                }
                Ok(Setting::Gradient(values))
            }
            Value::Sequence(items) => {
                let mut entries = Vec::with_capacity(items.len());
                for (k, item) in items.iter().enumerate() {
                    entries.push(conditional(item, &format!("{at}[{k}]"))?);
                }
                Ok(Setting::Conditional(entries))
            }
            Value::Mapping(_) => {
                let entry = conditional(v, at)?;
                Ok(Setting::Conditional(vec![entry]))
            }
            other => Err(format!(
                "{at}: expected a number, true/false, a list of numbers or a list of {{filter, value}}, found {}",
                describe(other)
            )),
        }
    }
}

/// One `{filter, value}` entry; its value is a scalar or a gradient, as in mergekit.
fn conditional(v: &serde_norway::Value, at: &str) -> Result<(Option<String>, Setting), String> {
    use serde_norway::Value;
    let Value::Mapping(map) = v else {
        return Err(format!("{at}: expected {{filter, value}} (or a number in a list of numbers)"));
    };
    let mut filter = None;
    let mut value = None;
    for (key, item) in map {
        match key.as_str() {
            Some("filter") => match item {
                Value::String(s) => filter = Some(s.clone()),
                Value::Null => {}
                other => return Err(format!("{at}.filter: expected a string, found {}", describe(other))),
            },
            Some("value") => value = Some(item),
            _ => {
                return Err(format!(
                    "{at}: unknown key {} (a conditional has `filter` and `value`)",
                    key_text(key)
                ))
            }
        }
    }
    let Some(value) = value else { return Err(format!("{at}: missing `value`")) };
    let setting = Setting::from_yaml(value, &format!("{at}.value"))?;
    if matches!(setting, Setting::Conditional(_)) {
        return Err(format!("{at}.value: expected a number or a list of numbers"));
    }
    Ok((filter, setting))
}

fn number(n: &serde_norway::Number, at: &str) -> Result<f64, String> {
    match n.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{at}: {n} is not a finite number")),
    }
}

pub(crate) fn key_text(key: &serde_norway::Value) -> String {
    match key.as_str() {
        Some(s) => format!("`{s}`"),
        None => describe(key),
    }
}

pub(crate) fn describe(v: &serde_norway::Value) -> String {
    use serde_norway::Value;
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradients_interpolate_like_mergekit() {
        let g = [0.0, 0.5, 0.3, 0.7, 1.0];
        assert_eq!(gradient_at(&g, 0.0), 0.0);
        assert_eq!(gradient_at(&g, 1.0), 1.0);
        assert!((gradient_at(&g, 0.375) - 0.4).abs() < 1e-12); // 1.5 -> between 0.5 and 0.3
        assert_eq!(gradient_at(&[0.25], 0.7), 0.25);
    }

    #[test]
    fn filters_pick_the_first_match_and_fall_through() {
        let text = "- filter: self_attn\n  value: [0, 1]\n- filter: mlp\n  value: 0.9\n";
        let v: serde_norway::Value = serde_norway::from_str(text).unwrap();
        let s = Setting::from_yaml(&v, "t").unwrap();
        let at = |tensor| At { tensor, t: 0.5 };
        assert_eq!(s.evaluate(at("model.layers.0.self_attn.q_proj.weight")), Some(Scalar::Num(0.5)));
        assert_eq!(s.evaluate(at("model.layers.0.mlp.up_proj.weight")), Some(Scalar::Num(0.9)));
        assert_eq!(s.evaluate(at("model.norm.weight")), None);
    }
}
