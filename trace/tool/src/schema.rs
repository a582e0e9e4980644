//! A check of trace-event JSON against the Trace Event Format, as far as the viewers rely on it:
//! the object form with a `traceEvents` array; per phase, the fields it needs with the right
//! types (`X`: `ts` and `dur` >= 0; `i`: scope `g`, `p` or `t`; `M`: a known metadata name with
//! its argument; `s`/`f`: an `id`); each flow's start before its end; and complete slices on one
//! track properly nested, since the viewers drop or mis-stack slices that overlap partially.
//!
//! Neighbours: the tool runs it on what `json` writes (`--validate`, and always in its tests).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// A track: (pid, tid).
type Track = (u64, u64);
/// A complete slice on a track: (start, end, event index).
type Span = (f64, f64, usize);

/// What a valid trace holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub events: usize,
    pub slices: usize,
    pub instants: usize,
    pub flows: usize,
    pub metadata: usize,
}

/// Check `trace`; every problem found, or the counts.
pub fn validate(trace: &Value) -> Result<Counts, Vec<String>> {
    let mut errors = Vec::new();
    let Some(events) = trace.get("traceEvents").and_then(Value::as_array) else {
        return Err(vec![String::from("no traceEvents array at the top level")]);
    };
    if let Some(unit) = trace.get("displayTimeUnit")
        && !matches!(unit.as_str(), Some("ms" | "ns"))
    {
        errors.push(format!(
            "displayTimeUnit must be \"ms\" or \"ns\", not {unit}"
        ));
    }
    let mut counts = Counts {
        events: events.len(),
        ..Counts::default()
    };
    let mut flow_starts: HashMap<(String, u64), f64> = HashMap::new();
    let mut flow_ends: Vec<(String, u64, f64, usize)> = Vec::new();
    let mut slices: BTreeMap<Track, Vec<Span>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let mut bad = |what: String| errors.push(format!("event {i}: {what}"));
        let Some(obj) = e.as_object() else {
            bad(String::from("not an object"));
            continue;
        };
        let Some(ph) = obj.get("ph").and_then(Value::as_str) else {
            bad(String::from("no ph string"));
            continue;
        };
        let name = obj.get("name").and_then(Value::as_str);
        if name.is_none() {
            bad(String::from("no name string"));
        }
        let pid = obj.get("pid").and_then(Value::as_u64);
        let tid = obj.get("tid").and_then(Value::as_u64);
        if pid.is_none() || tid.is_none() {
            bad(String::from("pid and tid must be non-negative integers"));
        }
        let ts = obj.get("ts").and_then(Value::as_f64);
        if ph != "M" && !ts.is_some_and(|t| t >= 0.0) {
            bad(String::from("ts must be a number >= 0"));
        }
        if let Some(args) = obj.get("args")
            && !args.is_object()
        {
            bad(String::from("args must be an object"));
        }
        match ph {
            "X" => {
                counts.slices += 1;
                match obj.get("dur").and_then(Value::as_f64) {
                    Some(dur) if dur >= 0.0 => {
                        if let (Some(p), Some(t), Some(ts)) = (pid, tid, ts) {
                            slices.entry((p, t)).or_default().push((ts, ts + dur, i));
                        }
                    }
                    _ => bad(String::from("X needs dur >= 0")),
                }
            }
            "i" | "I" => {
                counts.instants += 1;
                if let Some(s) = obj.get("s")
                    && !matches!(s.as_str(), Some("g" | "p" | "t"))
                {
                    bad(format!("instant scope must be g, p or t, not {s}"));
                }
            }
            "M" => {
                counts.metadata += 1;
                let args = obj.get("args");
                let ok = match name {
                    Some("process_name" | "thread_name" | "process_labels") => args
                        .and_then(|a| a.get("name").or_else(|| a.get("labels")))
                        .is_some_and(Value::is_string),
                    Some("process_sort_index" | "thread_sort_index") => args
                        .and_then(|a| a.get("sort_index"))
                        .is_some_and(Value::is_i64),
                    _ => false,
                };
                if !ok {
                    bad(format!(
                        "metadata {name:?} without its argument, or unknown"
                    ));
                }
            }
            "s" | "t" | "f" => {
                counts.flows += 1;
                let id = obj.get("id").and_then(Value::as_u64);
                let cat = obj
                    .get("cat")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                match (id, ts) {
                    (Some(id), Some(ts)) if ph == "s" => {
                        if flow_starts.insert((cat, id), ts).is_some() {
                            bad(format!("flow {id} starts twice"));
                        }
                    }
                    (Some(id), Some(ts)) if ph == "f" => {
                        if let Some(bp) = obj.get("bp")
                            && bp.as_str() != Some("e")
                        {
                            bad(format!("flow end binding point must be \"e\", not {bp}"));
                        }
                        flow_ends.push((cat, id, ts, i));
                    }
                    (Some(_), Some(_)) => {}
                    _ => bad(String::from("a flow event needs an integer id")),
                }
            }
            "B" | "E" | "C" | "b" | "e" | "n" => {}
            other => bad(format!("unknown phase {other:?}")),
        }
    }
    for (cat, id, ts, i) in flow_ends {
        match flow_starts.get(&(cat, id)) {
            None => errors.push(format!("event {i}: flow {id} ends without a start")),
            Some(&start) if start > ts => {
                errors.push(format!("event {i}: flow {id} ends before it starts"))
            }
            Some(_) => {}
        }
    }
    for ((pid, tid), mut list) in slices {
        // Longer first at equal starts, so a parent precedes its children.
        list.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut stack: Vec<(f64, usize)> = Vec::new();
        for (start, end, i) in list {
            // Times are microseconds as floats: allow a picosecond of rounding either way.
            while stack.last().is_some_and(|&(e, _)| e <= start + 1e-6) {
                stack.pop();
            }
            if let Some(&(parent_end, parent)) = stack.last()
                && end > parent_end + 1e-6
            {
                errors.push(format!(
                    "event {i}: slice on pid {pid} tid {tid} overlaps event {parent} partially ({start}..{end} vs ..{parent_end})"
                ));
            }
            stack.push((end, i));
        }
    }
    if errors.is_empty() {
        Ok(counts)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_minimal_trace_passes() {
        let t = json!({"traceEvents": [
            {"ph": "M", "name": "thread_name", "pid": 0, "tid": 1, "args": {"name": "CPU 1"}},
            {"ph": "X", "name": "a", "pid": 0, "tid": 1, "ts": 0.0, "dur": 10.0},
            {"ph": "X", "name": "child", "pid": 0, "tid": 1, "ts": 2.0, "dur": 0},
            {"ph": "s", "name": "w", "cat": "c", "id": 1, "pid": 0, "tid": 1, "ts": 2.0},
            {"ph": "f", "bp": "e", "name": "w", "cat": "c", "id": 1, "pid": 0, "tid": 2, "ts": 3.0},
            {"ph": "i", "s": "t", "name": "ipi", "pid": 0, "tid": 2, "ts": 4.0},
        ], "displayTimeUnit": "ns"});
        assert_eq!(
            validate(&t),
            Ok(Counts {
                events: 6,
                slices: 2,
                instants: 1,
                flows: 2,
                metadata: 1
            })
        );
    }

    #[test]
    fn each_kind_of_mistake_is_reported() {
        let t = json!({"traceEvents": [
            {"ph": "X", "name": "a", "pid": 0, "tid": 1, "ts": 0.0, "dur": 10.0},
            {"ph": "X", "name": "b", "pid": 0, "tid": 1, "ts": 5.0, "dur": 10.0},
            {"ph": "X", "name": "c", "pid": 0, "tid": 1, "ts": -1.0, "dur": 1.0},
            {"ph": "X", "pid": 0, "tid": 1, "ts": 20.0},
            {"ph": "f", "name": "w", "id": 9, "pid": 0, "tid": 2, "ts": 3.0},
            {"ph": "i", "s": "x", "name": "ipi", "pid": 0, "tid": 2, "ts": 4.0},
            {"ph": "M", "name": "thread_name", "pid": 0, "tid": 1, "args": {}},
            {"ph": "Q", "name": "q", "pid": 0, "tid": 1, "ts": 1.0},
        ]});
        let errors = validate(&t).unwrap_err();
        for needle in [
            "overlaps",
            "ts must be",
            "no name",
            "X needs dur",
            "without a start",
            "scope",
            "metadata",
            "unknown phase",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "no error about {needle}: {errors:#?}"
            );
        }
        assert_eq!(
            validate(&json!([])),
            Err(vec![String::from("no traceEvents array at the top level")])
        );
    }
}
