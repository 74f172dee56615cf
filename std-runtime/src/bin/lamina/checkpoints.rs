//! `inspect` and `verify` of a checkpoint store's directory (`manifests/` and `parts/`, as
//! `FileSystemCheckpointStore` keeps them): every manifest (id, epoch, parent, per-core WAL
//! positions, parts), and with `verify` every part a valid manifest names, read and checked
//! (size, CRC32C, the part format). Read-only.

use std::collections::BTreeSet;
use std::path::Path;

use lamina::{CheckpointStore, FileSystemCheckpointStore};
use lamina_core::manifest::Manifest;
use serde_json::json;

use crate::Finding;
use crate::errors::{CliError, Exit};
use crate::output::{Out, bytes, text_of};

/// Opens the store in `dir` (which holds both subdirectories: nothing is created).
fn open(dir: &Path) -> Result<FileSystemCheckpointStore, CliError> {
    FileSystemCheckpointStore::open(dir).map_err(|e| CliError::unreadable(dir, e))
}

/// One manifest as read: its bytes, or why it cannot be used.
enum Read {
    Valid(Vec<u8>),
    Damaged(String),
}

fn read_all(store: &FileSystemCheckpointStore, dir: &Path) -> Result<Vec<(u64, Read)>, CliError> {
    let ids = store
        .list_manifests()
        .map_err(|e| CliError::unreadable(dir, e))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match store.read_manifest(id) {
            Ok(bytes) => out.push((id, Read::Valid(bytes))),
            Err(e) if e.is_manifest_skippable() => out.push((id, Read::Damaged(e.to_string()))),
            Err(e) => return Err(CliError::unreadable(dir, e)),
        }
    }
    Ok(out)
}

/// Shows every manifest of the store in `dir`, and with `parts` every part each names. Exits 0
/// whenever it could read what it shows, damage included (`verify` judges it).
pub(crate) fn inspect(dir: &Path, parts: bool, out: &mut Out) -> Result<Finding, CliError> {
    let store = open(dir)?;
    let manifests = read_all(&store, dir)?;
    let stored = store
        .list_parts()
        .map_err(|e| CliError::unreadable(dir, e))?;
    out.human(format!(
        "{}: checkpoint store, {} manifests, {} parts",
        dir.display(),
        manifests.len(),
        stored.len()
    ));
    out.json(&json!({
        "type": "checkpoints",
        "path": text_of(dir),
        "manifests": manifests.len(),
        "parts": stored.len(),
    }));
    let mut referenced = BTreeSet::new();
    for (id, read) in &manifests {
        let encoded = match read {
            Read::Valid(encoded) => encoded,
            Read::Damaged(why) => {
                out.human(format!("manifest {id}: damaged: {why}"));
                out.json(&json!({"type": "manifest", "id": id, "damaged": why}));
                continue;
            }
        };
        let Ok(m) = Manifest::decode(encoded) else {
            continue;
        };
        let total: u64 = m.parts.iter().map(|p| p.size).sum();
        let own: Vec<_> = m.parts.iter().filter(|p| p.written_by == m.id).collect();
        let positions: Vec<String> = m
            .wal
            .iter()
            .map(|w| format!("core {} LSN {} (segment {})", w.core, w.lsn, w.segment))
            .collect();
        out.human(format!(
            "manifest {id}: epoch {}, parent {}, timestamp {} ms, watermark {}, {} parts ({}), {} written by it ({}); replay from: {}",
            m.epoch,
            m.parent.map_or("none".into(), |p| p.to_string()),
            m.timestamp,
            if m.watermark == i64::MIN { "none".into() } else { m.watermark.to_string() },
            m.parts.len(),
            bytes(total),
            own.len(),
            bytes(own.iter().map(|p| p.size).sum()),
            positions.join(", ")
        ));
        out.json(&json!({
            "type": "manifest",
            "id": id,
            "epoch": m.epoch,
            "parent": m.parent,
            "timestamp": m.timestamp,
            "watermark": m.watermark,
            "wal": m.wal.iter().map(|w| json!({"core": w.core, "lsn": w.lsn.0, "segment": w.segment.0})).collect::<Vec<_>>(),
            "parts": m.parts.len(),
            "part_bytes": total,
            "offsets": m.offsets.iter().map(|o| json!({"connector": o.connector, "bytes": crate::output::hex(o.bytes)})).collect::<Vec<_>>(),
        }));
        for p in m.parts.iter() {
            referenced.insert(p.key.to_owned());
            if parts {
                out.human(format!(
                    "  {} {:#010x} {} {} crc {:08x} written by {}",
                    p.operator,
                    p.partition,
                    p.key,
                    bytes(p.size),
                    p.crc,
                    p.written_by
                ));
                out.json(&json!({
                    "type": "part", "manifest": id, "operator": p.operator, "partition": p.partition,
                    "key": p.key, "size": p.size, "crc": format!("{:08x}", p.crc), "written_by": p.written_by,
                }));
            }
        }
    }
    let garbage = stored.iter().filter(|k| !referenced.contains(*k)).count();
    if garbage > 0 {
        out.human(format!(
            "{garbage} stored parts no manifest names (garbage collection removes them)"
        ));
    }
    // Damage is shown; `verify` judges it.
    Ok(Finding::ok())
}

