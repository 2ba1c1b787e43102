//! An environment's output, sorted as Lambda would: the RIE's own log lines (`(rapid)`) apart
//! from the function's, and the RIE's REPORT line made Lambda's with the core's
//! [`Report`](lambda_cnn_core::report::Report) type.
//!
//! What the RIE does not do, done here: its "Max Memory Used" is the configured size, so the
//! container's measured peak replaces it; on a cold start its REPORT counts the init phase in
//! "Duration" (and says ~0 ms of "Init Duration"), so the init phase the RIE logs
//! (`INIT REPORT(durationMs: …)`) moves to "Init Duration" and out of "Duration" and "Billed
//! Duration", which are the handler's alone on Lambda.

use lambda_cnn_core::report::{self, Report};

/// Whether `line` is one of the RIE's own (`07 Dec 2026 00:30:12,123 [INFO] (rapid) …`), not
/// the function's.
pub fn is_rie_line(line: &str) -> bool {
    line.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && line
            .split_once(" (rapid)")
            .is_some_and(|(head, _)| head.ends_with(']') && head.contains(" ["))
}

/// The RIE's error or warning lines: why a runtime that answered nothing failed.
pub fn is_rie_complaint(line: &str) -> bool {
    is_rie_line(line) && (line.contains("[ERROR]") || line.contains("[WARNING]"))
}

/// The last `n` bytes of `text` or a little fewer, cut at a character boundary: the end of a
/// log, for an error message.
pub fn tail(text: &str, n: usize) -> &str {
    let start = text.len().saturating_sub(n);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}

/// The init phase's duration the RIE logs on a cold start: `(rapid) INIT REPORT(durationMs: 123.45)`.
pub fn init_ms(lines: &[String]) -> Option<f64> {
    lines.iter().find_map(|l| {
        let (_, rest) = l.split_once("(rapid) INIT REPORT(durationMs: ")?;
        rest.split(')').next()?.trim().parse().ok()
    })
}

/// The RIE's REPORT line as Lambda writes it: `peak_mb` as Max Memory Used, and on a cold start
/// (`init_ms`) the init phase out of Duration and Billed Duration, into Init Duration. `None`
/// when `line` is not a REPORT line.
pub fn lambda_report(line: &str, init_ms: Option<f64>, peak_mb: Option<u32>) -> Option<Report> {
    let mut r = report::parse(line)?;
    if let Some(peak) = peak_mb {
        r.max_memory_used_mb = peak;
    }
    if let Some(init) = init_ms {
        let handler = (r.duration_ms - init).max(0.0);
        r.duration_ms = handler;
        // Lambda bills the handler's time rounded up to the millisecond, at least 1 ms.
        r.billed_ms = handler.ceil().max(1.0);
        r.init_ms = Some(init);
    }
    Some(r)
}

/// The REPORT line of an invocation whose environment died under it (out of memory, a crash):
/// the RIE went with the function and wrote none, so it is written as Lambda does.
pub fn crashed(memory_mb: u32, peak_mb: Option<u32>) -> Report {
    Report {
        request_id: "unknown".into(),
        duration_ms: 0.0,
        billed_ms: 0.0,
        memory_size_mb: memory_mb,
        max_memory_used_mb: peak_mb.unwrap_or(memory_mb),
        init_ms: None,
        status: Some("error".into()),
        error_type: Some("Runtime.ExitError".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As the RIE (1.x, from aws-sam-cli) writes them.
    const RIE_START: &str = "07 Dec 2026 00:30:12,123 [INFO] (rapid) exec '/var/runtime/bootstrap' (cwd=/var/task, handler=)";
    const RIE_INIT: &str =
        "07 Dec 2026 00:30:13,001 [INFO] (rapid) INIT REPORT(durationMs: 812.50)";
    const RIE_REPORT: &str = "REPORT RequestId: 5b7f\tInit Duration: 0.31 ms\tDuration: 850.25 ms\tBilled Duration: 851 ms\tMemory Size: 1024 MB\tMax Memory Used: 1024 MB\t";

    #[test]
    fn the_rie_lines_are_told_from_the_functions() {
        assert!(is_rie_line(RIE_START));
        assert!(is_rie_line(RIE_INIT));
        assert!(!is_rie_line(RIE_REPORT));
        assert!(!is_rie_line(
            "{\"level\":\"INFO\",\"message\":\"(rapid) in my log\"}"
        ));
        assert!(!is_rie_line("2026 is the year (rapid) growth"));
        assert!(is_rie_complaint(
            "07 Dec 2026 00:30:14,000 [WARNING] (rapid) Runtime exited"
        ));
        assert!(!is_rie_complaint(RIE_START));
    }

    #[test]
    fn a_cold_start_moves_the_init_phase_out_of_the_handlers_duration() {
        let lines = vec![RIE_START.to_owned(), RIE_INIT.to_owned()];
        let init = init_ms(&lines);
        assert_eq!(init, Some(812.5));
        let r = lambda_report(RIE_REPORT, init, Some(61)).unwrap();
        assert_eq!(r.init_ms, Some(812.5));
        assert!((r.duration_ms - 37.75).abs() < 1e-9, "{r:?}");
        assert_eq!((r.billed_ms, r.max_memory_used_mb), (38.0, 61));
        assert_eq!(
            r.to_string(),
            "REPORT RequestId: 5b7f\tDuration: 37.75 ms\tBilled Duration: 38 ms\tMemory Size: 1024 MB\tMax Memory Used: 61 MB\tInit Duration: 812.50 ms\t"
        );
    }

    #[test]
    fn a_warm_invocation_keeps_its_duration_and_gets_its_peak() {
        let r = lambda_report(RIE_REPORT, None, Some(70)).unwrap();
        assert_eq!((r.duration_ms, r.billed_ms), (850.25, 851.0));
        assert_eq!(r.max_memory_used_mb, 70);
        // No peak measured: the RIE's figure stays.
        assert_eq!(
            lambda_report(RIE_REPORT, None, None)
                .unwrap()
                .max_memory_used_mb,
            1024
        );
        // Never less than Lambda's 1 ms minimum, never negative.
        let r = lambda_report(RIE_REPORT, Some(900.0), None).unwrap();
        assert_eq!((r.duration_ms, r.billed_ms), (0.0, 1.0));
        assert_eq!(lambda_report("START RequestId: 5b7f", None, None), None);
    }

    #[test]
    fn a_tail_is_cut_at_a_character_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab", 10), "ab");
        // "é" is two bytes: a cut inside it moves past it.
        assert_eq!(tail("aéb", 2), "b");
    }

    #[test]
    fn a_crash_reads_as_an_error_of_the_runtime() {
        let r = crashed(512, None);
        let back = report::parse(&r.to_string()).unwrap();
        assert_eq!(back.status.as_deref(), Some("error"));
        assert_eq!(back.error_type.as_deref(), Some("Runtime.ExitError"));
        assert_eq!(back.max_memory_used_mb, 512);
    }
}
