//! Message templates: the client's text with `{otp}` where the code goes, and
//! the one renderer that puts a code (or its mask) in its place.
//!
//! Every text built from a template goes through [`render`]: the message a send
//! stores and the SMS drivers deliver ([`MessageTemplate::render`]), and the
//! masked form a reply or a list shows when the code is hidden
//! ([`render_masked`]). A spoken prompt keeps the template and the code apart
//! (the code is read digit by digit), so the voice path splits at the same
//! [`PLACEHOLDER`] and cuts its first reading with [`through_first_code`].

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

    /// The message to send: the template with every placeholder replaced by the code.
    pub fn render(&self, code: &OtpCode) -> String {
        render(&self.0, code.as_str())
    }

    /// The template as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `template` with every [`PLACEHOLDER`] replaced by `code`. Templates read
/// back from the store are plain strings, so this takes one; a template
/// without the placeholder comes back as it is.
pub fn render(template: &str, code: &str) -> String {
    template.replace(PLACEHOLDER, code)
}

/// The message as it is shown when the code is hidden: every placeholder
/// replaced by [`MASK`].
pub fn render_masked(template: &str) -> String {
    render(template, MASK)
}

/// The template up to and including its first placeholder (all of it when it
/// has none): what has been said once the code was read out in full.
pub fn through_first_code(template: &str) -> &str {
    let end = template
        .find(PLACEHOLDER)
        .map_or(template.len(), |at| at + PLACEHOLDER.len());
    &template[..end]
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

    #[test]
    fn the_masked_form_hides_every_placeholder() {
        assert_eq!(
            render_masked("Code {otp}, again {otp}."),
            format!("Code {MASK}, again {MASK}.")
        );
        assert_eq!(render_masked("Code {otp}."), "Code ******.");
        assert!(!render_masked("{otp}").contains(PLACEHOLDER));
    }

    #[test]
    fn devanagari_digits_in_the_template_are_kept_and_the_code_stays_ascii() {
        assert_eq!(
            render("कोड {otp} हो, १० मिनेट", "4821"),
            "कोड 4821 हो, १० मिनेट"
        );
        assert_eq!(render_masked("कोड {otp} हो"), "कोड ****** हो");
    }

    #[test]
    fn a_stored_template_renders_as_a_parsed_one_does() {
        let text = "Your code is {otp}.\nValid 10 minutes: {otp}";
        assert_eq!(
            render(text, "907311"),
            MessageTemplate::parse(text)
                .unwrap()
                .render(&code("907311"))
        );
        assert_eq!(render("no placeholder", "1"), "no placeholder");
    }

    #[test]
    fn the_first_reading_ends_after_the_first_placeholder() {
        assert_eq!(through_first_code("कोड {otp} हो {otp}"), "कोड {otp}");
        assert_eq!(through_first_code("{otp}"), "{otp}");
        assert_eq!(through_first_code("no code"), "no code");
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
