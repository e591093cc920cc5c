//! Server-sent events as OpenAI-compatible servers stream them: `data: <json>` lines, events
//! separated by blank lines, `data: [DONE]` at the end. Bytes arrive in arbitrary pieces.

/// Collects bytes and hands out each complete event's data.
#[derive(Default)]
pub struct SseReader {
    pending: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SseData {
    Json(String),
    Done,
}

impl SseReader {
    /// Feeds a piece of the body; returns the data of every event it completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseData> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            // Comments (`: keep-alive`), `event:` and `id:` lines carry nothing the loop needs.
            let Some(data) = line.strip_prefix("data:") else { continue };
            let data = data.trim_start();
            if data == "[DONE]" {
                out.push(SseData::Done);
            } else if !data.is_empty() {
                out.push(SseData::Json(data.to_string()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_pieces_are_joined() {
        let mut reader = SseReader::default();
        assert!(reader.feed(b"data: {\"a\"").is_empty());
        assert_eq!(
            reader.feed(b":1}\r\n\r\n: ping\n\ndata: [DONE]\n"),
            vec![SseData::Json("{\"a\":1}".into()), SseData::Done]
        );
    }

    #[test]
    fn a_multibyte_character_cut_in_two_survives() {
        let mut reader = SseReader::default();
        let text = "data: \"é\"\n".as_bytes();
        assert!(reader.feed(&text[..8]).is_empty());
        assert_eq!(reader.feed(&text[8..]), vec![SseData::Json("\"é\"".into())]);
    }
}