/// Reads and checks every part each valid manifest names, and says whether recovery would use
/// the newest manifest.
pub(crate) fn verify(dir: &Path, out: &mut Out) -> Result<Finding, CliError> {
    let store = open(dir)?;
    let manifests = read_all(&store, dir)?;
    let mut problems: Vec<String> = Vec::new();
    let mut checked = BTreeSet::new();
    let (mut parts, mut part_bytes) = (0u64, 0u64);
    let newest_valid = manifests
        .iter()
        .rev()
        .find(|(_, r)| matches!(r, Read::Valid(_)))
        .map(|(id, _)| *id);
    for (id, read) in manifests.iter().rev() {
        match read {
            Read::Damaged(why) => {
                let fallback = newest_valid
                    .filter(|v| v < id)
                    .map_or("no older valid manifest".into(), |v| {
                        format!("recovery falls back to manifest {v}")
                    });
                problems.push(format!("manifest {id} is damaged ({fallback}): {why}"));
            }
            Read::Valid(bytes) => {
                let Ok(m) = Manifest::decode(bytes) else {
                    continue;
                };
                for p in m.parts.iter() {
                    if !checked.insert(p.key.to_owned()) {
                        continue;
                    }
                    match store.read_part(p.key, p.size, p.crc) {
                        Ok(data) => match lamina_core::part::read(&data, |_| {}) {
                            Ok(_) => {
                                parts += 1;
                                part_bytes += p.size;
                            }
                            Err(e) => problems.push(format!(
                                "part {} of manifest {id} ({}): {e}",
                                p.key,
                                store
                                    .part_path(p.key)
                                    .map_or_else(|_| p.key.to_owned(), |p| p.display().to_string())
                            )),
                        },
                        Err(e) => problems.push(format!("manifest {id}: {e}")),
                    }
                }
            }
        }
    }
    let clean = problems.is_empty();
    for p in &problems {
        out.human(p);
    }
    out.human(format!(
        "{}: {} manifests, newest valid {}, {parts} parts ({}) read and checked: {}",
        dir.display(),
        manifests.len(),
        newest_valid.map_or("none".into(), |v| v.to_string()),
        bytes(part_bytes),
        if clean { "clean" } else { "damaged" }
    ));
    out.json(&json!({
        "type": "checkpoints",
        "path": text_of(dir),
        "status": if clean { "clean" } else { "corrupt" },
        "exit_code": if clean { 0 } else { 2 },
        "manifests": manifests.len(),
        "newest_valid": newest_valid,
        "parts_checked": parts,
        "part_bytes": part_bytes,
        "problems": problems,
    }));
    match problems.first() {
        None => Ok(Finding::ok()),
        Some(first) => {
            let mut finding = Finding::new(Exit::Corrupt, first.clone());
            finding.shown = true;
            Ok(finding)
        }
    }
}
