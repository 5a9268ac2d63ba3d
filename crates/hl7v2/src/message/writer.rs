//! Building ER7 text: segments whose values are escaped as they are written.

use super::{escape, Delimiters};

/// Writes a message segment by segment, in a given delimiter set.
#[derive(Debug, Clone)]
pub struct MessageWriter {
    delimiters: Delimiters,
    out: String,
}

impl MessageWriter {
    /// A writer using `delimiters`.
    pub fn new(delimiters: Delimiters) -> Self {
        Self {
            delimiters,
            out: String::with_capacity(256),
        }
    }

    /// Starts a segment; it is appended when the returned writer is finished with
    /// [`SegmentWriter::end`]. For `MSH`, MSH-1 and MSH-2 are filled in from the delimiters.
    pub fn segment(&mut self, id: &str) -> SegmentWriter<'_> {
        SegmentWriter {
            writer: self,
            id: id.to_owned(),
            fields: Vec::new(),
        }
    }

    /// The finished ER7 text, each segment ended by CR.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Collects the fields of one segment.
#[derive(Debug)]
pub struct SegmentWriter<'w> {
    writer: &'w mut MessageWriter,
    id: String,
    /// `fields[i]` holds field `i + 1`, already encoded.
    fields: Vec<String>,
}

impl SegmentWriter<'_> {
    fn slot(&mut self, n: usize) -> &mut String {
        if self.fields.len() < n {
            self.fields.resize(n, String::new());
        }
        &mut self.fields[n - 1]
    }

    /// Sets field `n` (1-based, n ≥ 1) to a plain text value, escaping delimiters.
    pub fn text(&mut self, n: usize, value: &str) -> &mut Self {
        let escaped = escape(value, &self.writer.delimiters).into_owned();
        *self.slot(n) = escaped;
        self
    }

    /// Sets field `n` to components, each escaped; trailing empty components are dropped.
    pub fn components(&mut self, n: usize, values: &[&str]) -> &mut Self {
        let d = self.writer.delimiters;
        let last = values
            .iter()
            .rposition(|v| !v.is_empty())
            .map_or(0, |i| i + 1);
        let joined = values[..last]
            .iter()
            .map(|v| escape(v, &d))
            .collect::<Vec<_>>()
            .join(&d.component.to_string());
        *self.slot(n) = joined;
        self
    }

    /// Sets field `n` to ER7 text that is already encoded in this writer's delimiters
    /// (e.g. a field copied from a message that uses the same delimiter set).
    pub fn raw(&mut self, n: usize, er7: &str) -> &mut Self {
        *self.slot(n) = er7.to_owned();
        self
    }

    /// Appends the segment to the message, dropping trailing empty fields.
    pub fn end(&mut self) {
        let d = self.writer.delimiters;
        let out = &mut self.writer.out;
        out.push_str(&self.id);
        let first = if self.id == "MSH" {
            out.push(d.field);
            out.push_str(&d.encoding_characters());
            // MSH-1 and MSH-2 were just written; values start at MSH-3.
            2
        } else {
            0
        };
        let last = self
            .fields
            .iter()
            .rposition(|f| !f.is_empty())
            .map_or(0, |i| i + 1);
        for field in self.fields.iter().take(last).skip(first) {
            out.push(d.field);
            out.push_str(field);
        }
        out.push('\r');
    }
}
