//! `simcase listen`: a DICOM node (C-STORE and C-ECHO SCP) that indexes what a PACS or a
//! modality pushes to it.
//!
//! Why a spool: an SCU sends its objects one after another on an association and waits for each
//! response, so answering only once an object is embedded would make a push as slow as the
//! model, one object at a time. Each received object is instead written durably (temporary
//! name, fsync, rename: [`simcase_index::store::durable`]) to `INDEX/incoming/` and answered
//! at once; an indexer thread takes the spooled objects in batches (across associations) and
//! removes each once its batch is committed. A full disk is the object's failure (status
//! A700, out of resources) and nothing already spooled or indexed is lost; objects left in the
//! spool by a crash are indexed when the listener starts again.
//!
//! Logged: every association (calling AE title, peer address, objects, outcome) and every
//! failure, with UIDs and reasons but never a patient's name or id.

use anyhow::{bail, Context, Result};
use dicom_ul::association::Association as _;
use dicom_ul::pdu::{AssociationRJServiceUserReason, PDataValue, PDataValueType, UserIdentity};
use dicom_ul::Pdu;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The Verification SOP Class (C-ECHO).
const VERIFICATION: &str = "1.2.840.10008.1.1";
/// This implementation's class UID, written in the spooled files' meta group.
const IMPLEMENTATION_UID: &str = "2.25.207713093462436158137063545786212453537";
/// DIMSE statuses.
const SUCCESS: u16 = 0x0000;
const OUT_OF_RESOURCES: u16 = 0xA700;
const CANNOT_UNDERSTAND: u16 = 0xC000;

/// How the listener runs.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// This node's AE title (what callers must call).
    pub aet: String,
    /// Calling AE titles allowed; `None`: any (said at start).
    pub allowed: Option<BTreeSet<String>>,
    /// Largest object accepted, in bytes (a bigger one is refused, A700).
    pub max_object_bytes: usize,
}

/// The spool folder of an index.
pub fn spool_dir(index: &Path) -> PathBuf {
    index.join("incoming")
}

/// Only the listed calling AE titles, and only when they call this node's title.
struct AllowList(Option<BTreeSet<String>>);

impl dicom_ul::association::server::AccessControl for AllowList {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> std::result::Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            tracing::warn!(
                "association refused: {calling_ae_title:?} called {called_ae_title:?}, not \
                 {this_ae_title:?}"
            );
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        match &self.0 {
            Some(list) if !list.contains(calling_ae_title.trim()) => {
                tracing::warn!(
                    "association refused: calling AE title {calling_ae_title:?} is not allowed \
                     (--allow-aet)"
                );
                Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
            }
            _ => Ok(()),
        }
    }
}

/// One implicit-VR little-endian element of a command set.
fn element(out: &mut Vec<u8>, group: u16, elem: u16, value: &[u8]) {
    out.extend(group.to_le_bytes());
    out.extend(elem.to_le_bytes());
    out.extend((value.len() as u32).to_le_bytes());
    out.extend(value);
}

/// A UID value: NUL-padded to an even length.
fn uid(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

/// A text value: space-padded to an even length.
fn text(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(b' ');
    }
    v
}

