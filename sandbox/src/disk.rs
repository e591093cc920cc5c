//! What a call may do to the disk under its read-write grants: bytes written and entries
//! (files, folders, links) created, bounded per call (`Limits`) and per grant over the life of
//! the loaded component, that is one run (`DirGrant`).
//!
//! wasmtime-wasi has no quotas, so the filesystem functions that write or create are shadowed in
//! the linker by wrappers that charge the call first and then delegate to wasmtime-wasi's own
//! implementation; the output streams it opens on files are wrapped to charge each write. A
//! breach traps the call, which then fails with its own error kind and a report of what it had
//! already written.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::preopens::Host as PreopensHost;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, Filesize, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, FsResult, OutputStream, Pollable, StreamError, StreamResult};

use crate::call_state::CallState;
use crate::error::{ErrorKind, ToolError};
use crate::grants::DirGrant;

/// The WASI interfaces shadowed here, at the version wasmtime-wasi registers them under.
const TYPES: &str = "wasi:filesystem/types@0.2.12";
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

/// What one read-write grant has had written under it over a run.
#[derive(Default)]
pub(crate) struct GrantUse {
    written: AtomicU64,
    created: AtomicU64,
}

/// A grant with its run-long counters; shared by every call of the component.
#[derive(Clone)]
pub(crate) struct CountedGrant {
    pub(crate) grant: DirGrant,
    used: Arc<GrantUse>,
}

impl From<DirGrant> for CountedGrant {
    fn from(grant: DirGrant) -> Self {
        CountedGrant { grant, used: Arc::default() }
    }
}

/// One call's writes: what it may still do, and what it did, by guest path, for the report.
pub(crate) struct CallDisk {
    grants: Arc<[CountedGrant]>,
    max_write: u64,
    max_entries: u64,
    written: u64,
    created: u64,
    written_by_path: BTreeMap<String, u64>,
    created_paths: Vec<String>,
    /// Descriptor handle → (grant index, guest path): where a write lands.
    descriptors: HashMap<u32, (usize, String)>,
    breach: Option<ToolError>,
}

pub(crate) type SharedDisk = Arc<Mutex<CallDisk>>;

impl CallDisk {
    pub(crate) fn new(grants: Arc<[CountedGrant]>, max_write: u64, max_entries: u64) -> SharedDisk {
        Arc::new(Mutex::new(CallDisk {
            grants,
            max_write,
            max_entries,
            written: 0,
            created: 0,
            written_by_path: BTreeMap::new(),
            created_paths: Vec::new(),
            descriptors: HashMap::new(),
            breach: None,
        }))
    }

    /// The error a breach ended the call with, with what the call had written by then.
    pub(crate) fn breach(&self) -> Option<ToolError> {
        let mut error = self.breach.clone()?;
        error.message.push_str(&self.report());
        Some(error)
    }

    /// Charges `bytes` written to `path` under grant `index`, or records the breach.
    fn charge_write(&mut self, index: usize, path: &str, bytes: u64) -> Result<(), ()> {
        let Some(counted) = self.grants.get(index) else { return Ok(()) };
        let over = if self.written.saturating_add(bytes) > self.max_write {
            Some(format!("the tool tried to write more than {} in one call (limits.max_write)", size(self.max_write)))
        } else if !reserve(&counted.used.written, bytes, counted.grant.max_write) {
            Some(format!(
                "the tool tried to write more than {} under {} over the run (its grant's max_write)",
                size(counted.grant.max_write),
                counted.grant.guest
            ))
        } else {
            None
        };
        if let Some(message) = over {
            self.breach.get_or_insert(ToolError::new(ErrorKind::WriteLimit, message));
            return Err(());
        }
        self.written += bytes;
        *self.written_by_path.entry(path.to_string()).or_default() += bytes;
        Ok(())
    }

    /// Takes one entry of the call's and the grant's allowance before an entry is created, or
    /// records the breach; `created` settles it.
    fn reserve_entry(&mut self, index: usize) -> Result<(), ()> {
        let Some(counted) = self.grants.get(index) else { return Ok(()) };
        let over = if self.created >= self.max_entries {
            Some(format!(
                "the tool tried to create more than {} files or folders in one call (limits.max_files)",
                self.max_entries
            ))
        } else if !reserve(&counted.used.created, 1, counted.grant.max_files) {
            Some(format!(
                "the tool tried to create more than {} files or folders under {} over the run (its grant's max_files)",
                counted.grant.max_files, counted.grant.guest
            ))
        } else {
            None
        };
        if let Some(message) = over {
            self.breach.get_or_insert(ToolError::new(ErrorKind::FileLimit, message));
            return Err(());
        }
        self.created += 1;
        Ok(())
    }

