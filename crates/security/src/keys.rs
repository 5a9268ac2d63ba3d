//! The server's signing keys: a [`KeyRing`] kept in the data directory as `keys.json`.
//!
//! The ring holds, for each signing algorithm ([`Algorithm::Es256`] for access tokens and
//! [`Algorithm::Sm2Sm3`] for documents and audit checkpoints), one *active* key used to sign and
//! any number of *retired* keys kept so that what they signed still verifies. Keys are generated
//! on first use. [`KeyRing::rotate`] adds a new active key and retires the previous one.
//!
//! ## Encryption at rest
//!
//! Private keys never touch the disk in clear: each is sealed with an AEAD — AES-256-GCM by
//! default, or SM4-GCM ([`KeyWrap::Sm4Gcm`]) where only ShangMi algorithms are allowed — under a
//! 32-byte key-encryption key, the [`MasterKey`]. The key id and algorithm are bound in as
//! associated data, so a sealed key cannot be swapped into another entry. Public keys are stored
//! in clear (they are published in the JWKS anyway) and checked against the decrypted private key.
//!
//! The master key comes from, in order:
//! 1. the environment variable `PHIP_MASTER_KEY` (standard or URL-safe base64 of 32 bytes) —
//!    **the only acceptable source in production**, where it should be injected by a KMS or a
//!    secrets manager so that a copy of the data directory alone does not yield the keys;
//! 2. otherwise a `master.key` file beside `keys.json`, generated on first use with mode 0600.
//!    This keeps a fresh clone working with no configuration, but anyone who can read the data
//!    directory can read the keys; [`MasterKeySource::File`] lets the server warn about it.
//!
//! A wrong master key fails loudly with [`KeyError::WrongMasterKey`] rather than silently
//! generating a new ring (which would invalidate every token and signature issued so far).

use crate::jws::{Algorithm, Jwk, Jwks, PrivateKey, SigningKey};
use crate::util::{b64u_decode, b64u_encode, now_unix, random_bytes};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Name of the key ring file inside the data directory.
pub const KEYS_FILE: &str = "keys.json";
/// Name of the fallback master key file inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
/// Environment variable holding the base64 master key.
pub const MASTER_KEY_ENV: &str = "PHIP_MASTER_KEY";

const FORMAT: &str = "phip-keyring/1";

