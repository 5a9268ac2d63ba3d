//! The external anchor: copies of the signed checkpoints kept where an attacker who holds the
//! data directory cannot rewrite them.
//!
//! The hash chain and the signed checkpoints in `audit.db` detect any edit of the trail by
//! someone without the signing key. They cannot detect an attacker who holds the whole data
//! directory — the key ring and its master key included — wiping the log, cutting it short
//! behind a checkpoint that is then deleted too, or replacing it wholesale with a fresh,
//! validly signed log made with a key of their own. What detects those is a copy of a recent
//! checkpoint kept elsewhere: the record at that checkpoint's `seq` must still have that hash,
//! and since every hash covers all records before it, the whole trail up to there is pinned.
//!
//! A checkpoint kept outside is one [`AnchorLine`]:
//!
//! ```text
//! phip-audit-checkpoint seq=2000 hash=<64 hex> time=<RFC 3339> every=1000 seconds=300 kid=<key id> key=<base64url SEC1 public key> sig=<detached JWS>
//! ```
//!
//! The server appends one line per checkpoint to the anchor file (`[audit] anchor = "…"`, on
//! a file system apart from the data directory, ideally append-only: `chattr +a`, a WORM
//! share, a remote log), logs the newest line, and `phip audit head` prints it for the operator
//! to keep. `phip audit verify --anchor FILE` and `--expect "<line>"` check the log against
//! them, and check checkpoint signatures against the public keys the anchor carries instead
//! of the key ring in the (possibly attacked) data directory. A line may be shortened to
//! `seq=… hash=…`: it then pins the chain but no key.

use crate::log::{checkpoint_payload_for, Checkpoint};
use crate::AuditError;
use base64::Engine as _;
use phip_security::jws::{self, Algorithm, Jwk, Jwks, PublicKey};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// First word of an anchor line.
pub const ANCHOR_PREFIX: &str = "phip-audit-checkpoint";

/// Ends a line whose write was cut short (by a crash): the writer completes such a line with
/// this marker before appending, and readers skip it.
pub const TORN_MARKER: &str = "# torn write";

/// One checkpoint as kept outside the data directory. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorLine {
    /// The last record covered.
    pub seq: u64,
    /// That record's chain hash.
    pub hash: String,
    /// When the checkpoint was made (as signed).
    pub created: Option<String>,
    /// The checkpoint policy it was made under: records between checkpoints.
    pub every: Option<u64>,
    /// The checkpoint policy it was made under: seconds between checkpoints.
    pub seconds: Option<u64>,
    /// The signing key's id.
    pub kid: Option<String>,
    /// The signing public key: base64url (no padding) of its uncompressed SEC1 point.
    pub key: Option<String>,
    /// The checkpoint's detached compact JWS.
    pub signature: Option<String>,
}

