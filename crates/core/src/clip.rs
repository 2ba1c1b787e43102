//! Repeating someone else's text in a message, bounded: however a request or an answer is
//! made, an error message that quotes it stays small.

#![warn(missing_docs)]

/// The most characters of any input value an error message repeats.
pub const ECHO_CHARS: usize = 100;
/// The most characters of an error message: however the input is made, an error body stays
/// small (well under Lambda's 6 MB response limit, and under 1 KB).
pub const MESSAGE_CHARS: usize = 600;

/// `text`, or its first [`ECHO_CHARS`] characters and how long it was: for repeating a
/// client's value in an error message without repeating all of it.
pub fn clip(text: &str) -> String {
    clip_to(text, ECHO_CHARS)
}

/// `text`, or its first `max` characters and how long it was.
pub fn clip_to(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_and_says_its_length() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(ECHO_CHARS + 5);
        let c = clip(&long);
        assert!(c.starts_with(&"é".repeat(ECHO_CHARS)), "{c}");
        assert!(
            c.ends_with(&format!("({} bytes in all)", long.len())),
            "{c}"
        );
    }
}
