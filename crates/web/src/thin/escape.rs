//! Escaping of user text for HTML and WML (XML). Every piece of text that did not come from
//! this module's callers literally goes through one of these.

/// Escapes `& < > " '` for HTML text and attribute values.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newlines are not allowed in XML 1.0 and
            // have no business in a page.
            c if c.is_control() && c != '\t' && c != '\n' && c != '\r' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for WML: the XML escapes, and `$` doubled (WML substitutes `$name`).
pub fn wml(text: &str) -> String {
    html(text).replace('$', "$$")
}

/// `HH:MM UTC` of a time in milliseconds since the epoch.
pub fn clock(millis: i64) -> String {
    let minutes = millis.div_euclid(60_000).rem_euclid(24 * 60);
    format!("{:02}:{:02} UTC", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            html(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(wml("$(x) <b>"), "$$(x) &lt;b&gt;");
        assert_eq!(html("a\u{0}b"), "a\u{fffd}b");
        assert_eq!(clock(3_600_000 + 5 * 60_000), "01:05 UTC");
    }
}