impl AnchorLine {
    /// The line for `checkpoint`, carrying `key` (the public key that signed it) if known.
    pub fn from_checkpoint(checkpoint: &Checkpoint, key: Option<&PublicKey>) -> Self {
        AnchorLine {
            seq: checkpoint.seq,
            hash: checkpoint.hash.clone(),
            created: Some(checkpoint.created.clone()),
            every: checkpoint.every,
            seconds: checkpoint.seconds,
            kid: checkpoint.kid.clone(),
            key: key
                .filter(|_| checkpoint.signature.is_some())
                .map(|k| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.to_sec1())),
            signature: checkpoint.signature.clone(),
        }
    }

    /// The text form (one line, no newline).
    pub fn to_line(&self) -> String {
        let mut out = format!("{ANCHOR_PREFIX} seq={} hash={}", self.seq, self.hash);
        let mut field = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                out.push_str(&format!(" {name}={v}"));
            }
        };
        field("time", self.created.clone());
        field("every", self.every.map(|v| v.to_string()));
        field("seconds", self.seconds.map(|v| v.to_string()));
        field("kid", self.kid.clone());
        field("key", self.key.clone());
        field("sig", self.signature.clone());
        out
    }

    /// Parses a line as written by [`to_line`](Self::to_line); the leading
    /// `phip-audit-checkpoint` is optional and only `seq` and `hash` are required.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut words = text.split_whitespace().peekable();
        if words.peek() == Some(&ANCHOR_PREFIX) {
            words.next();
        }
        let mut line = AnchorLine {
            seq: 0,
            hash: String::new(),
            created: None,
            every: None,
            seconds: None,
            kid: None,
            key: None,
            signature: None,
        };
        let (mut seq, mut hash) = (None, None);
        for word in words {
            let (name, value) = word
                .split_once('=')
                .ok_or_else(|| format!("{word:?} is not name=value"))?;
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{name}={v:?} is not a number"))
            };
            let slot_taken = match name {
                "seq" => seq.replace(number(value)?).is_some(),
                "hash" => hash.replace(value.to_owned()).is_some(),
                "time" => line.created.replace(value.to_owned()).is_some(),
                "every" => line.every.replace(number(value)?).is_some(),
                "seconds" => line.seconds.replace(number(value)?).is_some(),
                "kid" => line.kid.replace(value.to_owned()).is_some(),
                "key" => line.key.replace(value.to_owned()).is_some(),
                "sig" => line.signature.replace(value.to_owned()).is_some(),
                other => return Err(format!("unknown field {other:?}")),
            };
            if slot_taken {
                return Err(format!("{name} is given twice"));
            }
        }
        line.seq = seq.ok_or("seq= is missing")?;
        let hash = hash.ok_or("hash= is missing")?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("hash={hash:?} is not 64 hex digits"));
        }
        line.hash = hash.to_ascii_lowercase();
        if line.seq == 0 {
            return Err("seq=0: checkpoints start at record 1".into());
        }
        Ok(line)
    }

    /// The policy-dependent bytes the signature covers (see [`checkpoint_payload_for`]).
    fn payload(&self) -> Option<Vec<u8>> {
        let created = self.created.as_deref()?;
        Some(checkpoint_payload_for(
            self.seq,
            &self.hash,
            created,
            self.every,
            self.seconds,
        ))
    }

    /// Checks the line's own signature with the key it carries and returns that key (with the
    /// line's `kid`), or `None` for a line without signature. A signed line without its key
    /// or time, or whose signature does not verify, is an error.
    pub fn verified_key(&self) -> Result<Option<Jwk>, String> {
        let Some(signature) = &self.signature else {
            return Ok(None);
        };
        let payload = self
            .payload()
            .ok_or("the line is signed but has no time=")?;
        let key = self
            .key
            .as_deref()
            .ok_or("the line is signed but has no key=")?;
        let decoded = jws::decode(signature, Some(&payload)).map_err(|e| e.to_string())?;
        if decoded.header.typ.as_deref() != Some(crate::log::CHECKPOINT_TYP) {
            return Err("the signature is not over an audit checkpoint".into());
        }
        if decoded.header.kid.is_some() && decoded.header.kid != self.kid {
            return Err("kid= differs from the signature's key id".into());
        }
        let jwk = jwk_from_sec1(key, decoded.algorithm, self.kid.as_deref())?;
        decoded
            .verify_with(&Jwks {
                keys: vec![jwk.clone()],
            })
            .map_err(|e| format!("the signature does not verify with key=: {e}"))?;
        Ok(Some(jwk))
    }
}

impl std::fmt::Display for AnchorLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_line())
    }
}

/// The public JWK for a base64url SEC1 point used with `alg`.
fn jwk_from_sec1(key: &str, alg: Algorithm, kid: Option<&str>) -> Result<Jwk, String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let sec1 = b64
        .decode(key)
        .map_err(|_| "key= is not base64url".to_string())?;
    let n = sec1.len().saturating_sub(1) / 2;
    if sec1.first() != Some(&0x04) || sec1.len() != 1 + 2 * n || n == 0 {
        return Err("key= is not an uncompressed SEC1 point".into());
    }
    let jwk = Jwk {
        kty: "EC".into(),
        crv: Some(alg.curve().into()),
        x: Some(b64.encode(&sec1[1..1 + n])),
        y: Some(b64.encode(&sec1[1 + n..])),
        kid: kid.map(str::to_owned),
        alg: Some(alg.as_str().into()),
        use_: Some("sig".into()),
    };
    jwk.public_key().map_err(|e| format!("key=: {e}"))?;
    Ok(jwk)
}

