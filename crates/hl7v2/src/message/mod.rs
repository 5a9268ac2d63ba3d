//! HL7 v2 messages in ER7 ("pipe and hat") encoding: parsing, typed access, encoding.
//!
//! [`Message::parse`] takes the raw bytes as received (any supported MSH-18 charset, an
//! optional UTF-8 byte-order mark, segments ended by CR, LF or CRLF), decodes them to UTF-8
//! once, and records where each segment and field starts. Components, repetitions and
//! subcomponents are split lazily and escape sequences are only resolved for the values that
//! are read, so parsing costs one pass over the text and reading a value allocates only when
//! it contains an escape sequence.
//!
//! Positions are 1-based as in HL7: `msg.get("PID-5-1")`, `segment.field(3).repetition(2)`.

mod charset;
mod delimiters;
mod escape;
mod path;
mod writer;

use std::borrow::Cow;
use std::ops::Range;

use encoding_rs::Encoding;

pub use self::charset::{encoding_for_label, Charset};
pub use self::delimiters::Delimiters;
pub use self::escape::{escape, unescape};
pub use self::path::Path;
pub use self::writer::{MessageWriter, SegmentWriter};
use crate::error::{ErrorCode, Hl7Error, Location};

/// A parsed HL7 v2 message.
#[derive(Debug, Clone)]
pub struct Message {
    text: String,
    delimiters: Delimiters,
    charset: Charset,
    segments: Vec<SegmentIndex>,
}

/// Byte ranges into `Message::text`: `fields[0]` is the segment id, `fields[n]` field n.
#[derive(Debug, Clone)]
struct SegmentIndex {
    range: Range<usize>,
    fields: Vec<Range<usize>>,
}

/// What `MSH-9` says: message code, trigger event and message structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageType {
    /// MSH-9-1, e.g. `ADT`.
    pub code: String,
    /// MSH-9-2, e.g. `A01`; empty for a bare `ACK`.
    pub trigger: String,
    /// MSH-9-3, e.g. `ADT_A01`; may be empty.
    pub structure: String,
}

impl Message {
    /// Parses a message and checks the header fields every receiver needs: MSH-9 (type),
    /// MSH-10 (control id), MSH-11 (processing id) and MSH-12 (version).
    ///
    /// Errors name the segment and field at fault (for ERR-2) and carry a table 0357 code.
    pub fn parse(raw: &[u8]) -> Result<Self, Hl7Error> {
        let message = Self::parse_lenient(raw)?;
        message.check_header()?;
        Ok(message)
    }

    /// Parses the structure only (MSH with valid delimiters, decodable text, well-formed
    /// segment ids) without requiring any header field; used to answer a message that
    /// [`Message::parse`] rejected with a NAK that still echoes what it can.
    pub fn parse_lenient(raw: &[u8]) -> Result<Self, Hl7Error> {
        let (text, charset) = charset::decode(raw)?;
        Self::from_text(text, charset)
    }

