//! Message templates: the client's text with `{otp}` where the code goes, and
//! the one place that knows where that is.
//!
//! [`MessageTemplate::parts`] splits a template at every [`PLACEHOLDER`]: the
//! text around each code. Everything built from a template is built from
//! those parts: the message a send stores and the SMS drivers deliver
//! ([`MessageTemplate::render`]), the masked form a reply or a list shows
//! when the code is hidden ([`MessageTemplate::render_masked`]), and the
//! spoken prompt of a call, which keeps the parts and the code apart (the
//! code is read digit by digit) and whose first reading ends after the first
//! code ([`MessageTemplate::first_reading`]).

use crate::code::OtpCode;
use crate::vault::MASK;

/// Where the code goes in a template. Every occurrence is replaced.
pub const PLACEHOLDER: &str = "{otp}";

/// The longest template accepted, in characters (Unicode scalar values).
///
/// A template this long may still render to more than
/// [`MAX_SEGMENTS`](crate::segments::MAX_SEGMENTS) SMS parts; that is checked
/// on the rendered text, where the code's length is known.
pub const MAX_TEMPLATE_CHARS: usize = 1000;

/// A message template that holds the placeholder and no stray control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MessageTemplate(String);

/// Why a template was refused. The messages are shown to API users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template was empty or only whitespace.
    #[error("The message must not be empty.")]
    Empty,
    /// The template had more than [`MAX_TEMPLATE_CHARS`] characters.
    #[error("The message can be at most {max} characters long.")]
    TooLong {
        /// [`MAX_TEMPLATE_CHARS`].
        max: usize,
    },
    /// The template had no [`PLACEHOLDER`].
    #[error("The message must contain the {{otp}} placeholder.")]
    MissingPlaceholder,
    /// The template held a control character other than a line break or a tab.
    #[error("The message must not contain control characters other than line breaks and tabs.")]
    ControlCharacter,
}

impl MessageTemplate {
    /// Checks a template: not blank, at most [`MAX_TEMPLATE_CHARS`]
    /// characters, no control characters except `\n`, `\r` and `\t` (a NUL or
    /// an escape would be mangled or rejected downstream), and at least one
    /// [`PLACEHOLDER`].
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        if s.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        // Counting stops past the limit, so a huge body costs nothing.
        if s.chars().nth(MAX_TEMPLATE_CHARS).is_some() {
            return Err(TemplateError::TooLong {
                max: MAX_TEMPLATE_CHARS,
            });
        }
        if s.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(TemplateError::ControlCharacter);
        }
        if !s.contains(PLACEHOLDER) {
            return Err(TemplateError::MissingPlaceholder);
        }
        Ok(Self(s.to_owned()))
    }

    /// Wraps a template read back from the store: it passed [`parse`] when
    /// it was sent, and is checked again, so a stored value that is not a
    /// template is refused (`None`) rather than sent or shown.
    ///
    /// [`parse`]: MessageTemplate::parse
    pub fn from_stored(stored: &str) -> Option<Self> {
        Self::parse(stored).ok()
    }

    /// The text around each code: the template split at every
    /// [`PLACEHOLDER`], so one part more than there are codes (at least two).
    /// A code goes between each part and the next.
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split(PLACEHOLDER)
    }

    /// The parts of the template up to its first code: what has been said
    /// once the code was read out in full (the text before it, and nothing
    /// after).
    pub fn first_reading(&self) -> [&str; 2] {
        [self.parts().next().unwrap_or_default(), ""]
    }

    /// The message to send: the parts with the code between each two.
    pub fn render(&self, code: &OtpCode) -> String {
        self.fill(code.as_str())
    }

    /// The message as it is shown when the code is hidden: [`MASK`] in each
    /// code's place.
    pub fn render_masked(&self) -> String {
        self.fill(MASK)
    }

    fn fill(&self, code: &str) -> String {
        let mut out = String::with_capacity(self.0.len() + code.len());
        for (i, part) in self.parts().enumerate() {
            if i > 0 {
                out.push_str(code);
            }
            out.push_str(part);
        }
        out
    }

    /// The template as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The template as an account's approved templates are compared:
    /// [`normalize`]d.
    pub fn normalized(&self) -> String {
        normalize(&self.0)
    }
}

