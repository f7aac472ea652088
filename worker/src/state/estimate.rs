//! How much memory a task will work in, before it starts: per kind of work,
//! bytes per unit of input ([`super::Work::input_size`]: rows read from
//! Parquet, else bytes held), learned from what finished tasks of that kind
//! allocated at most ([`crate::working`]). It rises at once to a bigger
//! observation and falls slowly (30% per smaller one), so one small task
//! does not make the next big one look cheap. A kind with nothing learned
//! starts from a prior: what copies its input (a derive, a shuffle's split
//! and collect) needs about its input again; the rest is learned from the
//! first task.

use std::collections::HashMap;

use super::Work;

/// Bytes of working memory per unit of input, by kind of work.
#[derive(Debug, Clone)]
pub struct Estimates {
    per_unit: HashMap<&'static str, f64>,
}

impl Default for Estimates {
    fn default() -> Self {
        let priors = [
            ("derive", 1.0),
            ("shuffle_send", 1.0),
            ("shuffle_collect", 1.0),
            ("write_parts", 0.5),
        ];
        Estimates {
            per_unit: priors.into_iter().collect(),
        }
    }
}

impl Estimates {
    /// The working memory `work` is expected to need.
    pub fn estimate(&self, work: &Work) -> u64 {
        self.for_kind(work.label(), work.input_size())
    }

    /// The same, for `units` of input of kind `label`.
    pub fn for_kind(&self, label: &str, units: u64) -> u64 {
        self.per_unit
            .get(label)
            .map_or(0, |per_unit| (per_unit * units as f64) as u64)
    }

    /// A task of kind `label` with `units` of input needed `peak` bytes.
    pub fn observe(&mut self, label: &'static str, units: u64, peak: u64) {
        if units == 0 || peak == 0 {
            return; // nothing to learn (or not measured)
        }
        let seen = peak as f64 / units as f64;
        let per_unit = self.per_unit.entry(label).or_insert(seen);
        *per_unit = if seen >= *per_unit {
            seen
        } else {
            0.7 * *per_unit + 0.3 * seen
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_estimate_rises_at_once_and_falls_slowly() {
        let mut e = Estimates::default();
        assert_eq!(e.for_kind("load", 1000), 0, "nothing learned, no prior");
        assert_eq!(e.for_kind("derive", 1000), 1000, "a copy of the input");
        e.observe("load", 1000, 80_000);
        assert_eq!(e.for_kind("load", 2000), 160_000);
        e.observe("load", 1000, 20_000);
        assert_eq!(e.for_kind("load", 1000), 62_000);
        e.observe("load", 1000, 100_000);
        assert_eq!(e.for_kind("load", 1000), 100_000);
        // Not measured: nothing changes.
        e.observe("load", 1000, 0);
        e.observe("load", 0, 5);
        assert_eq!(e.for_kind("load", 1000), 100_000);
    }
}
