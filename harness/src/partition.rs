//! `--partition k/n`: splits a run into n shards for n machines. The unit of work is one
//! scenario on one server spec (its server is set up once for every client stack), so a
//! shard never repeats a server setup another shard makes. Units are assigned greedily,
//! longest first, to the shard with the least work so far; a unit's work is its time in the
//! `--durations` file (a previous results JSON) or, where that has none, an estimate from its
//! number of (case, client) pairs. Every shard computes the same assignment from the same
//! scenarios, config and durations file, so shards need no coordination; `merge` checks that
//! they agreed.

use crate::results::ResultsDoc;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `k/n` as given on the command line (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Partition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = s
            .split_once('/')
            .and_then(|(k, n)| Some((k.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count >= 1 && (1..=count).contains(&index) => {
                Ok(Partition { index, count })
            }
            _ => Err(format!(
                "expected k/n with 1 <= k <= n (e.g. 1/2), got {s:?}"
            )),
        }
    }
}

/// What one shard ran, recorded in its results so `merge` can check the shards agreed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    /// Units (`scenario@server`) this shard ran.
    pub units: Vec<String>,
    /// Units of the whole run.
    pub units_total: usize,
}

/// The unit name of a scenario on a server spec.
pub fn unit(scenario: &str, server: &str) -> String {
    format!("{scenario}@{server}")
}

/// The scenario a case id belongs to (`<scenario>/<case>`).
pub fn scenario_of(case: &str) -> &str {
    case.split_once('/').map_or(case, |(s, _)| s)
}

/// Time per unit from an earlier run: (summed attempt millis, pairs).
#[derive(Debug, Default)]
pub struct Durations(BTreeMap<String, (u128, usize)>);

impl Durations {
    pub fn from_doc(doc: &ResultsDoc) -> Self {
        let mut map: BTreeMap<String, (u128, usize)> = BTreeMap::new();
        for r in &doc.results {
            let e = map
                .entry(unit(scenario_of(&r.result.case), &r.server))
                .or_default();
            e.0 += r.result.millis;
            e.1 += 1;
        }
        Durations(map)
    }

    fn per_pair(&self) -> u128 {
        let (millis, pairs) = self
            .0
            .values()
            .fold((0, 0), |(m, p), (um, up)| (m + um, p + up));
        if pairs == 0 {
            100
        } else {
            (millis / pairs as u128).max(1)
        }
    }
}

/// Setting up a server for a scenario costs about this much, whatever its cases.
const SETUP_MILLIS: u128 = 300;

/// The units of shard `part` among `units` (name, number of pairs), in their given order.
pub fn assign(units: &[(String, usize)], durations: &Durations, part: Partition) -> Shard {
    let per_pair = durations.per_pair();
    let mut weighted: Vec<(u128, &str)> = units
        .iter()
        .map(|(name, pairs)| {
            let w = durations
                .0
                .get(name)
                .map_or(*pairs as u128 * per_pair, |(m, _)| *m);
            (w + SETUP_MILLIS, name.as_str())
        })
        .collect();
    // Longest first; names break ties so the order never depends on anything else.
    weighted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut load = vec![0u128; part.count];
    let mut owner: BTreeMap<&str, usize> = BTreeMap::new();
    for (w, name) in weighted {
        let (shard, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(i, l)| (**l, *i))
            .expect("count >= 1");
        load[shard] += w;
        owner.insert(name, shard + 1);
    }
    Shard {
        index: part.index,
        count: part.count,
        units: units
            .iter()
            .filter(|(name, _)| owner.get(name.as_str()) == Some(&part.index))
            .map(|(name, _)| name.clone())
            .collect(),
        units_total: units.len(),
    }
}

/// Loads a durations file (any results JSON); a missing file is an error, not an estimate:
/// shards given different inputs would split differently.
pub fn load_durations(path: Option<&std::path::Path>) -> Result<Durations> {
    match path {
        None => Ok(Durations::default()),
        Some(p) if !p.exists() => bail!("--durations {}: no such file", p.display()),
        Some(p) => Ok(Durations::from_doc(&ResultsDoc::load(p)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(n: usize) -> Vec<(String, usize)> {
        (0..n).map(|i| (format!("s{i}@local"), i + 1)).collect()
    }

    #[test]
    fn parses_k_of_n() {
        assert_eq!(
            "2/3".parse::<Partition>(),
            Ok(Partition { index: 2, count: 3 })
        );
        for bad in ["0/2", "3/2", "1/0", "1", "a/b", "1/2/3"] {
            assert!(bad.parse::<Partition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shards_cover_every_unit_once_and_balance() {
        let all = units(17);
        let d = Durations::default();
        let shards: Vec<Shard> = (1..=3)
            .map(|k| assign(&all, &d, Partition { index: k, count: 3 }))
            .collect();
        let mut seen: Vec<&String> = shards.iter().flat_map(|s| &s.units).collect();
        seen.sort();
        let mut want: Vec<&String> = all.iter().map(|(n, _)| n).collect();
        want.sort();
        assert_eq!(seen, want);
        let pairs = |s: &Shard| -> usize {
            all.iter()
                .filter(|(n, _)| s.units.contains(n))
                .map(|(_, p)| p)
                .sum()
        };
        let loads: Vec<usize> = shards.iter().map(pairs).collect();
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(max - min <= 17, "unbalanced: {loads:?}");
        // Deterministic.
        assert_eq!(
            shards[1],
            assign(&all, &d, Partition { index: 2, count: 3 })
        );
    }
}
