//! `check children`: how many of the nodes this one receives from are stale (silent for
//! `receive: {child-timeout}`, their output archived), from `state/children.json`.

use super::{Outcome, Perf, Status, Thresholds};
use crate::process::children;
use crate::spool::BaseDir;

/// Most stale children named in the text.
const NAMED: usize = 5;

/// The stale children against `count`. OK with nothing received yet; UNKNOWN when the record
/// cannot be read.
pub fn check_children(base: &BaseDir, count: &Thresholds) -> Outcome {
    let file = match children::read(base) {
        Ok(file) => file,
        Err(e) => return Outcome::unknown("children", format!("cannot read the children's record: {e}")),
    };
    let stale: Vec<&String> = file
        .children
        .iter()
        .filter(|(_, child)| child.stale_since.is_some())
        .map(|(node, _)| node)
        .collect();
    let total = file.children.len();
    let text = if total == 0 {
        "no child has shipped to this node".to_string()
    } else if stale.is_empty() {
        format!("{total} children, none stale")
    } else {
        // Node names are letters, digits, '-', '_', '.' (checked when the snapshot arrived).
        let mut named: Vec<String> = stale.iter().take(NAMED).map(|n| n.to_string()).collect();
        if stale.len() > NAMED {
            named.push(format!("and {} more", stale.len() - NAMED));
        }
        format!(
            "{} of {total} children stale (output archived): {}",
            stale.len(),
            named.join(", ")
        )
    };
    Outcome {
        check: "children",
        status: if total == 0 {
            Status::Ok
        } else {
            count.status(stale.len() as f64)
        },
        text,
        perf: vec![
            Perf {
                label: "stale".into(),
                value: stale.len() as f64,
                unit: "",
                thresholds: Some(count.clone()),
                max: Some(total as f64),
            },
            Perf {
                label: "children".into(),
                value: total as f64,
                unit: "",
                thresholds: None,
                max: None,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_children_are_counted_and_named() {
        let (_tmp, base) = crate::spool::layout::temp_base();
        let limits = Thresholds::parse(Some("0"), Some("2")).unwrap();
        assert_eq!(check_children(&base, &limits).status, Status::Ok);
        let mut record = children::Children::load(&base, Some(std::time::Duration::from_secs(10)));
        record.heard("p1", "g1", 100);
        record.heard("p2", "g2", 100);
        record.heard("p3", "g3", 200);
        record.save(&base);
        let outcome = check_children(&base, &limits);
        assert_eq!(
            (outcome.status, outcome.text.as_str()),
            (Status::Ok, "3 children, none stale")
        );
        record.sweep(150);
        record.save(&base);
        let outcome = check_children(&base, &limits);
        assert_eq!(outcome.status, Status::Warning);
        assert_eq!(outcome.text, "2 of 3 children stale (output archived): p1, p2");
        std::fs::write(base.state().join(children::CHILDREN_FILE), "[").unwrap();
        assert_eq!(check_children(&base, &limits).status, Status::Unknown);
    }
}