    /// Parses already-decoded text (MSH-18 is then informational only).
    pub fn parse_str(text: &str) -> Result<Self, Hl7Error> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let label = Self::from_text(text.to_owned(), Charset::default())?;
        let charset = label
            .get("MSH-18")
            .and_then(|l| encoding_for_label(&l).map(|e| (l.into_owned(), e)));
        let mut message = label;
        if let Some((label, encoding)) = charset {
            message.charset = Charset { label, encoding };
        }
        message.check_header()?;
        Ok(message)
    }

    fn from_text(text: String, charset: Charset) -> Result<Self, Hl7Error> {
        let header_start = text
            .find(|c: char| !c.is_ascii_whitespace())
            .unwrap_or(text.len());
        let header = &text[header_start..];
        if !header.starts_with("MSH") {
            return Err(Hl7Error::at(
                ErrorCode::SegmentSequenceError,
                Location::segment("MSH", 1),
                "message does not start with an MSH segment",
            ));
        }
        let field_separator = header[3..].chars().next().ok_or_else(|| {
            Hl7Error::at(
                ErrorCode::RequiredFieldMissing,
                Location::field("MSH", 1, 1),
                "MSH has no field separator",
            )
        })?;
        let encoding_end = header[3 + field_separator.len_utf8()..]
            .find([field_separator, '\r', '\n'])
            .map(|i| i + 3 + field_separator.len_utf8())
            .unwrap_or(header.len());
        let delimiters = Delimiters::from_msh(
            field_separator,
            &header[3 + field_separator.len_utf8()..encoding_end],
        )?;

        let mut segments = Vec::with_capacity(16);
        let mut offset = 0;
        for line in text.split(['\r', '\n']) {
            let start = offset;
            offset += line.len() + 1;
            if line.trim().is_empty() {
                continue;
            }
            segments.push(index_segment(
                start,
                line,
                delimiters.field,
                segments.len() + 1,
            )?);
        }
        Ok(Self {
            text,
            delimiters,
            charset,
            segments,
        })
    }

    fn check_header(&self) -> Result<(), Hl7Error> {
        let msh = self.msh();
        let require = |field: usize, what: &str| -> Result<(), Hl7Error> {
            if msh.field(field).value().is_empty() {
                Err(Hl7Error::missing("MSH", 1, field, what))
            } else {
                Ok(())
            }
        };
        require(9, "message type")?;
        let message_type = msh.field(9);
        if message_type.component(2).value().is_empty() && message_type.value() != "ACK" {
            return Err(Hl7Error::at(
                ErrorCode::RequiredFieldMissing,
                Location::field("MSH", 1, 9).with_component(2),
                "MSH-9-2 (trigger event) is required but empty",
            ));
        }
        require(10, "message control id")?;
        require(11, "processing id")?;
        require(12, "version id")?;
        Ok(())
    }

    /// The delimiters declared in MSH-1/MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// The charset the message arrived in (MSH-18, or UTF-8/GB18030 when undeclared).
    pub fn charset(&self) -> &Charset {
        &self.charset
    }

    /// All segments in order.
    pub fn segments_all(&self) -> impl Iterator<Item = Segment<'_>> + '_ {
        (0..self.segments.len()).map(move |index| Segment {
            message: self,
            index,
        })
    }

    /// All segments with id `id`, in order.
    pub fn segments<'a, 'i>(
        &'a self,
        id: &'i str,
    ) -> impl Iterator<Item = Segment<'a>> + use<'a, 'i> {
        self.segments_all().filter(move |s| s.id() == id)
    }

    /// The first segment with id `id`.
    pub fn segment(&self, id: &str) -> Option<Segment<'_>> {
        self.segments(id).next()
    }

    /// The `n`-th segment (0-based position in the message).
    pub fn segment_at(&self, index: usize) -> Option<Segment<'_>> {
        (index < self.segments.len()).then_some(Segment {
            message: self,
            index,
        })
    }

    /// The number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The MSH segment (always the first; parsing guarantees it).
    pub fn msh(&self) -> Segment<'_> {
        Segment {
            message: self,
            index: 0,
        }
    }

    /// The value at a terser-style path such as `PID-5-1`, `PID-3(2)-1` or `OBX(2)-5`:
    /// the first subcomponent of the addressed place, unescaped. `None` when the segment is
    /// absent, the value empty, or the path malformed.
    pub fn get(&self, path: &str) -> Option<Cow<'_, str>> {
        let path = Path::parse(path)?;
        self.get_path(&path)
    }

    /// [`Message::get`] with a pre-parsed path.
    pub fn get_path(&self, path: &Path) -> Option<Cow<'_, str>> {
        let segment = self
            .segments(&path.segment)
            .nth(path.segment_repetition - 1)?;
        let value = segment
            .field(path.field)
            .repetition(path.repetition)
            .component(path.component)
            .subcomponent(path.subcomponent);
        (!value.is_empty()).then_some(value)
    }

    /// MSH-9 split into code, trigger and structure.
    pub fn message_type(&self) -> MessageType {
        let field = self.msh().field(9);
        MessageType {
            code: field.component(1).value().into_owned(),
            trigger: field.component(2).value().into_owned(),
            structure: field.component(3).value().into_owned(),
        }
    }

    /// MSH-10, the message control id the acknowledgement echoes in MSA-2.
    pub fn control_id(&self) -> Cow<'_, str> {
        self.msh().field(10).value()
    }

    /// MSH-4, the sending facility: its namespace id (HD-1), or its universal id (HD-2)
    /// when the namespace is empty. `None` when MSH-4 is empty.
    pub fn sending_facility(&self) -> Option<Cow<'_, str>> {
        hd_name(self.msh().field(4))
    }

    /// MSH-3, the sending application (HD-1, else HD-2).
    pub fn sending_application(&self) -> Option<Cow<'_, str>> {
        hd_name(self.msh().field(3))
    }

    /// MSH-12-1, the version id (e.g. `2.5.1`).
    pub fn version(&self) -> Cow<'_, str> {
        self.msh().field(12).value()
    }

    /// MSH-11-1, the processing id (`P`, `T`, `D`).
    pub fn processing_id(&self) -> Cow<'_, str> {
        self.msh().field(11).value()
    }

    /// The message re-encoded as ER7 text: segments joined by CR (the standard separator,
    /// whatever the input used), each ending in CR.
    pub fn to_er7(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 1);
        for segment in &self.segments {
            out.push_str(&self.text[segment.range.clone()]);
            out.push('\r');
        }
        out
    }

    /// [`Message::to_er7`] encoded in the message's own charset.
    ///
    /// The result parses back to the same values: a byte-order mark is kept when it, not
    /// MSH-18, is what made the message UTF-8.
    pub fn to_bytes(&self) -> Vec<u8> {
        charset::encode_message(&self.charset, &self.to_er7())
    }

    fn encoding(&self) -> &'static Encoding {
        self.charset.encoding
    }
}