    /// Settles an entry reserved at `index`: kept for the report if it was made, else given back.
    fn created(&mut self, index: usize, path: String, made: bool) {
        if made {
            self.created_paths.push(path);
        } else if let Some(counted) = self.grants.get(index) {
            counted.used.created.fetch_sub(1, Ordering::SeqCst);
            self.created -= 1;
        }
    }

    fn place(&self, fd: u32, path: &str) -> Option<(usize, String)> {
        let (index, parent) = self.descriptors.get(&fd)?;
        Some((*index, format!("{}/{}", parent.trim_end_matches('/'), path.trim_start_matches("./"))))
    }

    fn report(&self) -> String {
        const LISTED: usize = 5;
        let mut report = String::new();
        if !self.written_by_path.is_empty() {
            let mut files: Vec<String> = self
                .written_by_path
                .iter()
                .take(LISTED)
                .map(|(path, bytes)| format!("{path} ({})", size(*bytes)))
                .collect();
            if self.written_by_path.len() > LISTED {
                files.push(format!("and {} more", self.written_by_path.len() - LISTED));
            }
            report.push_str(&format!(
                "; it had written {} before it was stopped: {}",
                size(self.written),
                files.join(", ")
            ));
        }
        if !self.created_paths.is_empty() {
            let mut paths: Vec<&str> = self.created_paths.iter().take(LISTED).map(String::as_str).collect();
            let more = format!("and {} more", self.created_paths.len().saturating_sub(LISTED));
            if self.created_paths.len() > LISTED {
                paths.push(&more);
            }
            report.push_str(&format!("; it had created {}: {}", self.created_paths.len(), paths.join(", ")));
        }
        report
    }
}

/// Adds `amount` to `used` if the sum stays within `max`, atomically: concurrent calls of a run
/// share the counter, and none may pass the limit between another's check and add.
fn reserve(used: &AtomicU64, amount: u64, max: u64) -> bool {
    used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| now.checked_add(amount).filter(|&sum| sum <= max))
        .is_ok()
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

fn lock(disk: &SharedDisk) -> MutexGuard<'_, CallDisk> {
    // A panic while holding the lock leaves counters that are still meaningful.
    disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The trap that ends a call over its limits; the breach recorded in `CallDisk` says why.
fn stopped() -> wasmtime::Error {
    wasmtime::Error::msg("stopped: over a disk limit")
}

/// A wasmtime-wasi filesystem result as the component-model function returns it.
fn lowered<T>(result: FsResult<T>) -> wasmtime::Result<(Result<T, ErrorCode>,)> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(error) => Ok((Err(error.downcast()?),)),
    }
}

fn borrowed(fd: &Resource<Descriptor>) -> Resource<Descriptor> {
    Resource::new_borrow(fd.rep())
}

/// Runs `create`, which makes one entry at `place` (when that is under a read-write grant), within
/// the call's and the grant's allowance of entries.
async fn creating(
    disk: &SharedDisk,
    place: Option<(usize, String)>,
    create: impl Future<Output = FsResult<()>>,
) -> wasmtime::Result<(Result<(), ErrorCode>,)> {
    if let Some((index, _)) = &place {
        lock(disk).reserve_entry(*index).map_err(|()| stopped())?;
    }
    let made = create.await;
    if let Some((index, path)) = place {
        lock(disk).created(index, path, made.is_ok());
    }
    lowered(made)
}