/// A response command set (`C-STORE-RSP` 0x8001, `C-ECHO-RSP` 0x8030), group length first.
fn response(
    field: u16,
    sop_class: &str,
    sop_instance: Option<&str>,
    msg_id: u16,
    status: u16,
    comment: Option<&str>,
) -> Vec<u8> {
    let mut body = Vec::new();
    element(&mut body, 0x0000, 0x0002, &uid(sop_class));
    element(&mut body, 0x0000, 0x0100, &field.to_le_bytes());
    element(&mut body, 0x0000, 0x0120, &msg_id.to_le_bytes());
    element(&mut body, 0x0000, 0x0800, &0x0101u16.to_le_bytes());
    element(&mut body, 0x0000, 0x0900, &status.to_le_bytes());
    if let Some(c) = comment {
        // Error Comment: LO, at most 64 characters.
        let c: String = c
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(64)
            .collect();
        element(&mut body, 0x0000, 0x0902, &text(&c));
    }
    if let Some(i) = sop_instance {
        element(&mut body, 0x0000, 0x1000, &uid(i));
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    element(&mut out, 0x0000, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

/// What a request command set says (implicit VR little endian, as commands always are).
#[derive(Debug, Default)]
struct Command {
    field: u16,
    msg_id: u16,
    sop_class: String,
    sop_instance: String,
    has_data: bool,
}

fn parse_command(bytes: &[u8]) -> Result<Command> {
    let mut c = Command::default();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let group = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let elem = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]);
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let start = at + 8;
        let end = start.checked_add(len).filter(|&e| e <= bytes.len());
        let Some(end) = end else {
            bail!("a command element runs past the command's end");
        };
        let v = &bytes[start..end];
        let u16v = || v.get(..2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        let s = || {
            String::from_utf8_lossy(v)
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        if group == 0x0000 {
            match elem {
                0x0002 => c.sop_class = s(),
                0x0100 => c.field = u16v(),
                0x0110 => c.msg_id = u16v(),
                0x0800 => c.has_data = u16v() != 0x0101,
                0x1000 => c.sop_instance = s(),
                _ => {}
            }
        }
        at = end;
    }
    anyhow::ensure!(c.field != 0, "a command without its Command Field");
    Ok(c)
}

/// An explicit-VR little-endian file meta element.
fn meta_element(out: &mut Vec<u8>, elem: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend(0x0002u16.to_le_bytes());
    out.extend(elem.to_le_bytes());
    out.extend(vr);
    if vr == b"OB" {
        out.extend([0, 0]);
        out.extend((value.len() as u32).to_le_bytes());
    } else {
        out.extend((value.len() as u16).to_le_bytes());
    }
    out.extend(value);
}

/// A DICOM file (preamble, `DICM`, meta group) around a received data set, as received.
pub fn file_of(sop_class: &str, sop_instance: &str, transfer_syntax: &str, data: &[u8]) -> Vec<u8> {
    let mut meta = Vec::new();
    meta_element(&mut meta, 0x0001, b"OB", &[0, 1]);
    meta_element(&mut meta, 0x0002, b"UI", &uid(sop_class));
    meta_element(&mut meta, 0x0003, b"UI", &uid(sop_instance));
    meta_element(&mut meta, 0x0010, b"UI", &uid(transfer_syntax));
    meta_element(&mut meta, 0x0012, b"UI", &uid(IMPLEMENTATION_UID));
    meta_element(&mut meta, 0x0013, b"SH", &text("SIMCASE"));
    let mut out = vec![0u8; 128];
    out.extend(b"DICM");
    meta_element(&mut out, 0x0000, b"UL", &(meta.len() as u32).to_le_bytes());
    out.extend(meta);
    out.extend(data);
    out
}

/// Counters of a listener, for its log and its tests.
#[derive(Default)]
pub struct Counts {
    /// Objects spooled.
    pub received: AtomicU64,
    /// Objects refused (too big, unwritable, not understood).
    pub refused: AtomicU64,
    /// Associations accepted.
    pub associations: AtomicU64,
}

/// Serve one association: C-ECHO answered; each C-STORE's object spooled and answered.
fn serve_association(
    stream: TcpStream,
    options: &dicom_ul::association::ServerAssociationOptions<
        '_,
        AllowList,
        dicom_ul::association::server::DefaultNegotiation,
    >,
    spool: &Path,
    opts: &ListenOptions,
    counts: &Counts,
    wake: &crossbeam_channel::Sender<()>,
) -> Result<()> {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let mut assoc = options
        .establish(stream)
        .with_context(|| format!("association from {peer} not established"))?;
    let calling = assoc.peer_ae_title().trim().to_string();
    counts.associations.fetch_add(1, Ordering::Relaxed);
    tracing::info!("association from {calling} ({peer}) accepted");
    let (mut stored, mut refused) = (0u64, 0u64);
    let mut command: Vec<u8> = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    let mut pending: Option<(Command, u8)> = None;
    let mut too_big = false;
    let outcome = loop {
        let pdu = match assoc.receive() {
            Ok(p) => p,
            Err(e) => break format!("dropped: {e}"),
        };
        match pdu {
            Pdu::PData { data: values } => {
                for v in values {
                    match v.value_type {
                        PDataValueType::Command => {
                            command.extend(&v.data);
                            if !v.is_last {
                                continue;
                            }
                            let c = parse_command(&command);
                            command.clear();
                            let c = match c {
                                Ok(c) => c,
                                Err(e) => break_with(&mut assoc, &format!("bad command: {e}"))?,
                            };
                            match c.field {
                                0x0030 => {
                                    let r = response(
                                        0x8030,
                                        VERIFICATION,
                                        None,
                                        c.msg_id,
                                        SUCCESS,
                                        None,
                                    );
                                    send(&mut assoc, v.presentation_context_id, r)?;
                                }
                                0x0001 if c.has_data => {
                                    data.clear();
                                    too_big = false;
                                    pending = Some((c, v.presentation_context_id));
                                }
                                other => {
                                    tracing::warn!("{calling}: command 0x{other:04X} not served");
                                }
                            }
                        }
                        PDataValueType::Data => {
                            if data.len() + v.data.len() > opts.max_object_bytes {
                                too_big = true;
                                data.clear();
                            } else if !too_big {
                                data.extend(&v.data);
                            }
                            if !v.is_last {
                                continue;
                            }
                            let Some((c, pc)) = pending.take() else {
                                tracing::warn!("{calling}: data without a C-STORE request");
                                continue;
                            };
                            let ts = assoc
                                .presentation_contexts()
                                .iter()
                                .find(|p| p.id == v.presentation_context_id)
                                .map(|p| p.transfer_syntax.trim_end_matches('\0').to_string())
                                .unwrap_or_default();
                            let (status, comment) = if too_big {
                                (
                                    OUT_OF_RESOURCES,
                                    Some(format!("object over {} MB", opts.max_object_bytes >> 20)),
                                )
                            } else {
                                store(spool, &c, &ts, &data)
                            };
                            data.clear();
                            if status == SUCCESS {
                                stored += 1;
                                counts.received.fetch_add(1, Ordering::Relaxed);
                                let _ = wake.try_send(());
                            } else {
                                refused += 1;
                                counts.refused.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(
                                    "{calling}: object {} refused (status {status:04X}): {}",
                                    c.sop_instance,
                                    comment.as_deref().unwrap_or("")
                                );
                            }
                            let r = response(
                                0x8001,
                                &c.sop_class,
                                Some(&c.sop_instance),
                                c.msg_id,
                                status,
                                comment.as_deref(),
                            );
                            send(&mut assoc, pc, r)?;
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                let _ = assoc.send(&Pdu::ReleaseRP);
                break "released".to_string();
            }
            Pdu::AbortRQ { .. } => break "aborted by the caller".to_string(),
            _ => {}
        }
    };
    tracing::info!(
        "association from {calling} ({peer}) {outcome}: {stored} stored, {refused} refused"
    );
    Ok(())
}

fn break_with<S, T>(assoc: &mut dicom_ul::ServerAssociation<S>, why: &str) -> Result<T>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    let _ = assoc.send(&Pdu::AbortRQ {
        source: dicom_ul::pdu::AbortRQSource::ServiceProvider(
            dicom_ul::pdu::AbortRQServiceProviderReason::ReasonNotSpecified,
        ),
    });
    bail!("{why}")
}

fn send<S>(assoc: &mut dicom_ul::ServerAssociation<S>, pc: u8, command: Vec<u8>) -> Result<()>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data: command,
            }],
        })
        .context("sending a response")
}