fn hd_name(field: Field<'_>) -> Option<Cow<'_, str>> {
    let namespace = field.component(1).value();
    if !namespace.is_empty() {
        return Some(namespace);
    }
    let universal = field.component(2).value();
    (!universal.is_empty()).then_some(universal)
}

fn index_segment(
    start: usize,
    line: &str,
    separator: char,
    position: usize,
) -> Result<SegmentIndex, Hl7Error> {
    let id_end = line.find(separator).unwrap_or(line.len());
    let id = &line[..id_end];
    let valid_id = id.len() == 3
        && id.as_bytes()[0].is_ascii_uppercase()
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !valid_id {
        let shown: String = id.chars().take(20).collect();
        return Err(Hl7Error::at(
            ErrorCode::SegmentSequenceError,
            Location::segment(shown.clone(), position),
            format!("segment {position} has an invalid segment id {shown:?}"),
        ));
    }
    let mut fields = Vec::with_capacity(line.matches(separator).count() + 2);
    fields.push(start..start + 3);
    if id == "MSH" && id_end < line.len() {
        // MSH-1 is the separator itself, so field numbers are shifted by one. (A bare `MSH`
        // line, say a later segment cut short, has no MSH-1 at all.)
        fields.push(start + 3..start + 3 + separator.len_utf8());
    }
    let mut field_start = id_end + separator.len_utf8();
    if id_end < line.len() {
        for part in line[field_start..].split(separator) {
            fields.push(start + field_start..start + field_start + part.len());
            field_start += part.len() + separator.len_utf8();
        }
    }
    Ok(SegmentIndex {
        range: start..start + line.len(),
        fields,
    })
}

/// One segment of a message.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'m> {
    message: &'m Message,
    index: usize,
}

impl<'m> Segment<'m> {
    fn index_entry(&self) -> &'m SegmentIndex {
        &self.message.segments[self.index]
    }

    /// The segment id, e.g. `PID`.
    pub fn id(&self) -> &'m str {
        &self.message.text[self.index_entry().fields[0].clone()]
    }

    /// The position of this segment in the message (0-based).
    pub fn position(&self) -> usize {
        self.index
    }

    /// Which occurrence of its id this segment is (1-based; the second OBX is 2), as ERR-2
    /// reports it.
    pub fn sequence(&self) -> usize {
        let id = self.id();
        self.message
            .segments_all()
            .take(self.index + 1)
            .filter(|s| s.id() == id)
            .count()
    }

    /// The number of the last field present.
    pub fn field_count(&self) -> usize {
        self.index_entry().fields.len() - 1
    }

    /// Field `n` (1-based); an empty field when absent.
    pub fn field(&self, n: usize) -> Field<'m> {
        let entry = self.index_entry();
        let raw = entry
            .fields
            .get(n)
            .filter(|_| n > 0)
            .map(|r| &self.message.text[r.clone()])
            .unwrap_or("");
        Field {
            raw,
            ctx: Ctx {
                message: self.message,
                // MSH-1 and MSH-2 hold the delimiters themselves and are never split.
                literal: n <= 2 && self.id() == "MSH",
            },
        }
    }

    /// The segment's ER7 text, as received.
    pub fn raw(&self) -> &'m str {
        &self.message.text[self.index_entry().range.clone()]
    }

    /// A location naming field `n` of this segment, for errors.
    pub fn location(&self, n: usize) -> Location {
        Location::field(self.id(), self.sequence(), n)
    }
}

#[derive(Debug, Clone, Copy)]
struct Ctx<'m> {
    message: &'m Message,
    literal: bool,
}