/// Errors from loading, creating or changing a key ring.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The master key is not base64 of exactly 32 bytes.
    #[error("invalid master key ({0}); expected base64 of 32 random bytes")]
    InvalidMasterKey(String),
    /// A sealed private key failed authentication: the master key differs from the one that
    /// sealed it, or the file was altered.
    #[error(
        "key {kid} in keys.json cannot be decrypted with this master key \
         (was PHIP_MASTER_KEY changed or master.key replaced?) or the file was altered"
    )]
    WrongMasterKey {
        /// The key id whose decryption failed.
        kid: String,
    },
    /// `master.key` is readable by group or others.
    #[error("{0} must not be readable by group or others (chmod 600)")]
    InsecurePermissions(PathBuf),
    /// `keys.json` is not a key ring this version understands.
    #[error("keys.json is corrupt: {0}")]
    Corrupt(String),
    /// There is no key with this id, or it cannot be removed.
    #[error("key {0}: {1}")]
    Key(String, &'static str),
    /// Key generation or sealing failed.
    #[error("cryptographic failure: {0}")]
    Crypto(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The 32-byte key-encryption key. Wiped from memory on drop; `Debug` never prints it.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

/// Where the master key came from, so the caller can warn when it is a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `PHIP_MASTER_KEY` (production).
    Environment,
    /// A `master.key` file (development; anyone reading the data directory can use the keys).
    File(PathBuf),
    /// Given by the caller (tests, KMS integrations).
    Explicit,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Use these 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(Zeroizing::new(bytes))
    }

    /// A new random master key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut k = Zeroizing::new([0u8; 32]);
        random_bytes(k.as_mut()).map_err(|e| KeyError::Crypto(e.to_string()))?;
        Ok(MasterKey(k))
    }

    /// Parse base64 (standard or URL-safe, padding optional, surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let t = text.trim().trim_end_matches('=');
        let bytes = Zeroizing::new(
            STANDARD_NO_PAD
                .decode(t)
                .or_else(|_| URL_SAFE_NO_PAD.decode(t))
                .map_err(|_| KeyError::InvalidMasterKey("not base64".into()))?,
        );
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            KeyError::InvalidMasterKey(format!("{} bytes instead of 32", bytes.len()))
        })?;
        Ok(MasterKey(Zeroizing::new(arr)))
    }

    /// Standard base64 of the key (to hand to a secrets manager).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0.as_ref()))
    }

    /// The key from `PHIP_MASTER_KEY`, `None` if the variable is unset or empty. A variable that
    /// is set but invalid is an error: silently falling back to a file would hide a broken
    /// deployment.
    pub fn from_env() -> Result<Option<Self>, KeyError> {
        match std::env::var(MASTER_KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => Self::from_base64(&v).map(Some),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(KeyError::InvalidMasterKey(
                "PHIP_MASTER_KEY is not UTF-8".into(),
            )),
        }
    }

    /// Read the key file at `path`, or create it (mode 0600, never overwriting) if absent.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match fs::read_to_string(path) {
            Ok(text) => {
                check_private_permissions(path)?;
                Self::from_base64(&text)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                let mut text = key.to_base64();
                text.push('\n');
                match write_new_private_file(path, text.as_bytes()) {
                    Ok(()) => Ok(key),
                    // Another process created it first: use theirs.
                    Err(KeyError::Io { source, .. })
                        if source.kind() == io::ErrorKind::AlreadyExists =>
                    {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// The master key for data directory `dir`: `PHIP_MASTER_KEY` if set, else `dir/master.key`.
    pub fn resolve(dir: &Path) -> Result<(Self, MasterKeySource), KeyError> {
        if let Some(k) = Self::from_env()? {
            return Ok((k, MasterKeySource::Environment));
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(MASTER_KEY_FILE);
        Ok((Self::load_or_create(&path)?, MasterKeySource::File(path)))
    }
}

/// How private keys are sealed at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum KeyWrap {
    /// AES-256-GCM directly under the 32-byte master key.
    #[default]
    #[serde(rename = "A256GCM")]
    Aes256Gcm,
    /// SM4-GCM (GB/T 32907 block cipher in GCM mode, as in RFC 8998) under a 128-bit key derived
    /// from the master key with SM3 (`SM3("phip/keyring/sm4" || master)[..16]`).
    #[serde(rename = "SM4GCM")]
    Sm4Gcm,
}

type Sm4Gcm = aes_gcm::AesGcm<sm4::Sm4, aes_gcm::aead::consts::U12>;

impl KeyWrap {
    fn seal(self, master: &MasterKey, aad: &[u8], plain: &[u8]) -> Result<Sealed, KeyError> {
        let mut nonce = [0u8; 12];
        random_bytes(&mut nonce).map_err(|e| KeyError::Crypto(e.to_string()))?;
        let payload = Payload { msg: plain, aad };
        let ct = match self {
            KeyWrap::Aes256Gcm => aes_gcm::Aes256Gcm::new_from_slice(master.0.as_ref())
                .map_err(|_| KeyError::Crypto("AES key".into()))?
                .encrypt(&nonce.into(), payload),
            KeyWrap::Sm4Gcm => Sm4Gcm::new_from_slice(&sm4_kek(master)[..])
                .map_err(|_| KeyError::Crypto("SM4 key".into()))?
                .encrypt(&nonce.into(), payload),
        }
        .map_err(|_| KeyError::Crypto("AEAD seal".into()))?;
        Ok(Sealed {
            nonce: b64u_encode(nonce),
            ciphertext: b64u_encode(ct),
        })
    }

    fn open(
        self,
        master: &MasterKey,
        aad: &[u8],
        sealed: &Sealed,
        kid: &str,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let nonce: [u8; 12] = b64u_decode(&sealed.nonce)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| KeyError::Corrupt(format!("key {kid}: bad nonce")))?;
        let ct = b64u_decode(&sealed.ciphertext)
            .ok_or_else(|| KeyError::Corrupt(format!("key {kid}: bad ciphertext")))?;
        let payload = Payload { msg: &ct, aad };
        match self {
            KeyWrap::Aes256Gcm => aes_gcm::Aes256Gcm::new_from_slice(master.0.as_ref())
                .map_err(|_| KeyError::Crypto("AES key".into()))?
                .decrypt(&nonce.into(), payload),
            KeyWrap::Sm4Gcm => Sm4Gcm::new_from_slice(&sm4_kek(master)[..])
                .map_err(|_| KeyError::Crypto("SM4 key".into()))?
                .decrypt(&nonce.into(), payload),
        }
        .map(Zeroizing::new)
        .map_err(|_| KeyError::WrongMasterKey { kid: kid.into() })
    }
}

fn sm4_kek(master: &MasterKey) -> Zeroizing<[u8; 16]> {
    let d = Zeroizing::new(crate::sm::sm3_digest_parts(&[
        b"phip/keyring/sm4",
        master.0.as_ref(),
    ]));
    let mut k = Zeroizing::new([0u8; 16]);
    k.copy_from_slice(&d[..16]);
    k
}

/// Whether a key signs new material or only verifies old.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Used for new signatures (one per algorithm).
    Active,
    /// Kept only so earlier signatures and tokens still verify.
    Retired,
}