/// Puts the counting wrappers in front of wasmtime-wasi's filesystem functions.
pub(crate) fn shadow_filesystem(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut preopens = linker.instance(PREOPENS)?;
    preopens.func_wrap("get-directories", |mut store: StoreContextMut<'_, CallState>, (): ()| {
        let state = store.data_mut();
        let directories = PreopensHost::get_directories(&mut state.filesystem())?;
        let mut disk = lock(&state.disk);
        for (fd, guest) in &directories {
            if let Some(index) = disk.grants.iter().position(|g| g.grant.writable && &g.grant.guest == guest) {
                disk.descriptors.insert(fd.rep(), (index, guest.clone()));
            }
        }
        Ok((directories,))
    })?;

    let mut types = linker.instance(TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, CallState>,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                let place = lock(&state.disk).place(fd.rep(), &path);
                let mut creates = None;
                if let Some((index, full)) = place.clone()
                    && oflags.contains(OpenFlags::CREATE)
                {
                    let exists = state.filesystem().stat_at(borrowed(&fd), path_flags, path.clone()).await.is_ok();
                    if !exists {
                        lock(&state.disk).reserve_entry(index).map_err(|()| stopped())?;
                        creates = Some((index, full));
                    }
                }
                let opened = state.filesystem().open_at(fd, path_flags, path, oflags, flags).await;
                let mut disk = lock(&state.disk);
                if let (Ok(new), Some((index, full))) = (&opened, place) {
                    disk.descriptors.insert(new.rep(), (index, full));
                }
                if let Some((index, full)) = creates {
                    disk.created(index, full, opened.is_ok());
                }
                drop(disk);
                lowered(opened)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store: StoreContextMut<'_, CallState>, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let (disk, place) = (state.disk.clone(), lock(&state.disk).place(fd.rep(), &path));
                creating(&disk, place, state.filesystem().create_directory_at(fd, path)).await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store: StoreContextMut<'_, CallState>,
         (fd, old_path, new_path): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let (disk, place) = (state.disk.clone(), lock(&state.disk).place(fd.rep(), &new_path));
                creating(&disk, place, state.filesystem().symlink_at(fd, old_path, new_path)).await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store: StoreContextMut<'_, CallState>,
         (fd, old_flags, old_path, new_fd, new_path): (
            Resource<Descriptor>,
            PathFlags,
            String,
            Resource<Descriptor>,
            String,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                let (disk, place) = (state.disk.clone(), lock(&state.disk).place(new_fd.rep(), &new_path));
                creating(&disk, place, state.filesystem().link_at(fd, old_flags, old_path, new_fd, new_path)).await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, CallState>, (fd, buffer, offset): (Resource<Descriptor>, Vec<u8>, Filesize)| {
            Box::new(async move {
                let state = store.data_mut();
                let place = lock(&state.disk).descriptors.get(&fd.rep()).cloned();
                if let Some((index, path)) = place {
                    lock(&state.disk).charge_write(index, &path, buffer.len() as u64).map_err(|()| stopped())?;
                }
                lowered(state.filesystem().write(fd, buffer, offset).await)
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store: StoreContextMut<'_, CallState>, (fd, new_size): (Resource<Descriptor>, Filesize)| {
            Box::new(async move {
                let state = store.data_mut();
                let place = lock(&state.disk).descriptors.get(&fd.rep()).cloned();
                if let Some((index, path)) = place {
                    // Growing a file counts as writing the bytes it grows by.
                    let current = state.filesystem().stat(borrowed(&fd)).await.map(|s| s.size).unwrap_or(0);
                    let growth = new_size.saturating_sub(current);
                    lock(&state.disk).charge_write(index, &path, growth).map_err(|()| stopped())?;
                }
                lowered(state.filesystem().set_size(fd, new_size).await)
            })
        },
    )?;
    for (name, append) in
        [("[method]descriptor.write-via-stream", false), ("[method]descriptor.append-via-stream", true)]
    {
        let stream = move |state: &mut CallState, fd: Resource<Descriptor>, offset: Filesize| {
            let place = lock(&state.disk).descriptors.get(&fd.rep()).cloned();
            let mut filesystem = state.filesystem();
            let opened =
                if append { filesystem.append_via_stream(fd) } else { filesystem.write_via_stream(fd, offset) };
            match (opened, place) {
                (Ok(stream), Some((grant, path))) => {
                    // Swap the stream for one that charges each write to the call and the grant.
                    let inner = filesystem.table.delete(stream)?;
                    let disk = state.disk.clone();
                    let counted: DynOutputStream = Box::new(CountedStream { inner, disk, grant, path });
                    Ok((Ok(state.filesystem().table.push(counted)?),))
                }
                (opened, _) => lowered(opened),
            }
        };
        if append {
            types.func_wrap(
                name,
                move |mut store: StoreContextMut<'_, CallState>, (fd,): (Resource<Descriptor>,)| {
                    stream(store.data_mut(), fd, 0)
                },
            )?;
        } else {
            types.func_wrap(
                name,
                move |mut store: StoreContextMut<'_, CallState>, (fd, offset): (Resource<Descriptor>, Filesize)| {
                    stream(store.data_mut(), fd, offset)
                },
            )?;
        }
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// A file's output stream that charges every write before passing it on.
struct CountedStream {
    inner: DynOutputStream,
    disk: SharedDisk,
    grant: usize,
    path: String,
}

impl CountedStream {
    fn charge(&self, bytes: usize) -> StreamResult<()> {
        lock(&self.disk).charge_write(self.grant, &self.path, bytes as u64).map_err(|()| StreamError::Trap(stopped()))
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CountedStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn blocking_write_and_flush(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.charge(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn write_zeroes(&mut self, count: usize) -> StreamResult<()> {
        self.charge(count)?;
        self.inner.write_zeroes(count)
    }

    async fn write_ready(&mut self) -> StreamResult<usize> {
        self.inner.write_ready().await
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CountedStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}