/// A text with every run of whitespace (spaces, tabs, line breaks, any
/// Unicode white space) made one space, and none at either end: how a send's
/// template is compared with an account's approved templates, so a line
/// break or a double space a client adds does not make approved text
/// unapproved, while any other change (a word, a letter's case, a
/// punctuation mark) does.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(value: &str) -> OtpCode {
        OtpCode::from_stored(value.to_owned())
    }

    #[test]
    fn render_replaces_every_placeholder() {
        let template = MessageTemplate::parse("Your code is {otp}. Again: {otp}").unwrap();
        assert_eq!(
            template.render(&code("482913")),
            "Your code is 482913. Again: 482913"
        );
    }

    #[test]
    fn devanagari_templates_render() {
        let template = MessageTemplate::parse("तपाईंको कोड {otp} हो।").unwrap();
        assert_eq!(template.render(&code("1234")), "तपाईंको कोड 1234 हो।");
    }

    fn template(text: &str) -> MessageTemplate {
        MessageTemplate::parse(text).unwrap()
    }

    #[test]
    fn the_masked_form_hides_every_placeholder() {
        assert_eq!(
            template("Code {otp}, again {otp}.").render_masked(),
            format!("Code {MASK}, again {MASK}.")
        );
        assert_eq!(template("Code {otp}.").render_masked(), "Code ******.");
        assert!(!template("{otp}").render_masked().contains(PLACEHOLDER));
    }

    #[test]
    fn devanagari_digits_in_the_template_are_kept_and_the_code_stays_ascii() {
        assert_eq!(
            template("कोड {otp} हो, १० मिनेट").render(&code("4821")),
            "कोड 4821 हो, १० मिनेट"
        );
        assert_eq!(template("कोड {otp} हो").render_masked(), "कोड ****** हो");
    }

    #[test]
    fn the_parts_are_the_text_around_each_code_and_render_puts_the_code_between_them() {
        let t = template("{otp}: your code is {otp}.");
        assert_eq!(t.parts().collect::<Vec<_>>(), ["", ": your code is ", "."]);
        assert_eq!(t.render(&code("12")), "12: your code is 12.");
        assert_eq!(template("{otp}{otp}").parts().count(), 3);
    }

    #[test]
    fn a_template_with_a_brace_next_to_the_placeholder_keeps_it() {
        let t = template("{{otp}} {otp");
        assert_eq!(t.parts().collect::<Vec<_>>(), ["{", "} {otp"]);
        assert_eq!(t.render(&code("7")), "{7} {otp");
    }

    #[test]
    fn a_stored_template_is_checked_as_a_sent_one_was() {
        let text = "Your code is {otp}.\nValid 10 minutes: {otp}";
        assert_eq!(MessageTemplate::from_stored(text), Some(template(text)));
        for bad in ["no placeholder", "", "{otp}\u{1b}"] {
            assert_eq!(MessageTemplate::from_stored(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn normalizing_collapses_whitespace_runs_and_trims_but_keeps_everything_else() {
        assert_eq!(
            normalize("  Your\tcode  is\r\n{otp}.\u{a0}Bye "),
            "Your code is {otp}. Bye"
        );
        assert_eq!(template("Your  code {otp}").normalized(), "Your code {otp}");
        assert_ne!(normalize("Your Code {otp}"), normalize("Your code {otp}"));
        assert_eq!(normalize(" \n "), "");
    }

    #[test]
    fn the_first_reading_ends_after_the_first_code() {
        assert_eq!(template("कोड {otp} हो {otp}").first_reading(), ["कोड ", ""]);
        assert_eq!(template("{otp}").first_reading(), ["", ""]);
    }

    #[test]
    fn blank_templates_are_empty() {
        assert_eq!(MessageTemplate::parse(""), Err(TemplateError::Empty));
        assert_eq!(MessageTemplate::parse(" \n\t"), Err(TemplateError::Empty));
    }

    #[test]
    fn the_placeholder_is_required_exactly() {
        for s in ["Your code", "Your code {OTP}", "Your code { otp }", "{otp"] {
            assert_eq!(
                MessageTemplate::parse(s),
                Err(TemplateError::MissingPlaceholder),
                "{s:?}"
            );
        }
    }

    #[test]
    fn length_is_counted_in_characters() {
        let fits = format!("{PLACEHOLDER}{}", "न".repeat(MAX_TEMPLATE_CHARS - 5));
        assert_eq!(fits.chars().count(), MAX_TEMPLATE_CHARS);
        assert!(MessageTemplate::parse(&fits).is_ok());
        let over = format!("{fits}न");
        assert_eq!(
            MessageTemplate::parse(&over),
            Err(TemplateError::TooLong {
                max: MAX_TEMPLATE_CHARS
            })
        );
    }

    #[test]
    fn line_breaks_and_tabs_are_allowed_but_other_controls_are_not() {
        assert!(MessageTemplate::parse("Code:\r\n\t{otp}").is_ok());
        for s in ["{otp}\0", "{otp}\u{1b}[31m", "{otp}\u{7f}", "{otp}\u{85}"] {
            assert_eq!(
                MessageTemplate::parse(s),
                Err(TemplateError::ControlCharacter),
                "{s:?}"
            );
        }
    }

    #[test]
    fn the_missing_placeholder_message_names_it() {
        assert_eq!(
            TemplateError::MissingPlaceholder.to_string(),
            "The message must contain the {otp} placeholder."
        );
    }
}