impl<'m> Ctx<'m> {
    fn split(&self, raw: &'m str, separator: Option<char>, n: usize) -> &'m str {
        match separator {
            _ if n == 0 => "",
            Some(separator) if !self.literal => raw.split(separator).nth(n - 1).unwrap_or(""),
            _ if n == 1 => raw,
            _ => "",
        }
    }

    fn all(&self, raw: &'m str, separator: Option<char>) -> Vec<&'m str> {
        match separator {
            Some(separator) if !self.literal => raw.split(separator).collect(),
            _ => vec![raw],
        }
    }

    fn text(&self, raw: &'m str) -> Cow<'m, str> {
        if self.literal {
            Cow::Borrowed(raw)
        } else {
            unescape(raw, &self.message.delimiters, self.message.encoding())
        }
    }

    fn delimiters(&self) -> &'m Delimiters {
        &self.message.delimiters
    }
}

/// One field, possibly repeated.
#[derive(Debug, Clone, Copy)]
pub struct Field<'m> {
    raw: &'m str,
    ctx: Ctx<'m>,
}

impl<'m> Field<'m> {
    /// The field's ER7 text, escapes and delimiters included.
    pub fn raw(&self) -> &'m str {
        self.raw
    }

    /// True if the field is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// True if the field is the explicit HL7 null `""` ("delete the stored value").
    pub fn is_null(&self) -> bool {
        self.raw == "\"\""
    }

    /// All repetitions (one, possibly empty, when the field does not repeat).
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'m>> + 'm {
        let ctx = self.ctx;
        ctx.all(self.raw, Some(ctx.delimiters().repetition))
            .into_iter()
            .map(move |raw| Repetition { raw, ctx })
    }

    /// Repetition `n` (1-based); empty when absent.
    pub fn repetition(&self, n: usize) -> Repetition<'m> {
        Repetition {
            raw: self
                .ctx
                .split(self.raw, Some(self.ctx.delimiters().repetition), n),
            ctx: self.ctx,
        }
    }

    /// Component `n` of the first repetition.
    pub fn component(&self, n: usize) -> Component<'m> {
        self.repetition(1).component(n)
    }

    /// The first subcomponent of the first component of the first repetition, unescaped:
    /// the whole value of a simple field.
    pub fn value(&self) -> Cow<'m, str> {
        self.repetition(1).value()
    }
}

/// One repetition of a field.
#[derive(Debug, Clone, Copy)]
pub struct Repetition<'m> {
    raw: &'m str,
    ctx: Ctx<'m>,
}

impl<'m> Repetition<'m> {
    /// The ER7 text of this repetition.
    pub fn raw(&self) -> &'m str {
        self.raw
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Component `n` (1-based); empty when absent.
    pub fn component(&self, n: usize) -> Component<'m> {
        Component {
            raw: self
                .ctx
                .split(self.raw, Some(self.ctx.delimiters().component), n),
            ctx: self.ctx,
        }
    }

    /// All components.
    pub fn components(&self) -> impl Iterator<Item = Component<'m>> + 'm {
        let ctx = self.ctx;
        ctx.all(self.raw, Some(ctx.delimiters().component))
            .into_iter()
            .map(move |raw| Component { raw, ctx })
    }

    /// The first subcomponent of the first component, unescaped.
    pub fn value(&self) -> Cow<'m, str> {
        self.component(1).value()
    }
}

/// One component of a repetition.
#[derive(Debug, Clone, Copy)]
pub struct Component<'m> {
    raw: &'m str,
    ctx: Ctx<'m>,
}

impl<'m> Component<'m> {
    /// The ER7 text of this component.
    pub fn raw(&self) -> &'m str {
        self.raw
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Subcomponent `n` (1-based), unescaped; empty when absent.
    pub fn subcomponent(&self, n: usize) -> Cow<'m, str> {
        self.ctx.text(
            self.ctx
                .split(self.raw, self.ctx.delimiters().subcomponent, n),
        )
    }

    /// All subcomponents, unescaped.
    pub fn subcomponents(&self) -> Vec<Cow<'m, str>> {
        self.ctx
            .all(self.raw, self.ctx.delimiters().subcomponent)
            .into_iter()
            .map(|raw| self.ctx.text(raw))
            .collect()
    }

    /// The first subcomponent, unescaped: the whole value of a simple component.
    pub fn value(&self) -> Cow<'m, str> {
        self.subcomponent(1)
    }
}

#[cfg(test)]
mod tests;
