//! Transparent huge pages for the process's memory (Linux with glibc).
//!
//! A large run's time goes to random reads of tables of millions of entries (devices,
//! sessions, presence records, what each device showed, what each router partition
//! routed): with 4 KiB pages nearly each one misses the TLB as well as the cache, and the
//! page walk costs another trip to memory. A 2 MiB page covers 512 times as much. The
//! kernel's default mode (`madvise`) gives huge pages only to memory that asks for them,
//! and glibc's allocator asks for all of its own (`MADV_HUGEPAGE` on its heap and on its
//! mapped blocks) when its tunable `glibc.malloc.hugetlb` is 1. Tunables are read only as
//! a process starts, so `wasim` sets it and starts itself again, once, before anything
//! else. A `GLIBC_TUNABLES` already set (the user's, or ours after the restart) is left as
//! it is: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` runs with the kernel's default pages.

/// The variable glibc reads its tunables from, and the setting asked for.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TUNABLES: (&str, &str) = ("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1");

/// Restart the process with glibc's allocator asking for huge pages, unless
/// `GLIBC_TUNABLES` is set already. Returns only if there is nothing to do or the restart
/// failed (the run then goes on with the default pages: only its speed differs).
pub fn ask_for_huge_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let (name, value) = TUNABLES;
        if std::env::var_os(name).is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        // `exec` returns only on failure.
        let _ = std::process::Command::new(&exe).arg0(arg0).args(args).env(name, value).exec();
    }
}