/// The public key with id `kid` in `jwks`, if any.
pub(crate) fn key_for(jwks: &Jwks, kid: Option<&str>) -> Option<PublicKey> {
    let kid = kid?;
    jwks.keys
        .iter()
        .filter(|k| k.kid.as_deref() == Some(kid))
        .find_map(|k| k.public_key().ok())
}

/// An anchor file read for verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnchorFile {
    /// Its lines, in file order.
    pub lines: Vec<AnchorLine>,
    /// Lines whose write was cut short by a crash (marked with [`TORN_MARKER`], or an
    /// unterminated last line), which were skipped.
    pub torn: usize,
}

/// Whether a line is to be skipped: blank, a `#` comment, or marked torn.
fn skipped(line: &str) -> bool {
    line.is_empty() || line.starts_with('#') || line.ends_with(TORN_MARKER)
}

/// Reads an anchor file. Blank lines and `#` comments are skipped; any other unreadable line
/// is an error naming it, except torn writes, which are counted in [`AnchorFile::torn`].
pub fn read_anchor(path: &Path) -> Result<AnchorFile, AuditError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = AnchorFile::default();
    let complete = text.ends_with('\n');
    let count = text.lines().count();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.ends_with(TORN_MARKER) {
            out.torn += 1;
        }
        if skipped(trimmed) {
            continue;
        }
        match AnchorLine::parse(trimmed) {
            Ok(line) => out.lines.push(line),
            Err(_) if i + 1 == count && !complete => out.torn += 1,
            Err(e) => {
                return Err(AuditError::Anchor(format!(
                    "{}:{}: {e}",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(out)
}

/// The server's side of the anchor file: appends a line per checkpoint.
pub(crate) struct AnchorWriter {
    path: PathBuf,
    /// The highest `seq` the file holds a line for.
    pub(crate) last_seq: u64,
    /// The file ends in a torn line: start the next write on a new line.
    needs_newline: bool,
}

impl AnchorWriter {
    /// Opens (creating) the file and reads its last complete line, which is returned.
    pub(crate) fn open(path: &Path) -> Result<(Self, Option<AnchorLine>), AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(io)?;
        // Lines are a few hundred bytes: the last complete one is in the last 64 KiB.
        let len = file.metadata().map_err(io)?.len();
        let start = len.saturating_sub(64 * 1024);
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        // Lines are ASCII; the cut at `start` may split a character of a comment.
        let tail = String::from_utf8_lossy(&bytes);
        let needs_newline = !tail.is_empty() && !tail.ends_with('\n');
        let mut segments: Vec<&str> = tail.split('\n').collect();
        // The last segment is empty (file ends with a newline) or a torn line.
        segments.pop();
        if start > 0 && !segments.is_empty() {
            // The first segment may begin mid-line.
            segments.remove(0);
        }
        let last = segments
            .iter()
            .rev()
            .map(|s| s.trim())
            .find(|s| !skipped(s))
            .map(|s| {
                AnchorLine::parse(s)
                    .map_err(|e| AuditError::Anchor(format!("{}: last line: {e}", path.display())))
            })
            .transpose()?;
        Ok((
            AnchorWriter {
                path: path.to_path_buf(),
                last_seq: last.as_ref().map_or(0, |l| l.seq),
                needs_newline,
            },
            last,
        ))
    }

    /// Appends `lines` in one write and syncs it to disk.
    pub(crate) fn append(&mut self, lines: &[AnchorLine]) -> Result<(), AuditError> {
        let Some(newest) = lines.iter().map(|l| l.seq).max() else {
            return Ok(());
        };
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let mut text = String::new();
        if self.needs_newline {
            // Completes the torn line so that readers skip it.
            text.push_str("  ");
            text.push_str(TORN_MARKER);
            text.push('\n');
        }
        for line in lines {
            text.push_str(&line.to_line());
            text.push('\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        self.needs_newline = false;
        self.last_seq = self.last_seq.max(newest);
        Ok(())
    }
}
