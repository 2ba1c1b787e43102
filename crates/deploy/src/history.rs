//! The release history, kept where the next run can read it: in the description of the alias
//! callers use (`live`). It lists the versions that passed their smoke test and went live, the
//! newest first, and the versions rolled back from. Rollback goes to the last good version
//! before the current one (never to a version whose smoke test failed, nor one a tune left
//! behind: neither ever went live), and a release of the same image and model as a
//! rolled-back version leaves `live` where the rollback put it.
//!
//! An alias description holds at most 256 characters
//! (<https://docs.aws.amazon.com/lambda/latest/api/API_CreateAlias.html>): the newest entries
//! are kept.

#![warn(missing_docs)]

/// What the description starts with, so a description someone else wrote is not taken for one.
const TAG: &str = "lambda-cnn";
/// Lambda's limit on an alias description.
pub const MAX_LEN: usize = 256;

/// The versions that went live and those rolled back from, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Versions that passed their smoke test and took all the traffic, newest first.
    pub live: Vec<String>,
    /// Versions rolled back from, newest first.
    pub rolled_back: Vec<String>,
}

impl History {
    /// Reads an alias description; an empty history for one this module did not write.
    pub fn parse(description: &str) -> History {
        let mut h = History::default();
        let Some(rest) = description.strip_prefix(TAG) else {
            return h;
        };
        for part in rest.split_whitespace() {
            let list = |v: &str| -> Vec<String> {
                v.split(',')
                    .filter(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
                    .map(str::to_owned)
                    .collect()
            };
            if let Some(v) = part.strip_prefix("live=") {
                h.live = list(v);
            } else if let Some(v) = part.strip_prefix("rolled-back=") {
                h.rolled_back = list(v);
            }
        }
        h
    }

    /// The description to write: as many of the newest entries as fit in [`MAX_LEN`].
    pub fn render(&self) -> String {
        let mut live = self.live.clone();
        let mut rolled = self.rolled_back.clone();
        loop {
            let text = format!(
                "{TAG} live={} rolled-back={}",
                live.join(","),
                rolled.join(",")
            );
            if text.len() <= MAX_LEN {
                return text;
            }
            // Drop the oldest of the longer list first.
            if rolled.len() > live.len() {
                rolled.pop();
            } else {
                live.pop();
            }
        }
    }

    /// `version` passed its smoke test and took all the traffic.
    pub fn went_live(&mut self, version: &str) {
        self.live.retain(|v| v != version);
        self.live.insert(0, version.to_owned());
        self.rolled_back.retain(|v| v != version);
    }

    /// Whether `version` was rolled back from (and not released again since).
    pub fn was_rolled_back(&self, version: &str) -> bool {
        self.rolled_back.iter().any(|v| v == version)
    }

    /// Where a rollback from `current` goes: the newest good version other than it.
    pub fn rollback_target(&self, current: &str) -> Option<&str> {
        self.live.iter().map(String::as_str).find(|v| *v != current)
    }

    /// A canary of `version` was dropped: it did not go live, and an unchanged re-release
    /// leaves it out.
    pub fn canary_dropped(&mut self, version: &str) {
        self.rolled_back.retain(|v| v != version);
        self.rolled_back.insert(0, version.to_owned());
    }

    /// `live` moved from `from` back to `to`.
    pub fn rolled_back_to(&mut self, from: &str, to: &str) {
        self.live.retain(|v| v != from);
        self.rolled_back.retain(|v| v != from);
        self.rolled_back.insert(0, from.to_owned());
        self.live.retain(|v| v != to);
        self.live.insert(0, to.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_reads_back_what_it_wrote() {
        let mut h = History::default();
        h.went_live("1");
        h.went_live("2");
        h.went_live("5");
        assert_eq!(h.render(), "lambda-cnn live=5,2,1 rolled-back=");
        assert_eq!(History::parse(&h.render()), h);
        assert_eq!(History::parse("someone else's words"), History::default());
        assert_eq!(History::parse(""), History::default());
    }

    #[test]
    fn rollback_skips_what_never_went_live_and_remembers_what_it_left() {
        // 3 failed its smoke test and 4 was a tune's: neither went live.
        let mut h = History::parse("lambda-cnn live=5,2,1 rolled-back=");
        assert_eq!(h.rollback_target("5"), Some("2"));
        h.rolled_back_to("5", "2");
        assert_eq!(h.live, ["2", "1"]);
        assert!(h.was_rolled_back("5"));
        assert_eq!(h.rollback_target("2"), Some("1"));
        // Released again on purpose (a new version): no longer "rolled back".
        h.went_live("6");
        assert_eq!(h.rollback_target("6"), Some("2"));
        assert!(!h.was_rolled_back("6"));
        // live moved by hand to a version not in the history: back to the newest good one.
        assert_eq!(h.rollback_target("9"), Some("6"));
        assert_eq!(History::default().rollback_target("1"), None);
    }

    #[test]
    fn a_long_history_keeps_its_newest_entries_within_lambdas_limit() {
        let mut h = History::default();
        for v in 1..=400 {
            h.went_live(&v.to_string());
        }
        for v in (401..=600).step_by(2) {
            h.rolled_back_to(&v.to_string(), "400");
        }
        let text = h.render();
        assert!(text.len() <= MAX_LEN, "{}", text.len());
        let back = History::parse(&text);
        assert_eq!(back.live[0], "400");
        assert_eq!(back.rolled_back[0], "599");
        assert!(back.live.len() > 5 && back.rolled_back.len() > 5, "{text}");
    }
}
