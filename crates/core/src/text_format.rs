//! The paper's text format for language-model examples (docs/protocol.md §4.1, §4.3), defined once for
//! the pool (token counts), fine-tuning (training text) and the sampler (parsing generations).

/// `user: {prompt}\nassistant: {response}`: no chat template, no system prompt.
pub fn training_text(prompt: &str, response: &str) -> String {
    format!("user: {prompt}\nassistant: {response}")
}

/// Why a generated text was not accepted as a (prompt, response) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// It does not start with `user: `.
    NoUserPrefix,
    /// Splitting on `assistant: ` does not give exactly two parts.
    NotOneAssistantTurn,
}

impl Rejection {
    /// A short name for logs and the pool's filter column.
    pub fn name(self) -> &'static str {
        match self {
            Rejection::NoUserPrefix => "no_user_prefix",
            Rejection::NotOneAssistantTurn => "not_one_assistant_turn",
        }
    }
}

/// Parses a generation back into (prompt, response) as the authors' sampler does: it must start
/// with `user: ` and contain `assistant: ` exactly once. With `strip_quirk` the prompt loses its
/// leading characters from the set {u, s, e, r, :, space} (Python's `lstrip("user: ")`, so
/// "user: sure" gives "" + …), as in the paper; without it only the `user: ` prefix is removed.
pub fn parse_generation(text: &str, strip_quirk: bool) -> Result<(String, String), Rejection> {
    if !text.starts_with("user: ") {
        return Err(Rejection::NoUserPrefix);
    }
    let parts: Vec<&str> = text.split("assistant: ").collect();
    if parts.len() != 2 {
        return Err(Rejection::NotOneAssistantTurn);
    }
    let prompt = if strip_quirk {
        parts[0].trim_start_matches(['u', 's', 'e', 'r', ':', ' '])
    } else {
        &parts[0]["user: ".len()..]
    };
    Ok((prompt.trim().to_string(), parts[1].trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_quirk() {
        let text = training_text("What is 2+2?", "4.");
        assert_eq!(text, "user: What is 2+2?\nassistant: 4.");
        assert_eq!(parse_generation(&text, false).unwrap(), ("What is 2+2?".into(), "4.".into()));
        // The quirk strips a character set: "sure" loses its "sure".
        let quirky = "user: sure thing\nassistant: ok";
        assert_eq!(parse_generation(quirky, true).unwrap().0, "thing");
        assert_eq!(parse_generation(quirky, false).unwrap().0, "sure thing");
        assert_eq!(parse_generation("hello", true), Err(Rejection::NoUserPrefix));
        assert_eq!(parse_generation("user: a assistant: b assistant: c", true), Err(Rejection::NotOneAssistantTurn));
    }
}