/// Spool one received object: status and, on failure, why.
fn store(spool: &Path, c: &Command, ts: &str, data: &[u8]) -> (u16, Option<String>) {
    let ok_uid = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    };
    if !ok_uid(&c.sop_instance) || !ok_uid(&c.sop_class) || ts.is_empty() {
        return (
            CANNOT_UNDERSTAND,
            Some("no valid SOP Instance or Class UID".into()),
        );
    }
    if !may_hold_pixels(ts, data) {
        return (
            CANNOT_UNDERSTAND,
            Some("no Pixel Data: simcase indexes images".into()),
        );
    }
    let file = file_of(&c.sop_class, &c.sop_instance, ts, data);
    let path = spool.join(format!("{}.dcm", c.sop_instance));
    match simcase_index::store::durable::write_atomic(&path, |mut f| {
        f.write_all(&file)?;
        Ok(f)
    }) {
        Ok(_) => (SUCCESS, None),
        Err(e) => (OUT_OF_RESOURCES, Some(format!("cannot store: {e}"))),
    }
}

/// Whether a data set may hold Pixel Data (7FE0,0010), Float or Double Float Pixel Data: its
/// tag's bytes occur in it (little or big endian). A cheap check at reception, so that a
/// non-image object (a report, a presentation state) is refused with a status instead of
/// acknowledged and then failed; a deflated data set cannot be scanned and is taken.
fn may_hold_pixels(ts: &str, data: &[u8]) -> bool {
    if ts == "1.2.840.10008.1.2.1.99" {
        return true;
    }
    let tags: [[u8; 4]; 6] = [
        [0xE0, 0x7F, 0x10, 0x00],
        [0xE0, 0x7F, 0x08, 0x00],
        [0xE0, 0x7F, 0x09, 0x00],
        [0x7F, 0xE0, 0x00, 0x10],
        [0x7F, 0xE0, 0x00, 0x08],
        [0x7F, 0xE0, 0x00, 0x09],
    ];
    data.windows(4).any(|w| tags.iter().any(|t| w == t))
}

