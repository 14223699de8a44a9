//! What the workspace's tests need from outside the repository, and one rule for its absence.
//!
//! With `CI` set (CI sets `CI=true`, and `.ci/run` exports it), a test whose dependency is missing
//! fails, naming what is missing and the command that installs it. Elsewhere it prints one line,
//! `SKIPPED <test>: <reason>`, and does not run. Nothing else skips.
//!
//! Shared by the engine's and the trainer's tests, so that the lookup of each dependency is written
//! once.

pub mod docs;
pub mod near_dup;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// Whether this is CI (`CI` set to anything but `false`/`0`/empty): missing dependencies fail.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `found`, or the absence handled by the rule above: in CI a panic that names `missing` and the
/// `install` command; elsewhere one `SKIPPED` line and `None`.
pub fn require<T>(test: &str, found: Option<T>, missing: &str, install: &str) -> Option<T> {
    if found.is_some() {
        return found;
    }
    if in_ci() {
        panic!("{test}: MISSING {missing}; install it with: {install}");
    }
    // Written to the stderr handle itself, not through `eprintln!`, which the test harness captures
    // and shows only for failing tests: the line must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {missing} (install it with: {install})"
    );
    None
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_path_buf()
}

/// The shared corpus: `$OPENSEEK_CORPUS`, default `../shared/corpus` beside the workspace.
pub fn corpus_dir() -> PathBuf {
    std::env::var_os("OPENSEEK_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/corpus"))
}

/// The shared corpus, when it holds `en/` and `zh/`.
pub fn corpus(test: &str) -> Option<PathBuf> {
    let dir = corpus_dir();
    let found = (dir.join("en").is_dir() && dir.join("zh").is_dir()).then(|| dir.clone());
    require(
        test,
        found,
        &format!("the shared corpus (no en/ and zh/ at {})", dir.display()),
        "clone the repository with ../shared beside it, or set OPENSEEK_CORPUS to the corpus directory",
    )
}

/// The PyTorch virtualenv of `scripts/setup-torch-venv`: `$OPENSEEK_TORCH_VENV`, default
/// `${XDG_CACHE_HOME:-~/.cache}/openseek/torch-venv`.
pub fn torch_venv_dir() -> PathBuf {
    std::env::var_os("OPENSEEK_TORCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                })
                .join("openseek/torch-venv")
        })
}

/// The venv's python, when the venv exists.
pub fn torch_python(test: &str) -> Option<PathBuf> {
    let venv = torch_venv_dir();
    let python = venv.join("bin/python");
    let found = python.is_file().then_some(python);
    require(
        test,
        found,
        &format!(
            "the PyTorch virtualenv (torch, megatron-core, transformers) at {}",
            venv.display()
        ),
        "scripts/setup-torch-venv",
    )
}

/// A command on `PATH` (or an absolute path), when it is there.
pub fn command(test: &str, name: &str, install: &str) -> Option<PathBuf> {
    let found = if name.contains('/') {
        Path::new(name).is_file().then(|| PathBuf::from(name))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    require(test, found, &format!("the `{name}` command"), install)
}

/// What a child process did, and its peak resident memory.
#[derive(Debug)]
pub struct Measured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Peak RSS of the child, in KiB (`ru_maxrss` of wait4(2), as GNU time's `%M`).
    pub peak_rss_kb: u64,
}

/// Runs `cmd` to its end and measures its peak RSS with wait4(2): no tool needed.
pub fn peak_rss(cmd: &mut Command) -> std::io::Result<Measured> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unwaited child; status and usage are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // The child is reaped: `child` must not be waited for again (std's Child does not wait on drop).
    drop(child);
    use std::os::unix::process::ExitStatusExt;
    Ok(Measured {
        status: ExitStatus::from_raw(status),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        peak_rss_kb: usage.ru_maxrss as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that touches 64 MiB peaks above it; one that touches little does not reach it.
    #[test]
    fn peak_rss_sees_what_the_child_touched() {
        // dd reads 64 MiB of zeros into one buffer.
        let big = peak_rss(Command::new("dd").args([
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ]))
        .unwrap();
        assert!(big.status.success(), "{}", big.stderr);
        assert!(big.stderr.contains("1+0 records in"), "{}", big.stderr);
        assert!(big.peak_rss_kb > 64 << 10, "{} KiB", big.peak_rss_kb);
        let small = peak_rss(Command::new("true").arg("x")).unwrap();
        assert!(small.status.success());
        assert!(small.peak_rss_kb < 64 << 10, "{} KiB", small.peak_rss_kb);
    }

    #[test]
    fn exit_codes_and_output_come_back() {
        let m =
            peak_rss(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!(m.status.code(), Some(3));
        assert_eq!(m.stdout, "out\n");
        assert_eq!(m.stderr, "err\n");
    }
}