/// Public facts about one key in the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Active or retired.
    pub status: KeyStatus,
    /// Creation time, seconds since the Unix epoch.
    pub created: i64,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: String,
    status: KeyStatus,
    created: i64,
    public: Jwk,
    enc: KeyWrap,
    #[serde(flatten)]
    sealed: Sealed,
}

#[derive(Serialize, Deserialize)]
struct StoredRing {
    format: String,
    keys: Vec<StoredKey>,
}

struct Entry {
    key: SigningKey,
    status: KeyStatus,
    created: i64,
    stored: StoredKey,
}

/// The signing keys of one phip installation. See the [module docs](self).
pub struct KeyRing {
    path: PathBuf,
    master: MasterKey,
    wrap: KeyWrap,
    source: MasterKeySource,
    entries: Vec<Entry>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("path", &self.path)
            .field("master_key_source", &self.source)
            .field("keys", &self.keys())
            .finish()
    }
}

/// The algorithms the ring always holds an active key for.
pub const RING_ALGORITHMS: [Algorithm; 2] = [Algorithm::Es256, Algorithm::Sm2Sm3];

impl KeyRing {
    /// Open (or create on first use) the ring in data directory `dir`, with the master key from
    /// `PHIP_MASTER_KEY` or `dir/master.key`, sealing new keys with AES-256-GCM.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        let (master, source) = MasterKey::resolve(dir)?;
        let mut ring = Self::open_with(dir, master, KeyWrap::default())?;
        ring.source = source;
        Ok(ring)
    }

    /// Open (or create) the ring in `dir` with an explicit master key and wrapping for new keys.
    /// Existing keys are opened with whatever wrapping sealed them.
    pub fn open_with(dir: &Path, master: MasterKey, wrap: KeyWrap) -> Result<Self, KeyError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut ring = KeyRing {
            path: dir.join(KEYS_FILE),
            master,
            wrap,
            source: MasterKeySource::Explicit,
            entries: Vec::new(),
        };
        if !ring.load()? {
            for alg in RING_ALGORITHMS {
                ring.push_new(alg)?;
            }
            if !ring.create_file()? {
                // Lost a creation race with another process: use the ring it wrote.
                ring.entries.clear();
                ring.load()?;
            }
        }
        // A ring written by an older version might lack an algorithm: add it.
        let missing: Vec<Algorithm> = RING_ALGORITHMS
            .into_iter()
            .filter(|a| ring.active(*a).is_none())
            .collect();
        if !missing.is_empty() {
            for alg in missing {
                ring.push_new(alg)?;
            }
            ring.save()?;
        }
        Ok(ring)
    }

    /// Re-read `keys.json` (e.g. after `phip` rotated keys in another process).
    pub fn reload(&mut self) -> Result<(), KeyError> {
        let old = std::mem::take(&mut self.entries);
        match self.load() {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.entries = old;
                Err(KeyError::Corrupt("keys.json disappeared".into()))
            }
            Err(e) => {
                self.entries = old;
                Err(e)
            }
        }
    }

    /// Where the ring is stored.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the master key came from (warn when it is [`MasterKeySource::File`]).
    pub fn master_key_source(&self) -> &MasterKeySource {
        &self.source
    }

    /// The active key for `alg` (always present for ES256 and SM2SM3).
    pub fn active(&self, alg: Algorithm) -> Option<&SigningKey> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.status == KeyStatus::Active && e.key.algorithm() == alg)
            .map(|e| &e.key)
    }

    /// Any key (active or retired) by id.
    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.entries
            .iter()
            .find(|e| e.key.kid() == kid)
            .map(|e| &e.key)
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.entries
            .iter()
            .map(|e| KeyInfo {
                kid: e.key.kid().into(),
                algorithm: e.key.algorithm(),
                status: e.status,
                created: e.created,
            })
            .collect()
    }

    /// The public keys (active and retired) as a JWKS, for `/.well-known/jwks.json` and for
    /// verifying our own tokens and signatures. SM2 keys appear as `kty: EC, crv: SM2,
    /// alg: SM2SM3` (phip's own labels; see [`crate::jws`]).
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.entries.iter().map(|e| e.key.public_jwk()).collect(),
        }
    }

    /// Generate a new active key for `alg`, retire the previous one (still published for
    /// verification), and save. Returns the new key.
    pub fn rotate(&mut self, alg: Algorithm) -> Result<&SigningKey, KeyError> {
        if !RING_ALGORITHMS.contains(&alg) {
            return Err(KeyError::Crypto(format!(
                "{alg} keys are not kept in the ring"
            )));
        }
        for e in self.entries.iter_mut() {
            if e.key.algorithm() == alg && e.status == KeyStatus::Active {
                e.status = KeyStatus::Retired;
                e.stored.status = KeyStatus::Retired;
            }
        }
        if let Err(e) = self.push_new(alg).and_then(|()| self.save()) {
            // Put memory back in line with the file, which the failed save left untouched.
            let _ = self.reload();
            return Err(e);
        }
        self.active(alg)
            .ok_or_else(|| KeyError::Crypto("rotated key missing".into()))
    }

    /// Delete a retired key for good (once nothing it signed needs verifying). Active keys
    /// cannot be removed.
    pub fn remove(&mut self, kid: &str) -> Result<(), KeyError> {
        let i = self
            .entries
            .iter()
            .position(|e| e.key.kid() == kid)
            .ok_or_else(|| KeyError::Key(kid.into(), "no such key"))?;
        if self.entries[i].status == KeyStatus::Active {
            return Err(KeyError::Key(kid.into(), "an active key cannot be removed"));
        }
        let removed = self.entries.remove(i);
        if let Err(e) = self.save() {
            self.entries.insert(i, removed);
            return Err(e);
        }
        Ok(())
    }

    fn push_new(&mut self, alg: Algorithm) -> Result<(), KeyError> {
        let key = PrivateKey::generate(alg).map_err(|e| KeyError::Crypto(e.to_string()))?;
        let public = key.public_key();
        let fp = crate::sm::sm3_digest(&public.to_sec1());
        let prefix = match alg {
            Algorithm::Es256 => "es256",
            Algorithm::Es384 => "es384",
            Algorithm::Sm2Sm3 => "sm2",
        };
        let kid = format!("{prefix}-{}", crate::util::hex(&fp[..8]));
        let aad = aad(&kid, alg);
        let sealed = self.wrap.seal(&self.master, &aad, &key.to_bytes())?;
        let created = now_unix();
        let signing = SigningKey::new(kid.clone(), key);
        self.entries.push(Entry {
            stored: StoredKey {
                kid,
                alg: alg.as_str().into(),
                status: KeyStatus::Active,
                created,
                public: signing.public_jwk(),
                enc: self.wrap,
                sealed,
            },
            key: signing,
            status: KeyStatus::Active,
            created,
        });
        Ok(())
    }

    /// Load from disk; `Ok(false)` if the file does not exist.
    fn load(&mut self) -> Result<bool, KeyError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        let ring: StoredRing =
            serde_json::from_str(&text).map_err(|e| KeyError::Corrupt(e.to_string()))?;
        if ring.format != FORMAT {
            return Err(KeyError::Corrupt(format!(
                "unknown format {:?}",
                ring.format
            )));
        }
        let mut entries = Vec::with_capacity(ring.keys.len());
        for stored in ring.keys {
            let alg = Algorithm::from_name(&stored.alg)
                .filter(|a| RING_ALGORITHMS.contains(a))
                .ok_or_else(|| KeyError::Corrupt(format!("unknown alg {}", stored.alg)))?;
            let secret = stored.enc.open(
                &self.master,
                &aad(&stored.kid, alg),
                &stored.sealed,
                &stored.kid,
            )?;
            let key = PrivateKey::from_bytes(alg, &secret)
                .map_err(|e| KeyError::Corrupt(format!("key {}: {e}", stored.kid)))?;
            let public = stored
                .public
                .public_key()
                .map_err(|e| KeyError::Corrupt(format!("key {}: {e}", stored.kid)))?;
            if public != key.public_key() {
                return Err(KeyError::Corrupt(format!(
                    "key {}: public key does not match private key",
                    stored.kid
                )));
            }
            entries.push(Entry {
                key: SigningKey::new(stored.kid.clone(), key),
                status: stored.status,
                created: stored.created,
                stored,
            });
        }
        self.entries = entries;
        Ok(true)
    }

    fn serialize(&self) -> Result<Vec<u8>, KeyError> {
        #[derive(Serialize)]
        struct Out<'a> {
            format: &'static str,
            keys: Vec<&'a StoredKey>,
        }
        let mut v = serde_json::to_vec_pretty(&Out {
            format: FORMAT,
            keys: self.entries.iter().map(|e| &e.stored).collect(),
        })
        .map_err(|e| KeyError::Corrupt(e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }

    /// Write a temporary file and hard-link it into place, which fails if `keys.json` already
    /// exists: creation is atomic and never clobbers a ring another process just made.
    /// Returns false if the file already existed.
    fn create_file(&self) -> Result<bool, KeyError> {
        let tmp = self.temp_path()?;
        write_new_private_file(&tmp, &self.serialize()?)?;
        let linked = fs::hard_link(&tmp, &self.path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(&self.path);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(&self.path)(e)),
        }
    }

    /// Replace `keys.json` atomically (write temp, fsync, rename).
    fn save(&self) -> Result<(), KeyError> {
        let tmp = self.temp_path()?;
        write_new_private_file(&tmp, &self.serialize()?)?;
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&self.path)(e));
        }
        sync_dir(&self.path);
        Ok(())
    }

    fn temp_path(&self) -> Result<PathBuf, KeyError> {
        let mut r = [0u8; 6];
        random_bytes(&mut r).map_err(|e| KeyError::Crypto(e.to_string()))?;
        Ok(self
            .path
            .with_file_name(format!("{KEYS_FILE}.tmp-{}", crate::util::hex(&r))))
    }
}