/// Accept associations on `listener` until `stop` is set, each on a thread of its own; every
/// spooled object wakes `wake`.
pub fn accept_loop(
    listener: TcpListener,
    spool: PathBuf,
    opts: ListenOptions,
    counts: Arc<Counts>,
    wake: crossbeam_channel::Sender<()>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    std::fs::create_dir_all(&spool).with_context(|| format!("creating {}", spool.display()))?;
    let options = Arc::new(
        dicom_ul::association::ServerAssociationOptions::new()
            .ae_access_control(AllowList(opts.allowed.clone()))
            .ae_title(opts.aet.clone())
            .promiscuous(true)
            .with_abstract_syntax(VERIFICATION)
            .read_timeout(Duration::from_secs(120))
            .write_timeout(Duration::from_secs(60)),
    );
    listener.set_nonblocking(true)?;
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => {
                tracing::warn!("accepting a connection: {e}");
                continue;
            }
        };
        stream.set_nonblocking(false)?;
        let (options, spool, opts, counts, wake) = (
            options.clone(),
            spool.clone(),
            opts.clone(),
            counts.clone(),
            wake.clone(),
        );
        std::thread::spawn(move || {
            if let Err(e) = serve_association(stream, &options, &spool, &opts, &counts, &wake) {
                tracing::warn!("{e:#}");
            }
        });
    }
    Ok(())
}

/// The spooled objects, oldest first (by name: arrival order does not matter to an index).
pub fn spooled(spool: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(spool)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Where the items of spooled objects point: `dimse://SOP` (the spool file is removed once
/// indexed), or the copy kept under `keep` (`--keep-files`).
fn item_path(file: &Path, keep: Option<&Path>) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    match keep {
        Some(k) => k.join(name),
        None => PathBuf::from(format!(
            "dimse://{}",
            Path::new(&name).with_extension("").display()
        )),
    }
}

/// Index what the spool holds, in batches, until `stop` is set and the spool is empty: each
/// batch's files are removed (or moved to `keep`) once it is committed. A batch that cannot be
/// committed (a full disk) stays in the spool and is tried again; what failed to decode is in
/// the index's errors table.
pub fn index_loop(
    writer: &mut dyn simcase_ingest::Sink,
    enc: &dyn simcase_models::Encoder,
    spool: &Path,
    keep: Option<&Path>,
    opts: &simcase_ingest::Options,
    wake: &crossbeam_channel::Receiver<()>,
    stop: &AtomicBool,
) -> Result<u64> {
    let mut indexed = 0u64;
    loop {
        let mut files = spooled(spool);
        if files.is_empty() {
            if stop.load(Ordering::Relaxed) {
                return Ok(indexed);
            }
            let _ = wake.recv_timeout(Duration::from_millis(500));
            continue;
        }
        // A short wait lets a push in progress fill the batch.
        if files.len() < opts.batch {
            std::thread::sleep(Duration::from_millis(200));
            files = spooled(spool);
        }
        files.truncate(opts.batch.max(1) * 8);
        let sources: Vec<simcase_ingest::Source> = files
            .iter()
            .map(|f| {
                let from = f.clone();
                simcase_ingest::Source {
                    path: item_path(f, keep),
                    fetch: Some(simcase_ingest::Fetch(Arc::new(move || {
                        std::fs::read(&from).map_err(anyhow::Error::from)
                    }))),
                    ..Default::default()
                }
            })
            .collect();
        match simcase_ingest::run(writer, enc, sources, opts) {
            Ok(s) => {
                indexed += s.added as u64;
                for f in &files {
                    let gone = match keep {
                        Some(k) => std::fs::rename(f, item_path(f, Some(k))),
                        None => std::fs::remove_file(f),
                    };
                    if let Err(e) = gone {
                        tracing::warn!("{}: not cleared from the spool: {e}", f.display());
                    }
                }
                tracing::info!(
                    "indexed a batch of {} received objects ({} new items)",
                    files.len(),
                    s.added
                );
            }
            Err(e) => {
                tracing::error!("a batch of {} received objects not indexed (kept in the spool, tried again): {e:#}", files.len());
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_command_parses_back_and_counts_its_group_length() {
        let r = response(
            0x8001,
            "1.2.840.10008.5.1.4.1.1.2",
            Some("1.2.3"),
            7,
            OUT_OF_RESOURCES,
            Some("disk full"),
        );
        let c = parse_command(&r).unwrap();
        assert_eq!(
            (c.field, c.sop_class.as_str(), c.sop_instance.as_str()),
            (0x8001, "1.2.840.10008.5.1.4.1.1.2", "1.2.3")
        );
        assert!(!c.has_data);
        let len = u32::from_le_bytes([r[8], r[9], r[10], r[11]]) as usize;
        assert_eq!(len, r.len() - 12);
        assert!(parse_command(&r[..r.len() - 3]).is_err());
    }
}
