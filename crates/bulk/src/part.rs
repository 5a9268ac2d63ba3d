//! NDJSON part files of one resource type: lines are appended through a byte-capped buffer,
//! and a file is closed and the next one started before it would exceed the size limit.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::job::{PartRecord, TypeProgress};

/// Bytes buffered before a write reaches the file.
const BUFFER_BYTES: usize = 1 << 20;

/// Appends resources of one type to its part files, keeping the type's [`TypeProgress`] parts
/// in step with what was written.
pub(crate) struct PartWriter {
    dir: PathBuf,
    max_file_bytes: u64,
    file: Option<BufWriter<File>>,
    line: Vec<u8>,
}

/// The file name of part `index` of a type.
fn part_name(resource_type: &str, index: usize) -> String {
    format!("{resource_type}.{index:03}.ndjson")
}

impl PartWriter {
    /// A writer continuing `progress`: the last part (if any) is opened and cut back to its
    /// recorded length, dropping lines written after the last checkpoint.
    pub(crate) fn resume(
        dir: &Path,
        progress: &TypeProgress,
        max_file_bytes: u64,
    ) -> io::Result<PartWriter> {
        let mut writer = PartWriter {
            dir: dir.to_owned(),
            max_file_bytes: max_file_bytes.max(1),
            file: None,
            line: Vec::new(),
        };
        if let Some(last) = progress.parts.last() {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(&last.file))?;
            file.set_len(last.bytes)?;
            let mut buffered = BufWriter::with_capacity(BUFFER_BYTES, file);
            io::Seek::seek(&mut buffered, io::SeekFrom::End(0))?;
            writer.file = Some(buffered);
        }
        Ok(writer)
    }

    /// Appends one resource as a line, starting a new part when the current one is full.
    pub(crate) fn write(
        &mut self,
        progress: &mut TypeProgress,
        resource: &Value,
    ) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, resource).map_err(io::Error::other)?;
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        let full = progress
            .parts
            .last()
            .is_none_or(|p| p.bytes > 0 && p.bytes + len > self.max_file_bytes);
        if full || self.file.is_none() {
            self.start_part(progress)?;
        }
        let (Some(file), Some(part)) = (self.file.as_mut(), progress.parts.last_mut()) else {
            return Err(io::Error::other("no open part file"));
        };
        file.write_all(&self.line)?;
        part.bytes += len;
        part.count += 1;
        Ok(())
    }

    /// Closes the current part (durably) and creates the next, recording it in `progress`.
    fn start_part(&mut self, progress: &mut TypeProgress) -> io::Result<()> {
        self.sync()?;
        let name = part_name(&progress.resource_type, progress.parts.len());
        // `create` + `truncate`: a file of this name left by a crash after the last checkpoint
        // holds nothing that counts.
        let file = File::create(self.dir.join(&name))?;
        self.file = Some(BufWriter::with_capacity(BUFFER_BYTES, file));
        progress.parts.push(PartRecord {
            file: name,
            count: 0,
            bytes: 0,
        });
        Ok(())
    }

    /// Flushes the buffer and makes the written bytes durable (before a checkpoint).
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.flush()?;
            file.get_ref().sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splits_by_size_and_cuts_back_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut progress = TypeProgress::new("Basic");
        let mut writer = PartWriter::resume(dir.path(), &progress, 100).unwrap();
        for i in 0..10 {
            let resource = json!({"resourceType": "Basic", "id": format!("b{i:02}")});
            writer.write(&mut progress, &resource).unwrap();
        }
        writer.sync().unwrap();
        // Each line is 36 bytes: two fit in 100.
        assert_eq!(progress.parts.len(), 5);
        assert!(progress
            .parts
            .iter()
            .all(|p| p.bytes <= 100 && p.count == 2));
        assert_eq!(progress.count(), 10);
        let checkpoint = progress.clone();
        // Lines written after the checkpoint are dropped when the writer resumes.
        writer
            .write(
                &mut progress,
                &json!({"resourceType": "Basic", "id": "late"}),
            )
            .unwrap();
        writer.sync().unwrap();
        drop(writer);
        let mut progress = checkpoint.clone();
        let mut writer = PartWriter::resume(dir.path(), &progress, 100).unwrap();
        writer
            .write(
                &mut progress,
                &json!({"resourceType": "Basic", "id": "b10"}),
            )
            .unwrap();
        writer.sync().unwrap();
        let mut ids = Vec::new();
        for part in &progress.parts {
            let text = std::fs::read_to_string(dir.path().join(&part.file)).unwrap();
            assert_eq!(text.len() as u64, part.bytes);
            for line in text.lines() {
                let value: Value = serde_json::from_str(line).unwrap();
                ids.push(value["id"].as_str().unwrap().to_owned());
            }
        }
        let expected: Vec<String> = (0..11).map(|i| format!("b{i:02}")).collect();
        assert_eq!(ids, expected);
    }
}