fn aad(kid: &str, alg: Algorithm) -> Vec<u8> {
    format!("{FORMAT}|{kid}|{}", alg.as_str()).into_bytes()
}

/// Create `path` exclusively with owner-only permissions, write and fsync it.
fn write_new_private_file(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io_err(path))?;
    f.write_all(contents).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(())
}

fn check_private_permissions(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = fs::metadata(path).map_err(io_err(path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions(path.to_path_buf()));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Make a rename or link durable. Best effort: some filesystems refuse to fsync directories.
fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk() -> MasterKey {
        MasterKey::from_bytes([42u8; 32])
    }

    #[test]
    fn created_on_first_use_and_persistent() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open_with(dir.path(), mk(), KeyWrap::Aes256Gcm).unwrap();
        let es = ring.active(Algorithm::Es256).unwrap().clone();
        let sm = ring.active(Algorithm::Sm2Sm3).unwrap().clone();
        assert!(es.kid().starts_with("es256-"));
        assert!(sm.kid().starts_with("sm2-"));
        assert_eq!(ring.jwks().keys.len(), 2);

        let again = KeyRing::open_with(dir.path(), mk(), KeyWrap::Aes256Gcm).unwrap();
        assert_eq!(again.active(Algorithm::Es256).unwrap().kid(), es.kid());
        assert_eq!(
            again.active(Algorithm::Sm2Sm3).unwrap().public_key(),
            sm.public_key()
        );
        // A signature made with the first instance verifies with the reloaded ring's JWKS.
        let jws = crate::jws::sign(&sm, None, b"x");
        crate::jws::verify(&jws, &again.jwks()).unwrap();
    }

    #[test]
    fn file_holds_no_plaintext_private_key() {
        for wrap in [KeyWrap::Aes256Gcm, KeyWrap::Sm4Gcm] {
            let dir = tempfile::tempdir().unwrap();
            let ring = KeyRing::open_with(dir.path(), mk(), wrap).unwrap();
            let raw = fs::read(dir.path().join(KEYS_FILE)).unwrap();
            let text = String::from_utf8(raw.clone()).unwrap();
            for alg in RING_ALGORITHMS {
                let secret = ring.active(alg).unwrap().private_key().to_bytes();
                for enc in [
                    crate::util::hex(&secret),
                    crate::util::hex(&secret).to_uppercase(),
                    b64u_encode(&*secret),
                    base64::engine::general_purpose::STANDARD.encode(&*secret),
                ] {
                    assert!(!text.contains(&enc), "{wrap:?} leaks {alg}");
                }
                assert!(!raw.windows(32).any(|w| w == &secret[..]));
            }
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let expected = if wrap == KeyWrap::Sm4Gcm {
                "SM4GCM"
            } else {
                "A256GCM"
            };
            assert_eq!(v["keys"][0]["enc"], expected);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = fs::metadata(dir.path().join(KEYS_FILE))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o077, 0);
            }
        }
    }

    #[test]
    fn wrong_master_key_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        KeyRing::open_with(dir.path(), mk(), KeyWrap::Sm4Gcm).unwrap();
        let before = fs::read(dir.path().join(KEYS_FILE)).unwrap();
        let err = KeyRing::open_with(
            dir.path(),
            MasterKey::from_bytes([7u8; 32]),
            KeyWrap::Sm4Gcm,
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::WrongMasterKey { .. }), "{err}");
        assert!(err.to_string().contains("PHIP_MASTER_KEY"));
        // and the ring on disk was not replaced
        assert_eq!(fs::read(dir.path().join(KEYS_FILE)).unwrap(), before);
    }

    #[test]
    fn swapped_or_altered_entries_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        KeyRing::open_with(dir.path(), mk(), KeyWrap::Aes256Gcm).unwrap();
        let path = dir.path().join(KEYS_FILE);
        let mut v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        // Move the ES256 ciphertext under the SM2 entry: the AAD binding must reject it.
        let ct0 = v["keys"][0]["ciphertext"].clone();
        let n0 = v["keys"][0]["nonce"].clone();
        v["keys"][1]["ciphertext"] = ct0;
        v["keys"][1]["nonce"] = n0;
        fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        assert!(matches!(
            KeyRing::open_with(dir.path(), mk(), KeyWrap::Aes256Gcm),
            Err(KeyError::WrongMasterKey { .. })
        ));
        fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            KeyRing::open_with(dir.path(), mk(), KeyWrap::Aes256Gcm),
            Err(KeyError::Corrupt(_))
        ));
    }

    #[test]
    fn rotation_keeps_old_keys_for_verification() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = KeyRing::open_with(dir.path(), mk(), KeyWrap::Aes256Gcm).unwrap();
        let old = ring.active(Algorithm::Es256).unwrap().clone();
        let old_jws = crate::jws::sign(&old, Some("JWT"), b"{}");
        let new_kid = ring.rotate(Algorithm::Es256).unwrap().kid().to_string();
        assert_ne!(new_kid, old.kid());
        assert_eq!(ring.active(Algorithm::Es256).unwrap().kid(), new_kid);
        let infos = ring.keys();
        assert_eq!(infos.len(), 3);
        assert_eq!(
            infos.iter().find(|k| k.kid == old.kid()).unwrap().status,
            KeyStatus::Retired
        );
        // Persisted: a fresh open sees the same state and still verifies the old signature.
        let reopened = KeyRing::open_with(dir.path(), mk(), KeyWrap::Aes256Gcm).unwrap();
        assert_eq!(reopened.active(Algorithm::Es256).unwrap().kid(), new_kid);
        crate::jws::verify(&old_jws, &reopened.jwks()).unwrap();
        assert!(reopened.get(old.kid()).is_some());
        // Active keys cannot be removed; retired ones can.
        assert!(ring.remove(&new_kid).is_err());
        ring.remove(old.kid()).unwrap();
        assert!(crate::jws::verify(&old_jws, &ring.jwks()).is_err());
        ring.reload().unwrap();
        assert_eq!(ring.keys().len(), 2);
    }

    #[test]
    fn master_key_file_and_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        let a = MasterKey::load_or_create(&path).unwrap();
        let b = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(a.0.as_ref(), b.0.as_ref());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                MasterKey::load_or_create(&path),
                Err(KeyError::InsecurePermissions(_))
            ));
        }
        let k = MasterKey::from_base64(&a.to_base64()).unwrap();
        assert_eq!(k.0.as_ref(), a.0.as_ref());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("***").is_err());
        assert_eq!(format!("{a:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn open_uses_env_or_file() {
        // Whichever source applies on this machine, open() must produce a usable ring and say
        // where the master key came from.
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path()).unwrap();
        match ring.master_key_source() {
            MasterKeySource::Environment => {}
            MasterKeySource::File(p) => assert!(p.exists()),
            MasterKeySource::Explicit => panic!("open() must not report Explicit"),
        }
        KeyRing::open(dir.path()).unwrap();
    }
}
