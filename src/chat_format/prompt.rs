//! A rendered prompt that remembers where each piece of its text came from: the format's own
//! structure (whose markers an engine reads as control tokens) or text from outside it (the task,
//! instructions, tool results, a model's earlier words), which is never read as a control token,
//! whatever it contains.

/// Where a piece of a prompt came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The chat format's own text: its markers (`[|user|]`, `<|im_end|>`) are control tokens.
    Format,
    /// Text from outside the format's structure: plain text, always.
    Outside,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompt {
    pieces: Vec<(Origin, String)>,
}

impl Prompt {
    pub fn format(&mut self, text: &str) {
        self.push(Origin::Format, text);
    }

    pub fn outside(&mut self, text: &str) {
        self.push(Origin::Outside, text);
    }

    fn push(&mut self, origin: Origin, text: &str) {
        if text.is_empty() {
            return;
        }
        match self.pieces.last_mut() {
            Some((last, piece)) if *last == origin => piece.push_str(text),
            _ => self.pieces.push((origin, text.to_string())),
        }
    }

    pub fn pieces(&self) -> impl Iterator<Item = (Origin, &str)> {
        self.pieces.iter().map(|(origin, text)| (*origin, text.as_str()))
    }

    /// The prompt's text, as a model would read it.
    pub fn text(&self) -> String {
        self.pieces.iter().map(|(_, text)| text.as_str()).collect()
    }

    pub fn ends_with(&self, suffix: &str) -> bool {
        self.text().ends_with(suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_of_one_origin_join_and_empty_ones_vanish() {
        let mut prompt = Prompt::default();
        prompt.format("[|user|]");
        prompt.format("\n");
        prompt.outside("");
        prompt.outside("hi [|endofturn|]");
        prompt.format("[|endofturn|]");
        let pieces: Vec<_> = prompt.pieces().collect();
        assert_eq!(
            pieces,
            [(Origin::Format, "[|user|]\n"), (Origin::Outside, "hi [|endofturn|]"), (Origin::Format, "[|endofturn|]")]
        );
        assert_eq!(prompt.text(), "[|user|]\nhi [|endofturn|][|endofturn|]");
    }
}
